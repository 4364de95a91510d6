//! One idempotent call as the executor runs it: its claim and its settings.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::engine::backoff::Backoff;
use crate::engine::config::Config;
use crate::engine::fingerprint::Fingerprint;
use crate::engine::key::IdempotencyKey;
use std::borrow::Cow;

use crate::engine::record::{Claim, OwnerToken, RecordId};
use crate::engine::store::Isolation;

/// The settings of one call, after the store's process-wide overrides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub retries: u32,
    pub backoff: Backoff,
    pub lease: Duration,
    pub ttl: Duration,
    pub store_timeout: Duration,
    pub transactional: Option<Isolation>,
    pub wait: Option<Duration>,
    pub retry_after: Option<Duration>,
}

/// A store handle's process-wide overrides of every handler's settings.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Overrides {
    pub lease: Option<Duration>,
    pub retries: Option<u32>,
    pub wait: Option<Duration>,
}

impl Settings {
    pub(crate) fn new(config: &Config, overrides: Overrides) -> Self {
        Settings {
            retries: overrides.retries.unwrap_or(config.retries_value()).max(1),
            backoff: config.backoff_value(),
            lease: overrides.lease.unwrap_or(config.lease_value()),
            ttl: config.ttl_value(),
            store_timeout: config.store_timeout_value(),
            transactional: config.transactional_value(),
            wait: overrides
                .wait
                .or(config.wait_value())
                .filter(|wait| !wait.is_zero()),
            retry_after: config.retry_after_value(),
        }
    }
}

/// One idempotent call: its claim (with a fresh owner token) and its settings. Shared with
/// the store's lease keeper while the call runs.
#[derive(Debug)]
pub(crate) struct Job {
    pub settings: Settings,
    pub claim: Claim,
    /// Whether the caller still waits for the answer.
    pub caller: Caller,
}

impl Job {
    pub(crate) fn new(
        config: &Config,
        overrides: Overrides,
        handler: Cow<'static, str>,
        scope: String,
        key: IdempotencyKey,
        fingerprint: Fingerprint,
    ) -> Arc<Job> {
        let settings = Settings::new(config, overrides);
        Arc::new(Job {
            claim: Claim {
                id: RecordId::new(scope, handler, key),
                fingerprint,
                token: OwnerToken::random(),
                lease: settings.lease,
                ttl: settings.ttl,
            },
            settings,
            caller: Caller::default(),
        })
    }

    /// How often the lease is renewed: every third of it.
    pub(crate) fn renew_every(&self) -> Duration {
        (self.settings.lease / 3).max(Duration::from_millis(1))
    }
}

/// The caller of one call, as far as the executor needs to know it: whether it hung up. A
/// waiting duplicate whose caller hung up stops waiting at once; a running one finishes.
#[derive(Debug, Default)]
pub(crate) struct Caller {
    gone: AtomicBool,
    left: Notify,
}

impl Caller {
    /// The caller hung up.
    #[cfg(any(feature = "axum", feature = "tonic"))]
    pub(crate) fn hang_up(&self) {
        self.gone.store(true, Ordering::Release);
        self.left.notify_waiters();
    }

    /// Completes once the caller has hung up.
    pub(crate) async fn gone(&self) {
        let left = self.left.notified();
        if self.gone.load(Ordering::Acquire) {
            return;
        }
        left.await;
    }
}
