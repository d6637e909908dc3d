//! The Redis fast path: ready queues per queue and priority level, the schedule for delayed jobs
//! and retries, and the DLQ index. Redis only ever holds job ids; Postgres holds the jobs, and
//! every key here can be rebuilt from it (see [`crate::maintenance::repairer`]).
//!
//! Keys (all in one Redis Cluster hash slot thanks to the braces):
//! - `{ns}:ready:<queue>:<level>`: ZSET of ids, levels 0..=10 (`priority / 10`), scored by when
//!   the id became ready in ms (0 to go first); popped lowest score first, highest level first
//!   (BZMPOP), over the queues a worker serves ([`Served`]).
//! - `{ns}:scheduled`: ZSET of `<level>:<id>:<queue>`, scored by due time in ms.
//! - `{ns}:queues`: SET of the queue names pushed to, for the workers that serve every queue.
//! - `{ns}:wake`: ZSET of queue names pushed to for the first time; popping it tells a worker that
//!   serves every queue to read `{ns}:queues` again at once.
//! - `{ns}:dlq`: ZSET of dead job ids, scored by when they died.
//! - `{ns}:built`: set once the keys were built; its absence means Redis lost our keys.
//!
//! Every structure is keyed by id, and a job's queue and level never change, so an id is at most
//! once in Redis, across the ready queues and the schedule, however often it is pushed: pushing is
//! idempotent by construction (`lua/enqueue.lua`), not by anyone's timing.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
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
    pub scheduled: String,
    pub queues: String,
    pub wake: String,
    pub dlq: String,
    pub built: String,
    /// `{ns}`: every key starts with it.
    pub prefix: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Keys {
        let prefix = format!("{{{namespace}}}");
        Keys {
            scheduled: format!("{prefix}:scheduled"),
            queues: format!("{prefix}:queues"),
            wake: format!("{prefix}:wake"),
            dlq: format!("{prefix}:dlq"),
            built: format!("{prefix}:built"),
            prefix,
        }
    }

    /// The ready list of a queue's priority level.
    pub fn ready(&self, queue: &str, level: usize) -> String {
        format!("{}:ready:{queue}:{level}", self.prefix)
    }

    /// The queue and level of a ready list's key (the level is after the last colon; a queue name
    /// may hold colons).
    fn parse_ready<'k>(&self, key: &'k str) -> Option<(&'k str, usize)> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix(":ready:")?;
        let (queue, level) = rest.rsplit_once(':')?;
        Some((queue, level.parse().ok().filter(|l| *l < LEVELS)?))
    }

    /// A job's member in the schedule.
    pub fn scheduled_member(id: JobId, queue: &str, level: usize) -> String {
        format!("{level}:{id}:{queue}")
    }

    /// Keys of the layout before queues had their own ready lists (`{ns}:ready:<level>` and
    /// `{ns}:epoch`), deleted when the keys are rebuilt.
    fn legacy(&self) -> Vec<String> {
        let mut keys: Vec<String> = (0..LEVELS).map(|l| format!("{}:ready:{l}", self.prefix)).collect();
        keys.push(format!("{}:epoch", self.prefix));
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

#[derive(Clone)]
pub struct Queue {
    conn: ConnectionManager,
    client: redis::Client,
    keys: Keys,
    promote: std::sync::Arc<redis::Script>,
    enqueue: std::sync::Arc<redis::Script>,
    withdraw: std::sync::Arc<redis::Script>,
    forget_idle: std::sync::Arc<redis::Script>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("keys", &self.keys.prefix).finish()
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
        let client = match ca_pem {
            Some(root_cert) if url.starts_with("rediss://") => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )?,
            _ => redis::Client::open(url)?,
        };
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config(Duration::from_secs(2)))?;
        Ok(Queue {
            conn,
            client,
            keys: Keys::new(namespace),
            promote: std::sync::Arc::new(redis::Script::new(include_str!("lua/promote.lua"))),
            enqueue: std::sync::Arc::new(redis::Script::new(include_str!("lua/enqueue.lua"))),
            withdraw: std::sync::Arc::new(redis::Script::new(include_str!("lua/withdraw.lua"))),
            forget_idle: std::sync::Arc::new(redis::Script::new(include_str!("lua/forget_idle.lua"))),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A separate connection for blocking pops of the queues `served`, which would stall every
    /// other command on a shared one.
    pub fn blocking(&self, poll: Duration, served: Served) -> Result<BlockingPop> {
        let conn = ConnectionManager::new_lazy_with_config(
            self.client.clone(),
            manager_config(poll + Duration::from_secs(2)),
        )?;
        Ok(BlockingPop {
            conn,
            keys: self.keys.clone(),
            served,
            poll,
            known: Vec::new(),
            known_at: None,
        })
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

    /// Enqueues many jobs in one round trip. Idempotent: an id already in Redis is not added
    /// twice (a ready one keeps its place; a scheduled one takes the new due time). Returns how
    /// many of the ids were not in Redis before.
    pub async fn enqueue_many(&self, jobs: &[Ready], now: DateTime<Utc>) -> Result<usize> {
        let entries: Vec<Entry<'_>> = jobs
            .iter()
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
            .collect();
        self.push(&entries).await
    }

    /// Pushes entries through `lua/enqueue.lua`, in chunks that keep each script call short.
    /// Returns how many were not in Redis before.
    async fn push(&self, entries: &[Entry<'_>]) -> Result<usize> {
        let mut added = 0;
        for chunk in entries.chunks(1000) {
            let mut invocation = self.enqueue.key(&self.keys.scheduled);
            invocation
                .key(&self.keys.queues)
                .key(&self.keys.wake)
                .key(&self.keys.dlq)
                .arg(&self.keys.prefix);
            for entry in chunk {
                invocation
                    .arg(entry.id.to_string())
                    .arg(entry.queue)
                    .arg(entry.level)
                    .arg(entry.score)
                    .arg(match entry.kind {
                        Kind::Ready => "r",
                        Kind::Requeued => "q",
                        Kind::Scheduled => "s",
                    });
            }
            let mut conn = self.conn.clone();
            let new: usize = retry_once!(invocation.invoke_async(&mut conn))?;
            added += new;
        }
        Ok(added)
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
        self.push(&entries).await.map(|_| ())
    }

    /// Moves due scheduled ids to their ready lists; returns how many moved.
    pub async fn promote_due(&self, now: DateTime<Utc>, limit: usize) -> Result<usize> {
        let mut conn = self.conn.clone();
        let mut invocation = self.promote.key(&self.keys.scheduled);
        invocation
            .key(&self.keys.queues)
            .key(&self.keys.wake)
            .arg(now.timestamp_millis())
            .arg(limit)
            .arg(&self.keys.prefix);
        let moved: usize = retry_once!(invocation.invoke_async(&mut conn))?;
        Ok(moved)
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

    /// Out of the DLQ index and onto its ready queue, atomically.
    pub async fn requeue(&self, id: JobId, queue: &str, priority: i16, now: DateTime<Utc>) -> Result<()> {
        let place = Place {
            id,
            queue: queue.to_owned(),
            priority,
        };
        self.requeue_many(std::slice::from_ref(&place), now).await
    }

    /// [`Queue::requeue`] for many jobs, in one atomic round trip per thousand.
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
        self.push(&entries).await.map(|_| ())
    }

    /// Takes a job's id out of the ready queue and the schedule (it was cancelled), atomically.
    /// Returns whether it was there.
    pub async fn withdraw(&self, id: JobId, queue: &str, priority: i16) -> Result<bool> {
        let mut conn = self.conn.clone();
        let level = level(priority);
        let mut invocation = self.withdraw.key(&self.keys.scheduled);
        invocation
            .key(self.keys.ready(queue, level))
            .arg(id.to_string())
            .arg(Keys::scheduled_member(id, queue, level));
        let removed: i64 = retry_once!(invocation.invoke_async(&mut conn))?;
        Ok(removed > 0)
    }

    /// [`Queue::withdraw`] for many jobs, in one atomic round trip.
    pub async fn withdraw_many(&self, jobs: &[Place]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let scheduled: Vec<String> = jobs
            .iter()
            .map(|job| Keys::scheduled_member(job.id, &job.queue, level(job.priority)))
            .collect();
        pipe.zrem(&self.keys.scheduled, &scheduled).ignore();
        for job in jobs {
            pipe.zrem(self.keys.ready(&job.queue, level(job.priority)), job.id.to_string())
                .ignore();
        }
        let mut conn = self.conn.clone();
        let () = retry_once!(pipe.query_async(&mut conn))?;
        Ok(())
    }

    /// Round trip to Redis (connecting if need be).
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

    /// Deletes the keys of the layout before queues had their own ready lists; their ids are
    /// pushed again by the rebuild that calls this.
    pub async fn forget_legacy(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: usize = retry_once!(conn.del(self.keys.legacy()))?;
        Ok(())
    }

    /// Takes the queues with no id ready out of `{ns}:queues`, so that workers of every queue
    /// stop waiting on their lists (`lua/forget_idle.lua`); the next push to one names it again.
    /// Returns how many were taken out.
    pub async fn forget_idle_queues(&self) -> Result<usize> {
        let mut conn = self.conn.clone();
        let mut invocation = self.forget_idle.key(&self.keys.queues);
        invocation.arg(&self.keys.prefix).arg(LEVELS);
        Ok(retry_once!(invocation.invoke_async(&mut conn))?)
    }

    /// The names of the queues pushed to, sorted.
    pub async fn queue_names(&self) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        let mut names: Vec<String> = retry_once!(conn.smembers(&self.keys.queues))?;
        names.sort();
        Ok(names)
    }

    /// Sizes of the ready queues (summed), the schedule and the DLQ index.
    pub async fn depths(&self) -> Result<Depths> {
        let names = self.queue_names().await?;
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for name in &names {
            for level in 0..LEVELS {
                pipe.zcard(self.keys.ready(name, level));
            }
        }
        pipe.zcard(&self.keys.scheduled).zcard(&self.keys.dlq);
        let counts: Vec<usize> = retry_once!(pipe.query_async(&mut conn))?;
        let (ready, rest) = counts.split_at(counts.len() - 2);
        Ok(Depths {
            ready: ready.iter().sum(),
            scheduled: rest[0],
            dead: rest[1],
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

    /// The schedule's members with their due times in ms (for tests and inspection).
    pub async fn scheduled(&self) -> Result<Vec<(String, i64)>> {
        let mut conn = self.conn.clone();
        Ok(retry_once!(conn.zrange_withscores(&self.keys.scheduled, 0, -1))?)
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

    /// Deletes every key of this namespace (tests, and the "Redis lost everything" drill). Uses SCAN,
    /// never FLUSHDB, so other namespaces on the same server are untouched.
    pub async fn delete_namespace(&self) -> Result<usize> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:*", self.keys.prefix);
        let keys: Vec<String> = {
            let mut iter: redis::AsyncIter<'_, String> = conn.scan_match(&pattern).await?;
            let mut keys = Vec::new();
            while let Some(key) = futures::StreamExt::next(&mut iter).await {
                keys.push(key?);
            }
            keys
        };
        if keys.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        let deleted: usize = conn.del(&keys).await?;
        Ok(deleted)
    }
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
/// is woken through `{ns}:wake` by the push that named it.
const KNOWN_FOR: Duration = Duration::from_secs(1);

/// The worker's own connection for blocking pops.
pub struct BlockingPop {
    conn: ConnectionManager,
    keys: Keys,
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
    /// first (one BZMPOP; Redis 7 or later). An id that does not parse is dropped.
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
            let mut keys = Vec::new();
            if all {
                // First: a queue named since the names were read is seen at once.
                keys.push(self.keys.wake.clone());
            }
            let order = self.order();
            for level in (0..LEVELS).rev() {
                for queue in &order {
                    keys.push(self.keys.ready(queue, level));
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
            if key == self.keys.wake {
                self.known_at = None;
                if Instant::now() < until {
                    continue;
                }
                return Ok(Popped::default());
            }
            let Some((queue, level)) = self.keys.parse_ready(&key) else {
                tracing::warn!(key, "popped from a key that is no ready list; its ids are dropped");
                return Ok(Popped::default());
            };
            return Ok(Popped {
                queue: queue.to_owned(),
                level,
                ids: ids.iter().filter_map(|(id, _)| id.parse().ok()).collect(),
            });
        }
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
    fn ready_keys_name_their_queue_and_level() {
        let keys = Keys::new("ns");
        let key = keys.ready("team:a", 7);
        assert_eq!(key, "{ns}:ready:team:a:7");
        assert_eq!(keys.parse_ready(&key), Some(("team:a", 7)));
        assert_eq!(keys.parse_ready("{ns}:ready:x:11"), None);
        assert_eq!(keys.parse_ready("{ns}:wake"), None);
        assert!(!keys.legacy().contains(&keys.ready("0", 0)));
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
