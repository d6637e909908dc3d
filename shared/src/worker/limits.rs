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

#[derive(Default)]
pub(super) struct LimitedQueues {
    read_at: Option<Instant>,
    queues: Arc<HashSet<String>>,
}

impl Worker {
    /// The queues with a concurrency limit, read at most [`FRESH_FOR`] ago (or as last read, if
    /// Postgres does not answer).
    pub(super) async fn limited_queues(&self) -> Arc<HashSet<String>> {
        let inner = &self.inner;
        {
            let cached = inner.limited.lock().expect("limited queues lock");
            if cached.read_at.is_some_and(|at| at.elapsed() < FRESH_FOR) {
                return cached.queues.clone();
            }
        }
        let read = inner.store.limited_queues().await;
        let mut cached = inner.limited.lock().expect("limited queues lock");
        match read {
            Ok(queues) => {
                cached.queues = Arc::new(queues);
                cached.read_at = Some(Instant::now());
            }
            Err(err) => tracing::debug!(error = %err, "could not read the limited queues; using the last ones read"),
        }
        cached.queues.clone()
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
