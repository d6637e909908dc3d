//! The database's clock, read on any host. Leases, due times and eligibility are all decided on it,
//! so a host whose clock is a minute off schedules, claims, promotes and reaps exactly as the others.
//!
//! Lease expiries are set and checked by `now()` inside their statements. The times a caller passes
//! in (a new job's due time, "due by now" for a claim or for the promoter, the time an outcome is
//! recorded) come from [`crate::Store::now`]: this host's clock corrected by its offset from
//! Postgres' `clock_timestamp()`, measured at the midpoint of one round trip and measured again every
//! [`RESYNC`]. The error is at most half that round trip, plus what the host's clock drifts in
//! [`RESYNC`] (a few microseconds for a clock under NTP; a stepped clock is caught at the next sync).

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// How often the offset is measured again.
pub const RESYNC: Duration = Duration::from_secs(30);
/// How soon a failed or imprecise measurement is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// A round trip longer than this measures too loosely to keep (half of it is the error).
const MAX_ROUND_TRIP: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct DbClock {
    /// Database clock minus this host's, in microseconds.
    offset_us: AtomicI64,
    /// Whether an offset has been measured yet.
    synced: std::sync::atomic::AtomicBool,
    /// When to measure next; `None` until the first measurement is due (at once).
    next_sync: Mutex<Option<Instant>>,
    /// One measurement at a time; callers that find it taken use the offset they have.
    syncing: tokio::sync::Mutex<()>,
    /// How far this host's clock is taken to be off, for tests that skew one process.
    host_skew_us: i64,
}

impl DbClock {
    pub(crate) fn new(host_skew: chrono::Duration) -> DbClock {
        DbClock {
            offset_us: AtomicI64::new(0),
            synced: std::sync::atomic::AtomicBool::new(false),
            next_sync: Mutex::new(None),
            syncing: tokio::sync::Mutex::new(()),
            host_skew_us: host_skew.num_microseconds().unwrap_or(0),
        }
    }

    /// This host's clock (skewed, in tests that ask for it).
    pub(crate) fn host_now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::microseconds(self.host_skew_us)
    }

    /// The database's time now, by the last measured offset.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.host_now() + chrono::Duration::microseconds(self.offset_us.load(Ordering::Relaxed))
    }

    /// Whether the offset has been measured at least once.
    pub(crate) fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    pub(crate) fn sync_due(&self) -> bool {
        let next = self.next_sync.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        next.is_none_or(|at| Instant::now() >= at)
    }

    pub(crate) fn try_begin_sync(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        self.syncing.try_lock().ok()
    }

    /// Records a measurement: `db` read between `sent` and `received` on this host's clock.
    /// Returns the offset kept, or `None` when the round trip was too long to trust.
    pub(crate) fn record(
        &self,
        sent: DateTime<Utc>,
        db: DateTime<Utc>,
        received: DateTime<Utc>,
        round_trip: Duration,
    ) -> Option<chrono::Duration> {
        if round_trip > MAX_ROUND_TRIP {
            self.retry_soon();
            return None;
        }
        let midpoint = sent + (received - sent) / 2;
        let offset = db - midpoint;
        self.offset_us
            .store(offset.num_microseconds().unwrap_or(0), Ordering::Relaxed);
        self.synced.store(true, Ordering::Relaxed);
        *self.next_sync.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now() + RESYNC);
        Some(offset)
    }

    pub(crate) fn retry_soon(&self) {
        *self.next_sync.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now() + RETRY);
    }

    /// The offset in use: database clock minus this host's.
    #[cfg(test)]
    pub(crate) fn offset(&self) -> chrono::Duration {
        chrono::Duration::microseconds(self.offset_us.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_is_taken_at_the_midpoint_of_the_round_trip() {
        let clock = DbClock::new(chrono::Duration::zero());
        let sent = DateTime::from_timestamp(1_000, 0).expect("a valid time");
        let received = sent + chrono::Duration::milliseconds(4);
        let db = sent + chrono::Duration::seconds(60) + chrono::Duration::milliseconds(2);
        let kept = clock.record(sent, db, received, Duration::from_millis(4));
        assert_eq!(kept, Some(chrono::Duration::seconds(60)));
        assert_eq!(clock.offset(), chrono::Duration::seconds(60));
        assert!(!clock.sync_due());
    }

    #[test]
    fn a_slow_round_trip_is_not_trusted() {
        let clock = DbClock::new(chrono::Duration::zero());
        let sent = DateTime::from_timestamp(1_000, 0).expect("a valid time");
        let received = sent + chrono::Duration::seconds(2);
        assert_eq!(clock.record(sent, sent, received, Duration::from_secs(2)), None);
        assert_eq!(clock.offset(), chrono::Duration::zero());
    }

    #[test]
    fn skew_moves_the_host_clock_not_the_database_time() {
        let clock = DbClock::new(chrono::Duration::seconds(-40));
        let host = clock.host_now();
        assert!(
            (Utc::now() - host - chrono::Duration::seconds(40))
                .num_milliseconds()
                .abs()
                < 1_000
        );
        // Measured against a database whose clock is the real one, the offset undoes the skew.
        let now = Utc::now();
        clock.record(host, now, host, Duration::ZERO);
        assert!((clock.now() - Utc::now()).num_milliseconds().abs() < 1_000);
    }
}
