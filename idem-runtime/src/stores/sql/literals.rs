//! Postgres statements with their values written into the text, for the simple query
//! protocol: one `Query` message and one round trip, on whichever server connection a pooler
//! hands out ([`Values::InText`](super::Values::InText); README, "Behind a connection
//! pooler").
//!
//! A bound statement cannot do that with sqlx: a named one lives on one server connection,
//! which transaction pooling does not keep, and an unnamed one is parsed in one round trip and
//! bound in a second, between which the pooler may switch server connections. Written in, a
//! value can never be read as SQL: text is an `E'…'` literal whose quotes and backslashes are
//! doubled (as libpq's `PQescapeLiteral` writes it, whatever `standard_conforming_strings`
//! says), bytes are hex digits given to `decode`, numbers are their digits.

use std::fmt::Write;

use super::Param;
use crate::engine::fingerprint::push_hex;
use crate::engine::store::{StoreError, StoreResult};

/// `template` with each `$N` replaced by `params[N - 1]` written as a literal. Only the
/// template is scanned for placeholders, never a value written in.
pub(crate) fn written_in(template: &str, params: &[Param<'_>]) -> StoreResult<String> {
    let values: usize = params.iter().map(len_hint).sum();
    let mut sql = String::with_capacity(template.len() + values);
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        sql.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        let number = &after[..digits];
        let param = number
            .parse::<usize>()
            .ok()
            .and_then(|n| params.get(n.checked_sub(1)?))
            .ok_or_else(|| {
                StoreError::permanent(format!(
                    "a statement names ${number}, which it was not given"
                ))
            })?;
        write(&mut sql, param)?;
        rest = &after[digits..];
    }
    sql.push_str(rest);
    Ok(sql)
}

/// Roughly how long a value's literal is.
fn len_hint(param: &Param<'_>) -> usize {
    match param {
        Param::Text(text) | Param::NullableText(Some(text)) => text.len() + 4,
        Param::NullableText(None) => 4,
        Param::Bytes(bytes) => 2 * bytes.len() + 16,
        Param::Int(_) | Param::BigInt(_) => 22,
    }
}

fn write(sql: &mut String, param: &Param<'_>) -> StoreResult<()> {
    match param {
        Param::Text(text) | Param::NullableText(Some(text)) => write_text(sql, text)?,
        Param::NullableText(None) => sql.push_str("NULL"),
        Param::Bytes(bytes) => {
            sql.push_str("decode('");
            push_hex(sql, bytes);
            sql.push_str("', 'hex')");
        }
        // Parenthesised, so that `-1` stays one value before a cast.
        Param::Int(number) => {
            let _ = write!(sql, "({number})");
        }
        Param::BigInt(number) => {
            let _ = write!(sql, "({number})");
        }
    }
    Ok(())
}

/// Text as `E'…'`, its quotes and backslashes doubled. Postgres text cannot hold NUL, and the
/// protocol ends a query at one: such text is refused, as the server refuses it when bound.
fn write_text(sql: &mut String, text: &str) -> StoreResult<()> {
    if text.contains('\0') {
        return Err(StoreError::permanent(
            "a value holds a NUL character, which Postgres text cannot store",
        ));
    }
    sql.push_str("E'");
    for c in text.chars() {
        if c == '\'' || c == '\\' {
            sql.push(c);
        }
        sql.push(c);
    }
    sql.push('\'');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(template: &str, params: &[Param<'_>]) -> String {
        written_in(template, params).unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn each_placeholder_becomes_its_literal() {
        let params = [
            Param::Text("it's a \\ test"),
            Param::NullableText(None),
            Param::Bytes(b"\x00\xffA"),
            Param::BigInt(-1),
            Param::Int(201),
            Param::Text("$1"),
            Param::NullableText(Some("z")),
            Param::Text("w"),
            Param::Text("v"),
            Param::BigInt(10),
        ];
        assert_eq!(
            written("a = $1 AND b = $2, $3, $4::bigint, $5 $6 $7 $10$1", &params),
            "a = E'it''s a \\\\ test' AND b = NULL, decode('00ff41', 'hex'), (-1)::bigint, \
             (201) E'$1' E'z' (10)E'it''s a \\\\ test'"
        );
        assert_eq!(written("no placeholders", &[]), "no placeholders");
    }

    #[test]
    fn a_missing_parameter_or_a_nul_is_an_error_not_sql() {
        for template in ["$2", "$0", "$", "$x"] {
            assert!(
                written_in(template, &[Param::BigInt(1)]).is_err(),
                "{template}"
            );
        }
        let nul = written_in("$1", &[Param::Text("a\0b")]);
        assert!(nul.is_err_and(|e| !e.is_transient()));
    }
}
