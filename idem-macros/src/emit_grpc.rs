//! Step 3, gRPC mode: the tonic method keeps the signature its trait declares (less the `Tx`
//! parameter of a transactional method); its body evaluates the store and the scope, takes a
//! clone of the service, and hands the method's own body, as a `'static` closure over that
//! clone and the request, to the runtime's `grpc_run`. Every `self` of the body stands for the
//! clone, so the call can finish in a task of its own when its client cancels.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::Ident;
use syn::spanned::Spanned as _;

use crate::args::Args;
use crate::emit::{config_builder, private_path, store_and_scope};
use crate::grpc::{Form, Method, self_name};

/// The generated method.
pub(crate) fn emit(args: &Args, method: Method) -> TokenStream {
    let private = private_path(args);
    let local = |name: &str| Ident::new(name, Span::mixed_site());
    let (store, target, service, body, config) = (
        local("__idem_store"),
        local("__idem_target"),
        local("__idem_service"),
        local("__idem_method"),
        local("__IDEM_CONFIG"),
    );
    let request_name = method.request_name();
    let Method {
        attrs,
        vis,
        sig,
        form,
        request,
        tx,
        body: stmts,
        uses_self,
        output,
    } = method;

    let (store_value, scope_value) = store_and_scope(args, &private);
    let name = Literal::string(&sig.ident.to_string());
    let config_value = config_builder(args, &private);

    // The service's clone, for a body that uses `self` (spanned at the receiver, so that a
    // service that is not `Clone` is reported there).
    let self_ref = self_name();
    let (clone, borrow) = if uses_self {
        let at = sig.receiver().map_or_else(Span::call_site, |r| r.span());
        (
            quote_spanned!(at=> let #service = #private::grpc_service(self);),
            quote!(let #self_ref = &#service;),
        )
    } else {
        (TokenStream::new(), TokenStream::new())
    };
    let (request_pat, request_ty) = (&request.pat, &request.ty);
    let (closure, run) = match &tx {
        Some(tx) => {
            let (tx_pat, tx_ty) = (&tx.pat, &tx.ty);
            (
                quote! {
                    move |#request_pat: #request_ty, #tx_pat: #tx_ty| #private::typed::<#output, _>(async move {
                        #borrow
                        #(#stmts)*
                    })
                },
                quote!(grpc_run_transactional),
            )
        }
        None => (
            quote! {
                move |#request_pat: #request_ty| #private::typed::<#output, _>(async move {
                    #borrow
                    #(#stmts)*
                })
            },
            quote!(grpc_run),
        ),
    };
    let call = quote! {
        #private::#run(#store, &#config, #target, #request_name, #body)
    };
    let answer = match form {
        Form::Native => quote!(#call.await),
        Form::AsyncTrait => quote!(::std::boxed::Box::pin(#call)),
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            let #store = #store_value;
            let #target = #private::method_target(
                ::core::any::type_name::<Self>(),
                #name,
                #scope_value,
            );
            #clone
            let #body = #closure;
            const #config: #private::Config = #config_value;
            #answer
        }
    }
}
