//! `payments`: a small axum service that shows idem at work (`docs/contract.md`, "7. The
//! example server"), and the target of the black-box tests.
//!
//! - `POST /payments` `{"amount": 1200, "currency": "EUR"}`, idempotent: 201 with the
//!   payment; `amount <= 0` is 422; currency `"ERR"` is 500 (not stored).
//! - `GET /payments`: every payment recorded, in order.
//! - `GET /healthz`, `GET /metrics` (Prometheus text).
//!
//! Settings come from the environment: see [`settings::Settings`].

pub mod app;
pub mod client;
pub mod grpc;
pub mod payments;
pub mod settings;

/// Every Rust code block of the README, compiled and run as a doctest.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
