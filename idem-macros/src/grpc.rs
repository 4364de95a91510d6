//! Step 2, gRPC mode: a unary method of a tonic service implementation,
//! `async fn m(&self, request: tonic::Request<M>) -> Result<tonic::Response<R>, tonic::Status>`,
//! checked and taken apart. Tonic's service traits are declared with `#[async_trait]`, so the
//! method usually arrives here as `async-trait` rewrote it (the attribute on the `impl` expands
//! before the one on its method): a plain `fn` returning
//! `Pin<Box<dyn Future<Output = Result<..>> + Send + 'async_trait>>` whose body is
//! `Box::pin(async move { .. })`. Both forms are accepted and taken apart alike, as
//! `tracing-attributes` does for `#[instrument]`.

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{
    Attribute, Block, Error, Expr, ExprPath, FnArg, GenericArgument, Ident, ImplItemFn, Item,
    PatType, PathArguments, ReturnType, Signature, Stmt, Type, TypeParamBound, Visibility,
};

use crate::args::Errors;
use crate::handler::plain_name;
use crate::transactional;

/// What the method looks like to the compiler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `async fn`, as written (a trait without `#[async_trait]`, or an inherent method).
    Native,
    /// As `#[async_trait]` rewrote it: a `fn` returning a boxed future.
    AsyncTrait,
}

/// A tonic method, taken apart.
pub(crate) struct Method {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    /// The signature as the trait wants it: the transaction parameter left out.
    pub sig: Signature,
    pub form: Form,
    /// The request parameter as written.
    pub request: PatType,
    /// The transaction parameter, in transactional mode.
    pub tx: Option<PatType>,
    /// The body's statements, to run inside an `async move` block, with every `self` that
    /// means the receiver renamed to `self_name`.
    pub body: Vec<Stmt>,
    /// Whether the body uses `self` at all.
    pub uses_self: bool,
    /// `Result<tonic::Response<R>, tonic::Status>`, as written: it pins the body's output, so
    /// that `?` in it infers.
    pub output: Type,
}

/// What every `self` of the body becomes: a reference to the service's clone.
pub(crate) fn self_name() -> Ident {
    Ident::new("__idem_self", Span::mixed_site())
}

/// Whether a function is a tonic service method (rather than an axum handler or, with
/// `key = ...`, a plain function): it takes `self` and a parameter typed `Request<..>`.
pub(crate) fn is_tonic_method(item: &TokenStream) -> bool {
    syn::parse2::<ImplItemFn>(item.clone()).is_ok_and(|item| {
        item.sig.receiver().is_some()
            && item
                .sig
                .inputs
                .iter()
                .any(|input| matches!(input, FnArg::Typed(param) if is_request(&param.ty)))
    })
}

const SHAPE: &str = "an idempotent gRPC method has tonic's unary shape, \
    `async fn m(&self, request: tonic::Request<M>) -> Result<tonic::Response<R>, tonic::Status>`";

impl Method {
    /// Parses the item under the attribute and checks it.
    pub(crate) fn parse(item: TokenStream) -> syn::Result<Method> {
        match syn::parse2::<ImplItemFn>(item.clone()) {
            Ok(item) => Method::check(item),
            Err(error) => match syn::parse2::<Item>(item) {
                Ok(other) => Err(Error::new_spanned(
                    other,
                    "`#[idempotent]` goes on an `async fn` handler or a tonic service method",
                )),
                Err(_) => Err(error),
            },
        }
    }

