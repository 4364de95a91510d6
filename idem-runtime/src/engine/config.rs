//! A handler's idempotency settings: what `#[idempotent(...)]` writes down at compile time.

use std::time::Duration;

use crate::engine::backoff::Backoff;
use crate::engine::store::Isolation;

/// Default number of attempts to persist a response.
pub const DEFAULT_RETRIES: u32 = 5;
/// Default time a completed response is kept.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default time an in-progress claim blocks duplicates.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Default header carrying the key.
pub const DEFAULT_HEADER: &str = "Idempotency-Key";
/// Default largest response body that is stored (1 MiB).
pub const DEFAULT_MAX_STORED_BODY: usize = 1024 * 1024;
/// Default bound on one store operation before it counts as failed.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings of one idempotent handler. Built in `const` context by the attribute.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::Config;
///
/// const CONFIG: Config = Config::new().retries(3).ttl(Duration::from_secs(3600));
/// assert_eq!(CONFIG.retries_value(), 3);
/// assert_eq!(CONFIG.lease_value(), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    retries: u32,
    backoff: Backoff,
    ttl: Duration,
    lease: Duration,
    header: &'static str,
    optional: bool,
    max_stored_body: usize,
    store_timeout: Duration,
    transactional: Option<Isolation>,
    keep_server_errors: bool,
    release_statuses: &'static [u16],
    wait: Option<Duration>,
    retry_after: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

impl Config {
    /// The defaults (docs/contract.md, "The attribute").
    pub const fn new() -> Self {
        Config {
            retries: DEFAULT_RETRIES,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            ttl: DEFAULT_TTL,
            lease: DEFAULT_LEASE,
            header: DEFAULT_HEADER,
            optional: false,
            max_stored_body: DEFAULT_MAX_STORED_BODY,
            store_timeout: DEFAULT_STORE_TIMEOUT,
            transactional: None,
            keep_server_errors: false,
            release_statuses: &[],
            wait: None,
            retry_after: None,
        }
    }

    /// Attempts to persist the response (at least 1).
    pub const fn retries(mut self, retries: u32) -> Self {
        self.retries = if retries == 0 { 1 } else { retries };
        self
    }

    /// Delays between attempts.
    pub const fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long a completed response is kept and replayed.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long an in-progress claim blocks duplicates before it counts as abandoned.
    pub const fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The request header that carries the key (matched case-insensitively).
    pub const fn header(mut self, header: &'static str) -> Self {
        self.header = header;
        self
    }

    /// When true, a request without the header runs with no idempotency at all.
    pub const fn optional(mut self, optional: bool) -> Self {
        self.optional = optional;
        self
    }

    /// The largest response body that is stored; larger responses are sent but not stored.
    pub const fn max_stored_body(mut self, bytes: usize) -> Self {
        self.max_stored_body = bytes;
        self
    }

    /// How long one store operation may take before it counts as a (transient) failure.
    pub const fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// Runs the work in a transaction on the store's database, at `isolation`: its writes and
    /// the stored result commit together (docs/contract.md, "Transactional mode").
    pub const fn transactional(mut self, isolation: Isolation) -> Self {
        self.transactional = Some(isolation);
        self
    }

    /// When true, a 5xx response is kept and replayed like any other (Stripe's choice); by
    /// default it releases the claim, so a retry runs again (docs/contract.md, "What a request
    /// meets").
    pub const fn keep_server_errors(mut self, keep: bool) -> Self {
        self.keep_server_errors = keep;
        self
    }

    /// 4xx statuses that release the claim instead of being kept, so that a retry runs again
    /// (a 429 or a 408 that the next attempt may get past). Only 400..=499 count: a 5xx is
    /// released already unless [`keep_server_errors`](Config::keep_server_errors), and
    /// 1xx–3xx are always kept, so other statuses here are ignored.
    ///
    /// ```
    /// use idem_runtime::Config;
    ///
    /// const CONFIG: Config = Config::new().release_statuses(&[429, 408]);
    /// assert!(!CONFIG.keeps(429));
    /// assert!(CONFIG.keeps(404));
    /// assert!(!CONFIG.keeps(500));
    /// ```
    pub const fn release_statuses(mut self, statuses: &'static [u16]) -> Self {
        self.release_statuses = statuses;
        self
    }

