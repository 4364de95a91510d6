//! The HTTP adapter: buffering and fingerprinting a request, capturing a response into a
//! payload and replaying it, problem+json answers, the hang-up detach, and the tower layer.
//! It asks the core's executor what to do and answers in HTTP.

pub(crate) mod handler;
#[cfg(feature = "tower")]
pub(crate) mod layer;
pub(crate) mod problem;
pub(crate) mod request;
pub(crate) mod response;