    fn check(item: ImplItemFn) -> syn::Result<Method> {
        let mut errors = Errors::default();
        let sig = &item.sig;
        let boxed = boxed_output(&sig.output);
        let form = match (&sig.asyncness, boxed) {
            (Some(_), _) => Form::Native,
            (None, Some(_)) => Form::AsyncTrait,
            (None, None) => {
                return Err(Error::new_spanned(
                    sig.fn_token,
                    "`#[idempotent]` goes on an `async fn`: write `async fn` (under tonic's \
                     `#[tonic::async_trait]` on the `impl`)",
                ));
            }
        };
        if form == Form::Native && !sig.generics.params.is_empty() {
            errors.push(Error::new_spanned(
                &sig.generics,
                format!("{SHAPE}, with no generic parameters"),
            ));
        }
        match sig.receiver() {
            Some(receiver) if matches!(receiver.kind, syn::ReceiverKind::Reference(_, _, None)) => {
            }
            Some(receiver) => errors.push(Error::new_spanned(
                receiver,
                format!("{SHAPE}: the receiver is `&self`, as tonic's service traits declare it"),
            )),
            None => {}
        }
        // The output: `Result<Response<R>, Status>`, boxed by `async-trait` or not.
        let output = match (&sig.output, boxed) {
            (_, Some(output)) => Some(output),
            (ReturnType::Type(_, ty), None) => Some(&**ty),
            (ReturnType::Default, None) => None,
        };
        let answer = output.filter(|output| is_answer(output)).cloned();
        if answer.is_none() {
            let at = output.map_or_else(|| sig.ident.span(), Spanned::span);
            errors.push(Error::new(
                at,
                format!("{SHAPE}: it returns `Result<tonic::Response<R>, tonic::Status>`"),
            ));
        }
        let params: Vec<PatType> = sig
            .inputs
            .iter()
            .filter_map(|input| match input {
                FnArg::Typed(param) => Some(param.clone()),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let tx_at = transactional::find(&params).unwrap_or_else(|error| {
            errors.push(error);
            None
        });
        let (tx, others): (Vec<_>, Vec<_>) = params
            .into_iter()
            .enumerate()
            .partition(|(at, _)| Some(*at) == tx_at);
        let mut others = others.into_iter().map(|(_, param)| param);
        let request = match (others.next(), others.next()) {
            (Some(request), None) if is_request(&request.ty) => Some(request),
            (Some(request), None) => {
                errors.push(Error::new_spanned(
                    &request.ty,
                    format!("{SHAPE}: its one parameter is the `tonic::Request<M>`"),
                ));
                None
            }
            (_, Some(extra)) => {
                errors.push(Error::new_spanned(
                    extra,
                    format!("{SHAPE}: it takes the request only (and a `Tx` with `transactional`)"),
                ));
                None
            }
            (None, None) => {
                errors.push(Error::new_spanned(
                    &sig.inputs,
                    format!("{SHAPE}: it takes the request"),
                ));
                None
            }
        };
        if sig.receiver().is_none() {
            errors.push(Error::new_spanned(
                &sig.inputs,
                format!("{SHAPE}: it takes `&self`"),
            ));
        }
        let block = match form {
            Form::Native => Some(item.block.clone()),
            Form::AsyncTrait => {
                let inner = async_trait_block(&item.block);
                if inner.is_none() {
                    errors.push(Error::new_spanned(
                        &item.block,
                        "expected the body `#[async_trait]` writes, `Box::pin(async move { .. })`",
                    ));
                }
                inner
            }
        };
        errors.finish()?;
        let (Some(request), Some(mut block), Some(output)) = (request, block, answer) else {
            return Err(Error::new(Span::call_site(), SHAPE));
        };
        let mut renamer = RenameSelf::default();
        renamer.visit_block_mut(&mut block);

        let mut sig = item.sig;
        let tx = tx.into_iter().next().map(|(_, param)| param);
        if tx.is_some() {
            sig.inputs = sig
                .inputs
                .into_iter()
                .filter(|input| !matches!(input, FnArg::Typed(param) if transactional::is_tx(&param.ty)))
                .collect();
        }
        // A request pattern that is not a plain name is bound by the closure; the method
        // takes the request under a name of its own.
        if plain_name(&request.pat).is_none() {
            for input in &mut sig.inputs {
                if let FnArg::Typed(param) = input {
                    *param.pat = syn::parse_quote!(__idem_request);
                }
            }
        }
        Ok(Method {
            attrs: item.attrs,
            vis: item.vis,
            sig,
            form,
            request,
            tx,
            body: block.stmts,
            uses_self: renamer.found,
            output,
        })
    }

    /// The name the method's signature gives the request.
    pub(crate) fn request_name(&self) -> Ident {
        plain_name(&self.request.pat)
            .cloned()
            .unwrap_or_else(|| Ident::new("__idem_request", Span::call_site()))
    }

    /// The transaction parameter, if the method takes one.
    pub(crate) fn tx(&self) -> Option<&PatType> {
        self.tx.as_ref()
    }
}

/// `Pin<Box<dyn Future<Output = T> + Send + 'a>>`'s `T`: the output of a method as
/// `async-trait` rewrote it.
fn boxed_output(output: &ReturnType) -> Option<&Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let pinned = generic_argument(ty, "Pin")?;
    let Type::TraitObject(object) = generic_argument(pinned, "Box")? else {
        return None;
    };
    object.bounds.iter().find_map(|bound| match bound {
        TypeParamBound::Trait(bound) => {
            let last = bound.path.segments.last()?;
            let PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            if last.ident != "Future" {
                return None;
            }
            args.args.iter().find_map(|arg| match arg {
                GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(&assoc.ty),
                _ => None,
            })
        }
        _ => None,
    })
}

/// The one type argument of a path type whose last segment is `name`.
fn generic_argument<'a>(ty: &'a Type, name: &str) -> Option<&'a Type> {
    let arguments = type_arguments(ty, name)?;
    match arguments.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// The type arguments of a path type whose last segment is `name`.
fn type_arguments<'a>(ty: &'a Type, name: &str) -> Option<Vec<&'a Type>> {
    let Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    Some(
        args.args
            .iter()
            .filter_map(|arg| match arg {
                GenericArgument::Type(ty) => Some(ty),
                _ => None,
            })
            .collect(),
    )
}

