//! The expansion, input tokens to pretty-printed output, compared with the committed files in
//! `snapshots/` (`NAME.in.rs` expands to `NAME.out.rs`), so that a change to it shows in
//! review. `IDEM_SNAPSHOTS=overwrite cargo test -p idem-macros` rewrites the outputs.

use std::fs;
use std::path::{Path, PathBuf};

use quote::ToTokens;
use syn::{ItemFn, Meta};

use crate::expand;

fn snapshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots")
}

/// Expands the function in `source`, taking the arguments from its `#[idempotent(...)]`.
fn expand_source(source: &str) -> String {
    let mut item: ItemFn = syn::parse_str(source).expect("the input is a function");
    let at = item
        .attrs
        .iter()
        .position(|attr| attr.path().is_ident("idempotent"))
        .expect("the input has #[idempotent(...)]");
    let args = match item.attrs.remove(at).meta {
        Meta::List(list) => list.tokens,
        _ => proc_macro2::TokenStream::new(),
    };
    let output = expand(args, item.into_token_stream());
    let file: syn::File = syn::parse2(output).expect("the expansion parses as a file");
    prettyplease::unparse(&file)
}

#[test]
fn expansions_match_their_snapshots() {
    let overwrite = std::env::var_os("IDEM_SNAPSHOTS").is_some_and(|v| v == "overwrite");
    let mut inputs: Vec<PathBuf> = fs::read_dir(snapshots())
        .expect("snapshots/ exists")
        .map(|entry| entry.expect("a readable entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".in.rs"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no snapshot inputs in snapshots/");
    let mut stale = Vec::new();
    for input in inputs {
        let source = fs::read_to_string(&input).expect("a readable input");
        let expanded = expand_source(&source);
        let output = PathBuf::from(input.to_string_lossy().replace(".in.rs", ".out.rs"));
        if overwrite {
            fs::write(&output, &expanded).expect("a writable snapshot");
            continue;
        }
        match fs::read_to_string(&output) {
            Ok(expected) if expected == expanded => {}
            Ok(expected) => {
                eprintln!(
                    "--- {}\n{expected}\n+++ expanded\n{expanded}",
                    output.display()
                );
                stale.push(output);
            }
            Err(_) => {
                eprintln!("+++ {} (missing)\n{expanded}", output.display());
                stale.push(output);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "expansions differ from {stale:?}; review them and rerun with IDEM_SNAPSHOTS=overwrite"
    );
}

#[test]
fn on_error_the_original_function_stays_next_to_the_errors() {
    let source = r#"
        #[idempotent(retries = 0)]
        fn not_async(self) -> u8 { 1 }
    "#;
    let expanded = expand_source(source);
    assert!(expanded.contains("fn not_async(self) -> u8"), "{expanded}");
    for message in [
        "`retries` must be from 1 to 20",
        "goes on an `async fn`",
        "`self` receivers",
    ] {
        assert!(expanded.contains(message), "{message:?} in {expanded}");
    }
}

#[test]
fn argument_errors_name_what_was_expected() {
    let cases = [
        (
            "stor = \"s\"",
            "unknown argument `stor`; expected one of `store`, `retries`",
        ),
        (
            "store = \"s\", store = \"t\"",
            "`store` is given more than once",
        ),
        ("store = \"s\", ttl = 30", "`ttl` takes a string duration"),
        (
            "store = \"s\", retries = 21",
            "`retries` must be from 1 to 20",
        ),
        (
            "store = \"s\", retries = \"5\"",
            "`retries` takes an integer from 1 to 20",
        ),
        (
            "store = \"s\", ttl = \"1 day\"",
            "`ttl`: expected a whole number and a unit",
        ),
        (
            "store = \"s\", backoff = \"2s\"",
            "`backoff`: expected a range",
        ),
        (
            "store = \"s\", lease = \"2h\", ttl = \"1h\"",
            "`lease` (2h) is longer than `ttl` (1h)",
        ),
        (
            "store = \"s\", ttl = \"10s\"",
            "the default `lease` (30s) is longer than `ttl` (10s)",
        ),
        (
            "store = \"s\", header = \"Idempotency Key\"",
            "valid HTTP header name",
        ),
        ("store = \"s\", optional = 1", "`optional` takes a bool"),
        ("store = \"a..=\"", "`store` must hold a Rust expression"),
        ("store = \"s\", crate = \"1\"", "`crate` takes a path"),
        (
            "store = \"s\", key = \"job.id\", optional = true",
            "`optional` does not apply with `key`",
        ),
        (
            "store = \"s\", key = \"job.id\", header = \"X-Key\"",
            "`header` does not apply with `key`",
        ),
        (
            "store = \"s\", key = \"\\\"constant-key\\\"\"",
            "this function has none",
        ),
        (
            "store = \"s\", wait = \"0s\"",
            "`wait` must be longer than zero",
        ),
        ("store = \"s\", retry_after = \"soon\"", "`retry_after`: "),
        (
            "store = \"s\", keep_server_errors = \"yes\"",
            "`keep_server_errors` takes a bool, like `keep_server_errors = true`",
        ),
        (
            "store = \"s\", release = 429",
            "`release` takes a bracketed list of 4xx statuses, like `release = [429, 408]`",
        ),
        (
            "store = \"s\", release = [\"429\"]",
            "`release` lists statuses as integer literals",
        ),
        (
            "store = \"s\", release = [503]",
            "`release` takes 4xx statuses only (400 to 499), got 503",
        ),
        (
            "store = \"s\", release = [200]",
            "only a 4xx can be released",
        ),
        (
            "store = \"s\", release = [429, 408, 429]",
            "`release` lists 429 more than once",
        ),
        (
            "store = \"s\", key = job.id, keep_server_errors = true",
            "`keep_server_errors` does not apply with `key`",
        ),
        (
            "store = \"s\", key = job.id, release = [429]",
            "`release` does not apply with `key`",
        ),
        ("retries = 5", "missing `store = "),
        ("optional", "expected `optional = true`"),
        (
            "store = \"s\", transactional = 1",
            "`transactional` takes nothing (a bare flag) or a bool",
        ),
        (
            "store = \"s\", isolation = \"serializable\"",
            "`isolation` is the isolation level of a transactional handler's transaction",
        ),
        (
            "store = \"s\", transactional = false, isolation = \"serializable\"",
            "`isolation` is the isolation level of a transactional handler's transaction",
        ),
        (
            "store = \"s\", transactional, isolation = \"snapshot\"",
            "`isolation` must be one of",
        ),
        (
            "store = \"s\", transactional, optional = true",
            "`optional = true` does not apply with `transactional`",
        ),
        (
            "store = \"s\", transactional",
            "`transactional` needs the transaction as a parameter",
        ),
    ];
    for (args, message) in cases {
        let source = format!("#[idempotent({args})] async fn f() {{}}");
        let expanded = expand_source(&source);
        assert!(
            expanded.contains(message),
            "{args}: {message:?} in {expanded}"
        );
    }
}

#[test]
fn a_transaction_parameter_and_the_argument_go_together() {
    let cases = [
        (
            "#[idempotent(store = s)] async fn f(mut tx: PgTx, body: String) {}",
            "add `transactional` to `#[idempotent(...)]`",
        ),
        (
            "#[idempotent(store = s, transactional = false)] async fn f(tx: Tx<Pg>, b: u8) {}",
            "add `transactional` to `#[idempotent(...)]`",
        ),
        (
            "#[idempotent(store = s, transactional)] async fn f(a: PgTx, b: SqliteTx, c: u8) {}",
            "takes one transaction, and `a` is already it",
        ),
    ];
    for (source, message) in cases {
        let expanded = expand_source(source);
        assert!(expanded.contains(message), "{message:?} in {expanded}");
    }
}

#[test]
fn the_transaction_may_be_the_last_parameter() {
    let source = "#[idempotent(store = app.idem, transactional)]
        async fn f(State(app): State<AppState>, Json(req): Json<New>, mut tx: PgTx) {}";
    let expanded = expand_source(source);
    assert!(
        expanded.contains("__idem_last: ::idem_runtime::__private::FingerprintedParts<Json<New>>"),
        "the extractor before the transaction is wrapped: {expanded}"
    );
    assert!(!expanded.contains("__idem_tx: PgTx,\n"), "{expanded}");
    assert!(
        expanded.contains("move |__idem_tx: PgTx| f(__idem_arg0, __idem_arg1, __idem_tx)"),
        "{expanded}"
    );
}
