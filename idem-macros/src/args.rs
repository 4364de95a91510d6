//! Step 1: the attribute's arguments, `name = value` each, checked as they are read.

use std::time::Duration;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Error, Expr, ExprArray, ExprLit, Ident, Lit, LitBool, LitStr, Path, Token};

use crate::duration::{parse_backoff, parse_duration};
use crate::transactional::Isolation;

/// Every argument: its name, what its value is, and an example of one (for messages).
const ARGUMENTS: [(&str, &str, &str); 16] = [
    (
        "store",
        "a Rust expression, bare or in a string",
        "app.idem",
    ),
    ("retries", "an integer from 1 to 20", "5"),
    (
        "backoff",
        "a string range of two durations",
        "\"100ms..2s\"",
    ),
    ("ttl", "a string duration", "\"24h\""),
    ("lease", "a string duration", "\"30s\""),
    ("wait", "a string duration", "\"10s\""),
    ("retry_after", "a string duration", "\"2s\""),
    ("header", "a string header name", "\"Idempotency-Key\""),
    ("optional", "a bool", "true"),
    ("keep_server_errors", "a bool", "true"),
    ("release", "a bracketed list of 4xx statuses", "[429, 408]"),
    (
        "scope",
        "a Rust expression, bare or in a string, or `none`",
        "user.tenant_id",
    ),
    ("key", "a Rust expression, bare or in a string", "job.id"),
    ("transactional", "nothing (a bare flag) or a bool", "true"),
    ("isolation", "a string isolation level", "\"serializable\""),
    ("crate", "a string path", "\"::idem_runtime\""),
];

/// The runtime's defaults for `ttl` and `lease` (`idem_runtime::Config::new`), needed here
/// only to refuse a lease longer than the ttl when just one of the two is written.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The largest `retries`.
const MAX_RETRIES: u32 = 20;

/// The statuses `release` may list: a 4xx is kept unless listed (docs/contract.md, "What a
/// request meets").
const RELEASABLE: std::ops::RangeInclusive<u16> = 400..=499;

/// A value as written, with the span of its literal (for errors about it).
#[derive(Debug, Clone)]
pub(crate) struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

/// `scope = ...`: the handler's own scope, or none on purpose.
pub(crate) enum ScopeArg {
    /// `scope = user.tenant_id`: this expression's text.
    Expr(Expr),
    /// `scope = none`: no scope, whatever the store's rule, and no warning.
    None(Span),
}

impl ScopeArg {
    /// The expression, if the scope is one.
    pub fn expr(&self) -> Option<&Expr> {
        match self {
            ScopeArg::Expr(expr) => Some(expr),
            ScopeArg::None(_) => None,
        }
    }
}

