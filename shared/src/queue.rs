//! The Redis fast path: ready lists per priority level, the schedule ZSET for delayed jobs and
//! retries, and the DLQ index. Redis only ever holds job ids; Postgres holds the jobs, and every key
//! here can be rebuilt from it (see [`crate::maintenance::repairer`]).
//!
//! Keys (all in one Redis Cluster hash slot thanks to the braces):
//! - `{ns}:ready:<level>`: LIST of ids, levels 0..=10 (`priority / 10`); popped highest level first.
//! - `{ns}:scheduled`: ZSET of `<level>:<id>`, scored by due time in ms.
//! - `{ns}:dlq`: LIST of dead job ids, newest first.
//! - `{ns}:epoch`: set once the keys were built; its absence means Redis lost our keys.

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

fn scheduled_member(id: JobId, priority: i16) -> String {
    format!("{}:{id}", level(priority))
}

#[derive(Clone)]
pub struct Queue {
    conn: ConnectionManager,
    client: redis::Client,
    keys: Keys,
    promote: std::sync::Arc<redis::Script>,
    requeue: std::sync::Arc<redis::Script>,
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
        self.enqueue_many(&[(id, priority, run_at)], now).await
    }

    /// Enqueues many jobs in one round trip: `(id, priority, run_at)` each.
    pub async fn enqueue_many(&self, jobs: &[(JobId, i16, DateTime<Utc>)], now: DateTime<Utc>) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        // One RPUSH per priority level and one ZADD, whatever the number of jobs.
        let mut ready: Vec<Vec<String>> = vec![Vec::new(); LEVELS];
        let mut scheduled: Vec<(i64, String)> = Vec::new();
        for (id, priority, run_at) in jobs {
            if *run_at <= now {
                ready[level(*priority)].push(id.to_string());
            } else {
                scheduled.push((run_at.timestamp_millis(), scheduled_member(*id, *priority)));
            }
        }
        let mut pipe = redis::pipe();
        for (key, ids) in self.keys.ready.iter().zip(&ready) {
            if !ids.is_empty() {
                pipe.rpush(key, ids).ignore();
            }
        }
        if !scheduled.is_empty() {
            pipe.zadd_multiple(&self.keys.scheduled, &scheduled).ignore();
        }
        let mut conn = self.conn.clone();
        let () = retry_once!(pipe.query_async(&mut conn))?;
        Ok(())
    }

    /// Replaces the DLQ list with `dead` (oldest death first), atomically.
    pub async fn replace_dead(&self, dead: &[JobId]) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic().del(&self.keys.dlq).ignore();
        for id in dead {
            pipe.lpush(&self.keys.dlq, id.to_string()).ignore();
        }
        let mut conn = self.conn.clone();
        let () = retry_once!(pipe.query_async(&mut conn))?;
        Ok(())
    }

    /// Puts a job at the head of its ready list, so that it is taken next (a released lease).
    pub async fn push_front(&self, id: JobId, priority: i16) -> Result<()> {
        let mut conn = self.conn.clone();
        let key = &self.keys.ready[level(priority)];
        let _: usize = retry_once!(conn.lpush(key, id.to_string()))?;
        Ok(())
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
        let _: usize = retry_once!(conn.lpush(&self.keys.dlq, id.to_string()))?;
        Ok(())
    }

    /// Off the DLQ list and onto the ready list, atomically.
    pub async fn requeue(&self, id: JobId, priority: i16) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut invocation = self.requeue.key(&self.keys.dlq);
        invocation.key(&self.keys.ready[level(priority)]).arg(id.to_string());
        let _: i64 = retry_once!(invocation.invoke_async(&mut conn))?;
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

    /// Marks the keys as built; true when this caller set it (and so should rebuild them).
    pub async fn claim_epoch(&self, now: DateTime<Utc>) -> Result<bool> {
        let mut conn = self.conn.clone();
        Ok(retry_once!(conn.set_nx(&self.keys.epoch, now.timestamp_millis()))?)
    }

    /// Lengths of the ready lists (summed), the schedule and the DLQ list.
    pub async fn depths(&self) -> Result<Depths> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for key in &self.keys.ready {
            pipe.llen(key);
        }
        pipe.zcard(&self.keys.scheduled).llen(&self.keys.dlq);
        let counts: Vec<usize> = retry_once!(pipe.query_async(&mut conn))?;
        let ready = counts[..LEVELS].iter().sum();
        Ok(Depths {
            ready,
            scheduled: counts[LEVELS],
            dead: counts[LEVELS + 1],
        })
    }

    /// Every id on the ready lists, highest level first (for tests and inspection).
    pub async fn ready_ids(&self) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        let mut ids = Vec::new();
        for key in self.keys.ready_by_priority() {
            let mut part: Vec<String> = retry_once!(conn.lrange(key, 0, -1))?;
            ids.append(&mut part);
        }
        Ok(ids)
    }

    /// The schedule's members with their due times in ms (for tests and inspection).
    pub async fn scheduled(&self) -> Result<Vec<(String, i64)>> {
        let mut conn = self.conn.clone();
        Ok(retry_once!(conn.zrange_withscores(&self.keys.scheduled, 0, -1))?)
    }

    pub async fn dead_ids(&self) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        Ok(retry_once!(conn.lrange(&self.keys.dlq, 0, -1))?)
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

/// The worker's own connection for blocking pops.
pub struct BlockingPop {
    conn: ConnectionManager,
    keys: Vec<String>,
    poll: Duration,
}

impl BlockingPop {
    /// Waits up to the poll interval for ids, then takes up to `count` from the highest non-empty
    /// priority level (one BLMPOP; Redis 7 or later). An id that does not parse is dropped.
    pub async fn pop(&mut self, count: usize) -> Result<Vec<JobId>> {
        let timeout = self.poll.as_secs_f64();
        let count = count.max(1);
        let popped: Option<(String, Vec<String>)> =
            retry_once!(
                self.conn
                    .blmpop(timeout, self.keys.len(), &self.keys, redis::Direction::Left, count)
            )?;
        Ok(popped
            .map(|(_, ids)| ids.iter().filter_map(|id| id.parse().ok()).collect())
            .unwrap_or_default())
    }
}
