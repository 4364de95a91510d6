//! The request side of the HTTP adapter: an extractor wrapper that buffers the body,
//! fingerprints the request and hands the body on to the handler's own extractor; the tower
//! layer starts from the same buffering.

use axum_core::RequestExt;
use axum_core::body::Body;
use axum_core::extract::{FromRequest, Request};
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Either;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use http::{HeaderMap, HeaderName};

use crate::engine::config::DEFAULT_HEADER;
use crate::engine::fingerprint::Fingerprint;
use crate::engine::key::{IdempotencyKey, KeyError};
use crate::http::problem::Problem;
use crate::http::response::Chunks;

/// The largest request body buffered for a fingerprint, even when the application disables
/// axum's `DefaultBodyLimit` (which applies first, 2 MB unless the application changes it).
pub const HARD_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Marks the [`FromRequest`] impls of the wrappers below (a local marker, so they do not
/// overlap axum's own impls).
#[doc(hidden)]
pub struct Via<M>(std::marker::PhantomData<M>);

/// Wraps a handler's last extractor: buffers the body, fingerprints method, path, query and
/// body, reads the key from `Idempotency-Key`, then runs the wrapped extractor on the same
/// request. Its rejections pass through unchanged, before any store access.
#[derive(Debug)]
pub struct Fingerprinted<T> {
    /// The wrapped extractor's value.
    pub inner: T,
    /// What the adapter needs of the request.
    pub head: RequestHead,
}

/// [`Fingerprinted`] for a handler whose key comes in another header than `Idempotency-Key`:
/// every header is kept, and the adapter reads the one the handler names.
#[derive(Debug)]
pub struct FingerprintedAllHeaders<T> {
    /// The wrapped extractor's value.
    pub inner: T,
    /// What the adapter needs of the request.
    pub head: RequestHead,
}

/// [`Fingerprinted`] for a handler whose scope comes from its store's rule
/// ([`Store::scope_by`](crate::Store::scope_by)): once a store in the process has a rule, a
/// copy of the request's head (method, URI, headers, extensions) is kept for it, since the
/// rule can only run once the handler's store is known, after every extractor has run. A
/// handler with a `scope` of its own does without.
#[derive(Debug)]
pub struct FingerprintedParts<T> {
    /// The wrapped extractor's value.
    pub inner: T,
    /// What the adapter needs of the request.
    pub head: RequestHead,
}

/// [`FingerprintedParts`] for a handler whose key comes in another header than
/// `Idempotency-Key` (every header is kept when no store has a rule).
#[derive(Debug)]
pub struct FingerprintedAllParts<T> {
    /// The wrapped extractor's value.
    pub inner: T,
    /// What the adapter needs of the request.
    pub head: RequestHead,
}

/// A wrapper's `into_parts` and `FromRequest`, which differ only in what its head keeps.
macro_rules! wrapper {
    ($wrapper:ident, $keep:expr) => {
        impl<T> $wrapper<T> {
            /// The wrapped value and the request head.
            pub fn into_parts(self) -> (T, RequestHead) {
                (self.inner, self.head)
            }
        }

        impl<S, M, T> FromRequest<S, Via<M>> for $wrapper<T>
        where
            S: Send + Sync,
            T: FromRequest<S, M>,
        {
            type Rejection = Response;

            #[allow(clippy::result_large_err)] // the rejection is a `Response`, as axum's trait has it
            fn from_request(
                req: Request,
                state: &S,
            ) -> impl Future<Output = Result<Self, Self::Rejection>> + Send {
                wrapped(req, state, $keep)
                    .map(|result| result.map(|(inner, head)| $wrapper { inner, head }))
            }
        }
    };
}

wrapper!(Fingerprinted, Keep::KeyHeader(DEFAULT_HEADER));
wrapper!(FingerprintedAllHeaders, Keep::Headers);
wrapper!(
    FingerprintedParts,
    Keep::for_rule(Keep::KeyHeader(DEFAULT_HEADER))
);
wrapper!(FingerprintedAllParts, Keep::for_rule(Keep::Headers));

/// What a [`RequestHead`] keeps of the request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Keep {
    /// The values of the one header that carries the key.
    KeyHeader(&'static str),
    /// Every header (the key header is chosen later).
    Headers,
    /// A copy of the whole head, for a store's scope rule (the key is read from its headers).
    Parts,
}

impl Keep {
    /// The whole head once a store in the process has a scope rule to read it, else
    /// `otherwise` (docs/contract.md, "Scopes").
    fn for_rule(otherwise: Keep) -> Keep {
        if crate::engine::scope::rules_exist() {
            Keep::Parts
        } else {
            otherwise
        }
    }
}

/// Buffers and fingerprints the request, then runs `T` on it: two futures chained rather
/// than one `async` block, so that the wrapped extractor does not sit beside the buffering's
/// room in the handler's future (benches/overhead.rs).
#[allow(clippy::result_large_err)] // the rejection is a `Response`, as axum's trait has it
fn wrapped<S, M, T>(
    req: Request,
    state: &S,
    keep: Keep,
) -> impl Future<Output = Result<(T, RequestHead), Response>> + Send
where
    S: Send + Sync,
    T: FromRequest<S, M>,
{
    buffer_keeping(req, keep).then(move |buffered| match buffered {
        Ok((req, head)) => Either::Left(T::from_request(req, state).map(|inner| match inner {
            Ok(inner) => Ok((inner, head)),
            Err(rejection) => Err(rejection.into_response()),
        })),
        Err(rejection) => Either::Right(std::future::ready(rejection).map(Err)),
    })
}

/// What the adapter needs to know of an HTTP request, gathered before the handler runs.
#[derive(Debug, Clone)]
pub struct RequestHead {
    key: KeyHeader,
    fingerprint: Fingerprint,
}

/// Where the key is read from.
#[derive(Debug, Clone)]
enum KeyHeader {
    /// Every header of the request: the key header is chosen later (boxed: the common case
    /// is the one below, and this type is part of every request's future).
    All(Box<HeaderMap>),
    /// The key, read and checked from the one header that carries it: no copy of the other
    /// headers, nor of the key header's value.
    One {
        name: &'static str,
        key: Result<IdempotencyKey, KeyError>,
    },
    /// A copy of the request's head, for a store's scope rule; the key header is chosen later.
    Parts(Box<http::request::Parts>),
}

impl RequestHead {
    /// The request's headers (the key is read from them) and its fingerprint.
    pub fn new(headers: HeaderMap, fingerprint: Fingerprint) -> Self {
        RequestHead {
            key: KeyHeader::All(Box::new(headers)),
            fingerprint,
        }
    }

    /// The values of the key header `name` only, when it is known before the request is
    /// handed on; the engine must then be asked for that same header.
    pub fn with_key_header(
        headers: &HeaderMap,
        name: &'static str,
        fingerprint: Fingerprint,
    ) -> Self {
        // The default header's name is built once, not parsed from `name` for every request.
        const DEFAULT: HeaderName = HeaderName::from_static("idempotency-key");
        let values = if same_name(name, DEFAULT_HEADER) {
            headers.get_all(&DEFAULT)
        } else {
            headers.get_all(name)
        };
        RequestHead {
            key: KeyHeader::One {
                name,
                key: IdempotencyKey::from_header_values(values.iter()),
            },
            fingerprint,
        }
    }

    /// A copy of the request's head (method, URI, headers and extensions), kept for a store's
    /// scope rule; the key is read from its headers.
    pub fn with_parts(parts: http::request::Parts, fingerprint: Fingerprint) -> Self {
        RequestHead {
            key: KeyHeader::Parts(Box::new(parts)),
            fingerprint,
        }
    }

    /// The request's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The request's head, when it was kept for a store's scope rule.
    pub fn parts(&self) -> Option<&http::request::Parts> {
        match &self.key {
            KeyHeader::Parts(parts) => Some(parts),
            _ => None,
        }
    }

    /// The key from header `header`, the fingerprint, and the request's head when it was
    /// kept for a store's scope rule.
    pub(crate) fn key(
        self,
        header: &str,
    ) -> (
        Result<IdempotencyKey, KeyError>,
        Fingerprint,
        Option<Box<http::request::Parts>>,
    ) {
        let (key, parts) = match self.key {
            KeyHeader::All(headers) => (
                IdempotencyKey::from_header_values(headers.get_all(header).iter()),
                None,
            ),
            KeyHeader::Parts(parts) => (
                IdempotencyKey::from_header_values(parts.headers.get_all(header).iter()),
                Some(parts),
            ),
            KeyHeader::One { name, key } if same_name(name, header) => (key, None),
            // Only a caller that kept another header than it configured gets here.
            KeyHeader::One { .. } => (Err(KeyError::Missing), None),
        };
        (key, self.fingerprint, parts)
    }
}

/// Whether two header names are one (names ignore case); both usually come from the same
/// constant, so the same text is answered before case is folded.
fn same_name(a: &str, b: &str) -> bool {
    a == b || a.eq_ignore_ascii_case(b)
}

/// Buffers the body (under the application's `DefaultBodyLimit` and [`HARD_BODY_LIMIT`]) and
/// fingerprints method, path, query and body: the request with its buffered body, and its
/// head, which keeps what `keep` says. A body over the limit is a 413, a failing one a 400,
/// before any store access. The attribute's extractor and the tower layer both start here.
pub(crate) fn buffer_keeping(
    req: Request,
    keep: Keep,
) -> impl Future<Output = Result<(Request, RequestHead), Response>> + Send {
    let (parts, body) = req.with_limited_body().into_parts();
    async move {
        let mut body = Limited::new(body, HARD_BODY_LIMIT);
        let mut read = Chunks::default();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(body_error)?.into_data() {
                read.push(data); // trailers are not part of the fingerprint
            }
        }
        let bytes = read.into_bytes();
        Ok(head_of(parts, bytes, keep))
    }
}

