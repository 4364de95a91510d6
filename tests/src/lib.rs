//! Shared test support for the workspace's integration tests.

pub mod bouncer;
pub mod conformance;
pub mod pg;
pub mod redis;
