//! The Redis fast path: ready queues per queue and priority level, a schedule per queue for
//! delayed jobs and retries, and the DLQ index. Redis only ever holds job ids; Postgres holds the
//! jobs, and every key here can be rebuilt from it (see [`crate::maintenance::repairer`]).
//!
//! A queue's keys share the hash tag `{ns:q:<queue>}`, so that on a Redis Cluster each queue
//! lives on one shard and the queues spread over the shards; the namespace's own keys share `{ns}`:
//! - `{ns:q:<queue>}:ready:<level>`: ZSET of ids, levels 0..=10 (`priority / 10`), scored by when
//!   the id became ready in ms (0 to go first); popped lowest score first, highest level first,
//!   over the queues a worker serves ([`Served`]).
//! - `{ns:q:<queue>}:scheduled`: ZSET of `<level>:<id>`, scored by due time in ms.
//! - `{ns}:queues`: SET of the names of the queues that have keys: the promoter walks their
//!   schedules, and the workers of every queue their ready lists.
//! - `{ns}:wake`: ZSET of queue names just named; popping it tells a worker that serves every
//!   queue to read `{ns}:queues` again at once (on a single server; see [`BlockingPop`]).
//! - `{ns}:dlq`: ZSET of dead job ids, scored by when they died.
//! - `{ns}:built:2`: set once the keys were built in this layout; its absence means Redis lost
//!   our keys (or holds an older layout's).
//!
//! Every structure is keyed by id, and a job's queue and level never change, so an id is at most
//! once in Redis, across its queue's ready lists and schedule, however often it is pushed: pushing
//! is idempotent by construction (`lua/enqueue.lua`), not by anyone's timing. Each script touches
//! the keys of one queue only, so it is atomic on a cluster too.
//!
//! Naming a queue in `{ns}:queues` is a separate step, and no lock orders it against the repairer,
//! which takes out the queues that have no key (see [`Queue::forget_idle_queues`]). Two rules keep
//! a queue with keys named: a push names its queue after its ids are in, whenever the queue had no
//! key before it; and the repairer checks a queue again after taking it out, naming it again if a
//! key has appeared.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use redis::AsyncCommands;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use tokio::time::Instant;

use crate::error::Result;
use crate::job::JobId;
use crate::store::Ready;

/// Priority levels: one ready list each, per queue.
pub const LEVELS: usize = 11;

pub fn level(priority: i16) -> usize {
    (priority.clamp(0, 100) / 10) as usize
}

/// Where a job's id lives in Redis: its queue and priority level select its ready list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub id: JobId,
    pub queue: String,
    pub priority: i16,
}

#[derive(Debug, Clone)]
pub struct Keys {
    pub queues: String,
    pub wake: String,
    pub dlq: String,
    pub built: String,
    /// `{ns}:ready`: the pub/sub channel that names a queue whose ready lists were empty and are
    /// not any more (on a cluster).
    pub bell: String,
    /// `{ns}`: the hash tag of the namespace's own keys.
    pub prefix: String,
    namespace: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Keys {
        let prefix = format!("{{{namespace}}}");
        Keys {
            queues: format!("{prefix}:queues"),
            wake: format!("{prefix}:wake"),
            dlq: format!("{prefix}:dlq"),
            built: format!("{prefix}:built:2"),
            bell: format!("{prefix}:ready"),
            prefix,
            namespace: namespace.to_owned(),
        }
    }

    /// `{ns:q:<queue>}`: the hash tag of a queue's keys.
    fn tag(&self, queue: &str) -> String {
        format!("{{{}:q:{queue}}}", self.namespace)
    }

    /// The ready list of a queue's priority level.
    pub fn ready(&self, queue: &str, level: usize) -> String {
        format!("{}:ready:{level}", self.tag(queue))
    }

    /// A queue's schedule.
    pub fn schedule(&self, queue: &str) -> String {
        format!("{}:scheduled", self.tag(queue))
    }

    /// Every key of a queue, as its scripts take them: the schedule, then the ready lists of
    /// levels 0 to 10.
    fn of_queue(&self, queue: &str) -> Vec<String> {
        let mut keys = Vec::with_capacity(LEVELS + 1);
        keys.push(self.schedule(queue));
        keys.extend((0..LEVELS).map(|level| self.ready(queue, level)));
        keys
    }

    /// A queue's ready lists, highest level first (the order they are popped in).
    fn ready_descending(&self, queue: &str) -> Vec<String> {
        (0..LEVELS).rev().map(|level| self.ready(queue, level)).collect()
    }

    /// How [`Queue::scheduled`] names a job in a schedule: `<level>:<id>:<queue>` (in Redis, a
    /// queue's schedule holds `<level>:<id>`).
    pub fn scheduled_member(id: JobId, queue: &str, level: usize) -> String {
        format!("{level}:{id}:{queue}")
    }

    /// Keys of the earlier layouts, all under `{ns}`, deleted when the keys are rebuilt: the
    /// shared schedule and marker, the ready lists of each queue named in `names`, and the ready
    /// lists from before queues had their own.
    fn legacy(&self, names: &[String]) -> Vec<String> {
        let p = &self.prefix;
        let mut keys: Vec<String> = (0..LEVELS).map(|l| format!("{p}:ready:{l}")).collect();
        keys.extend([format!("{p}:epoch"), format!("{p}:built"), format!("{p}:scheduled")]);
        for name in names {
            keys.extend((0..LEVELS).map(|l| format!("{p}:ready:{name}:{l}")));
        }
        keys
    }
}