/// The parsed arguments. Each is `None` when not written (the runtime's default applies).
#[derive(Default)]
pub(crate) struct Args {
    pub store: Option<Expr>,
    pub retries: Option<Spanned<u32>>,
    pub backoff: Option<Spanned<(Duration, Duration)>>,
    pub ttl: Option<Spanned<Duration>>,
    pub lease: Option<Spanned<Duration>>,
    /// How long a duplicate waits for the in-flight result.
    pub wait: Option<Spanned<Duration>>,
    /// A 409's `Retry-After`, instead of the learnt hint.
    pub retry_after: Option<Spanned<Duration>>,
    pub header: Option<LitStr>,
    pub optional: Option<LitBool>,
    /// Whether a 5xx is kept, at the argument's name.
    pub keep_server_errors: Option<Spanned<bool>>,
    /// The 4xx statuses that release the claim, at the argument's name.
    pub release: Option<Spanned<Vec<u16>>>,
    pub scope: Option<ScopeArg>,
    /// Plain-function mode: the key comes from this expression over the arguments.
    pub key: Option<Spanned<Expr>>,
    /// Transactional mode, on or off as written, at the argument's name.
    pub transactional: Option<Spanned<bool>>,
    pub isolation: Option<Spanned<Isolation>>,
    pub krate: Option<Path>,
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = Args::default();
        let mut seen: Vec<String> = Vec::new();
        while !input.is_empty() {
            if !input.peek(Ident::peek_any) {
                return Err(input.error(format!("expected an argument name, one of {}", names())));
            }
            let name = input.call(Ident::parse_any)?;
            let text = name.to_string();
            let Some(&(_, takes, example)) = ARGUMENTS.iter().find(|(n, ..)| *n == text) else {
                return Err(Error::new(
                    name.span(),
                    format!("unknown argument `{text}`; expected one of {}", names()),
                ));
            };
            if seen.contains(&text) {
                return Err(Error::new(
                    name.span(),
                    format!("`{text}` is given more than once"),
                ));
            }
            seen.push(text.clone());
            // The one flag: `transactional` alone means `transactional = true`.
            if text == "transactional" && (input.is_empty() || input.peek(Token![,])) {
                args.transactional = Some(Spanned {
                    value: true,
                    span: name.span(),
                });
                if !input.is_empty() {
                    input.parse::<Token![,]>()?;
                }
                continue;
            }
            if !input.peek(Token![=]) {
                return Err(Error::new(
                    name.span(),
                    format!("expected `{text} = {example}`: `{text}` takes {takes}"),
                ));
            }
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            let wrong_type = || {
                Error::new_spanned(
                    &value,
                    format!("`{text}` takes {takes}, like `{text} = {example}`"),
                )
            };
            args.set(&name, &value, wrong_type)?;
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

impl Args {
    fn set(
        &mut self,
        name: &Ident,
        value: &Expr,
        wrong_type: impl Fn() -> Error,
    ) -> syn::Result<()> {
        let text = name.to_string();
        // Expressions are real Rust (`store = app.idem`), so that an IDE can follow them; a
        // string holding one (`store = "app.idem"`) is the older form, still accepted.
        match text.as_str() {
            "store" => {
                self.store = Some(expression(&text, value)?);
                return Ok(());
            }
            "scope" => {
                self.scope = Some(match value {
                    Expr::Path(path) if path.qself.is_none() && path.path.is_ident("none") => {
                        ScopeArg::None(name.span())
                    }
                    _ => ScopeArg::Expr(expression(&text, value)?),
                });
                return Ok(());
            }
            "key" => {
                self.key = Some(Spanned {
                    value: expression(&text, value)?,
                    span: name.span(),
                });
                return Ok(());
            }
            "release" => {
                let Expr::Array(list) = value else {
                    return Err(wrong_type());
                };
                self.release = Some(Spanned {
                    value: released_statuses(list)?,
                    span: name.span(),
                });
                return Ok(());
            }
            _ => {}
        }
        let lit = match value {
            Expr::Lit(ExprLit { lit, .. }) => lit,
            _ => return Err(wrong_type()),
        };
        match (text.as_str(), lit) {
            ("retries", Lit::Int(n)) => {
                let retries = n
                    .base10_parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_RETRIES).contains(n));
                let Some(value) = retries else {
                    return Err(Error::new(
                        n.span(),
                        format!(
                            "`retries` must be from 1 to {MAX_RETRIES} (attempts to store the response), got {}",
                            n.base10_digits()
                        ),
                    ));
                };
                self.retries = Some(Spanned {
                    value,
                    span: n.span(),
                });
            }
            ("backoff", Lit::Str(s)) => {
                let value = parse_backoff(&s.value())
                    .map_err(|e| Error::new(s.span(), format!("`backoff`: {e}")))?;
                self.backoff = Some(Spanned {
                    value,
                    span: s.span(),
                });
            }
            ("ttl", Lit::Str(s)) => self.ttl = Some(positive_duration(&text, s)?),
            ("lease", Lit::Str(s)) => self.lease = Some(positive_duration(&text, s)?),
            ("wait", Lit::Str(s)) => self.wait = Some(positive_duration(&text, s)?),
            ("retry_after", Lit::Str(s)) => self.retry_after = Some(positive_duration(&text, s)?),
            ("header", Lit::Str(s)) => {
                check_header_name(&s.value()).map_err(|e| Error::new(s.span(), e))?;
                self.header = Some(s.clone());
            }
            ("optional", Lit::Bool(b)) => self.optional = Some(b.clone()),
            ("keep_server_errors", Lit::Bool(b)) => {
                self.keep_server_errors = Some(Spanned {
                    value: b.value,
                    span: name.span(),
                });
            }
            ("transactional", Lit::Bool(b)) => {
                self.transactional = Some(Spanned {
                    value: b.value,
                    span: name.span(),
                });
            }
            ("isolation", Lit::Str(s)) => {
                let value = Isolation::parse(&s.value()).map_err(|e| Error::new(s.span(), e))?;
                self.isolation = Some(Spanned {
                    value,
                    span: s.span(),
                });
            }
            ("crate", Lit::Str(s)) => {
                let path = s.parse_with(Path::parse_mod_style).map_err(|_| {
                    Error::new(
                        s.span(),
                        format!(
                            "`crate` takes a path to the runtime crate, like \"::idem_runtime\" or \"my_crate::idem\"; got {:?}",
                            s.value()
                        ),
                    )
                })?;
                self.krate = Some(path);
            }
            _ => return Err(wrong_type()),
        }
        Ok(())
    }