/// `Request<M>`, by its last path segment.
fn is_request(ty: &Type) -> bool {
    generic_argument(ty, "Request").is_some()
}

/// `Result<Response<R>, Status>`, by last path segments.
fn is_answer(ty: &Type) -> bool {
    match type_arguments(ty, "Result").as_deref() {
        Some([ok, err]) => {
            generic_argument(ok, "Response").is_some()
                && matches!(err, Type::Path(path) if path.path.segments.last().is_some_and(|s| s.ident == "Status"))
        }
        _ => false,
    }
}

/// The `async move` block inside `async-trait`'s `Box::pin(async move { .. })`.
fn async_trait_block(block: &Block) -> Option<Block> {
    let [Stmt::Expr(Expr::Call(call), None)] = block.stmts.as_slice() else {
        return None;
    };
    let Expr::Path(function) = &*call.func else {
        return None;
    };
    let names_pin = function
        .path
        .segments
        .last()
        .is_some_and(|s| s.ident == "pin");
    let [Expr::Async(inner)] = call.args.iter().collect::<Vec<_>>().as_slice() else {
        return None;
    };
    (names_pin && inner.capture.is_some()).then(|| inner.block.clone())
}

/// Renames every `self` of a body to [`self_name`] (in macro calls too), leaving nested items,
/// whose `self` is their own, alone.
#[derive(Default)]
struct RenameSelf {
    found: bool,
}

impl VisitMut for RenameSelf {
    fn visit_expr_path_mut(&mut self, path: &mut ExprPath) {
        if path.qself.is_none() && path.path.is_ident("self") {
            self.found = true;
            path.path = self_name().into();
        }
        visit_mut::visit_expr_path_mut(self, path);
    }

    fn visit_macro_mut(&mut self, mac: &mut syn::Macro) {
        mac.tokens = self.rename_tokens(mac.tokens.clone());
    }

    fn visit_item_mut(&mut self, _: &mut Item) {}
}

impl RenameSelf {
    fn rename_tokens(&mut self, tokens: TokenStream) -> TokenStream {
        use proc_macro2::TokenTree;
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut out = Vec::with_capacity(trees.len());
        for (at, tree) in trees.iter().enumerate() {
            let path_follows =
                matches!(trees.get(at + 1), Some(TokenTree::Punct(p)) if p.as_char() == ':');
            out.push(match tree {
                TokenTree::Ident(ident) if ident == "self" && !path_follows => {
                    self.found = true;
                    TokenTree::Ident(self_name())
                }
                TokenTree::Group(group) => {
                    let mut inner = proc_macro2::Group::new(
                        group.delimiter(),
                        self.rename_tokens(group.stream()),
                    );
                    inner.set_span(group.span());
                    TokenTree::Group(inner)
                }
                other => other.clone(),
            });
        }
        out.into_iter().collect()
    }
}

/// `keep_server_errors` and `release` name HTTP statuses: a gRPC method's policy is fixed.
pub(crate) fn check_args(args: &crate::args::Args) -> syn::Result<()> {
    let mut errors = Errors::default();
    let keep = args
        .keep_server_errors
        .as_ref()
        .map(|k| ("keep_server_errors", k.span));
    let release = args.release.as_ref().map(|r| ("release", r.span));
    for (name, span) in keep.into_iter().chain(release) {
        errors.push(Error::new(
            span,
            format!(
                "`{name}` does not apply to a gRPC method: it names HTTP statuses; a gRPC \
                 method releases `UNAVAILABLE`, `INTERNAL`, `UNKNOWN` and \
                 `DEADLINE_EXCEEDED`, so a retry runs again, and keeps every other answer; \
                 leave `{name}` out"
            ),
        ));
    }
    errors.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn the_async_trait_form_is_taken_apart_like_the_native_one() {
        let item: TokenStream = parse_quote! {
            fn create<'life0, 'async_trait>(
                &'life0 self,
                request: tonic::Request<New>,
            ) -> ::core::pin::Pin<Box<dyn ::core::future::Future<Output = Result<tonic::Response<Paid>, tonic::Status>> + ::core::marker::Send + 'async_trait>>
            where 'life0: 'async_trait, Self: 'async_trait
            {
                Box::pin(async move {
                    let __self = self;
                    let request = request;
                    let __ret: Result<tonic::Response<Paid>, tonic::Status> = { __self.pay(request).await };
                    #[allow(unreachable_code)]
                    __ret
                })
            }
        };
        let method = Method::parse(item).expect("async-trait's form");
        assert_eq!(method.form, Form::AsyncTrait);
        assert!(method.uses_self);
        let stmts = &method.body;
        let body = quote::quote!(#(#stmts)*).to_string();
        assert!(body.contains("let __self = __idem_self"), "{body}");
    }
}
