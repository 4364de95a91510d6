//! Transactional mode (`transactional`, `isolation = "..."`): which parameter is the handler's
//! transaction, and the checks that pair it with the argument. The runtime opens the
//! transaction after the claim and commits the handler's writes with the stored result
//! (`idem_runtime::Tx`); the expansion only leaves the parameter out of what the caller, or
//! axum, provides, and hands it in through a closure.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{Error, PatType, Type};

use crate::args::Errors;

/// The type names that make a parameter the transaction: the last segment of its path.
const TX_TYPES: [&str; 3] = ["Tx", "PgTx", "SqliteTx"];

/// An isolation level, as `isolation = "..."` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

/// Every accepted `isolation` value, with the runtime's variant it stands for.
const LEVELS: [(&str, Isolation, &str); 3] = [
    ("read_committed", Isolation::ReadCommitted, "ReadCommitted"),
    (
        "repeatable_read",
        Isolation::RepeatableRead,
        "RepeatableRead",
    ),
    ("serializable", Isolation::Serializable, "Serializable"),
];

impl Isolation {
    /// The level `text` names, or an error that lists the accepted ones.
    pub(crate) fn parse(text: &str) -> Result<Isolation, String> {
        LEVELS
            .iter()
            .find(|(name, ..)| *name == text)
            .map(|&(_, level, _)| level)
            .ok_or_else(|| {
                let names: Vec<String> = LEVELS.iter().map(|(n, ..)| format!("\"{n}\"")).collect();
                format!(
                    "`isolation` must be one of {}, or left out for the database's default; \
                     got {text:?}",
                    names.join(", ")
                )
            })
    }

    /// `__private::Isolation::Default` when none is written, else the level's variant.
    pub(crate) fn tokens(level: Option<Isolation>, private: &TokenStream) -> TokenStream {
        let variant = LEVELS
            .iter()
            .find(|(_, l, _)| Some(*l) == level)
            .map_or("Default", |(.., variant)| variant);
        let variant = syn::Ident::new(variant, Span::call_site());
        quote!(#private::Isolation::#variant)
    }
}

/// Whether `ty` is a transaction: a path whose last segment is `Tx`, `PgTx` or `SqliteTx`.
pub(crate) fn is_tx(ty: &Type) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|segment| TX_TYPES.iter().any(|name| segment.ident == name)),
        Type::Group(group) => is_tx(&group.elem),
        Type::Paren(paren) => is_tx(&paren.elem),
        _ => false,
    }
}

/// The transaction among `params`: its index, or an error at every one after the first.
pub(crate) fn find(params: &[PatType]) -> syn::Result<Option<usize>> {
    let mut found = None;
    let mut errors = Errors::default();
    for (at, param) in params.iter().enumerate() {
        if !is_tx(&param.ty) {
            continue;
        }
        match found {
            None => found = Some(at),
            Some(first) => {
                let first: &PatType = &params[first];
                let first = &first.pat;
                errors.push(Error::new_spanned(
                    param,
                    format!(
                        "a transactional handler takes one transaction, and `{}` is already it: \
                         write through that one",
                        quote!(#first)
                    ),
                ));
            }
        }
    }
    errors.finish().map(|()| found)
}

/// The pairing of the argument with the parameter: one without the other is an error.
/// `transactional` is the span of the argument when it is on; `tx` the parameter, if any.
pub(crate) fn check(transactional: Option<Span>, tx: Option<&PatType>) -> syn::Result<()> {
    match (transactional, tx) {
        (Some(span), None) => Err(Error::new(
            span,
            "`transactional` needs the transaction as a parameter, which the runtime opens \
             after the claim and commits with the stored result: add one, like `mut tx: PgTx` \
             or `mut tx: SqliteTx` (`idem_runtime::Tx`), and write through `&mut *tx`",
        )),
        (None, Some(param)) => Err(Error::new_spanned(
            &param.ty,
            "a `Tx` parameter is the transaction of a transactional handler: add \
             `transactional` to `#[idempotent(...)]`, so that the runtime opens it and \
             commits it with the stored result (a parameter is taken for the transaction by \
             its type's name: `Tx`, `PgTx` or `SqliteTx`)",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn a_transaction_is_named_by_the_last_segment_of_its_type() {
        let txs: [Type; 4] = [
            parse_quote!(PgTx),
            parse_quote!(idem_runtime::SqliteTx),
            parse_quote!(Tx<sqlx::Postgres>),
            parse_quote!(::idem_runtime::Tx<sqlx::Sqlite>),
        ];
        assert!(txs.iter().all(is_tx));
        let others: [Type; 4] = [
            parse_quote!(&mut PgTx),
            parse_quote!(Option<PgTx>),
            parse_quote!(Txn),
            parse_quote!(sqlx::Transaction<'static, sqlx::Postgres>),
        ];
        assert!(!others.iter().any(is_tx));
    }

    #[test]
    fn an_unknown_isolation_lists_the_accepted_ones() {
        assert_eq!(
            Isolation::parse("serializable"),
            Ok(Isolation::Serializable)
        );
        let error = Isolation::parse("snapshot").expect_err("not a level");
        assert!(
            error.contains("\"read_committed\", \"repeatable_read\", \"serializable\""),
            "{error}"
        );
    }
}
