//! The attribute's compile-time contract: every handler shape compiles (`ui/pass`), and every
//! wrong use is an error at the right token (`ui/fail`, with the committed `.stderr`).
//! `TRYBUILD=overwrite cargo test -p idem-tests --test trybuild` rewrites the `.stderr` files.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
    cases.compile_fail("ui/fail/*.rs");
}
