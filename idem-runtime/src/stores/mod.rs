//! The backends, each behind the core's [`IdempotencyStore`](crate::IdempotencyStore): one
//! file per backend, plus wrappers for tests.

#[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
mod columns;
mod failing;
pub(crate) mod hooked;
mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) mod sql;

pub use failing::{FailingStore, Failures};
pub use hooked::{Gate, Hooked, Op, StoreHook};
pub use memory::{DEFAULT_MEMORY_CAPACITY, MemoryStore};
#[cfg(feature = "redis")]
pub use redis::{DEFAULT_REDIS_PREFIX, InvalidPrefix, RedisConnection, RedisOptions, RedisStore};
#[cfg(feature = "postgres")]
pub use sql::PgTx;
#[cfg(feature = "sqlite")]
pub use sql::SqliteTx;
#[cfg(feature = "postgres")]
pub use sql::postgres::{CLAIM_ATTEMPTS, PostgresStore, WAKE_CHANNEL};
#[cfg(feature = "sqlite")]
pub use sql::sqlite::SqliteStore;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use sql::{DEFAULT_TABLE, InvalidTableName, Tx};