    /// Where `transactional` is written, when it is on.
    pub(crate) fn transactional(&self) -> Option<Span> {
        self.transactional
            .as_ref()
            .filter(|flag| flag.value)
            .map(|flag| flag.span)
    }

    /// The checks that need more than one argument: `store` is required, `key` excludes the
    /// header's arguments and the response policy's (`keep_server_errors`, `release`),
    /// `isolation` and `optional = true` go with `transactional` only and not with it,
    /// respectively, and a lease must not outlive the record it protects.
    pub(crate) fn check(&self) -> syn::Result<()> {
        let mut errors = Errors::default();
        if self.store.is_none() {
            errors.push(Error::new(
                Span::call_site(),
                "missing `store = ...`: a Rust expression yielding the idempotency store, \
                 like `store = app.idem` (a name bound by a parameter), `store = crate::STORE` \
                 or `store = stores::payments()`",
            ));
        }
        if self.key.is_some() {
            let header = self.header.as_ref().map(|h| ("header", h.span()));
            let optional = self.optional.as_ref().map(|o| ("optional", o.span));
            for (name, span) in header.into_iter().chain(optional) {
                errors.push(Error::new(
                    span,
                    format!(
                        "`{name}` does not apply with `key`: in plain-function mode the key comes \
                         from the `key` expression, not from a request header"
                    ),
                ));
            }
            let keep = self
                .keep_server_errors
                .as_ref()
                .map(|k| ("keep_server_errors", k.span));
            let release = self.release.as_ref().map(|r| ("release", r.span));
            for (name, span) in keep.into_iter().chain(release) {
                errors.push(Error::new(
                    span,
                    format!(
                        "`{name}` does not apply with `key`: a plain function has no HTTP status; \
                         its `Ok` is kept (like a 2xx) and its `Err` releases the claim (like a \
                         5xx), so a retry runs again; leave `{name}` out"
                    ),
                ));
            }
        }
        if let (Some(isolation), None) = (&self.isolation, self.transactional()) {
            errors.push(Error::new(
                isolation.span,
                "`isolation` is the isolation level of a transactional handler's transaction: \
                 add `transactional`, or leave `isolation` out",
            ));
        }
        let optional = self.optional.as_ref().filter(|o| o.value);
        if let (Some(optional), Some(_)) = (optional, self.transactional()) {
            errors.push(Error::new(
                optional.span,
                "`optional = true` does not apply with `transactional`: a transactional handler \
                 needs a key, since its writes commit together with the response stored under \
                 it; leave `optional` out",
            ));
        }
        let ttl = self.ttl.as_ref().map_or(DEFAULT_TTL, |t| t.value);
        let lease = self.lease.as_ref().map_or(DEFAULT_LEASE, |l| l.value);
        if lease > ttl {
            let (span, named, fix) = match (&self.lease, &self.ttl) {
                (Some(lease), _) => (
                    lease.span,
                    "`lease`",
                    "shorten the lease or lengthen the ttl",
                ),
                (None, ttl) => (
                    ttl.as_ref().map_or_else(Span::call_site, |t| t.span),
                    "the default `lease`",
                    "lengthen the ttl or set a shorter `lease`",
                ),
            };
            errors.push(Error::new(
                span,
                format!(
                    "{named} ({}) is longer than `ttl` ({}): a claim must not outlive the record it protects; {fix}",
                    describe(lease),
                    describe(ttl)
                ),
            ));
        }
        errors.finish()
    }
}

