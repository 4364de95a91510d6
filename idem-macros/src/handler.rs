//! Step 2: the function under the attribute, checked to be an `async fn` that the expansion
//! can wrap (an axum handler, or in plain-function mode any async fn or method), and taken
//! apart into what the expansion needs.

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{
    Attribute, Block, Error, Expr, FnArg, Ident, Item, ItemFn, Meta, Pat, PatIdent, PatType,
    Receiver, ReturnType, Safety, Signature, Type, Visibility, parse_quote,
};

use crate::args::Errors;
use crate::transactional;

/// What the function is for, which decides what it may look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// An axum handler: the key comes from a header; no `self`, no `#[idem(skip)]`.
    Http,
    /// Plain-function mode (`key = ...`): methods and `#[idem(skip)]` are fine.
    Call,
    /// A tonic service method: `&self` and a `tonic::Request`, without `key`.
    Grpc,
}

impl Mode {
    /// The mode the attribute's arguments ask for: plain-function mode when one of them is
    /// named `key`. Read from the tokens, so that it is known even when an argument is wrong;
    /// only `key =` first or after a comma counts, since a bare expression may name `key`.
    pub(crate) fn written(args: &TokenStream) -> Mode {
        use proc_macro2::TokenTree;
        let tokens: Vec<TokenTree> = args.clone().into_iter().collect();
        let names_key = tokens.iter().enumerate().any(|(at, tree)| {
            let named = matches!(tree, TokenTree::Ident(ident) if ident == "key");
            let starts = at == 0
                || matches!(&tokens[at - 1], TokenTree::Punct(p) if p.as_char() == ',');
            let assigned = matches!(
                tokens.get(at + 1),
                Some(TokenTree::Punct(p)) if p.as_char() == '=' && p.spacing() == proc_macro2::Spacing::Alone
            );
            named && starts && assigned
        });
        if names_key { Mode::Call } else { Mode::Http }
    }

    /// The mode for `item` under these arguments: without `key`, a method that takes `self`
    /// and a `Request<..>` is a tonic service method.
    pub(crate) fn for_item(self, item: &TokenStream) -> Mode {
        match self {
            Mode::Http if crate::grpc::is_tonic_method(item) => Mode::Grpc,
            mode => mode,
        }
    }
}

/// The attribute that keeps a parameter out of the fingerprint in plain-function mode.
const SKIP: &str = "idem";

/// An `async fn` handler, taken apart.
pub(crate) struct Handler {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub ident: Ident,
    /// `self`, `&self`, `&mut self` (plain-function mode only).
    pub receiver: Option<Receiver>,
    /// Which parameters (of `leading`, then `last`) carry `#[idem(skip)]`, which is removed.
    pub skipped: Vec<bool>,
    /// The signature as written, minus `#[idem(skip)]` (the HTTP expansion keeps the
    /// function whole, as an inner function).
    pub sig: Signature,
    /// The return type as written.
    pub ret: ReturnType,
    /// Every parameter but the last: kept as written, so their names stay in scope.
    pub leading: Vec<PatType>,
    /// The last parameter, wrapped by the expansion (none when the handler takes none).
    pub last: Option<PatType>,
    /// Which parameter (of `leading`, then `last`) is the transaction, in transactional mode:
    /// the runtime provides it, so the caller, or axum, does not.
    pub tx: Option<usize>,
    /// The return type with every `impl Trait` replaced by `_`, to pin the body's output.
    pub output: Type,
    /// Where the return type is written (the name when there is none).
    pub output_span: Span,
    pub block: Box<Block>,
}

impl Handler {
    /// Parses the item under the attribute and checks it.
    pub(crate) fn parse(item: TokenStream, mode: Mode) -> syn::Result<Handler> {
        match syn::parse2::<ItemFn>(item.clone()) {
            Ok(item) => Handler::check(item, mode),
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
    pub(crate) fn check(item: ItemFn, mode: Mode) -> syn::Result<Handler> {
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
        let mut receiver = None;
        let mut skipped = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(this) if mode == Mode::Http => errors.push(Error::new_spanned(
                    this,
                    "`#[idempotent]` does not support `self` receivers on an axum handler: a \
                     handler is a free function; take what you need as an extractor, such as \
                     `State` (methods are fine in plain-function mode, with `key = ...`, and as tonic \
                     service methods, which take a `tonic::Request`)",
                )),
                FnArg::Receiver(this) => receiver = Some(this.clone()),
                FnArg::Typed(param) => {
                    if contains_impl_trait(&param.ty) {
                        errors.push(Error::new_spanned(
                            &param.ty,
                            "`#[idempotent]` does not support generic handlers: write this \
                             parameter's concrete type instead of `impl Trait`",
                        ));
                    }
                    let mut param = param.clone();
                    match take_skip(&mut param.attrs) {
                        Ok(Some(attr)) if mode == Mode::Http => errors.push(Error::new_spanned(
                            attr,
                            "`#[idem(skip)]` keeps a parameter out of the fingerprint in \
                             plain-function mode (`key = ...`); an axum handler's \
                             fingerprint is the request",
                        )),
                        Ok(found) => skipped.push(found.is_some()),
                        Err(error) => errors.push(error),
                    }
                    params.push(param);
                }
            }
        }
        let tx = transactional::find(&params).unwrap_or_else(|error| {
            errors.push(error);
            None
        });
        errors.finish()?;

        let mut sig = item.sig.clone();
        for (input, param) in sig
            .inputs
            .iter_mut()
            .filter_map(|input| match input {
                FnArg::Typed(typed) => Some(typed),
                FnArg::Receiver(_) => None,
            })
            .zip(&params)
        {
            input.attrs.clone_from(&param.attrs);
        }
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
            receiver,
            skipped,
            sig,
            ret: item.sig.output,
            leading: params,
            last,
            tx,
            output,
            output_span,
            block: item.block,
        })
    }
}

