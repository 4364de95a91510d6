//! Step 3: the generated handler. The user's function stays whole, as an inner function with
//! its own signature and attributes (so that `#[tracing::instrument(skip(...))]` and
//! `#[axum::debug_handler]` see it as written); the outer handler of the same name takes the
//! leading parameters as they are and the last one wrapped in `Fingerprinted` (which buffers
//! and fingerprints the request), evaluates the store and the scope, and hands the inner
//! function's future to the runtime's `run`. In transactional mode the outer handler does not
//! take the transaction parameter (axum cannot extract it: the runtime opens it after the
//! claim), and `run_transactional` gets a closure that calls the inner function with it.

use std::time::Duration;

use proc_macro2::{Group, Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned as _;
use syn::visit_mut::{self, VisitMut};
use syn::{Attribute, FieldPat, Ident, ItemFn, Pat, PatIdent, PatType, parse_quote};

use crate::args::{Args, ScopeArg};
use crate::handler::{Handler, mentions};
use crate::transactional::Isolation;

/// Attributes that describe the handler the router sees, so they stay on the outer function:
/// docs, `cfg`, lint levels (which reach the inner function, nested in it), and the two that
/// would otherwise fire at the call of the inner function.
const OUTER_ATTRIBUTES: [&str; 9] = [
    "doc",
    "cfg",
    "allow",
    "warn",
    "deny",
    "forbid",
    "expect",
    "deprecated",
    "must_use",
];

/// The generated function.
pub(crate) fn emit(args: &Args, handler: Handler) -> TokenStream {
    let private = private_path(args);
    let local = |name: &str| Ident::new(name, Span::mixed_site());
    let (last, head, store, target, config) = (
        local("__idem_last"),
        local("__idem_head"),
        local("__idem_store"),
        local("__idem_target"),
        local("__IDEM_CONFIG"),
    );
    // Errors about the body's output (not a response, not `Send`) point at the return type.
    let body = Ident::new(
        "__idem_body",
        Span::mixed_site().located_at(handler.output_span),
    );

    let Handler {
        attrs,
        vis,
        ident,
        mut sig,
        leading,
        last: last_param,
        tx,
        block,
        ..
    } = handler;
    let (outer_attrs, inner_attrs): (Vec<Attribute>, Vec<Attribute>) =
        attrs.into_iter().partition(|attr| {
            OUTER_ATTRIBUTES
                .iter()
                .any(|name| attr.path().is_ident(name))
        });

    // The store and scope expressions, whose names come from the parameters' patterns.
    let store_expr = args.store.as_ref().map(ToTokens::to_token_stream);
    let scope_expr = args
        .scope
        .as_ref()
        .and_then(ScopeArg::expr)
        .map(ToTokens::to_token_stream);
    let used = |name: &Ident| {
        let name = name.unraw().to_string();
        [&store_expr, &scope_expr]
            .into_iter()
            .flatten()
            .any(|tokens| mentions(tokens.clone(), &name))
    };

    // Each parameter under a generated name (the transaction under `__idem_tx`, the name the
    // runtime's closure gives it), and, for the patterns that bind a name the expressions
    // use, a binding by reference to evaluate them. The transaction is not among the
    // extractors: the runtime opens it after the claim, so the expressions cannot use it.
    let params: Vec<&PatType> = leading.iter().chain(&last_param).collect();
    let names: Vec<Ident> = (0..params.len())
        .map(|n| match tx {
            Some(at) if at == n => local("__idem_tx"),
            _ => format_ident!("__idem_arg{}", n, span = Span::mixed_site()),
        })
        .collect();
    let extractors: Vec<(&PatType, &Ident)> = params
        .iter()
        .copied()
        .zip(&names)
        .enumerate()
        .filter(|(n, _)| Some(*n) != tx)
        .map(|(_, extractor)| extractor)
        .collect();
    let mut bindings = Vec::new();
    for (param, name) in &extractors {
        let mut pat = (*param.pat).clone();
        let mut by_ref = BindByRef {
            used: &used,
            binds: false,
        };
        by_ref.visit_pat_mut(&mut pat);
        if by_ref.binds {
            bindings.push(quote!(let #pat = &#name;));
        }
    }
    // A parameter used only by `store` or `scope` is unused in the function itself.
    let typed = sig.inputs.iter_mut().filter_map(|input| match input {
        syn::FnArg::Typed(param) => Some(param),
        syn::FnArg::Receiver(_) => None,
    });
    for (_, param) in typed.enumerate().filter(|(n, _)| Some(*n) != tx) {
        let mut finder = BindByRef {
            used: &used,
            binds: false,
        };
        finder.visit_pat_mut(&mut (*param.pat).clone());
        if finder.binds {
            param.attrs.push(parse_quote!(#[allow(unused_variables)]));
        }
    }

    // The handler axum sees takes the extractors, the last one wrapped: with the transaction
    // last, the one before it is wrapped.
    let (leading_extractors, last_extractor) = match extractors.split_last() {
        Some((last, leading)) => (leading, Some(last)),
        None => (&extractors[..], None),
    };
    let leading_inputs = leading_extractors.iter().map(|(param, name)| {
        let ty = &param.ty;
        quote!(#name: #ty)
    });
    let (last_name, last_ty) = match last_extractor {
        Some((param, name)) => (Some(name.to_token_stream()), {
            let ty = &param.ty;
            quote!(#ty)
        }),
        None => (None, quote!(())),
    };
    let unpacked = last_name.clone().unwrap_or_else(|| quote!(()));
    // Spanned at the user's type, so that extractor errors point at the parameter.
    let at_type = last_ty.span();
    let private_at_type = respan(private.clone(), at_type);
    // Without a scope of its own, the handler takes its store's rule, which reads the request:
    // the extractor keeps a copy of its head (once a store has a rule). Another key header
    // than the default: it keeps every header for the engine. Otherwise only the key.
    let custom_header = args
        .header
        .as_ref()
        .is_some_and(|h| !h.value().eq_ignore_ascii_case("Idempotency-Key"));
    let wrapper = match (args.scope.is_none(), custom_header) {
        (true, false) => "FingerprintedParts",
        (true, true) => "FingerprintedAllParts",
        (false, false) => "Fingerprinted",
        (false, true) => "FingerprintedAllHeaders",
    };
    let wrapper = Ident::new(wrapper, at_type);
    let fingerprinted = quote_spanned!(at_type=> #private_at_type::#wrapper<#last_ty>);
    // Spanned at the expressions, so that type errors in them point there. A transactional
    // handler's store must be able to open transactions, which its own function checks.
    let (store_value, scope_value) = store_and_scope(args, &private);
    let name = Literal::string(&format!("::{}", ident.unraw()));
    let config_value = config_builder(args, &private);
    let inner = ItemFn {
        attrs: inner_attrs,
        vis: syn::Visibility::Inherited,
        modifiers: syn::FnModifiers::default(),
        sig,
        block,
    };
    let call_args = names.iter();
    // The inner function's future, or, in transactional mode, a closure that makes it from the
    // transaction the runtime lends (typed as the parameter is, so errors point there).
    let (body_value, run) = match tx {
        Some(at) => {
            let (tx_name, ty) = (&names[at], &params[at].ty);
            (
                quote!(move |#tx_name: #ty| #ident(#(#call_args),*)),
                quote!(run_transactional),
            )
        }
        None => (quote!(#ident(#(#call_args),*)), quote!(run)),
    };
    let target_value = quote! {
        #private::target(::core::concat!(::core::module_path!(), #name), #scope_value)
    };
    // The bindings borrow the arguments: a block ends the borrows before the inner function
    // takes the arguments, and keeps the references out of the handler's future.
    let evaluate = if bindings.is_empty() {
        quote! {
            let #store = #store_value;
            let #target = #target_value;
        }
    } else {
        quote! {
            let (#store, #target) = {
                #(#bindings)*
                (#store_value, #target_value)
            };
        }
    };

    quote! {
        #(#outer_attrs)*
        #vis async fn #ident(
            #(#leading_inputs,)*
            #last: #fingerprinted,
        ) -> #private::Response {
            #inner
            let (#unpacked, #head) = #last.into_parts();
            #evaluate
            let #body = #body_value;
            const #config: #private::Config = #config_value;
            #private::#run(#store, &#config, #target, #head, #body).await
        }
    }
}

/// Rewrites a parameter's pattern to bind, by reference, only the names `used` asks for: the
/// others become `_` (no unused bindings), and `mut`/`ref` go (the value is behind `&`, where
/// Rust 2024 refuses binding modifiers). Notes whether any name is left.
struct BindByRef<'a, F: Fn(&Ident) -> bool> {
    used: &'a F,
    binds: bool,
}

impl<F: Fn(&Ident) -> bool> VisitMut for BindByRef<'_, F> {
    fn visit_pat_mut(&mut self, pat: &mut Pat) {
        if let Pat::Ident(PatIdent { ident, subpat, .. }) = pat {
            if (self.used)(ident) {
                self.binds = true;
            } else {
                *pat = match subpat.take() {
                    Some((_, inner)) => *inner,
                    None => parse_quote!(_),
                };
                return self.visit_pat_mut(pat);
            }
        }
        visit_mut::visit_pat_mut(self, pat);
    }

    fn visit_pat_ident_mut(&mut self, pat: &mut PatIdent) {
        pat.by_ref = None;
        pat.mutability = None;
        visit_mut::visit_pat_ident_mut(self, pat);
    }

    // A shorthand field whose name is not used is written out, `Order { id: _, .. }`; one
    // that is used stays shorthand (`id: id` would trip `non_shorthand_field_patterns`).
    fn visit_field_pat_mut(&mut self, field: &mut FieldPat) {
        let unused = matches!(&*field.pat, Pat::Ident(pat) if !(self.used)(&pat.ident));
        if field.colon_token.is_none() && unused {
            field.colon_token = Some(Default::default());
        }
        visit_mut::visit_field_pat_mut(self, field);
    }
}

/// The same tokens, located at `span`.
pub(crate) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tree| {
            if let TokenTree::Group(group) = &tree {
                let mut inner = Group::new(group.delimiter(), respan(group.stream(), span));
                inner.set_span(span);
                tree = TokenTree::Group(inner);
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}

/// `Config::new()` followed by one setter per argument written.
pub(crate) fn config_builder(args: &Args, private: &TokenStream) -> TokenStream {
    let mut config = quote!(#private::Config::new());
    if let Some(retries) = &args.retries {
        let n = Literal::u32_unsuffixed(retries.value);
        config.extend(quote!(.retries(#n)));
    }
    if let Some(backoff) = &args.backoff {
        let (first, cap) = (duration(backoff.value.0), duration(backoff.value.1));
        config.extend(quote!(.backoff(#private::Backoff::new(#first, #cap))));
    }
    if let Some(ttl) = &args.ttl {
        let ttl = duration(ttl.value);
        config.extend(quote!(.ttl(#ttl)));
    }
    if let Some(lease) = &args.lease {
        let lease = duration(lease.value);
        config.extend(quote!(.lease(#lease)));
    }
    if let Some(wait) = &args.wait {
        let wait = duration(wait.value);
        config.extend(quote!(.wait(#wait)));
    }
    if let Some(after) = &args.retry_after {
        let after = duration(after.value);
        config.extend(quote!(.retry_after(#after)));
    }
    if let Some(header) = &args.header {
        config.extend(quote!(.header(#header)));
    }
    if let Some(optional) = &args.optional {
        config.extend(quote!(.optional(#optional)));
    }
    if let Some(keep) = &args.keep_server_errors {
        let keep = keep.value;
        config.extend(quote!(.keep_server_errors(#keep)));
    }
    if let Some(release) = &args.release {
        let statuses = release.value.iter().map(|s| Literal::u16_unsuffixed(*s));
        config.extend(quote!(.release_statuses(&[#(#statuses),*])));
    }
    if args.transactional().is_some() {
        let isolation = Isolation::tokens(args.isolation.as_ref().map(|i| i.value), private);
        config.extend(quote!(.transactional(#isolation)));
    }
    config
}

/// The path of the runtime's `__private` module (`crate = "..."` moves it).
pub(crate) fn private_path(args: &Args) -> TokenStream {
    let krate = args
        .krate
        .clone()
        .unwrap_or_else(|| parse_quote!(::idem_runtime));
    quote!(#krate::__private)
}

/// The `store` and `scope` expressions as values, spanned at the expressions so that type
/// errors in them point there; the scope is the store's rule's when none is given.
pub(crate) fn store_and_scope(args: &Args, private: &TokenStream) -> (TokenStream, TokenStream) {
    let store_fn = store_function(args);
    let store = match &args.store {
        Some(expr) => quote_spanned!(expr.span()=> #private::#store_fn(&(#expr))),
        // `Args::check` has made sure a store is given.
        None => quote!(::core::compile_error!("missing `store`")),
    };
    (store, scope_value(args, private))
}

/// The scope the call asks for: its own (spanned at the expression, so that type errors
/// point there), none on purpose, or its store's rule.
pub(crate) fn scope_value(args: &Args, private: &TokenStream) -> TokenStream {
    match &args.scope {
        Some(ScopeArg::Expr(expr)) => quote_spanned!(expr.span()=> #private::scope(&(#expr))),
        Some(ScopeArg::None(at)) => quote_spanned!(*at=> #private::Scope::None),
        None => quote!(#private::Scope::Inherit),
    }
}

/// The runtime's function that turns the `store` expression into a handle: one that can
/// open transactions in transactional mode (its bound names the problem when the
/// expression's type cannot), any `Store` otherwise.
pub(crate) fn store_function(args: &Args) -> Ident {
    let name = match args.transactional() {
        Some(_) => "transactional_store",
        None => "store",
    };
    Ident::new(name, Span::call_site())
}

/// `::core::time::Duration::from_secs(30)`, or `from_millis` when it is not whole seconds.
fn duration(d: Duration) -> TokenStream {
    let millis = d.as_millis();
    if millis % 1000 == 0 {
        let secs = Literal::u64_unsuffixed(d.as_secs());
        quote!(::core::time::Duration::from_secs(#secs))
    } else {
        let millis = Literal::u128_unsuffixed(millis);
        quote!(::core::time::Duration::from_millis(#millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_bound_by_reference_to_the_names_the_expressions_use() {
        let item: ItemFn = parse_quote! {
            async fn f(
                Extension(mut tenant): Extension<Tenant>,
                Json(Order { ref sku, quantity, .. }): Json<Order>,
                State(unused): State<AppState>,
            ) {}
        };
        let handler = Handler::check(item, crate::handler::Mode::Http).expect("a handler");
        let args: Args = parse_quote!(store = STORE, scope = format!("{}-{sku}", tenant.0));
        let text = emit(&args, handler).to_string();
        assert!(
            text.contains("let Extension (tenant) = & __idem_arg0 ;"),
            "{text}"
        );
        assert!(
            text.contains("let Json (Order { sku , quantity : _ , .. }) = & __idem_arg1 ;"),
            "{text}"
        );
        assert!(!text.contains("= & __idem_arg2"), "nothing to bind: {text}");
    }
}
