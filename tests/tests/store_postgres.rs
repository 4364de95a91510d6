//! The store conformance suite on [`PostgresStore`] (a database per test on a throwaway
//! server), and what only Postgres has: the round-trip budget, two application instances
//! racing, concurrent migrations, error classes.

use idem_tests::pg;

idem_tests::conformance_tests!(pg::fixture);