/// Which queues a worker takes jobs from (`JOBQ_QUEUES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Served {
    /// Every queue, in a random order at each pop (so that none waits behind another's backlog).
    #[default]
    All,
    /// These queues, in this order (`email,default`): a job of a later queue is taken only when
    /// the earlier ones have none ready at its priority level or above.
    Ordered(Vec<String>),
    /// These queues, each first at a pop with a chance proportional to its weight
    /// (`email:3,default:1`).
    Weighted(Vec<(String, u32)>),
}

impl Served {
    /// The queues served, or `None` for every queue.
    pub fn names(&self) -> Option<Vec<String>> {
        match self {
            Served::All => None,
            Served::Ordered(queues) => Some(queues.clone()),
            Served::Weighted(queues) => Some(queues.iter().map(|(queue, _)| queue.clone()).collect()),
        }
    }

    /// Whether this worker takes jobs of `queue`.
    pub fn serves(&self, queue: &str) -> bool {
        match self {
            Served::All => true,
            Served::Ordered(queues) => queues.iter().any(|q| q == queue),
            Served::Weighted(queues) => queues.iter().any(|(q, _)| q == queue),
        }
    }
}

impl FromStr for Served {
    type Err = String;

    /// `""` or `"*"`: every queue; `"a,b"`: those, in order; `"a:3,b:1"` (any weight given):
    /// weighted, a queue without one weighing 1. A name may hold colons: only a last part that is
    /// a whole number is a weight.
    fn from_str(text: &str) -> std::result::Result<Served, String> {
        let text = text.trim();
        if text.is_empty() || text == "*" {
            return Ok(Served::All);
        }
        let mut queues: Vec<(String, Option<u32>)> = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (name, weight) = match part.rsplit_once(':') {
                Some((name, weight)) if !weight.is_empty() && weight.bytes().all(|b| b.is_ascii_digit()) => {
                    let weight: u32 = weight
                        .parse()
                        .ok()
                        .filter(|w| (1..=1000).contains(w))
                        .ok_or_else(|| format!("the weight of {name:?} must be 1 to 1000"))?;
                    (name.trim(), Some(weight))
                }
                _ => (part, None),
            };
            if name.is_empty() || name.chars().count() > crate::job::limits::MAX_QUEUE_LEN {
                return Err(format!(
                    "{part:?} is not a queue name: 1 to {} characters, names separated by commas",
                    crate::job::limits::MAX_QUEUE_LEN
                ));
            }
            if queues.iter().any(|(q, _)| q == name) {
                return Err(format!("{name:?} is listed twice"));
            }
            queues.push((name.to_owned(), weight));
        }
        Ok(if queues.iter().any(|(_, weight)| weight.is_some()) {
            Served::Weighted(queues.into_iter().map(|(q, w)| (q, w.unwrap_or(1))).collect())
        } else {
            Served::Ordered(queues.into_iter().map(|(q, _)| q).collect())
        })
    }
}

/// A connection to one Redis server or to a Redis Cluster; commands to a cluster go to the shard
/// that holds their keys, following its redirects.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// What to connect to.
#[derive(Clone)]
enum Target {
    Single(Box<redis::Client>),
    Cluster(Box<ClusterTarget>),
}

#[derive(Clone)]
struct ClusterTarget {
    client: ClusterClient,
    /// A client of each node listed, for the subscription to `{ns}:ready` ([`BlockingPop`]).
    nodes: Vec<redis::Client>,
}

impl Target {
    /// A connection that connects on first use, so that a Redis down now does not stop the caller
    /// from starting.
    fn connect(&self, response_timeout: Duration) -> Result<Conn> {
        Ok(match self {
            Target::Single(client) => Conn::Single(ConnectionManager::new_lazy_with_config(
                (**client).clone(),
                manager_config(response_timeout),
            )?),
            Target::Cluster(cluster) => Conn::Cluster(
                cluster.client.get_pending_async_connection_with_config(
                    ClusterConfig::new()
                        .set_connection_timeout(Duration::from_secs(1))
                        .set_response_timeout(response_timeout),
                ),
            ),
        })
    }
}

struct Scripts {
    enqueue: redis::Script,
    promote: redis::Script,
    withdraw: redis::Script,
    name: redis::Script,
    top: redis::Script,
}

#[derive(Clone)]
pub struct Queue {
    conn: Conn,
    target: Target,
    keys: Keys,
    scripts: std::sync::Arc<Scripts>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("keys", &self.keys.prefix)
            .field("cluster", &self.is_cluster())
            .finish()
    }
}

fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200))
}

/// Runs a Redis call, and once more if the first failed on a dropped connection: the connection
/// manager reconnects after the first failure, so the second try usually succeeds.
macro_rules! retry_once {
    ($body:expr) => {{
        match $body.await {
            Err(err) if err.is_io_error() || err.is_connection_dropped() => $body.await,
            other => other,
        }
    }};
}

/// A client of one server; TLS checked against `ca_pem` as in [`Queue::connect_with_ca`].
fn node_client(url: &str, ca_pem: Option<Vec<u8>>) -> Result<redis::Client> {
    Ok(match ca_pem {
        Some(root_cert) if url.starts_with("rediss://") => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        )?,
        _ => redis::Client::open(url)?,
    })
}

