//! The job state machine as a pure function. The store's SQL guards every write with the same
//! expected state, so the table here is the single description of what may happen to a job.

use crate::job::Status;

/// Something that happens to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A worker takes a runnable job under a lease.
    Claim,
    /// The lease holder records success.
    Complete,
    /// The lease holder (or the reaper, for an expired lease) records a failure with attempts left.
    Retry,
    /// The lease holder (or the reaper) records a permanent failure, or the last attempt failed.
    DeadLetter,
    /// The lease holder gives the job back unfinished (shutdown).
    Release,
    /// An operator puts a dead job back with a fresh attempt budget.
    Requeue,
    /// An operator withdraws a job that has not started.
    Cancel,
}

impl Event {
    pub const ALL: [Event; 7] = [
        Event::Claim,
        Event::Complete,
        Event::Retry,
        Event::DeadLetter,
        Event::Release,
        Event::Requeue,
        Event::Cancel,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} job cannot take the event {event:?}")]
pub struct InvalidTransition {
    pub from: Status,
    pub event: Event,
}

/// The status a job moves to when `event` happens to it in `from`, or why it cannot.
pub fn transition(from: Status, event: Event) -> Result<Status, InvalidTransition> {
    use Event::*;
    use Status::*;
    match (from, event) {
        (Pending, Claim) => Ok(InProgress),
        (Pending, Cancel) => Ok(Cancelled),
        (InProgress, Complete) => Ok(Completed),
        (InProgress, Retry) => Ok(Pending),
        (InProgress, Release) => Ok(Pending),
        (InProgress, DeadLetter) => Ok(Failed),
        (Failed, Requeue) => Ok(Pending),
        _ => Err(InvalidTransition { from, event }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event::*;
    use Status::*;

    #[test]
    fn every_pair_is_decided_as_the_table_says() {
        let allowed = [
            (Pending, Claim, InProgress),
            (Pending, Cancel, Cancelled),
            (InProgress, Complete, Completed),
            (InProgress, Retry, Pending),
            (InProgress, Release, Pending),
            (InProgress, DeadLetter, Failed),
            (Failed, Requeue, Pending),
        ];
        for from in Status::ALL {
            for event in Event::ALL {
                let expected = allowed.iter().find(|(f, e, _)| *f == from && *e == event).map(|t| t.2);
                match (transition(from, event), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from:?} + {event:?}"),
                    (Err(err), None) => assert_eq!(err, InvalidTransition { from, event }),
                    (got, want) => panic!("{from:?} + {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn finished_jobs_accept_nothing() {
        for event in Event::ALL {
            assert!(transition(Completed, event).is_err());
            assert!(transition(Cancelled, event).is_err());
        }
    }
}