/// Collects errors, so that one compilation reports every mistake it can.
#[derive(Default)]
pub(crate) struct Errors(Option<Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn names() -> String {
    let names: Vec<String> = ARGUMENTS.iter().map(|(n, ..)| format!("`{n}`")).collect();
    names.join(", ")
}

/// The expression `value` is, or, when it is a string literal, the one the string holds
/// (parsed at the literal's span, so that errors in it point there).
fn expression(name: &str, value: &Expr) -> syn::Result<Expr> {
    let Expr::Lit(ExprLit {
        lit: Lit::Str(s), ..
    }) = value
    else {
        return Ok(value.clone());
    };
    s.parse::<Expr>().map_err(|e| {
        let example = ARGUMENTS
            .iter()
            .find(|(n, ..)| *n == name)
            .map_or("app.idem", |(.., example)| example);
        Error::new(
            s.span(),
            format!(
                "`{name}` must hold a Rust expression, like `{name} = {example}` or \
                 `{name} = \"{example}\"`; {:?} is not one: {e}",
                s.value()
            ),
        )
    })
}

/// `release = [429, 408]`: integer literals, each a 4xx, none twice.
fn released_statuses(list: &ExprArray) -> syn::Result<Vec<u16>> {
    let mut statuses: Vec<u16> = Vec::new();
    for element in &list.elems {
        let Expr::Lit(ExprLit {
            lit: Lit::Int(n), ..
        }) = element
        else {
            return Err(Error::new_spanned(
                element,
                "`release` lists statuses as integer literals, like `release = [429, 408]`",
            ));
        };
        let status = n
            .base10_parse::<u16>()
            .ok()
            .filter(|s| RELEASABLE.contains(s));
        let Some(status) = status else {
            return Err(Error::new(
                n.span(),
                format!(
                    "`release` takes 4xx statuses only (400 to 499), got {}: only a 4xx can be \
                     released; a 5xx is released already, unless `keep_server_errors = true`, \
                     and 1xx to 3xx are always kept",
                    n.base10_digits()
                ),
            ));
        };
        if statuses.contains(&status) {
            return Err(Error::new(
                n.span(),
                format!("`release` lists {status} more than once"),
            ));
        }
        statuses.push(status);
    }
    Ok(statuses)
}

fn positive_duration(name: &str, s: &LitStr) -> syn::Result<Spanned<Duration>> {
    let value =
        parse_duration(&s.value()).map_err(|e| Error::new(s.span(), format!("`{name}`: {e}")))?;
    if value.is_zero() {
        return Err(Error::new(
            s.span(),
            format!("`{name}` must be longer than zero"),
        ));
    }
    Ok(Spanned {
        value,
        span: s.span(),
    })
}

/// A header name is an RFC 9110 token: visible ASCII letters, digits and `!#$%&'*+-.^_`|~`.
fn check_header_name(name: &str) -> Result<(), String> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(tchar) {
        return Err(format!(
            "`header` must be a valid HTTP header name (letters, digits and `!#$%&'*+-.^_`|~`), like \"Idempotency-Key\"; got {name:?}"
        ));
    }
    Ok(())
}

/// `1500ms`, `30s`, `2m`: how a duration reads in a message.
pub(crate) fn describe(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms % 3_600_000 == 0 && ms > 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 60_000 == 0 && ms > 0 => format!("{}m", ms / 60_000),
        _ if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        _ => format!("{ms}ms"),
    }
}