/// Escapes the characters special to SCAN's MATCH patterns.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl Queue {
    /// Connects lazily: a Redis that is down now does not stop the caller from starting.
    pub fn connect(url: &str, namespace: &str) -> Result<Queue> {
        Self::connect_with_ca(url, namespace, None)
    }

    /// As [`Queue::connect`]; a `rediss://` URL is TLS, its server certificate checked against
    /// `ca_pem` (PEM CA certificates) when given, else the system's roots, and its host name
    /// against the URL's host. The URL's user and password are sent with `AUTH`.
    pub fn connect_with_ca(url: &str, namespace: &str, ca_pem: Option<Vec<u8>>) -> Result<Queue> {
        crate::tls::install_default_provider();
        Self::with_target(Target::Single(Box::new(node_client(url, ca_pem)?)), namespace)
    }

    /// A Redis Cluster, found through any of `urls` (its nodes, or a configuration endpoint), TLS
    /// and `AUTH` as in [`Queue::connect_with_ca`].
    pub fn connect_cluster(urls: &[String], namespace: &str, ca_pem: Option<Vec<u8>>) -> Result<Queue> {
        crate::tls::install_default_provider();
        let mut builder = ClusterClient::builder(urls.iter().map(String::as_str))
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(2));
        if let Some(root_cert) = ca_pem.clone() {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            });
        }
        let nodes = urls
            .iter()
            .map(|url| node_client(url, ca_pem.clone()))
            .collect::<Result<Vec<_>>>()?;
        Self::with_target(
            Target::Cluster(Box::new(ClusterTarget {
                client: builder.build()?,
                nodes,
            })),
            namespace,
        )
    }

    /// Connects as the configuration says: `REDIS_URL` (a comma-separated list of nodes when
    /// `REDIS_CLUSTER` is true), `REDIS_CA_FILE`, and the namespace.
    pub fn from_config(config: &crate::config::Config) -> Result<Queue> {
        let ca = config.redis_ca()?;
        if config.redis_cluster {
            let urls: Vec<String> = config
                .redis_url
                .split(',')
                .map(|url| url.trim().to_owned())
                .filter(|url| !url.is_empty())
                .collect();
            Self::connect_cluster(&urls, &config.namespace, ca)
        } else {
            Self::connect_with_ca(&config.redis_url, &config.namespace, ca)
        }
    }

    fn with_target(target: Target, namespace: &str) -> Result<Queue> {
        let script = |source: &str| redis::Script::new(source);
        Ok(Queue {
            conn: target.connect(Duration::from_secs(2))?,
            target,
            keys: Keys::new(namespace),
            scripts: std::sync::Arc::new(Scripts {
                enqueue: script(include_str!("lua/enqueue.lua")),
                promote: script(include_str!("lua/promote.lua")),
                withdraw: script(include_str!("lua/withdraw.lua")),
                name: script(include_str!("lua/name.lua")),
                top: script(include_str!("lua/top.lua")),
            }),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// True when this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// A separate connection for blocking pops of the queues `served`, which would stall every
    /// other command on a shared one.
    ///
    /// On a cluster, it also subscribes to `{ns}:ready` (through any node listed, the next one
    /// when a node fails), where a push or a promotion that makes a queue's ready lists non-empty
    /// names the queue: a worker of that queue waiting between two looks looks at once.
    pub fn blocking(&self, poll: Duration, served: Served) -> Result<BlockingPop> {
        let bell = match &self.target {
            Target::Cluster(cluster) => {
                let bell = std::sync::Arc::new(tokio::sync::Notify::new());
                let listener = tokio::spawn(listen(
                    cluster.nodes.clone(),
                    self.keys.bell.clone(),
                    served.clone(),
                    bell.clone(),
                ));
                Some(Bell {
                    rung: bell,
                    listener: listener.abort_handle(),
                })
            }
            Target::Single(_) => None,
        };
        Ok(BlockingPop {
            conn: self.target.connect(poll + Duration::from_secs(2))?,
            keys: self.keys.clone(),
            scripts: self.scripts.clone(),
            bell,
            served,
            poll,
            known: Vec::new(),
            known_at: None,
        })
    }

    /// The channel a script rings when it makes a queue's ready lists non-empty: `{ns}:ready`
    /// on a cluster, none on one server (its workers wait in BZMPOP).
    fn bell(&self) -> &str {
        if self.is_cluster() { &self.keys.bell } else { "" }
    }

    /// Makes a job runnable: onto its ready list if due, else into the schedule.
    pub async fn enqueue(
        &self,
        id: JobId,
        queue: &str,
        priority: i16,
        run_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let job = Ready {
            id,
            queue: queue.to_owned(),
            priority,
            run_at,
        };
        self.enqueue_many(std::slice::from_ref(&job), now).await.map(|_| ())
    }

    /// Enqueues many jobs, in one round trip per queue (run side by side). Idempotent: an id
    /// already in Redis is not added twice (a ready one keeps its place; a scheduled one takes the
    /// new due time). Returns how many of the ids were not in Redis before.
    pub async fn enqueue_many(&self, jobs: &[Ready], now: DateTime<Utc>) -> Result<usize> {
        self.push(&entries_of(jobs, now), false).await
    }

    /// [`Queue::enqueue_many`] for the repairer: it also names every queue of `jobs`, in case a
    /// process died between pushing to a queue that had no key and naming it.
    pub async fn repush_many(&self, jobs: &[Ready], now: DateTime<Utc>) -> Result<usize> {
        self.push(&entries_of(jobs, now), true).await
    }

    /// Pushes entries through `lua/enqueue.lua`, one call per queue and thousand entries, then
    /// names the queues that had no key (or all, with `name_all`), then takes requeued ids out of
    /// the DLQ index. Returns how many were not in Redis before.
    async fn push(&self, entries: &[Entry<'_>], name_all: bool) -> Result<usize> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut by_queue: Vec<(&str, Vec<&Entry<'_>>)> = Vec::new();
        for entry in entries {
            match by_queue.iter_mut().find(|(queue, _)| *queue == entry.queue) {
                Some((_, group)) => group.push(entry),
                None => by_queue.push((entry.queue, vec![entry])),
            }
        }
        let calls = by_queue
            .iter()
            .flat_map(|(queue, group)| group.chunks(1000).map(move |chunk| (*queue, chunk)))
            .map(|(queue, chunk)| {
                let mut invocation = self.scripts.enqueue.prepare_invoke();
                for key in self.keys.of_queue(queue) {
                    invocation.key(key);
                }
                invocation.arg(self.bell()).arg(queue);
                for entry in chunk {
                    invocation
                        .arg(entry.id.to_string())
                        .arg(entry.level)
                        .arg(entry.score)
                        .arg(match entry.kind {
                            Kind::Ready | Kind::Requeued => "r",
                            Kind::Scheduled => "s",
                        });
                }
                let mut conn = self.conn.clone();
                async move {
                    let (added, was_empty): (usize, bool) = retry_once!(invocation.invoke_async(&mut conn))?;
                    Ok::<_, crate::error::Error>((queue, added, was_empty))
                }
            });
        let pushed = try_join_all(calls).await?;
        let mut names: Vec<&str> = Vec::new();
        for (queue, _, was_empty) in &pushed {
            if (name_all || *was_empty) && !names.contains(queue) {
                names.push(queue);
            }
        }
        self.name(&names).await?;
        let requeued: Vec<String> = entries
            .iter()
            .filter(|entry| matches!(entry.kind, Kind::Requeued))
            .map(|entry| entry.id.to_string())
            .collect();
        let mut conn = self.conn.clone();
        for chunk in requeued.chunks(1000) {
            let _: usize = retry_once!(conn.zrem(&self.keys.dlq, chunk))?;
        }
        Ok(pushed.iter().map(|(_, added, _)| added).sum())
    }

    /// Names queues in `{ns}:queues`, waking the workers of every queue for those new to it.
    async fn name(&self, queues: &[&str]) -> Result<()> {
        if queues.is_empty() {
            return Ok(());
        }
        let mut invocation = self.scripts.name.key(&self.keys.queues);
        invocation.key(&self.keys.wake).arg(self.bell());
        for queue in queues {
            invocation.arg(*queue);
        }
        let mut conn = self.conn.clone();
        let _: usize = retry_once!(invocation.invoke_async(&mut conn))?;
        Ok(())
    }

    /// Replaces the DLQ index with `dead` (oldest death first), atomically.
    pub async fn replace_dead(&self, dead: &[JobId]) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic().del(&self.keys.dlq).ignore();
        for chunk in dead.chunks(1000) {
            let scored: Vec<(usize, String)> = chunk.iter().enumerate().map(|(i, id)| (i, id.to_string())).collect();
            pipe.zadd_multiple(&self.keys.dlq, &scored).ignore();
        }
        let mut conn = self.conn.clone();
        let () = retry_once!(pipe.query_async(&mut conn))?;
        Ok(())
    }

    /// Puts a job at the head of its ready queue, so that it is taken next (a released lease, or
    /// an id popped but not claimed).
    pub async fn push_front(&self, id: JobId, queue: &str, priority: i16) -> Result<()> {
        self.push_front_many(queue, level(priority), &[id]).await
    }

    /// [`Queue::push_front`] for many ids of one queue and level, in one round trip.
    pub async fn push_front_many(&self, queue: &str, level: usize, ids: &[JobId]) -> Result<()> {
        let entries: Vec<Entry<'_>> = ids
            .iter()
            .map(|id| Entry {
                id: *id,
                queue,
                level,
                score: 0,
                kind: Kind::Ready,
            })
            .collect();
        self.push(&entries, false).await.map(|_| ())
    }

    /// Moves due scheduled ids to their ready lists, up to `limit` per queue, in each queue named
    /// in `{ns}:queues` (side by side); returns how many moved.
    pub async fn promote_due(&self, now: DateTime<Utc>, limit: usize) -> Result<usize> {
        let names = self.queue_names().await?;
        let moved = try_join_all(names.iter().map(|queue| {
            let mut invocation = self.scripts.promote.prepare_invoke();
            for key in self.keys.of_queue(queue) {
                invocation.key(key);
            }
            invocation
                .arg(now.timestamp_millis())
                .arg(limit)
                .arg(self.bell())
                .arg(queue);
            let mut conn = self.conn.clone();
            async move {
                let moved: usize = retry_once!(invocation.invoke_async(&mut conn))?;
                Ok::<_, crate::error::Error>(moved)
            }
        }))
        .await?;
        Ok(moved.into_iter().sum())
    }

    pub async fn add_dead(&self, id: JobId) -> Result<()> {
        let mut conn = self.conn.clone();
        let score = Utc::now().timestamp_millis();
        let _: usize = retry_once!(conn.zadd(&self.keys.dlq, id.to_string(), score))?;
        Ok(())
    }

    /// Takes ids out of the DLQ index (their jobs were deleted).
    pub async fn forget_dead(&self, ids: &[JobId]) -> Result<()> {
        let mut conn = self.conn.clone();
        for chunk in ids.chunks(1000) {
            let members: Vec<String> = chunk.iter().map(ToString::to_string).collect();
            let _: usize = retry_once!(conn.zrem(&self.keys.dlq, &members))?;
        }
        Ok(())
    }

    /// Onto its ready queue, then out of the DLQ index.
    pub async fn requeue(&self, id: JobId, queue: &str, priority: i16, now: DateTime<Utc>) -> Result<()> {
        let place = Place {
            id,
            queue: queue.to_owned(),
            priority,
        };
        self.requeue_many(std::slice::from_ref(&place), now).await
    }

    /// [`Queue::requeue`] for many jobs. An id is ready before it leaves the DLQ index, so a
    /// failure in between leaves it in both, never in neither (the index is only a view of
    /// Postgres, rebuilt with the keys).
    pub async fn requeue_many(&self, jobs: &[Place], now: DateTime<Utc>) -> Result<()> {
        let entries: Vec<Entry<'_>> = jobs
            .iter()
            .map(|job| Entry {
                id: job.id,
                queue: &job.queue,
                level: level(job.priority),
                score: now.timestamp_millis(),
                kind: Kind::Requeued,
            })
            .collect();
        self.push(&entries, false).await.map(|_| ())
    }

    /// Takes a job's id out of its ready queue and schedule (it was cancelled), atomically.
    /// Returns whether it was there.
    pub async fn withdraw(&self, id: JobId, queue: &str, priority: i16) -> Result<bool> {
        let mut conn = self.conn.clone();
        let level = level(priority);
        let mut invocation = self.scripts.withdraw.key(self.keys.schedule(queue));
        invocation
            .key(self.keys.ready(queue, level))
            .arg(id.to_string())
            .arg(format!("{level}:{id}"));
        let removed: i64 = retry_once!(invocation.invoke_async(&mut conn))?;
        Ok(removed > 0)
    }

    /// [`Queue::withdraw`] for many jobs, side by side (each atomic on its own).
    pub async fn withdraw_many(&self, jobs: &[Place]) -> Result<()> {
        for chunk in jobs.chunks(100) {
            try_join_all(chunk.iter().map(|job| self.withdraw(job.id, &job.queue, job.priority))).await?;
        }
        Ok(())
    }

    /// Round trip to Redis (connecting if need be); to every master of a cluster.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: String = retry_once!(redis::cmd("PING").query_async(&mut conn))?;
        Ok(())
    }

    /// True when our keys were built and not lost since.
    pub async fn built(&self) -> Result<bool> {
        let mut conn = self.conn.clone();
        Ok(retry_once!(conn.exists(&self.keys.built))?)
    }

    /// Marks the keys as built, once a rebuild has finished: a rebuild that failed part-way
    /// leaves the mark unset, and the next pass rebuilds again.
    pub async fn mark_built(&self, now: DateTime<Utc>) -> Result<()> {
        let mut conn = self.conn.clone();
        let () = retry_once!(conn.set(&self.keys.built, now.timestamp_millis()))?;
        Ok(())
    }

    /// Deletes the keys of the earlier layouts (every queue under `{ns}`); their ids are pushed
    /// again by the rebuild that calls this.
    pub async fn forget_legacy(&self) -> Result<()> {
        let names = self.queue_names().await?;
        let keys = self.keys.legacy(&names);
        let mut conn = self.conn.clone();
        for chunk in keys.chunks(500) {
            let _: usize = retry_once!(conn.del(chunk))?;
        }
        Ok(())
    }

    /// Whether a queue has any id, ready or scheduled.
    async fn has_keys(&self, queue: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let found: usize = retry_once!(conn.exists(self.keys.of_queue(queue)))?;
        Ok(found > 0)
    }

    /// Takes the queues with no id (ready or scheduled) out of `{ns}:queues`, so that neither the
    /// promoter nor the workers of every queue keep looking at queues long idle; the next push to
    /// one names it again. A queue is checked again once out: a push in between that found the
    /// queue with keys did not name it, so it is named again here. Returns how many were taken out.
    pub async fn forget_idle_queues(&self) -> Result<usize> {
        let names = self.queue_names().await?;
        let busy = try_join_all(names.iter().map(|queue| self.has_keys(queue))).await?;
        let mut forgotten = 0;
        for (queue, busy) in names.iter().zip(busy) {
            if busy {
                continue;
            }
            let mut conn = self.conn.clone();
            let _: usize = retry_once!(conn.zrem(&self.keys.wake, queue))?;
            let _: usize = retry_once!(conn.srem(&self.keys.queues, queue))?;
            if self.has_keys(queue).await? {
                self.name(&[queue]).await?;
            } else {
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    /// The names of the queues pushed to, sorted.
    pub async fn queue_names(&self) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        let mut names: Vec<String> = retry_once!(conn.smembers(&self.keys.queues))?;
        names.sort();
        Ok(names)
    }

    /// Sizes of the ready queues and schedules (summed) and of the DLQ index.
    pub async fn depths(&self) -> Result<Depths> {
        let names = self.queue_names().await?;
        let per_queue = try_join_all(names.iter().map(|queue| {
            let mut pipe = redis::pipe();
            for key in self.keys.of_queue(queue) {
                pipe.zcard(key);
            }
            let mut conn = self.conn.clone();
            async move {
                let counts: Vec<usize> = retry_once!(pipe.query_async(&mut conn))?;
                Ok::<_, crate::error::Error>(counts)
            }
        }))
        .await?;
        let mut conn = self.conn.clone();
        let dead: usize = retry_once!(conn.zcard(&self.keys.dlq))?;
        Ok(Depths {
            // of_queue: the schedule first, then the ready lists.
            ready: per_queue.iter().map(|counts| counts[1..].iter().sum::<usize>()).sum(),
            scheduled: per_queue.iter().map(|counts| counts[0]).sum(),
            dead,
        })
    }

    /// Every id on the ready queues, highest priority level first, then by queue name, each
    /// list in the order it is taken (for tests and inspection).
    pub async fn ready_ids(&self) -> Result<Vec<String>> {
        let names = self.queue_names().await?;
        let mut conn = self.conn.clone();
        let mut ids = Vec::new();
        for level in (0..LEVELS).rev() {
            for name in &names {
                let mut part: Vec<String> = retry_once!(conn.zrange(self.keys.ready(name, level), 0, -1))?;
                ids.append(&mut part);
            }
        }
        Ok(ids)
    }

    /// Every queue's scheduled jobs as `<level>:<id>:<queue>` ([`Keys::scheduled_member`]) with
    /// their due times in ms, soonest first (for tests and inspection).
    pub async fn scheduled(&self) -> Result<Vec<(String, i64)>> {
        let names = self.queue_names().await?;
        let mut conn = self.conn.clone();
        let mut all = Vec::new();
        for name in &names {
            let members: Vec<(String, i64)> = retry_once!(conn.zrange_withscores(self.keys.schedule(name), 0, -1))?;
            all.extend(
                members
                    .into_iter()
                    .map(|(member, due)| (format!("{member}:{name}"), due)),
            );
        }
        all.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        Ok(all)
    }

    /// Removes ids from a ready queue, as a Redis that lost them would (for tests and drills).
    pub async fn forget_ready(&self, queue: &str, priority: i16, ids: &[String]) -> Result<usize> {
        let mut conn = self.conn.clone();
        Ok(retry_once!(conn.zrem(self.keys.ready(queue, level(priority)), ids))?)
    }

    /// The DLQ index, newest death first.
    pub async fn dead_ids(&self) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        Ok(retry_once!(conn.zrevrange(&self.keys.dlq, 0, -1))?)
    }

    /// Deletes every key of this namespace (tests, and the "Redis lost everything" drill), never
    /// with FLUSHDB, so other namespaces on the same server are untouched: the keys of every
    /// queue named, and on a single server whatever else SCAN finds under `{ns}` and `{ns:q:`.
    pub async fn delete_namespace(&self) -> Result<usize> {
        let names = self.queue_names().await?;
        let mut keys: Vec<String> = vec![
            self.keys.queues.clone(),
            self.keys.wake.clone(),
            self.keys.dlq.clone(),
            self.keys.built.clone(),
        ];
        if let Conn::Single(conn) = &self.conn {
            let namespace = glob_escape(&self.keys.namespace);
            for pattern in [format!("{{{namespace}}}:*"), format!("{{{namespace}:q:*")] {
                let mut conn = conn.clone();
                let mut iter: redis::AsyncIter<'_, String> = conn.scan_match(&pattern).await?;
                while let Some(key) = futures::StreamExt::next(&mut iter).await {
                    keys.push(key?);
                }
            }
        }
        let mut deleted = 0;
        let mut conn = self.conn.clone();
        for queue in &names {
            let n: usize = retry_once!(conn.del(self.keys.of_queue(queue)))?;
            deleted += n;
        }
        keys.sort();
        keys.dedup();
        for chunk in keys.chunks(500) {
            let n: usize = retry_once!(conn.del(chunk))?;
            deleted += n;
        }
        Ok(deleted)
    }
}

fn entries_of(jobs: &[Ready], now: DateTime<Utc>) -> Vec<Entry<'_>> {
    jobs.iter()
        .map(|job| Entry {
            id: job.id,
            queue: &job.queue,
            level: level(job.priority),
            score: job.run_at.timestamp_millis(),
            kind: if job.run_at <= now {
                Kind::Ready
            } else {
                Kind::Scheduled
            },
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depths {
    pub ready: usize,
    pub scheduled: usize,
    pub dead: usize,
}

/// One id to push: onto its ready queue with a score (when it became ready; 0 goes first), or
/// into the schedule with its due time.
struct Entry<'q> {
    id: JobId,
    queue: &'q str,
    level: usize,
    score: i64,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Ready,
    /// Ready, and out of the DLQ index.
    Requeued,
    Scheduled,
}

/// How long a worker that serves every queue trusts the queue names it read: a queue named since
/// is woken through `{ns}:wake` by the push that named it (on a single server).
const KNOWN_FOR: Duration = Duration::from_secs(1);

/// On a cluster, the longest a worker whose queues are on several shards waits between two looks
/// at them when none had an id ready (a blocking pop waits on one shard only): the bell
/// (`{ns}:ready`) ends the wait sooner, and this bounds the wait when a ring was missed.
const CLUSTER_IDLE: Duration = Duration::from_millis(250);

/// A worker's subscription to `{ns}:ready`.
struct Bell {
    rung: std::sync::Arc<tokio::sync::Notify>,
    listener: tokio::task::AbortHandle,
}

impl Drop for Bell {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Listens on `channel` through the first of `nodes` that answers (the next when it fails),
/// and rings `bell` for every queue named there that `served` covers, and once at each
/// (re)subscription, for what was missed while not listening.
async fn listen(nodes: Vec<redis::Client>, channel: String, served: Served, bell: std::sync::Arc<tokio::sync::Notify>) {
    let mut next = 0;
    loop {
        let client = &nodes[next % nodes.len()];
        next += 1;
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(2), subscribed).await {
            Ok(Ok(mut pubsub)) => {
                bell.notify_one();
                let mut messages = pubsub.on_message();
                while let Some(message) = futures::StreamExt::next(&mut messages).await {
                    let queue: String = message.get_payload().unwrap_or_default();
                    if served.serves(&queue) {
                        bell.notify_one();
                    }
                }
                tracing::debug!("the subscription to {channel} ended; subscribing again");
            }
            Ok(Err(err)) => tracing::debug!(error = %err, "cannot subscribe to {channel}"),
            Err(_) => tracing::debug!("subscribing to {channel} timed out"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The worker's own connection for blocking pops.
pub struct BlockingPop {
    conn: Conn,
    keys: Keys,
    scripts: std::sync::Arc<Scripts>,
    /// On a cluster: rung when a queue served gets ready ids.
    bell: Option<Bell>,
    served: Served,
    poll: Duration,
    /// For [`Served::All`]: the queue names last read, and when.
    known: Vec<String>,
    known_at: Option<Instant>,
}

/// Ids taken from one ready queue, with its queue and priority level (to put back what is not
/// claimed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Popped {
    pub queue: String,
    pub level: usize,
    pub ids: Vec<JobId>,
}

impl BlockingPop {
    /// Waits up to the poll interval (or `at_most`, if shorter; at least 10 ms) for ids, then
    /// takes up to `count` from one ready list of the queues served: of the highest priority level
    /// that has any, and among its queues the first in this pop's order ([`Served`]); oldest
    /// first. On a single server (or a cluster, for one queue) that is one BZMPOP (Redis 7 or
    /// later); on a cluster, with the queues on several shards, a look at the highest level
    /// ready in each queue (side by side), then a ZMPOP from the queue chosen, again when the
    /// bell rings for a queue served, or after [`CLUSTER_IDLE`]. An id that does not parse is
    /// dropped.
    pub async fn pop(&mut self, count: usize, at_most: Option<Duration>) -> Result<Popped> {
        // A BZMPOP timeout of 0 would block for ever.
        let wait = at_most
            .map_or(self.poll, |most| self.poll.min(most))
            .max(Duration::from_millis(10));
        let until = Instant::now() + wait;
        let count = isize::try_from(count.max(1)).unwrap_or(isize::MAX);
        loop {
            let all = self.served == Served::All;
            if all && self.known_at.is_none_or(|at| at.elapsed() >= KNOWN_FOR) {
                let mut names: Vec<String> = retry_once!(self.conn.smembers(&self.keys.queues))?;
                names.sort();
                self.known = names;
                self.known_at = Some(Instant::now());
            }
            let order: Vec<String> = self.order().into_iter().map(str::to_owned).collect();
            if let Some(bell) = &self.bell
                && (all || order.len() > 1)
            {
                let rung = bell.rung.clone();
                if let Some(popped) = self.look_and_pop(&order, count).await? {
                    return Ok(popped);
                }
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Popped::default());
                }
                tokio::select! {
                    () = tokio::time::sleep(left.min(CLUSTER_IDLE)) => {}
                    () = rung.notified() => {
                        // Perhaps a queue new to this worker: read the names again.
                        self.known_at = None;
                    }
                }
                continue;
            }
            // One BZMPOP over every list served, highest level first, and among a level's lists
            // in this pop's order; `places[i]` is the queue and level of `keys[i]`.
            let mut keys = Vec::new();
            let mut places: Vec<(usize, usize)> = Vec::new();
            if all {
                // First: a queue named since the names were read is seen at once.
                keys.push(self.keys.wake.clone());
                places.push((usize::MAX, 0));
            }
            for level in (0..LEVELS).rev() {
                for (q, queue) in order.iter().enumerate() {
                    keys.push(self.keys.ready(queue, level));
                    places.push((q, level));
                }
            }
            let timeout = until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10))
                .as_secs_f64();
            let popped: Option<(String, Vec<(String, f64)>)> =
                retry_once!(self.conn.bzmpop_min(timeout, &keys, count))?;
            let Some((key, ids)) = popped else {
                return Ok(Popped::default());
            };
            match keys.iter().position(|k| *k == key).map(|i| places[i]) {
                Some((q, level)) if q < order.len() => {
                    return Ok(Popped {
                        queue: order[q].clone(),
                        level,
                        ids: parse_ids(&ids),
                    });
                }
                Some(_) => {
                    // The wake list: read the names again, and wait on.
                    self.known_at = None;
                    if Instant::now() < until {
                        continue;
                    }
                    return Ok(Popped::default());
                }
                None => {
                    tracing::warn!(key, "popped from a key that is no ready list; its ids are dropped");
                    return Ok(Popped::default());
                }
            }
        }
    }

    /// On a cluster: looks at the highest level ready in each queue of `order` (side by side, each
    /// on its shard), then pops from the queue with the highest, the first in `order` among
    /// equals. `None` when no queue had an id ready, or another worker took them in between.
    async fn look_and_pop(&mut self, order: &[String], count: isize) -> Result<Option<Popped>> {
        let tops = try_join_all(order.iter().map(|queue| {
            let mut invocation = self.scripts.top.prepare_invoke();
            for level in 0..LEVELS {
                invocation.key(self.keys.ready(queue, level));
            }
            let mut conn = self.conn.clone();
            async move {
                let top: i64 = retry_once!(invocation.invoke_async(&mut conn))?;
                Ok::<_, crate::error::Error>(top)
            }
        }))
        .await?;
        // The highest level; among equals, the first in order.
        let Some((q, _)) = tops
            .iter()
            .enumerate()
            .filter(|(_, top)| **top >= 0)
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
        else {
            return Ok(None);
        };
        let queue = &order[q];
        let keys = self.keys.ready_descending(queue);
        let popped: Option<(String, Vec<(String, f64)>)> = retry_once!(self.conn.zmpop_min(&keys, count))?;
        Ok(popped.and_then(|(key, ids)| {
            let level = LEVELS - 1 - keys.iter().position(|k| *k == key)?;
            Some(Popped {
                queue: queue.clone(),
                level,
                ids: parse_ids(&ids),
            })
        }))
    }

    /// The queues in the order this pop looks at them.
    fn order(&self) -> Vec<&str> {
        match &self.served {
            Served::All => {
                let mut names: Vec<&str> = self.known.iter().map(String::as_str).collect();
                rand::seq::SliceRandom::shuffle(names.as_mut_slice(), &mut rand::rng());
                names
            }
            Served::Ordered(queues) => queues.iter().map(String::as_str).collect(),
            Served::Weighted(queues) => weighted_order(queues, rand::random::<f64>),
        }
    }
}

fn parse_ids(ids: &[(String, f64)]) -> Vec<JobId> {
    ids.iter().filter_map(|(id, _)| id.parse().ok()).collect()
}

/// A random order of weighted queues in which each is first with a chance proportional to its
/// weight (Efraimidis and Spirakis: sort by `u^(1/w)`, `u` uniform in (0, 1), largest first).
fn weighted_order(queues: &[(String, u32)], mut uniform: impl FnMut() -> f64) -> Vec<&str> {
    let mut keyed: Vec<(f64, &str)> = queues
        .iter()
        .map(|(queue, weight)| {
            (
                uniform().max(f64::MIN_POSITIVE).powf(1.0 / f64::from(*weight)),
                queue.as_str(),
            )
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.into_iter().map(|(_, queue)| queue).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_parses_lists_and_weights() {
        assert_eq!("".parse::<Served>(), Ok(Served::All));
        assert_eq!(" * ".parse::<Served>(), Ok(Served::All));
        assert_eq!(
            "email, default".parse::<Served>(),
            Ok(Served::Ordered(vec!["email".into(), "default".into()]))
        );
        assert_eq!(
            "email:3,default".parse::<Served>(),
            Ok(Served::Weighted(vec![("email".into(), 3), ("default".into(), 1)]))
        );
        // Only a last part made of digits is a weight.
        assert_eq!(
            "team:a,b:2".parse::<Served>(),
            Ok(Served::Weighted(vec![("team:a".into(), 1), ("b".into(), 2)]))
        );
        assert!(
            "a,,b"
                .parse::<Served>()
                .expect_err("invalid")
                .contains("not a queue name")
        );
        assert!("a:0".parse::<Served>().expect_err("invalid").contains("1 to 1000"));
        assert!("a,a:2".parse::<Served>().expect_err("invalid").contains("twice"));
        let served: Served = "a:2,b".parse().expect("valid");
        assert!(served.serves("a") && served.serves("b") && !served.serves("c"));
        assert_eq!(served.names(), Some(vec!["a".into(), "b".into()]));
        assert_eq!(Served::All.names(), None);
    }

    #[test]
    fn a_queue_keys_share_its_own_hash_tag() {
        let keys = Keys::new("ns");
        assert_eq!(keys.ready("team:a", 7), "{ns:q:team:a}:ready:7");
        assert_eq!(keys.schedule("team:a"), "{ns:q:team:a}:scheduled");
        let of_queue = keys.of_queue("b");
        assert_eq!(of_queue.len(), LEVELS + 1);
        assert!(of_queue.iter().all(|key| key.starts_with("{ns:q:b}:")));
        assert_eq!(keys.ready_descending("b")[0], keys.ready("b", LEVELS - 1));
        assert!(keys.queues.starts_with("{ns}:") && keys.built.starts_with("{ns}:"));
        // The earlier layouts' keys are all under `{ns}`, never a queue's own.
        let legacy = keys.legacy(&["b".to_owned()]);
        assert!(legacy.contains(&"{ns}:ready:b:3".to_owned()));
        assert!(
            legacy
                .iter()
                .all(|key| key.starts_with("{ns}:") && !of_queue.contains(key))
        );
    }

    #[test]
    fn glob_escape_escapes_pattern_characters() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("jobq-test-1"), "jobq-test-1");
    }

    #[test]
    fn weighted_order_puts_each_queue_first_by_its_weight() {
        let queues = vec![("a".to_owned(), 3), ("b".to_owned(), 1)];
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        let mut first_a = 0;
        for _ in 0..10_000 {
            let order = weighted_order(&queues, || rand::Rng::random::<f64>(&mut rng));
            assert_eq!(order.len(), 2);
            if order[0] == "a" {
                first_a += 1;
            }
        }
        // P(a first) = 3 / 4.
        assert!((7_000..=8_000).contains(&first_a), "a first {first_a} times in 10000");
    }
}
