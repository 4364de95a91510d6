//! The axum side of `#[idempotent]`: an extractor wrapper that buffers the body, fingerprints
//! the request and hands the body on to the handler's own extractor.

use crate::outcome::Problem;
use axum_core::RequestExt;
use axum_core::body::Body;
use axum_core::extract::{FromRequest, Request};
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Either;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::capture::Chunks;
use crate::config::DEFAULT_HEADER;
use crate::engine::RequestHead;
use crate::fingerprint::Fingerprint;

/// The largest request body buffered for a fingerprint, even when the application disables
/// axum's `DefaultBodyLimit` (which applies first, 2 MB unless the application changes it).
pub const HARD_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Marks the [`FromRequest`] impl of [`Fingerprinted`] (a local marker, so it does not
/// overlap axum's own impls).
#[doc(hidden)]
pub struct Via<M>(std::marker::PhantomData<M>);

/// Wraps a handler's last extractor: buffers the body, fingerprints method, path, query and
/// body, then runs the wrapped extractor on the same request. Its rejections pass through
/// unchanged, before any store access.
///
/// `CUSTOM_HEADER` is false (the default) when the key comes in `Idempotency-Key`: only that
/// header's values are kept for the engine. The attribute sets it when the handler names
/// another header; all the request's headers are then kept, and the engine reads the one it
/// is configured with.
#[derive(Debug)]
pub struct Fingerprinted<T, const CUSTOM_HEADER: bool = false> {
    /// The wrapped extractor's value.
    pub inner: T,
    /// What the engine needs of the request.
    pub head: RequestHead,
}

impl<T, const CUSTOM_HEADER: bool> Fingerprinted<T, CUSTOM_HEADER> {
    /// The wrapped value and the request head.
    pub fn into_parts(self) -> (T, RequestHead) {
        (self.inner, self.head)
    }
}

impl<S, M, T, const CUSTOM_HEADER: bool> FromRequest<S, Via<M>> for Fingerprinted<T, CUSTOM_HEADER>
where
    S: Send + Sync,
    T: FromRequest<S, M>,
{
    type Rejection = Response;

    // Two futures chained rather than one `async` block: a block would keep the buffering
    // future's room (the request's parts) while the wrapped extractor runs, and this future is
    // part of every request's, which axum boxes. Chained, the two take turns in the same room.
    #[allow(clippy::result_large_err)] // the rejection is a `Response`, as axum's trait has it
    fn from_request(
        req: Request,
        state: &S,
    ) -> impl Future<Output = Result<Self, Self::Rejection>> + Send {
        let key_header = (!CUSTOM_HEADER).then_some(DEFAULT_HEADER);
        buffer_keeping(req, key_header).then(move |buffered| match buffered {
            Ok((req, head)) => Either::Left(T::from_request(req, state).map(|inner| match inner {
                Ok(inner) => Ok(Fingerprinted { inner, head }),
                Err(rejection) => Err(rejection.into_response()),
            })),
            Err(rejection) => Either::Right(std::future::ready(rejection).map(Err)),
        })
    }
}

/// Buffers the body (under the application's `DefaultBodyLimit` and [`HARD_BODY_LIMIT`]) and
/// fingerprints method, path, query and body: the request with its buffered body, and its
/// head, which keeps only the values of `key_header` when it is known, and every header
/// otherwise. A body over the limit is a 413, a failing one a 400, before any store access.
/// The attribute's extractor and the tower layer both start here.
pub(crate) fn buffer_keeping(
    req: Request,
    key_header: Option<&'static str>,
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
        Ok(head_of(parts, bytes, key_header))
    }
}

/// The request again, with its buffered body, and its head.
fn head_of(
    parts: http::request::Parts,
    bytes: Bytes,
    key_header: Option<&'static str>,
) -> (Request, RequestHead) {
    let fingerprint = Fingerprint::of_request(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        &bytes,
    );
    let head = match key_header {
        Some(name) => RequestHead::with_key_header(&parts.headers, name, fingerprint),
        None => RequestHead::new(parts.headers.clone(), fingerprint),
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
        let (chunked, chunked_head) = buffer_keeping(chunked, Some(DEFAULT_HEADER)).await.unwrap();
        let (_, whole_head) = buffer_keeping(whole, Some(DEFAULT_HEADER)).await.unwrap();
        assert_eq!(chunked_head.fingerprint(), whole_head.fingerprint());
        assert_eq!(
            chunked_head.fingerprint(),
            Fingerprint::of_request("POST", "/pay", "x=1", b"{\"amount\":12}")
        );
        let body = chunked.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{\"amount\":12}");
    }
}
