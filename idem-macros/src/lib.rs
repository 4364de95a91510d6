//! The `#[idempotent]` attribute of `idem`. Use it through the runtime,
//! `use idem_runtime::idempotent;`: the generated code calls into `idem_runtime`.
//!
//! This crate only rewrites syntax, in three steps: parse the arguments (`args.rs`, with
//! `duration.rs`), check the function (`handler.rs`, with `transactional.rs` for the `Tx`
//! parameter), emit a call to the runtime (`emit.rs` for an axum handler, `emit_call.rs` for
//! plain-function mode). Every decision about a request lives in `idem_runtime::engine`, and
//! about a plain call in `idem_runtime::call`.
//!
//! ## What it expands to
//!
//! The handler of the README's quick start:
//!
//! ```ignore
#![doc = include_str!("../snapshots/create_payment.in.rs")]
//! ```
//!
//! becomes the function below. The function as written stays whole, as an inner function
//! with its own signature, body and attributes; the handler around it, of the same name,
//! takes the leading parameters under generated names and the last one wrapped in
//! `Fingerprinted`, which buffers the body, fingerprints the request and hands the body on to
//! the original extractor. The parameters' patterns are bound by reference only to evaluate
//! `store` and `scope`; then the inner function's future goes to the runtime, which runs it at
//! most once per key. (The snapshot test in `src/snapshot.rs` keeps this text current.)
//!
//! ```ignore
#![doc = include_str!("../snapshots/create_payment.out.rs")]
//! ```
//!
//! The generated handler's last parameter is the wrapper, so a test cannot call it with the
//! original arguments: drive it through a `Router` instead (`tower::ServiceExt::oneshot`).
//!
//! A transactional handler (`transactional`, see [`idempotent`]) expands the same way, except
//! that the outer handler leaves out the `Tx` parameter and the runtime gets a closure that
//! calls the inner function with the transaction it opened: `snapshots/transactional.out.rs`,
//! and `snapshots/transactional_consumer.out.rs` for plain-function mode.

#![forbid(unsafe_code)]

mod args;
mod duration;
mod emit;
mod emit_call;
mod emit_grpc;
mod grpc;
mod handler;
#[cfg(test)]
mod snapshot;
mod transactional;

use proc_macro::TokenStream;

use crate::args::{Args, Errors};
use crate::handler::{Handler, Mode};

