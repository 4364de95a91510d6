//! The Postgres store's own connections: each used for one statement at a time, without
//! sqlx's pool.
//!
//! sqlx's pool hands a connection back from a task it spawns, and pings the connection there
//! first (`Sync`, then waiting for `ReadyForQuery`): a second round trip to the server, and
//! a wake-up of its backend, for every statement. At a few thousand statements a second on
//! a small machine that round trip costs about as much CPU as the statement's own. Here a
//! connection goes back to the idle list as soon as its statement has answered.
//!
//! What the pool's ping protects against is covered otherwise: a connection whose statement
//! failed, or whose future was dropped mid-statement (a store timeout), is closed rather than
//! reused, since it may hold a half-read answer; and one that sat idle for longer than
//! [`IDLE_CHECK`] is pinged before use, so a connection the server or the network dropped
//! while idle is replaced instead of failing a request.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use std::ops::{Deref, DerefMut};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Postgres};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::Dialect;
use crate::engine::store::{StoreError, StoreResult};

/// How long a connection may sit idle before it is pinged ahead of its next statement.
pub(crate) const IDLE_CHECK: Duration = Duration::from_secs(30);

/// At most `max` connections, opened when first needed and kept while they work.
pub(crate) struct Connections {
    options: PgConnectOptions,
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    connection: PgConnection,
    since: Instant,
}

impl Connections {
    pub(crate) fn new(options: PgConnectOptions, max: usize) -> Self {
        Connections {
            options,
            permits: Semaphore::new(max),
            idle: Mutex::new(Vec::with_capacity(max)),
        }
    }

    /// Waits for a free connection (or room to open one); the caller bounds the wait.
    pub(crate) async fn lease(&self) -> StoreResult<Lease<'_>> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::permanent("the store's connections were closed"))?;
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        // Pinging and opening are rare; boxed, they stay out of every statement's future
        // (`bench/server_instructions.sh` counts what that saves).
        let connection = match idle {
            Some(idle) if idle.since.elapsed() < IDLE_CHECK => idle.connection,
            Some(mut idle) => match Box::pin(idle.connection.ping()).await {
                Ok(()) => idle.connection,
                Err(_) => Box::pin(self.open()).await?,
            },
            None => Box::pin(self.open()).await?,
        };
        Ok(Lease {
            connections: self,
            connection,
            _permit: permit,
        })
    }

    async fn open(&self) -> StoreResult<PgConnection> {
        PgConnection::connect_with(&self.options)
            .await
            .map_err(Postgres::classify)
    }
}

/// One connection, for one statement. Dropped without [`Lease::settle`] (the statement's
/// future was dropped), it closes its connection.
pub struct Lease<'a> {
    connections: &'a Connections,
    connection: PgConnection,
    _permit: SemaphorePermit<'a>,
}

/// The connection, for one statement.
impl Deref for Lease<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.connection
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.connection
    }
}

impl Lease<'_> {
    /// Ends the lease with the statement's result: a connection that answered goes back to
    /// the idle list (before its permit is freed, so the next statement finds it), one that
    /// failed is closed.
    pub(crate) fn settle<T>(self, result: StoreResult<T>) -> StoreResult<T> {
        if result.is_ok() {
            self.connections
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Idle {
                    connection: self.connection,
                    since: Instant::now(),
                });
        }
        result
    }
}
