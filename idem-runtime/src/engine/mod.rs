//! The protocol-neutral core: keys, fingerprints, records and payloads, the store interface
//! and handle, leases, persistence, and the one executor that every adapter calls.
//!
//! Nothing here knows HTTP or any other protocol: an adapter (`http`, `function`) turns its
//! protocol into a claim and a piece of work, and the executor's verdict back into an answer.

#[cfg(any(feature = "axum", feature = "tonic"))]
pub(crate) mod admit;
pub(crate) mod backoff;
pub(crate) mod config;
pub(crate) mod decide;
#[cfg(any(feature = "axum", feature = "tonic"))]
pub(crate) mod detach;
pub(crate) mod execute;
pub(crate) mod fingerprint;
pub(crate) mod handle;
pub(crate) mod inspect;
pub(crate) mod job;
pub(crate) mod key;
pub(crate) mod lease;
pub mod metrics;
pub(crate) mod outcome;
pub(crate) mod persist;
pub(crate) mod purge;
pub(crate) mod record;
pub(crate) mod scope;
pub(crate) mod store;
pub(crate) mod timed;
pub(crate) mod wait;
