//! The service's settings, from the environment (`docs/contract.md`, "7. The example server").

use std::net::SocketAddr;
use std::time::Duration;

/// Where idempotency records and payments live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// In process; lost on restart.
    Memory,
    /// A SQLite file (created if missing).
    Sqlite(String),
    /// A Postgres database shared by every instance.
    Postgres(String),
    /// A Redis server (`redis://`) or cluster (`redis+cluster://`) shared by every instance.
    Redis(String),
}

impl StoreUrl {
    /// `memory`, `sqlite` or `postgres`: what logs may say (a URL may hold a password).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreUrl::Memory => "memory",
            StoreUrl::Sqlite(_) => "sqlite",
            StoreUrl::Postgres(_) => "postgres",
            StoreUrl::Redis(_) => "redis",
        }
    }

    /// Parses `memory`, `sqlite://PATH`, `postgres://...`, `redis://HOST:PORT` or
    /// `redis+cluster://HOST:PORT[,HOST:PORT...]` (`rediss` for TLS).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "memory" {
            Ok(StoreUrl::Memory)
        } else if text.starts_with("sqlite:") {
            Ok(StoreUrl::Sqlite(text.to_owned()))
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(StoreUrl::Postgres(text.to_owned()))
        } else if [
            "redis://",
            "rediss://",
            "redis+cluster://",
            "rediss+cluster://",
        ]
        .iter()
        .any(|scheme| text.starts_with(scheme))
        {
            Ok(StoreUrl::Redis(text.to_owned()))
        } else {
            Err(format!(
                "IDEM_STORE must be `memory`, `sqlite://PATH`, a `postgres://` URL, \
                 `redis://HOST:PORT` or `redis+cluster://HOST:PORT[,HOST:PORT...]`, not {text:?}"
            ))
        }
    }
}

/// How `POST /payments` records a payment (`IDEM_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The payment is written on its own, then the response is stored: a crash in between
    /// leaves a payment whose key runs again once its lease expires.
    Plain,
    /// The payment is written in the transaction that stores the response: both or neither
    /// (`docs/contract.md`, "Transactional mode"). SQL stores only.
    Transactional,
}

impl Mode {
    /// `plain` or `transactional`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Transactional => "transactional",
        }
    }
}

/// Everything the service reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `IDEM_STORE`, default a SQLite file `payments.db` in the working folder.
    pub store: StoreUrl,
    /// `BIND`, default `127.0.0.1:3000` (port 0 picks a free port).
    pub bind: SocketAddr,
    /// `PAYMENTS_LATENCY_MS`: a simulated processor delay, default 0.
    pub latency: Duration,
    /// `IDEM_LEASE`: overrides the attribute's lease for the whole process.
    pub lease: Option<Duration>,
    /// `IDEM_RETRIES`: overrides the attribute's retries for the whole process.
    pub retries: Option<u32>,
    /// `IDEM_WAIT`: a duplicate meeting a payment in progress waits up to this long for its
    /// result, in every handler of the process; `0s`, or unset, answers 409 at once.
    pub wait: Option<Duration>,
    /// `IDEM_MODE`: `plain` or `transactional`; by default transactional on SQLite and
    /// Postgres, plain in memory and on Redis (which have no transaction to share).
    pub mode: Mode,
    /// `IDEM_PG_POOL`: on Postgres, at most this many connections for everything (the store's
    /// statements, transactions and the payments list) instead of the store's own 10 and its
    /// pool's 10.
    pub pg_pool: Option<u32>,
    /// `IDEM_PG_POOLER=transaction`: Postgres is behind a pooler in transaction mode
    /// (PgBouncer's `pool_mode = transaction`), so the store's statements go as text and the
    /// example's own are unnamed, in transactions (`PostgresStore::behind_pooler`).
    pub pg_pooler: bool,
    /// `IDEM_PG_LISTEN_URL`: a direct `postgres://` URL on which waiting listens for the
    /// announcements that wake waiters, when `IDEM_STORE` goes through a pooler
    /// (`PostgresStore::listen_url`); without it, waiters behind a pooler poll.
    pub pg_listen_url: Option<String>,
    /// `IDEM_REDIS_ASSUME_NOEVICTION=1`: on Redis, skip reading `maxmemory-policy` at start
    /// (for a managed Redis that refuses `CONFIG`; its policy must be `noeviction`).
    pub redis_assume_noeviction: bool,
    /// How often expired keys are purged.
    pub purge_every: Duration,
}

