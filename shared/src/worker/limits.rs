//! Queues with a concurrency limit, as the worker sees them. The limit itself is enforced by the
//! claim, in Postgres; this is what keeps such a queue's jobs flowing: an id its limit held back
//! was dropped, so whoever frees one of its slots pushes its next pending jobs.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::{Duration, Instant};

use super::Worker;

/// How long the set of limited queues is trusted before it is read again. A queue limited since
/// is still served: the promoter pushes its jobs every 100 ms.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The set of limited queues last read, and the gate that lets one read run at a time.
#[derive(Default)]
pub(super) struct LimitedQueues {
    last: std::sync::Mutex<LastRead>,
    reading: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct LastRead {
    /// When a read was last tried, whether or not Postgres answered.
    tried_at: Option<Instant>,
    queues: Arc<HashSet<String>>,
}

/// The last set read, by age.
enum Last {
    /// Read at most [`FRESH_FOR`] ago.
    Fresh(Arc<HashSet<String>>),
    Stale(Arc<HashSet<String>>),
    /// No read was ever tried.
    None,
}

impl LimitedQueues {
    fn last(&self) -> Last {
        let last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match last.tried_at {
            None => Last::None,
            Some(at) if at.elapsed() < FRESH_FOR => Last::Fresh(last.queues.clone()),
            Some(_) => Last::Stale(last.queues.clone()),
        }
    }
}

impl Worker {
    /// The queues with a concurrency limit, read at most [`FRESH_FOR`] ago (or as last read, if
    /// Postgres does not answer). One read runs at a time: while it does, the others take the
    /// last set read, or wait for it if there is none. Every job that ends asks, so without the
    /// gate a thousand jobs ending just after the set went stale each sent a read, and took the
    /// pool's every connection from the claims and completions (a drain ran a quarter slower so).
    pub(super) async fn limited_queues(&self) -> Arc<HashSet<String>> {
        let limited = &self.inner.limited;
        let stale = match limited.last() {
            Last::Fresh(fresh) => return fresh,
            Last::Stale(stale) => Some(stale),
            Last::None => None,
        };
        let _reading = match (limited.reading.try_lock(), stale) {
            (Ok(reading), _) => reading,
            (Err(_), Some(stale)) => return stale,
            (Err(_), None) => {
                let reading = limited.reading.lock().await;
                if let Last::Fresh(read) = limited.last() {
                    return read;
                }
                reading
            }
        };
        let read = self.inner.store.limited_queues().await;
        let mut last = limited.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        last.tried_at = Some(Instant::now());
        match read {
            Ok(queues) => last.queues = Arc::new(queues),
            Err(err) => tracing::debug!(error = %err, "could not read the limited queues; using the last ones read"),
        }
        last.queues.clone()
    }

    /// After a job of `queue` ended here: if the queue is limited, pushes its next pending jobs,
    /// as many as it has free slots (ids already in Redis keep their place). One push per queue
    /// runs at a time in this process: jobs that end while it runs ask for one more after it,
    /// not one each, so a thousand jobs ending at once cost two queries, not a thousand.
    pub(super) async fn refill(&self, queue: &str) {
        if !self.limited_queues().await.contains(queue) {
            return;
        }
        {
            let mut refills = self.inner.refills.lock().expect("refills lock");
            if let Some(again) = refills.get_mut(queue) {
                *again = true;
                return;
            }
            refills.insert(queue.to_owned(), false);
        }
        loop {
            self.push_next(queue).await;
            let mut refills = self.inner.refills.lock().expect("refills lock");
            match refills.get_mut(queue) {
                Some(again) if *again => *again = false,
                _ => {
                    refills.remove(queue);
                    return;
                }
            }
        }
    }

    async fn push_next(&self, queue: &str) {
        let inner = &self.inner;
        let now = inner.store.now().await;
        let queues = [queue.to_owned()];
        match inner.store.limited_ready(now, Some(&queues)).await {
            Ok(ready) if ready.is_empty() => {}
            Ok(ready) => {
                if let Err(err) = inner.queue.enqueue_many(&ready, now).await {
                    tracing::warn!(queue, error = %err, "could not push a limited queue's next jobs; the promoter will");
                }
            }
            Err(err) => {
                tracing::warn!(queue, error = %err, "could not read a limited queue's next jobs; the promoter will push them")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bulk::Actor;
    use crate::handler::Registry;
    use crate::testing::TestEnv;

    /// Connections the pool holds (busy or idle): each read that ran alongside another took one.
    fn connections(env: &TestEnv) -> usize {
        env.store.pool().status().size
    }

    #[tokio::test]
    async fn jobs_ending_together_read_the_limited_queues_once() {
        let env = TestEnv::with(|c| c.pg_pool_size = 32).await;
        let change = crate::health::SettingsChange {
            concurrency: Some(Some(2)),
            ..Default::default()
        };
        let actor = Actor {
            principal: "test".into(),
            on_behalf_of: None,
        };
        env.jobs
            .set_queue("narrow", change, &actor)
            .await
            .expect("a limited queue");
        let worker = env.worker(Registry::new());
        let callers = 200;

        // None read yet: one reads, the others wait for it.
        let before = connections(&env);
        let sets = futures::future::join_all((0..callers).map(|_| worker.limited_queues())).await;
        assert!(
            sets.iter().all(|set| set.len() == 1 && set.contains("narrow")),
            "every caller sees the limited queue: {sets:?}"
        );
        let opened = connections(&env) - before;
        assert!(opened <= 1, "{callers} callers at once opened {opened} connections");

        // Stale: one reads again, the others go on with the last set read.
        tokio::time::sleep(FRESH_FOR + Duration::from_millis(100)).await;
        let before = connections(&env);
        let sets = futures::future::join_all((0..callers).map(|_| worker.limited_queues())).await;
        assert!(sets.iter().all(|set| set.contains("narrow")), "{sets:?}");
        let opened = connections(&env) - before;
        assert!(
            opened <= 1,
            "{callers} callers of a stale set opened {opened} connections"
        );
    }
}
