//! The Postgres store behind PgBouncer in transaction pooling mode (README, "Behind a
//! connection pooler"), with only `ignore_startup_parameters = extra_float_digits,options`
//! configured and two server connections, so that statements really move between them: the
//! conformance suite on the store's own connections and on an application's pool, and waiting
//! with and without a direct connection to listen on.

use idem_tests::bouncer;

idem_tests::conformance_tests!(bouncer::fixture);

/// The conformance suite again, through PgBouncer on an application's pool
/// ([`idem_runtime::PostgresStore::new`]).
mod on_a_pool {
    use idem_tests::bouncer;

    idem_tests::conformance_tests!(bouncer::pool_fixture);
}
