//! The state machine of a call, decided in one place (docs/contract.md, "What a request
//! meets"): a pure function from the claim's result and the request's fingerprint.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::fingerprint::Fingerprint;
use crate::engine::outcome::Outcome;
use crate::engine::record::{Acquired, ClaimOutcome, Payload, Record, RecordState};

/// What the executor does with a call once the store has answered its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The claim is ours: run the handler.
    Execute(Acquired),
    /// Answer with the stored payload again.
    Replay(Arc<Payload>),
    /// The key was first used with another request.
    Mismatch,
    /// The key's first request is still running.
    Conflict {
        /// Time left on the owner's lease.
        lease_remaining: Duration,
    },
    /// The scope is at its quota of live records: retry after the given time.
    OverQuota {
        /// When room is expected.
        retry_after: Duration,
    },
}

impl Decision {
    /// The metric outcome of this decision.
    pub fn outcome(&self) -> Outcome {
        match self {
            Decision::Execute(Acquired::New) => Outcome::Executed,
            Decision::Execute(Acquired::Abandoned | Acquired::FailedStorage) => Outcome::Recovered,
            Decision::Replay(_) => Outcome::Replayed,
            Decision::Mismatch => Outcome::Mismatch,
            Decision::Conflict { .. } => Outcome::Conflict,
            Decision::OverQuota { .. } => Outcome::QuotaExceeded,
        }
    }
}

/// Decides from a claim's result and the request's fingerprint.
pub fn decide(claimed: ClaimOutcome, fingerprint: &Fingerprint) -> Decision {
    match claimed {
        ClaimOutcome::Acquired(how) => Decision::Execute(how),
        ClaimOutcome::OverQuota { retry_after } => Decision::OverQuota { retry_after },
        ClaimOutcome::Existing(Record {
            fingerprint: first, ..
        }) if first != *fingerprint => Decision::Mismatch,
        ClaimOutcome::Existing(Record { state, .. }) => match state {
            RecordState::Completed(response) => Decision::Replay(response),
            RecordState::InProgress { lease_remaining } => Decision::Conflict { lease_remaining },
            // A store hands back a FAILED_STORAGE record of the same fingerprint only when a
            // racing duplicate took it over first: that duplicate is now in progress.
            RecordState::FailedStorage => Decision::Conflict {
                lease_remaining: Duration::from_secs(1),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::from_bytes([n; 32])
    }

    fn existing(n: u8, state: RecordState) -> ClaimOutcome {
        ClaimOutcome::Existing(Record {
            fingerprint: fp(n),
            state,
        })
    }

    #[test]
    fn acquired_claims_execute() {
        for how in [Acquired::New, Acquired::Abandoned, Acquired::FailedStorage] {
            assert_eq!(
                decide(ClaimOutcome::Acquired(how), &fp(1)),
                Decision::Execute(how)
            );
        }
        assert_eq!(
            Decision::Execute(Acquired::New).outcome(),
            Outcome::Executed
        );
        assert_eq!(
            Decision::Execute(Acquired::Abandoned).outcome(),
            Outcome::Recovered
        );
    }

    #[test]
    fn another_fingerprint_is_a_mismatch_in_any_state() {
        let done = Arc::new(Payload::Value(Bytes::new()));
        for state in [
            RecordState::Completed(done),
            RecordState::InProgress {
                lease_remaining: Duration::from_secs(3),
            },
            RecordState::FailedStorage,
        ] {
            assert_eq!(decide(existing(2, state), &fp(1)), Decision::Mismatch);
        }
    }

    #[test]
    fn completed_replays_and_in_progress_conflicts() {
        let done = Arc::new(Payload::Value(Bytes::from_static(b"x")));
        assert_eq!(
            decide(existing(1, RecordState::Completed(done.clone())), &fp(1)),
            Decision::Replay(done)
        );
        let live = RecordState::InProgress {
            lease_remaining: Duration::from_secs(7),
        };
        assert_eq!(
            decide(existing(1, live), &fp(1)),
            Decision::Conflict {
                lease_remaining: Duration::from_secs(7)
            }
        );
    }
}
