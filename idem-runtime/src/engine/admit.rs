//! Admitting a request to the executor, for every adapter that reads its key from the request
//! (HTTP headers, gRPC metadata): a missing or invalid key is refused before any store access
//! and counted, a missing key of an `optional` handler runs unguarded, a request the store's
//! scope rule names no caller for is refused, and any other request becomes a [`Job`] in its
//! span (docs/contract.md, "What a request meets", "Scopes").

use std::sync::Arc;

use http::request::Parts;

use crate::engine::config::Config;
use crate::engine::fingerprint::Fingerprint;
use crate::engine::handle::Store;
use crate::engine::job::Job;
use crate::engine::key::{IdempotencyKey, KeyError};
use crate::engine::metrics;
use crate::engine::outcome::Outcome;
use crate::engine::record::Target;
use crate::engine::scope::NoScope;

/// What a request's key and scope make of it.
pub(crate) enum Admission {
    /// No key, and the handler's key is optional: it runs with no idempotency at all.
    Unguarded,
    /// Refused before any store access (counted already): answer the outcome in the protocol,
    /// with a detail for an invalid key.
    Refused(Outcome, Option<String>),
    /// An idempotent call to run, in its span.
    Admitted(Arc<Job>, tracing::Span),
}

/// Checks the key, then the scope (`parts`: the request, for a store's scope rule), and
/// prepares the claim; `fingerprint` is computed, from the handler's name, only for a request
/// that is admitted.
pub(crate) fn admit(
    store: &Store,
    config: &Config,
    target: Target,
    key: Result<IdempotencyKey, KeyError>,
    parts: Option<&Parts>,
    fingerprint: impl FnOnce(&str) -> Fingerprint,
) -> Admission {
    let Target { handler, scope } = target;
    let key = match key {
        Ok(key) => key,
        Err(KeyError::Missing) if config.optional_value() => return Admission::Unguarded,
        Err(error) => {
            let outcome = Outcome::from(&error);
            metrics::outcome(&handler, outcome);
            let detail = (!error.is_missing()).then(|| error.to_string());
            return Admission::Refused(outcome, detail);
        }
    };
    let scope = match store.scope_for(scope, parts, &handler) {
        Ok(scope) => scope,
        Err(NoScope) => {
            tracing::debug!(%handler, "the store's scope rule names no caller for this request; refused");
            metrics::outcome(&handler, Outcome::NoScope);
            return Admission::Refused(Outcome::NoScope, None);
        }
    };
    let span = tracing::info_span!("idempotent", handler = %handler, key_prefix = key.prefix());
    let fingerprint = fingerprint(&handler);
    let job = Job::new(config, store.overrides(), handler, scope, key, fingerprint);
    Admission::Admitted(job, span)
}