/// Makes an async axum handler safe to retry: a request repeating an earlier
/// `Idempotency-Key` gets the first response back, byte for byte, and the body runs once.
///
/// ```ignore
/// use idem_runtime::idempotent;
///
/// #[idempotent(store = app.idem, retries = 5)]
/// async fn create_payment(State(app): State<AppState>, Json(req): Json<NewPayment>)
///     -> Result<(StatusCode, Json<Payment>), ApiError> { /* ... */ }
///
/// let app = Router::new().route("/payments", post(create_payment)).with_state(state);
/// ```
///
/// Arguments, all `name = value` but the `transactional` flag:
///
/// | argument | value | default |
/// |---|---|---|
/// | `store` | a Rust expression that yields the store (`&Store`, `Store`, `Arc<Store>`, a static); names bound by the handler's parameter patterns are in scope, by reference: `app.idem`, `crate::STORE`, `stores::payments()` | required |
/// | `retries` | attempts to store the response, 1 to 20 | `5` |
/// | `backoff` | first and largest delay between attempts, `"100ms..2s"` | `"100ms..2s"` |
/// | `ttl` | how long a completed response is replayed: `"24h"`, `"90m"` (units `ms`, `s`, `m`, `h`, `d`) | `"24h"` |
/// | `lease` | how long an in-progress claim blocks duplicates; at most `ttl` | `"30s"` |
/// | `wait` | a duplicate meeting the first request in progress waits up to this long for its result, answered as a replay, instead of a 409 at once: `"10s"` | no waiting |
/// | `retry_after` | a 409's `Retry-After`, instead of the handler's usual run time as learnt in process (never more than the lease has left) | learnt, 1 s at first |
/// | `header` | the request header carrying the key | `"Idempotency-Key"` |
/// | `optional` | when `true`, a request without the header runs with no idempotency | `false` |
/// | `keep_server_errors` | when `true`, a 5xx response is kept and replayed like any other instead of releasing the claim | `false` |
/// | `release` | a list of 4xx statuses that release the claim instead of being kept, so a retry runs again: `[429, 408]` | none |
/// | `scope` | a Rust expression (anything `Display`) that namespaces keys, like `user.tenant_id`, over the store's `Store::scope_by` rule; or `none`: keys shared by every caller, on purpose | the store's rule |
/// | `key` | plain-function mode: a Rust expression over the arguments that yields the key (anything `Display`), like `msg.id` | none |
/// | `transactional` | a bare flag (or `transactional = true`): the handler's writes through its `Tx` commit with the stored response; see below | off |
/// | `isolation` | with `transactional`: `"read_committed"`, `"repeatable_read"` or `"serializable"` | the database's |
/// | `crate` | the path to the runtime, for re-exports | `"::idem_runtime"` |
///
/// `store`, `scope` and `key` are written as bare Rust (`store = app.idem`), which an IDE can
/// follow, or as a string holding the same expression (`store = "app.idem"`), the older
/// form: a string literal is always read as the expression it holds.
///
/// Durations are a whole number and one unit, with no space between them; ASCII whitespace
/// around the value and around a range's `..` is ignored (`"100ms .. 2s"`), as at run time.
///
/// The function keeps its name, visibility, docs, `cfg` and lint attributes on the generated
/// handler. Its other attributes stay on the function as written, nested inside the handler,
/// so `#[tracing::instrument(skip(...), fields(...), err)]` and `#[axum::debug_handler]` may
/// go above or below `#[idempotent]`: either way they see the function as written. It must be a
/// non-generic `async fn` without `self`, and its body cannot name `Self`: it is no longer
/// inside the `impl`. The generated handler's last parameter is wrapped, so call it through a
/// router, not directly. Wrong arguments are compile errors at the offending token.
///
/// ## Plain-function mode
///
/// With `key = ...`, any `async fn` (or method, `&self` included) returning `Result<T, E>`
/// becomes idempotent, its signature unchanged: a queue consumer, a job, an outbound call.
///
/// ```ignore
/// #[idempotent(store = self.idem, key = format!("order-{}", msg.order_id))]
/// async fn handle(&self, msg: OrderPlaced) -> Result<Receipt, ConsumerError> { /* ... */ }
/// ```
///
/// The key is the expression's `Display`, validated like a header's (8 to 128 characters
/// from `A-Za-z0-9._:-`); the fingerprint is every argument's JSON (`self` and parameters
/// marked `#[idem(skip)]` left out); `T: Serialize + DeserializeOwned` is stored and replayed
/// without running the body; an `Err` (or a panic) releases the claim; invalid keys,
/// conflicts, mismatches and store failures come back through `E: From<idem_runtime::Error>`.
/// `header` and `optional` do not apply, nor do `keep_server_errors` and `release`: an `Ok`
/// is kept like a 2xx and an `Err` released like a 5xx. Other attributes stay on the function: below
/// `#[idempotent]`, a `#[tracing::instrument]` span also covers replays, and sees a
/// destructured parameter under a generated name; above, it covers only a run of the body. The record's handler is
/// `module::function`, or `Type::method` for a method (its `Self`, by `type_name`).
///
/// ## Transactional mode
///
/// With `transactional`, the handler takes the transaction as a parameter, `PgTx` or
/// `SqliteTx` (`idem_runtime::Tx`), on the store's own database; what it writes through
/// `&mut *tx` commits together with its stored response, or not at all, so a process killed
/// after the handler's writes cannot run them twice (see `idem_runtime::Tx`).
///
/// ```ignore
/// #[idempotent(store = app.idem, transactional, isolation = "serializable")]
/// async fn create_payment(State(app): State<AppState>, mut tx: PgTx, Json(req): Json<NewPayment>)
///     -> Result<(StatusCode, Json<Payment>), ApiError> { /* ... */ }
/// ```
///
/// A parameter is the transaction when its type's last path segment is `Tx`, `PgTx` or
/// `SqliteTx`, and it may stand anywhere among the parameters. The runtime opens it after the
/// claim, so the caller does not pass it: the handler axum sees has every parameter but the
/// `Tx` (the last of the others takes the request's body), and in plain-function mode
/// (`key = ..., transactional`) the function's callers pass every argument but the `Tx`,
/// which is not fingerprinted. The `store` expression's type must be a `Store` or deref to
/// one (a `MemoryStore` cannot open transactions); a `Store` on a backend without
/// transactions is refused when the first call runs. Compile errors: `transactional` without
/// a `Tx` parameter, a `Tx` without `transactional`, two `Tx` parameters, `isolation` without
/// `transactional`, and `optional = true` with it (a transactional handler needs a key).
#[proc_macro_attribute]
pub fn idempotent(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args.into(), item.into()).into()
}