/// `IDEM_PG_POOLER`: `transaction` when Postgres is behind a transaction-mode pooler, `none`
/// (or unset) when the store connects to it directly.
pub fn pg_pooler(var: impl Fn(&str) -> Option<String>) -> Result<bool, String> {
    match var("IDEM_PG_POOLER").as_deref() {
        None | Some("none") => Ok(false),
        Some("transaction") => Ok(true),
        Some(other) => Err(format!(
            "IDEM_PG_POOLER must be `transaction` (behind PgBouncer's pool_mode = transaction) \
             or `none`, not {other:?}"
        )),
    }
}

/// The default store: a SQLite file in the working folder.
pub const DEFAULT_STORE: &str = "sqlite://payments.db";

impl Settings {
    /// Reads the settings through `var` (the process environment, or a map in tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let store = StoreUrl::parse(&var("IDEM_STORE").unwrap_or_else(|| DEFAULT_STORE.into()))?;
        let bind = var("BIND")
            .unwrap_or_else(|| "127.0.0.1:3000".into())
            .parse()
            .map_err(|e| format!("BIND must be an address like 127.0.0.1:3000: {e}"))?;
        let latency = match var("PAYMENTS_LATENCY_MS") {
            Some(ms) => Duration::from_millis(ms.parse().map_err(|_| {
                format!("PAYMENTS_LATENCY_MS must be whole milliseconds, not {ms:?}")
            })?),
            None => Duration::ZERO,
        };
        let lease = var("IDEM_LEASE")
            .map(|text| idem_runtime::parse_duration(&text).map_err(|e| format!("IDEM_LEASE: {e}")))
            .transpose()?;
        let wait = var("IDEM_WAIT")
            .map(|text| idem_runtime::parse_duration(&text).map_err(|e| format!("IDEM_WAIT: {e}")))
            .transpose()?;
        let retries = var("IDEM_RETRIES")
            .map(|text| match text.parse::<u32>() {
                Ok(n @ 1..=20) => Ok(n),
                _ => Err(format!(
                    "IDEM_RETRIES must be a whole number from 1 to 20, not {text:?}"
                )),
            })
            .transpose()?;
        let mode = match (var("IDEM_MODE").as_deref(), &store) {
            (None, StoreUrl::Memory | StoreUrl::Redis(_)) | (Some("plain"), _) => Mode::Plain,
            (None, _) => Mode::Transactional,
            (Some("transactional"), StoreUrl::Memory | StoreUrl::Redis(_)) => {
                return Err(format!(
                    "IDEM_MODE=transactional needs a SQL store (IDEM_STORE=sqlite://PATH \
                     or postgres://...): the {} store has no transaction to share",
                    store.kind()
                ));
            }
            (Some("transactional"), _) => Mode::Transactional,
            (Some(other), _) => {
                return Err(format!(
                    "IDEM_MODE must be `plain` or `transactional`, not {other:?}"
                ));
            }
        };
        let pg_pool = var("IDEM_PG_POOL")
            .map(|text| match text.parse::<u32>() {
                Ok(n @ 1..=1000) => Ok(n),
                _ => Err(format!(
                    "IDEM_PG_POOL must be a whole number from 1 to 1000, not {text:?}"
                )),
            })
            .transpose()?;
        let pg_pooler = pg_pooler(&var)?;
        let pg_listen_url = var("IDEM_PG_LISTEN_URL");
        if let Some(url) = &pg_listen_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err("IDEM_PG_LISTEN_URL must be a `postgres://` URL".into());
        }
        if (pg_pooler || pg_listen_url.is_some()) && !matches!(store, StoreUrl::Postgres(_)) {
            return Err(format!(
                "IDEM_PG_POOLER and IDEM_PG_LISTEN_URL are for a Postgres store, not the {} store",
                store.kind()
            ));
        }
        let redis_assume_noeviction = match var("IDEM_REDIS_ASSUME_NOEVICTION").as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(format!(
                    "IDEM_REDIS_ASSUME_NOEVICTION must be 1 or 0, not {other:?}"
                ));
            }
        };
        Ok(Settings {
            store,
            bind,
            latency,
            lease,
            retries,
            wait,
            mode,
            pg_pool,
            pg_pooler,
            pg_listen_url,
            redis_assume_noeviction,
            purge_every: Duration::from_secs(60),
        })
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<Settings, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = read(&[]).unwrap();
        assert_eq!(s.store, StoreUrl::Sqlite(DEFAULT_STORE.into()));
        assert_eq!(s.bind.to_string(), "127.0.0.1:3000");
        assert_eq!(s.latency, Duration::ZERO);
        assert_eq!((s.lease, s.retries, s.wait), (None, None, None));
        assert_eq!((s.mode, s.pg_pool), (Mode::Transactional, None));
        let memory = read(&[("IDEM_STORE", "memory")]).unwrap();
        assert_eq!(memory.mode, Mode::Plain);
    }

    #[test]
    fn the_mode_is_chosen_and_memory_cannot_be_transactional() {
        let plain = read(&[("IDEM_MODE", "plain")]).unwrap();
        assert_eq!(plain.mode, Mode::Plain);
        let pg = read(&[("IDEM_STORE", "postgres://x/y"), ("IDEM_PG_POOL", "2")]).unwrap();
        assert_eq!((pg.mode, pg.pg_pool), (Mode::Transactional, Some(2)));
        let err = read(&[("IDEM_STORE", "memory"), ("IDEM_MODE", "transactional")]).unwrap_err();
        assert!(err.contains("memory store has no transaction"), "{err}");
    }

    #[test]
    fn a_pooler_and_a_listen_url_are_postgres_settings() {
        let pooled = read(&[
            ("IDEM_STORE", "postgres://x@pgbouncer:6432/y"),
            ("IDEM_PG_POOLER", "transaction"),
            ("IDEM_PG_LISTEN_URL", "postgres://x@db:5432/y"),
        ])
        .unwrap();
        assert!(pooled.pg_pooler);
        assert_eq!(
            pooled.pg_listen_url.as_deref(),
            Some("postgres://x@db:5432/y")
        );
        let direct = read(&[("IDEM_STORE", "postgres://x/y"), ("IDEM_PG_POOLER", "none")]);
        assert!(direct.is_ok_and(|s| !s.pg_pooler && s.pg_listen_url.is_none()));
        for bad in [
            vec![
                ("IDEM_STORE", "postgres://x/y"),
                ("IDEM_PG_POOLER", "session"),
            ],
            vec![
                ("IDEM_STORE", "postgres://x/y"),
                ("IDEM_PG_LISTEN_URL", "db:5432"),
            ],
            vec![("IDEM_STORE", "memory"), ("IDEM_PG_POOLER", "transaction")],
        ] {
            let err = read(&bad).unwrap_err();
            assert!(err.contains("IDEM_PG_"), "{err}");
        }
    }

    #[test]
    fn redis_urls_name_a_server_or_a_cluster_and_redis_is_plain() {
        for url in [
            "redis://127.0.0.1:6379",
            "rediss://cache:6380/0",
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7000",
        ] {
            let s = read(&[("IDEM_STORE", url)]).unwrap();
            assert_eq!(s.store, StoreUrl::Redis(url.into()));
            assert_eq!((s.mode, s.redis_assume_noeviction), (Mode::Plain, false));
        }
        let err = read(&[
            ("IDEM_STORE", "redis://h:1"),
            ("IDEM_MODE", "transactional"),
        ])
        .unwrap_err();
        assert!(err.contains("redis store has no transaction"), "{err}");
        let trusted = read(&[
            ("IDEM_STORE", "redis://h:1"),
            ("IDEM_REDIS_ASSUME_NOEVICTION", "1"),
        ]);
        assert!(trusted.is_ok_and(|s| s.redis_assume_noeviction));
    }

    #[test]
    fn every_setting_is_read_and_bad_values_are_clear_errors() {
        let s = read(&[
            ("IDEM_STORE", "memory"),
            ("BIND", "127.0.0.1:0"),
            ("PAYMENTS_LATENCY_MS", "250"),
            ("IDEM_LEASE", "2s"),
            ("IDEM_RETRIES", "3"),
            ("IDEM_WAIT", "10s"),
        ])
        .unwrap();
        assert_eq!(s.wait, Some(Duration::from_secs(10)));
        assert_eq!(s.store, StoreUrl::Memory);
        assert_eq!(s.latency, Duration::from_millis(250));
        assert_eq!(s.lease, Some(Duration::from_secs(2)));
        assert_eq!(s.retries, Some(3));
        for (name, bad) in [
            ("IDEM_STORE", "valkey://x"),
            ("BIND", "nowhere"),
            ("PAYMENTS_LATENCY_MS", "fast"),
            ("IDEM_LEASE", "2 seconds"),
            ("IDEM_RETRIES", "0"),
            ("IDEM_WAIT", "soon"),
            ("IDEM_MODE", "exactly-once"),
            ("IDEM_PG_POOL", "0"),
            ("IDEM_REDIS_ASSUME_NOEVICTION", "yes"),
        ] {
            let err = read(&[(name, bad)]).unwrap_err();
            assert!(err.contains(name), "{err}");
        }
    }
}
