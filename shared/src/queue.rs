//! The Redis fast path: a ready queue per priority level, the schedule for delayed jobs and
//! retries, and the DLQ index. Redis only ever holds job ids; Postgres holds the jobs, and every key
//! here can be rebuilt from it (see [`crate::maintenance::repairer`]).
//!
//! Keys (all in one Redis Cluster hash slot thanks to the braces):
//! - `{ns}:ready:<level>`: ZSET of ids, levels 0..=10 (`priority / 10`), scored by when the id
//!   became ready in ms (0 to go first); popped lowest score first, highest level first (BZMPOP).
//! - `{ns}:scheduled`: ZSET of `<level>:<id>`, scored by due time in ms.
//! - `{ns}:dlq`: ZSET of dead job ids, scored by when they died.
//! - `{ns}:epoch`: set once the keys were built; its absence means Redis lost our keys.
//!
//! Every structure is keyed by id, and a job's level never changes, so an id is at most once in
//! Redis, across the ready queues and the schedule, however often it is pushed: pushing is
//! idempotent by construction (`lua/enqueue.lua`), not by anyone's timing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::Result;
use crate::job::JobId;

/// Priority levels: one ready list each.
pub const LEVELS: usize = 11;

pub fn level(priority: i16) -> usize {
    (priority.clamp(0, 100) / 10) as usize
}

#[derive(Debug, Clone)]
pub struct Keys {
    pub ready: Vec<String>,
    pub scheduled: String,
    pub dlq: String,
    pub epoch: String,
    pub prefix: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Keys {
        let prefix = format!("{{{namespace}}}");
        Keys {
            ready: (0..LEVELS).map(|l| format!("{prefix}:ready:{l}")).collect(),
            scheduled: format!("{prefix}:scheduled"),
            dlq: format!("{prefix}:dlq"),
            epoch: format!("{prefix}:epoch"),
            prefix,
        }
    }

    /// Ready lists from the highest priority level down, the order BLPOP serves them in.
    pub fn ready_by_priority(&self) -> Vec<&str> {
        self.ready.iter().rev().map(String::as_str).collect()
    }
}

#[derive(Clone)]
pub struct Queue {
    conn: ConnectionManager,
    client: redis::Client,
    keys: Keys,
    promote: std::sync::Arc<redis::Script>,
    requeue: std::sync::Arc<redis::Script>,
    enqueue: std::sync::Arc<redis::Script>,
    withdraw: std::sync::Arc<redis::Script>,
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
            requeue: std::sync::Arc::new(redis::Script::new(include_str!("lua/requeue.lua"))),
            enqueue: std::sync::Arc::new(redis::Script::new(include_str!("lua/enqueue.lua"))),
            withdraw: std::sync::Arc::new(redis::Script::new(include_str!("lua/withdraw.lua"))),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A separate connection for blocking pops, which would stall every other command on a shared one.
    pub fn blocking(&self, poll: Duration) -> Result<BlockingPop> {
        let conn = ConnectionManager::new_lazy_with_config(
            self.client.clone(),
            manager_config(poll + Duration::from_secs(2)),
        )?;
        Ok(BlockingPop {
            conn,
            keys: self.keys.ready_by_priority().into_iter().map(str::to_owned).collect(),
            poll,
        })
    }

