//! One idempotent call as the executor runs it: its claim and its settings.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::backoff::Backoff;
use crate::engine::config::Config;
use crate::engine::fingerprint::Fingerprint;
use crate::engine::key::IdempotencyKey;
use crate::engine::record::{Claim, OwnerToken, RecordId, Target};
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
}

/// A store handle's process-wide overrides of every handler's settings.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Overrides {
    pub lease: Option<Duration>,
    pub retries: Option<u32>,
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
        }
    }
}

/// One idempotent call: its claim (with a fresh owner token) and its settings. Shared with
/// the store's lease keeper while the call runs.
#[derive(Debug)]
pub(crate) struct Job {
    pub settings: Settings,
    pub claim: Claim,
}

impl Job {
    pub(crate) fn new(
        config: &Config,
        overrides: Overrides,
        target: Target,
        key: IdempotencyKey,
        fingerprint: Fingerprint,
    ) -> Arc<Job> {
        let settings = Settings::new(config, overrides);
        Arc::new(Job {
            claim: Claim {
                id: RecordId::new(target.scope, target.handler, key),
                fingerprint,
                token: OwnerToken::random(),
                lease: settings.lease,
                ttl: settings.ttl,
            },
            settings,
        })
    }

    /// How often the lease is renewed: every third of it.
    pub(crate) fn renew_every(&self) -> Duration {
        (self.settings.lease / 3).max(Duration::from_millis(1))
    }
}