/// The request again, with its buffered body, and its head.
fn head_of(parts: http::request::Parts, bytes: Bytes, keep: Keep) -> (Request, RequestHead) {
    let fingerprint = Fingerprint::of_request(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        &bytes,
    );
    let head = match keep {
        Keep::KeyHeader(name) => RequestHead::with_key_header(&parts.headers, name, fingerprint),
        Keep::Headers => RequestHead::new(parts.headers.clone(), fingerprint),
        Keep::Parts => RequestHead::with_parts(parts.clone(), fingerprint),
    };
    (Request::from_parts(parts, Body::from(bytes)), head)
}

fn body_error(error: Box<dyn std::error::Error + Send + Sync>) -> Response {
    let too_large = {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
        let mut found = false;
        while let Some(e) = source {
            if e.is::<LengthLimitError>() {
                found = true;
                break;
            }
            source = e.source();
        }
        found
    };
    if too_large {
        Problem::BodyTooLarge.response(None, None)
    } else {
        tracing::debug!(%error, "idempotency: the request body could not be read");
        Problem::BodyUnreadable.response(None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Body) -> Request {
        http::Request::post("/pay?x=1")
            .header("idempotency-key", "key-0000-0001")
            .body(body)
            .unwrap()
    }

    #[tokio::test]
    async fn a_body_in_chunks_is_fingerprinted_and_handed_on_whole() {
        let chunks = ["{\"amount\":", "", "12", "}"].map(Ok::<_, std::io::Error>);
        let chunked = request(Body::from_stream(futures_util::stream::iter(chunks)));
        let whole = request(Body::from("{\"amount\":12}"));
        let (chunked, chunked_head) = buffer_keeping(chunked, Keep::KeyHeader(DEFAULT_HEADER))
            .await
            .unwrap();
        let (_, whole_head) = buffer_keeping(whole, Keep::KeyHeader(DEFAULT_HEADER))
            .await
            .unwrap();
        assert_eq!(chunked_head.fingerprint(), whole_head.fingerprint());
        assert_eq!(
            chunked_head.fingerprint(),
            Fingerprint::of_request("POST", "/pay", "x=1", b"{\"amount\":12}")
        );
        let body = chunked.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{\"amount\":12}");
    }
}
