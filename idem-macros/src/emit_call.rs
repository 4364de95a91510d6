//! Step 3, plain-function mode (`key = ...`): the function keeps its signature; its body
//! computes the key, the store, the scope and the arguments' fingerprint, then hands the
//! original body, as a future, to the runtime's `call`. In transactional mode the signature
//! loses the transaction parameter, and the body becomes a closure given it, for the
//! runtime's `call_transactional`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned as _;
use syn::{Ident, PatType};

use crate::args::Args;
use crate::emit::{config_builder, private_path, respan, store_and_scope};
use crate::handler::{Handler, plain_name};

/// The generated function.
pub(crate) fn emit(args: &Args, handler: Handler) -> TokenStream {
    let private = private_path(args);
    let local = |name: &str| Ident::new(name, Span::mixed_site());
    let (arguments, store, key, target, config) = (
        local("__idem_arguments"),
        local("__idem_store"),
        local("__idem_key"),
        local("__idem_target"),
        local("__IDEM_CONFIG"),
    );
    let body = local("__idem_body");

    // Parameters stay as written, except patterns that are not a plain name: those are
    // renamed, fingerprinted whole, then destructured as written.
    let mut inputs = Vec::new();
    let mut fingerprint = quote!(#private::Arguments::new());
    let mut destructure = Vec::new();
    let mut tx = None;
    for (n, (param, skipped)) in handler.params().enumerate() {
        let PatType { attrs, pat, ty, .. } = param;
        // The transaction leaves the signature: the runtime lends it to the body, after the
        // claim, and it is no part of the fingerprint.
        if handler.tx == Some(n) {
            tx = Some(quote!(#(#attrs)* #pat: #ty));
            continue;
        }
        let at_type = ty.span();
        let name = match plain_name(pat) {
            Some(name) => {
                inputs.push(quote!(#(#attrs)* #pat: #ty));
                name.clone()
            }
            None => {
                let name = format_ident!("__idem_arg{}", n, span = Span::mixed_site());
                inputs.push(quote!(#(#attrs)* #name: #ty));
                destructure.push(quote!(let #pat = #name;));
                name
            }
        };
        if !skipped {
            // Spanned at the type, so that a missing `Serialize` points at the parameter.
            let name = Ident::new(&name.to_string(), name.span().located_at(at_type));
            fingerprint.extend(quote_spanned!(at_type=> .arg(&#name)));
        }
    }
    let receiver = handler.receiver.as_ref().map(|r| quote!(#r,));

    let (store_value, scope_value) = store_and_scope(args, &private);
    let key_value = match &args.key {
        Some(expr) => {
            let expr = &expr.value;
            quote_spanned!(expr.span()=> #private::key(&(#expr)))
        }
        None => quote!(::core::compile_error!("missing `key`")),
    };
    let fn_name = handler.ident.unraw().to_string();
    let target_value = if handler.receiver.is_some() {
        quote!(#private::method_target(::core::any::type_name::<Self>(), #fn_name, #scope_value))
    } else {
        let name = format!("::{fn_name}");
        quote!(#private::target(::core::concat!(::core::module_path!(), #name), #scope_value))
    };
    let config_value = config_builder(args, &private);

    let Handler {
        attrs,
        vis,
        ident,
        ret,
        output,
        output_span,
        block,
        ..
    } = handler;
    // The runtime's bounds on `Result<T, E>` are checked here: errors point at the return
    // type and say which bound is missing.
    let private_at_output = respan(private.clone(), output_span);
    // In transactional mode, the body is a closure given the transaction.
    let (body_value, call_fn) = match tx {
        Some(tx) => (
            quote!(move |#tx| #private::typed::<#output, _>(async move #block)),
            quote_spanned!(output_span=> call_transactional),
        ),
        None => (
            quote!(#private::typed::<#output, _>(async move #block)),
            quote_spanned!(output_span=> call),
        ),
    };
    let call = quote_spanned! {output_span=>
        #private_at_output::#call_fn(#store, &#config, #target, #key, #arguments, #body).await
    };
    quote! {
        #(#attrs)*
        #vis async fn #ident(#receiver #(#inputs),*) #ret {
            let #arguments = #fingerprint;
            #(#destructure)*
            let #store = #store_value;
            let #key = #key_value;
            let #target = #target_value;
            let #body = #body_value;
            const #config: #private::Config = #config_value;
            #call
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destructured_parameter_is_renamed_and_fingerprinted_whole() {
        let item: syn::ItemFn = syn::parse_quote! {
            async fn handle(Message { id, .. }: Message, #[idem(skip)] db: &Db) -> Result<u8, E> {
                Ok(1)
            }
        };
        let handler = Handler::check(item, crate::handler::Mode::Call).expect("a valid function");
        let args: Args = syn::parse_quote!(store = "db.idem", key = "id");
        let text = emit(&args, handler).to_string();
        assert!(text.contains("__idem_arg0 : Message"), "{text}");
        assert!(text.contains(". arg (& __idem_arg0)"), "{text}");
        assert!(!text.contains(". arg (& db)"), "skipped: {text}");
        assert!(
            !text.contains("idem (skip)"),
            "the helper attribute is removed: {text}"
        );
    }
}