    /// A duplicate that meets the key's first request in progress waits up to `wait` for its
    /// result and answers with it, instead of a 409 at once (docs/contract.md, "Waiting for
    /// the in-flight result"). Zero means no waiting, the default.
    pub const fn wait(mut self, wait: Duration) -> Self {
        self.wait = if wait.is_zero() { None } else { Some(wait) };
        self
    }

    /// The `Retry-After` of a 409, instead of the hint learnt from this handler's usual run
    /// time (never more than the owner's lease has left, never under a second).
    pub const fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Whether a response with `status` is kept (stored, then replayed) or releases the claim:
    /// the one rule every HTTP path follows. 1xx–3xx are kept; a 4xx unless it is one of
    /// [`release_statuses`](Config::release_statuses); a 5xx only with
    /// [`keep_server_errors`](Config::keep_server_errors).
    ///
    /// ```
    /// use idem_runtime::Config;
    ///
    /// assert!(Config::new().keeps(201) && Config::new().keeps(429));
    /// assert!(!Config::new().keeps(503));
    /// assert!(Config::new().keep_server_errors(true).keeps(503));
    /// ```
    pub const fn keeps(&self, status: u16) -> bool {
        match status {
            500..=599 => self.keep_server_errors,
            400..=499 => {
                let mut at = 0;
                while at < self.release_statuses.len() {
                    if self.release_statuses[at] == status {
                        return false;
                    }
                    at += 1;
                }
                true
            }
            _ => true,
        }
    }

    /// See [`Config::retries`].
    pub const fn retries_value(&self) -> u32 {
        self.retries
    }
    /// See [`Config::backoff`].
    pub const fn backoff_value(&self) -> Backoff {
        self.backoff
    }
    /// See [`Config::ttl`].
    pub const fn ttl_value(&self) -> Duration {
        self.ttl
    }
    /// See [`Config::lease`].
    pub const fn lease_value(&self) -> Duration {
        self.lease
    }
    /// See [`Config::header`].
    pub const fn header_value(&self) -> &'static str {
        self.header
    }
    /// See [`Config::optional`].
    pub const fn optional_value(&self) -> bool {
        self.optional
    }
    /// See [`Config::max_stored_body`].
    pub const fn max_stored_body_value(&self) -> usize {
        self.max_stored_body
    }
    /// See [`Config::transactional`].
    pub const fn transactional_value(&self) -> Option<Isolation> {
        self.transactional
    }
    /// See [`Config::store_timeout`].
    pub const fn store_timeout_value(&self) -> Duration {
        self.store_timeout
    }
    /// See [`Config::keep_server_errors`].
    pub const fn keep_server_errors_value(&self) -> bool {
        self.keep_server_errors
    }
    /// See [`Config::release_statuses`].
    pub const fn release_statuses_value(&self) -> &'static [u16] {
        self.release_statuses
    }
    /// See [`Config::wait`].
    pub const fn wait_value(&self) -> Option<Duration> {
        self.wait
    }
    /// See [`Config::retry_after`].
    pub const fn retry_after_value(&self) -> Option<Duration> {
        self.retry_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_2xx_to_4xx_are_kept_and_5xx_released() {
        let config = Config::new();
        for status in [200, 201, 204, 301, 400, 404, 408, 409, 422, 429, 499] {
            assert!(config.keeps(status), "{status}");
        }
        for status in [500, 502, 503, 599] {
            assert!(!config.keeps(status), "{status}");
        }
    }

    #[test]
    fn chosen_4xx_are_released_and_others_outside_4xx_ignored() {
        let config = Config::new().release_statuses(&[429, 408, 200, 503]);
        assert!(!config.keeps(429) && !config.keeps(408));
        assert!(config.keeps(404) && config.keeps(200), "only 4xx release");
        assert!(!config.keeps(503), "5xx follow keep_server_errors");
        assert!(config.keep_server_errors(true).keeps(503));
    }

    #[test]
    fn keeping_5xx_leaves_released_4xx_released() {
        let config = Config::new()
            .keep_server_errors(true)
            .release_statuses(&[429]);
        assert!(config.keeps(500) && config.keeps(200) && config.keeps(404));
        assert!(!config.keeps(429));
    }
}