impl Handler {
    /// Every parameter, in order, with whether it is skipped.
    pub(crate) fn params(&self) -> impl Iterator<Item = (&PatType, bool)> {
        self.leading
            .iter()
            .chain(&self.last)
            .zip(self.skipped.iter().copied())
    }

    /// The transaction parameter, if the function takes one.
    pub(crate) fn tx(&self) -> Option<&PatType> {
        self.tx
            .and_then(|at| self.params().nth(at))
            .map(|(param, _)| param)
    }

    /// Checks that the `key` expression uses the arguments: a key that names none of them
    /// (a constant, a global) is the same for every call, so every call after the first would
    /// replay the first one's result.
    pub(crate) fn check_key(&self, key: &Expr) -> syn::Result<()> {
        let mut names: Vec<String> = Vec::new();
        // The transaction is opened after the key is computed: the key cannot name it.
        let arguments = self
            .params()
            .enumerate()
            .filter(|(at, _)| Some(*at) != self.tx);
        for (_, (param, _)) in arguments {
            let mut pat = (*param.pat).clone();
            let mut bound = BoundNames::default();
            bound.visit_pat_mut(&mut pat);
            names.extend(bound.0);
        }
        if self.receiver.is_some() {
            names.push("self".to_owned());
        }
        let tokens = quote::ToTokens::to_token_stream(key);
        if names.iter().any(|name| mentions(tokens.clone(), name)) {
            return Ok(());
        }
        let message = if names.is_empty() {
            "the `key` expression is computed from the function's arguments, and this \
             function has none: every call would share one key"
                .to_owned()
        } else {
            let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!(
                "the `key` expression names none of the function's arguments ({}): a key that \
                 does not come from the arguments is the same for every call; write one like \
                 \"msg.id\" or \"format!(\\\"order-{{}}\\\", order.id)\"",
                list.join(", ")
            )
        };
        Err(Error::new_spanned(key, message))
    }
}

/// Removes `#[idem(skip)]` from a parameter's attributes, returning it when found.
fn take_skip(attrs: &mut Vec<Attribute>) -> syn::Result<Option<Attribute>> {
    let Some(at) = attrs.iter().position(|a| a.path().is_ident(SKIP)) else {
        return Ok(None);
    };
    let attr = attrs.remove(at);
    let is_skip = match &attr.meta {
        Meta::List(list) => list
            .parse_args::<Ident>()
            .is_ok_and(|ident| ident == "skip"),
        _ => false,
    };
    if is_skip {
        Ok(Some(attr))
    } else {
        Err(Error::new_spanned(
            attr,
            "expected `#[idem(skip)]`, which keeps this parameter out of the fingerprint",
        ))
    }
}

/// Whether `name` appears in `tokens`, as an identifier or as an inline format argument
/// (`"{name}"`, `"{name:?}"`) inside a macro call.
pub(crate) fn mentions(tokens: TokenStream, name: &str) -> bool {
    tokens.into_iter().any(|tree| match tree {
        proc_macro2::TokenTree::Ident(ident) => ident == name,
        proc_macro2::TokenTree::Group(group) => mentions(group.stream(), name),
        proc_macro2::TokenTree::Literal(lit) => {
            let text = lit.to_string();
            text.starts_with('"')
                && (text.contains(&format!("{{{name}}}")) || text.contains(&format!("{{{name}:")))
        }
        proc_macro2::TokenTree::Punct(_) => false,
    })
}

/// The names a pattern binds.
#[derive(Default)]
struct BoundNames(Vec<String>);

impl VisitMut for BoundNames {
    fn visit_pat_ident_mut(&mut self, pat: &mut PatIdent) {
        self.0.push(pat.ident.to_string());
        visit_mut::visit_pat_ident_mut(self, pat);
    }
}

/// A parameter whose pattern is a plain name (`msg`, `mut msg`) is referred to by it.
pub(crate) fn plain_name(pat: &Pat) -> Option<&Ident> {
    match pat {
        Pat::Ident(PatIdent {
            by_ref: None,
            subpat: None,
            ident,
            ..
        }) => Some(ident),
        _ => None,
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
