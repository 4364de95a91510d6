//! Helpers shared by the integration tests of this folder (each test file that needs them
//! says `mod support;`).
#![allow(dead_code)]

pub mod behaviour;
pub mod capture;
pub mod http;
pub mod metrics;