/// The whole rewrite, on `proc_macro2` tokens (so that it is testable). On error, the
/// original function is emitted unchanged next to the errors, so the rest of the crate
/// keeps type-checking and the IDE keeps working.
fn expand(
    args: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let mode = Mode::written(&args).for_item(&item);
    let args = syn::parse2::<Args>(args).and_then(|args| args.check().map(|()| args));
    if mode == Mode::Grpc {
        return expand_grpc(args, item);
    }
    // The checks that pair the function with the arguments, when they parsed.
    let handler = Handler::parse(item.clone(), mode).and_then(|handler| {
        let Ok(args) = &args else {
            return Ok(handler);
        };
        let mut errors = Errors::default();
        if let Err(error) = transactional::check(args.transactional(), handler.tx()) {
            errors.push(error);
        }
        if let Some(key) = &args.key {
            if let Err(error) = handler.check_key(&key.value) {
                errors.push(error);
            }
        }
        errors.finish().map(|()| handler)
    });
    match (args, handler) {
        (Ok(args), Ok(handler)) => match mode {
            Mode::Call => emit_call::emit(&args, handler),
            // gRPC methods went to `expand_grpc` above.
            Mode::Http | Mode::Grpc => emit::emit(&args, handler),
        },
        (args, handler) => {
            with_errors(without_helper_attributes(item), [args.err(), handler.err()])
        }
    }
}

/// The rewrite of a tonic service method (gRPC mode): the same three steps, with the method's
/// own checks (`grpc.rs`) and emission (`emit_grpc.rs`).
fn expand_grpc(
    args: syn::Result<Args>,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let method = grpc::Method::parse(item.clone()).and_then(|method| {
        let Ok(args) = &args else {
            return Ok(method);
        };
        let mut errors = Errors::default();
        if let Err(error) = grpc::check_args(args) {
            errors.push(error);
        }
        if let Err(error) = transactional::check(args.transactional(), method.tx()) {
            errors.push(error);
        }
        errors.finish().map(|()| method)
    });
    match (args, method) {
        (Ok(args), Ok(method)) => emit_grpc::emit(&args, method),
        (args, method) => with_errors(item, [args.err(), method.err()]),
    }
}

/// `tokens`, the item as written, followed by the errors of the steps that failed.
fn with_errors(
    mut tokens: proc_macro2::TokenStream,
    failures: [Option<syn::Error>; 2],
) -> proc_macro2::TokenStream {
    let mut errors = Errors::default();
    for error in failures.into_iter().flatten() {
        errors.push(error);
    }
    if let Err(error) = errors.finish() {
        tokens.extend(error.into_compile_error());
    }
    tokens
}

/// The function as written, minus `#[idem(...)]` on its parameters (which only the expansion
/// understands), so that an error is not followed by "cannot find attribute `idem`".
fn without_helper_attributes(item: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    let Ok(mut function) = syn::parse2::<syn::ItemFn>(item.clone()) else {
        return item;
    };
    for input in &mut function.sig.inputs {
        if let syn::FnArg::Typed(param) = input {
            param.attrs.retain(|attr| !attr.path().is_ident("idem"));
        }
    }
    quote::ToTokens::into_token_stream(function)
}
