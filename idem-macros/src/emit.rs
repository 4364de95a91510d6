//! Step 3: the generated handler. It keeps the user's leading parameters, wraps the last one
//! in `Fingerprinted` (which buffers and fingerprints the request), evaluates the store and
//! the scope, and hands the body, as a future, to the runtime's `run`.

use std::time::Duration;

use proc_macro2::{Group, Literal, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned as _;
use syn::{Ident, parse_quote};

use crate::args::Args;
use crate::handler::Handler;

/// The generated function.
pub(crate) fn emit(args: &Args, handler: Handler) -> TokenStream {
    let krate = args
        .krate
        .clone()
        .unwrap_or_else(|| parse_quote!(::idem_runtime));
    let private = quote!(#krate::__private);
    let local = |name: &str| Ident::new(name, Span::mixed_site());
    let (last, head, store, target, config) = (
        local("__idem_last"),
        local("__idem_head"),
        local("__idem_store"),
        local("__idem_target"),
        local("__IDEM_CONFIG"),
    );
    // Errors about the body's output (not a response) point at the return type.
    let body = Ident::new(
        "__idem_body",
        Span::mixed_site().located_at(handler.output_span),
    );

    let Handler {
        attrs,
        vis,
        ident,
        leading,
        last: last_param,
        output,
        block,
        ..
    } = handler;
    let (last_attrs, last_pat, last_ty) = match last_param {
        Some(param) => {
            let ty = param.ty;
            let pat = param.pat;
            (param.attrs, quote!(#pat), quote!(#ty))
        }
        None => (Vec::new(), quote!(_), quote!(())),
    };
    // Spanned at the user's type, so that extractor errors point at the parameter.
    let at_type = last_ty.span();
    let private_at_type = respan(private.clone(), at_type);
    // Another key header than the default: the extractor keeps every header for the engine.
    let custom_header = args
        .header
        .as_ref()
        .is_some_and(|h| !h.value().eq_ignore_ascii_case("Idempotency-Key"));
    let fingerprinted = if custom_header {
        quote_spanned!(at_type=> #private_at_type::Fingerprinted<#last_ty, true>)
    } else {
        quote_spanned!(at_type=> #private_at_type::Fingerprinted<#last_ty>)
    };
    // Spanned at the strings, so that type errors in them point there.
    let store_value = match &args.store {
        Some(expr) => quote_spanned!(expr.span()=> #private::store(&(#expr))),
        // `Args::check` has made sure a store is given.
        None => quote!(::core::compile_error!("missing `store`")),
    };
    let scope_value = match &args.scope {
        Some(expr) => quote_spanned!(expr.span()=> #private::scope(&(#expr))),
        None => quote!(::std::string::String::new()),
    };
    let name = Literal::string(&format!("::{}", ident.unraw()));
    let config_value = config_builder(args, &private);

    quote! {
        #(#attrs)*
        #vis async fn #ident(
            #(#leading,)*
            #(#last_attrs)* #last: #fingerprinted,
        ) -> #private::Response {
            let (#last_pat, #head) = #last.into_parts();
            let #store = #store_value;
            let #target = #private::target(
                ::core::concat!(::core::module_path!(), #name),
                #scope_value,
            );
            let #body = #private::typed::<#output, _>(async move #block);
            const #config: #private::Config = #config_value;
            #private::run(#store, &#config, #target, #head, #body).await
        }
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
    if let Some(header) = &args.header {
        config.extend(quote!(.header(#header)));
    }
    if let Some(optional) = &args.optional {
        config.extend(quote!(.optional(#optional)));
    }
    config
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