    /// Makes a job runnable: onto its ready list if due, else into the schedule.
    pub async fn enqueue(&self, id: JobId, priority: i16, run_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<()> {
        self.enqueue_many(&[(id, priority, run_at)], now).await.map(|_| ())
    }

    /// Enqueues many jobs in one round trip: `(id, priority, run_at)` each. Idempotent: an id
    /// already in Redis is not added twice (a ready one keeps its place; a scheduled one takes the
    /// new due time). Returns how many of the ids were not in Redis before.
    pub async fn enqueue_many(&self, jobs: &[(JobId, i16, DateTime<Utc>)], now: DateTime<Utc>) -> Result<usize> {
        let entries: Vec<Entry> = jobs
            .iter()
            .map(|(id, priority, run_at)| {
                if *run_at <= now {
                    Entry::ready(*id, level(*priority), run_at.timestamp_millis())
                } else {
                    Entry::scheduled(*id, level(*priority), run_at.timestamp_millis())
                }
            })
            .collect();
        self.push(&entries).await
    }

    /// Pushes entries through `lua/enqueue.lua`, in chunks that keep each script call short.
    /// Returns how many were not in Redis before.
    async fn push(&self, entries: &[Entry]) -> Result<usize> {
        let mut added = 0;
        for chunk in entries.chunks(1000) {
            let mut invocation = self.enqueue.key(&self.keys.scheduled);
            for key in &self.keys.ready {
                invocation.key(key);
            }
            for entry in chunk {
                invocation
                    .arg(entry.id.to_string())
                    .arg(entry.level)
                    .arg(entry.score)
                    .arg(if entry.ready { "r" } else { "s" });
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
    pub async fn push_front(&self, id: JobId, priority: i16) -> Result<()> {
        self.push_front_many(&[(id, level(priority))]).await
    }

    /// [`Queue::push_front`] for many `(id, level)` pairs, in one round trip.
    pub async fn push_front_many(&self, ids: &[(JobId, usize)]) -> Result<()> {
        let entries: Vec<Entry> = ids.iter().map(|(id, level)| Entry::ready(*id, *level, 0)).collect();
        self.push(&entries).await.map(|_| ())
    }

    /// Moves due scheduled ids to their ready lists; returns how many moved.
    pub async fn promote_due(&self, now: DateTime<Utc>, limit: usize) -> Result<usize> {
        let mut conn = self.conn.clone();
        let mut invocation = self.promote.key(&self.keys.scheduled);
        for key in &self.keys.ready {
            invocation.key(key);
        }
        invocation.arg(now.timestamp_millis()).arg(limit);
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

    /// Out of the DLQ index and onto the ready queue, atomically.
    pub async fn requeue(&self, id: JobId, priority: i16, now: DateTime<Utc>) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut invocation = self.requeue.key(&self.keys.dlq);
        invocation
            .key(&self.keys.ready[level(priority)])
            .arg(id.to_string())
            .arg(now.timestamp_millis());
        let _: i64 = retry_once!(invocation.invoke_async(&mut conn))?;
        Ok(())
    }

    /// Takes a job's id out of the ready queue and the schedule (it was cancelled), atomically.
    /// Returns whether it was there.
    pub async fn withdraw(&self, id: JobId, priority: i16) -> Result<bool> {
        let mut conn = self.conn.clone();
        let level = level(priority);
        let mut invocation = self.withdraw.key(&self.keys.scheduled);
        invocation.key(&self.keys.ready[level]).arg(id.to_string()).arg(level);
        let removed: i64 = retry_once!(invocation.invoke_async(&mut conn))?;
        Ok(removed > 0)
    }

    /// [`Queue::requeue`] for many `(id, priority)` pairs: out of the DLQ index and onto their
    /// ready lists, in one atomic round trip.
    pub async fn requeue_many(&self, jobs: &[(JobId, i16)], now: DateTime<Utc>) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let members: Vec<String> = jobs.iter().map(|(id, _)| id.to_string()).collect();
        pipe.zrem(&self.keys.dlq, &members).ignore();
        for (at, key) in self.keys.ready.iter().enumerate() {
            let ids: Vec<(i64, String)> = jobs
                .iter()
                .filter(|(_, priority)| level(*priority) == at)
                .map(|(id, _)| (now.timestamp_millis(), id.to_string()))
                .collect();
            if !ids.is_empty() {
                pipe.cmd("ZADD").arg(key).arg("NX").arg(&ids).ignore();
            }
        }
        let mut conn = self.conn.clone();
        let () = retry_once!(pipe.query_async(&mut conn))?;
        Ok(())
    }

    /// [`Queue::withdraw`] for many `(id, priority)` pairs, in one atomic round trip.
    pub async fn withdraw_many(&self, jobs: &[(JobId, i16)]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let scheduled: Vec<String> = jobs
            .iter()
            .map(|(id, priority)| format!("{}:{id}", level(*priority)))
            .collect();
        pipe.zrem(&self.keys.scheduled, &scheduled).ignore();
        for (at, key) in self.keys.ready.iter().enumerate() {
            let ids: Vec<String> = jobs
                .iter()
                .filter(|(_, priority)| level(*priority) == at)
                .map(|(id, _)| id.to_string())
                .collect();
            if !ids.is_empty() {
                pipe.zrem(key, &ids).ignore();
            }
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
    pub async fn epoch_exists(&self) -> Result<bool> {
        let mut conn = self.conn.clone();
        Ok(retry_once!(conn.exists(&self.keys.epoch))?)
    }

    /// Marks the keys as built, once a rebuild has finished: a rebuild that failed part-way
    /// leaves the mark unset, and the next pass rebuilds again.
    pub async fn mark_built(&self, now: DateTime<Utc>) -> Result<()> {
        let mut conn = self.conn.clone();
        let () = retry_once!(conn.set(&self.keys.epoch, now.timestamp_millis()))?;
        Ok(())
    }

    /// Sizes of the ready queues (summed), the schedule and the DLQ index.
    pub async fn depths(&self) -> Result<Depths> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for key in &self.keys.ready {
            pipe.zcard(key);
        }
        pipe.zcard(&self.keys.scheduled).zcard(&self.keys.dlq);
        let counts: Vec<usize> = retry_once!(pipe.query_async(&mut conn))?;
        let ready = counts[..LEVELS].iter().sum();
        Ok(Depths {
            ready,
            scheduled: counts[LEVELS],
            dead: counts[LEVELS + 1],
        })
    }

    /// Every id on the ready queues, in the order they would be taken (for tests and inspection).
    pub async fn ready_ids(&self) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        let mut ids = Vec::new();
        for key in self.keys.ready_by_priority() {
            let mut part: Vec<String> = retry_once!(conn.zrange(key, 0, -1))?;
            ids.append(&mut part);
        }
        Ok(ids)
    }

    /// The schedule's members with their due times in ms (for tests and inspection).
    pub async fn scheduled(&self) -> Result<Vec<(String, i64)>> {
        let mut conn = self.conn.clone();
        Ok(retry_once!(conn.zrange_withscores(&self.keys.scheduled, 0, -1))?)
    }

    /// Removes ids from a ready queue, as a Redis that lost them would (for tests and drills).
    pub async fn forget_ready(&self, ids: &[String], priority: i16) -> Result<usize> {
        let mut conn = self.conn.clone();
        Ok(retry_once!(conn.zrem(&self.keys.ready[level(priority)], ids))?)
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

/// One id to push: onto a ready queue with a score (when it became ready; 0 goes first), or into
/// the schedule with its due time.
struct Entry {
    id: JobId,
    level: usize,
    score: i64,
    ready: bool,
}

impl Entry {
    fn ready(id: JobId, level: usize, score: i64) -> Entry {
        Entry {
            id,
            level,
            score,
            ready: true,
        }
    }

    fn scheduled(id: JobId, level: usize, due_ms: i64) -> Entry {
        Entry {
            id,
            level,
            score: due_ms,
            ready: false,
        }
    }
}

/// The worker's own connection for blocking pops.
pub struct BlockingPop {
    conn: ConnectionManager,
    keys: Vec<String>,
    poll: Duration,
}

/// Ids taken from one ready queue, and its priority level (to put back what is not claimed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Popped {
    pub level: usize,
    pub ids: Vec<JobId>,
}

impl BlockingPop {
    /// Waits up to the poll interval (or `at_most`, if shorter; at least 10 ms) for ids, then
    /// takes up to `count` from the highest non-empty priority level, oldest first (one BZMPOP;
    /// Redis 7 or later). An id that does not parse is dropped.
    pub async fn pop(&mut self, count: usize, at_most: Option<Duration>) -> Result<Popped> {
        // A BZMPOP timeout of 0 would block for ever.
        let wait = at_most
            .map_or(self.poll, |most| self.poll.min(most))
            .max(Duration::from_millis(10));
        let timeout = wait.as_secs_f64();
        let count = isize::try_from(count.max(1)).unwrap_or(isize::MAX);
        let popped: Option<(String, Vec<(String, f64)>)> =
            retry_once!(self.conn.bzmpop_min(timeout, &self.keys, count))?;
        Ok(popped
            .map(|(key, ids)| Popped {
                level: key.rsplit(':').next().and_then(|l| l.parse().ok()).unwrap_or(0),
                ids: ids.iter().filter_map(|(id, _)| id.parse().ok()).collect(),
            })
            .unwrap_or_default())
    }
}
