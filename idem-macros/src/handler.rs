//! Step 2: the function under the attribute, checked to be an `async fn` axum handler that
//! the expansion can wrap, and taken apart into what the expansion needs.

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{
    Attribute, Block, Error, FnArg, Ident, Item, ItemFn, PatType, ReturnType, Safety, Type,
    Visibility, parse_quote,
};

use crate::args::Errors;

/// An `async fn` handler, taken apart.
pub(crate) struct Handler {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub ident: Ident,
    /// Every parameter but the last: kept as written, so their names stay in scope.
    pub leading: Vec<PatType>,
    /// The last parameter, wrapped by the expansion (none when the handler takes none).
    pub last: Option<PatType>,
    /// The return type with every `impl Trait` replaced by `_`, to pin the body's output.
    pub output: Type,
    /// Where the return type is written (the name when there is none).
    pub output_span: Span,
    pub block: Box<Block>,
}

impl Handler {
    /// Parses the item under the attribute and checks it.
    pub(crate) fn parse(item: TokenStream) -> syn::Result<Handler> {
        match syn::parse2::<ItemFn>(item.clone()) {
            Ok(item) => Handler::check(item),
            // Another kind of item: say what was expected. A function with a syntax error:
            // the compiler reports it when it parses the item, re-emitted unchanged.
            Err(error) => match syn::parse2::<Item>(item) {
                Ok(other) => Err(Error::new_spanned(
                    other,
                    "`#[idempotent]` goes on an `async fn` handler",
                )),
                Err(_) => Err(error),
            },
        }
    }

    /// Checks `item` and takes it apart, reporting every problem found at its token.
    pub(crate) fn check(item: ItemFn) -> syn::Result<Handler> {
        let mut errors = Errors::default();
        let sig = &item.sig;
        if let Err(error) = item.modifiers.require_empty() {
            errors.push(error);
        }
        if sig.asyncness.is_none() {
            errors.push(Error::new_spanned(
                sig.fn_token,
                "`#[idempotent]` goes on an `async fn`: write `async fn`",
            ));
        }
        if let Some(constness) = &sig.constness {
            errors.push(unsupported(constness, "`const` handlers"));
        }
        if let Safety::Unsafe(token) = &sig.safety {
            errors.push(unsupported(token, "`unsafe` handlers"));
        }
        if let Some(abi) = &sig.abi {
            errors.push(unsupported(abi, "`extern` handlers"));
        }
        if let Some(variadic) = &sig.variadic {
            errors.push(unsupported(variadic, "variadic handlers"));
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            errors.push(Error::new_spanned(
                &sig.generics,
                "`#[idempotent]` does not support generic handlers: write each parameter's \
                 concrete type",
            ));
        }
        let mut params = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(receiver) => errors.push(Error::new_spanned(
                    receiver,
                    "`#[idempotent]` does not support `self` receivers: an axum handler is a \
                     free function; take what you need as an extractor, such as `State`",
                )),
                FnArg::Typed(param) => {
                    if contains_impl_trait(&param.ty) {
                        errors.push(Error::new_spanned(
                            &param.ty,
                            "`#[idempotent]` does not support generic handlers: write this \
                             parameter's concrete type instead of `impl Trait`",
                        ));
                    }
                    params.push(param.clone());
                }
            }
        }
        errors.finish()?;

        let last = params.pop();
        let (mut output, output_span) = match &item.sig.output {
            ReturnType::Default => (parse_quote!(()), item.sig.ident.span()),
            ReturnType::Type(_, ty) => ((**ty).clone(), ty.span()),
        };
        InferImplTrait::default().visit_type_mut(&mut output);
        Ok(Handler {
            attrs: item.attrs,
            vis: item.vis,
            ident: item.sig.ident,
            leading: params,
            last,
            output,
            output_span,
            block: item.block,
        })
    }
}

fn unsupported(tokens: impl quote::ToTokens, what: &str) -> Error {
    Error::new_spanned(tokens, format!("`#[idempotent]` does not support {what}"))
}

fn contains_impl_trait(ty: &Type) -> bool {
    let mut ty = ty.clone();
    let mut finder = InferImplTrait::default();
    finder.visit_type_mut(&mut ty);
    finder.found
}

/// Replaces every `impl Trait` by `_`, and notes whether it found one.
#[derive(Default)]
struct InferImplTrait {
    found: bool,
}

impl VisitMut for InferImplTrait {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::ImplTrait(_) = ty {
            self.found = true;
            *ty = parse_quote!(_);
        } else {
            visit_mut::visit_type_mut(self, ty);
        }
    }
}
