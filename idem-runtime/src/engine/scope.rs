//! Whose key a key is (docs/contract.md, "Scopes"): the scope a call asks for, the rule a
//! store applies when it asks for none, and the one warning an unscoped handler gets.
//!
//! A record is (scope, handler, key), so one key under two scopes never meets. A call's scope
//! comes, in order, from its own `scope = ...` argument (`scope = none` says "no scope, on
//! purpose"), else from its store's rule (`Store::scope_by`), else it is unscoped: every
//! caller shares the handler's keys, and the handler's first unscoped call logs a warning.
// Handler names come as `&Cow` so that a thread remembers a static name without copying it.
#![allow(clippy::ptr_arg)]

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::request::Parts;

/// The scope a call asks for: its own, none on purpose, or its store's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    /// The store's rule decides ([`Store::scope_by`](crate::Store::scope_by)); without one,
    /// the call is unscoped and its handler's first call logs a warning.
    #[default]
    Inherit,
    /// No scope, on purpose (`scope = none`): every caller shares the handler's keys. No
    /// warning.
    None,
    /// This scope (`scope = user.tenant_id`), whatever the store's rule says.
    Named(String),
}

/// A store's rule: the scope of an HTTP request, from its parts; `None` when the request
/// names no caller.
pub(crate) type ScopeRule = dyn Fn(&Parts) -> Option<String> + Send + Sync;

/// A shared rule.
#[derive(Clone)]
pub(crate) struct Rule(pub(crate) Arc<ScopeRule>);

/// Whether any store in the process has a rule. Until one does, a handler that inherits its
/// store's scope keeps only its key header, as one with its own scope does: the copy of the
/// request's head a rule reads costs about 4,000 instructions a call (`tests/benches/overhead.rs`,
/// the callgrind recipe in `bench/notes.md`), and a process with no rule never reads it. Rules
/// are set as a service starts, before it serves; a request read before would find no head
/// for the rule and be refused, never run unscoped.
static RULES: AtomicBool = AtomicBool::new(false);

impl Rule {
    /// A rule, noted as existing in this process.
    pub(crate) fn new(rule: Arc<ScopeRule>) -> Self {
        RULES.store(true, Ordering::Relaxed);
        Rule(rule)
    }
}

/// Whether any store in the process has a rule (`Store::scope_by`).
#[cfg(feature = "axum")]
pub(crate) fn rules_exist() -> bool {
    RULES.load(Ordering::Relaxed)
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rule(..)")
    }
}

/// Why a call has no scope to run under: its store scopes keys by caller, and the call names
/// none (an HTTP request the rule cannot place, or a plain function, which has no request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoScope;

/// The scope a call runs under: its own, its store's rule's, or none (`""`). A call that asks
/// its store (`Scope::Inherit`) when the store has a rule that cannot place it is refused: a
/// shared "anonymous" space would hand one unidentified caller another's response.
pub(crate) fn resolve(
    asked: Scope,
    rule: Option<&Rule>,
    parts: Option<&Parts>,
    handler: &Cow<'static, str>,
) -> Result<String, NoScope> {
    match (asked, rule) {
        (Scope::Named(scope), _) => Ok(scope),
        (Scope::None, _) => Ok(String::new()),
        (Scope::Inherit, Some(Rule(rule))) => parts
            .and_then(|parts| rule(parts))
            .filter(|scope| !scope.is_empty())
            .ok_or(NoScope),
        (Scope::Inherit, None) => {
            warn_unscoped_once(handler);
            Ok(String::new())
        }
    }
}

/// How many handler names a thread remembers as warned already; past that it asks the
/// process-wide set.
const REMEMBERED: usize = 64;

thread_local! {
    static WARNED_HERE: std::cell::RefCell<Vec<Cow<'static, str>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Logs, once per handler in the process, that it runs unscoped. The event names the handler
/// and never the key; it is logged before the call's span is entered, so it carries no part of
/// the key either. After the first call a thread answers from its own list.
fn warn_unscoped_once(handler: &Cow<'static, str>) {
    let seen = WARNED_HERE
        .try_with(|warned| warned.borrow().iter().any(|name| name == handler))
        .unwrap_or(false);
    if seen {
        return;
    }
    let first = WARNED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashSet::new)
        .insert(handler.to_string());
    let _ = WARNED_HERE.try_with(|warned| {
        if let Ok(mut warned) = warned.try_borrow_mut()
            && warned.len() < REMEMBERED
        {
            warned.push(handler.clone());
        }
    });
    if first {
        tracing::warn!(
            handler = %handler,
            "idempotency keys of this handler are not scoped: every caller shares them, so one \
             caller's key can replay another's response. Scope them per caller with \
             `Store::scope_by` or the attribute's `scope = ...`, or write `scope = none` if the \
             service has one caller (docs/contract.md, \"Scopes\")"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(user: Option<&str>) -> Parts {
        let mut request = http::Request::new(());
        if let Some(user) = user {
            request.extensions_mut().insert(user.to_owned());
        }
        request.into_parts().0
    }

    fn by_user() -> Rule {
        Rule(Arc::new(|parts: &Parts| {
            parts.extensions.get::<String>().cloned()
        }))
    }

    #[test]
    fn the_call_s_own_scope_wins_over_the_store_s_rule() {
        let handler = Cow::Borrowed("tests::own");
        let rule = by_user();
        let alice = parts(Some("alice"));
        let named = Scope::Named("tenant-7".into());
        assert_eq!(
            resolve(named, Some(&rule), Some(&alice), &handler),
            Ok("tenant-7".into())
        );
        assert_eq!(
            resolve(Scope::None, Some(&rule), Some(&alice), &handler),
            Ok(String::new())
        );
        assert_eq!(
            resolve(Scope::Inherit, Some(&rule), Some(&alice), &handler),
            Ok("alice".into())
        );
    }

    #[test]
    fn a_rule_that_cannot_place_a_call_refuses_it() {
        let handler = Cow::Borrowed("tests::refused");
        let rule = by_user();
        let anonymous = parts(None);
        let empty = parts(Some(""));
        assert_eq!(
            resolve(Scope::Inherit, Some(&rule), Some(&anonymous), &handler),
            Err(NoScope)
        );
        assert_eq!(
            resolve(Scope::Inherit, Some(&rule), Some(&empty), &handler),
            Err(NoScope),
            "an empty scope would be the unscoped space"
        );
        assert_eq!(
            resolve(Scope::Inherit, Some(&rule), None, &handler),
            Err(NoScope),
            "a plain function has no request for the rule"
        );
    }
}
