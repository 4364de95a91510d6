//! The response side of the HTTP adapter: a handler's response captured into a payload, and
//! a payload replayed as a response.

use std::sync::Arc;

use axum_core::body::Body;
use axum_core::response::Response;
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, HeaderName};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;

use crate::engine::record::Payload;

/// The header a replayed response carries.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// [`REPLAYED_HEADER`] as a name, built once rather than parsed for every replay.
const REPLAYED: HeaderName = HeaderName::from_static(REPLAYED_HEADER);

/// Headers that belong to one connection, never to the stored response (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What capturing a response gave.
pub(crate) enum Captured {
    /// The response as a payload to keep, and ready to send.
    Storable(Arc<Payload>, Response),
    /// The body is over the limit: the response is sent as it is, not stored.
    TooLarge(Response),
    /// The body failed while being read.
    BodyFailed(axum_core::Error),
}

/// Buffers the body up to `limit` bytes (see [`Chunks`]).
pub(crate) fn capture(response: Response, limit: usize) -> impl Future<Output = Captured> {
    let (parts, mut body) = response.into_parts();
    async move {
        let mut read = Chunks::default();
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(error) => return Captured::BodyFailed(error),
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers are not stored
            };
            read.push(data);
            if read.len() > limit {
                let head =
                    futures_util::stream::iter(read.into_frames().map(Ok::<_, axum_core::Error>));
                let rest = body.into_data_stream();
                let body = Body::from_stream(futures_util::StreamExt::chain(head, rest));
                return Captured::TooLarge(Response::from_parts(parts, body));
            }
        }
        let bytes = read.into_bytes();
        let stored = Arc::new(Payload::Response {
            status: parts.status.as_u16(),
            headers: end_to_end(&parts.headers),
            body: stored_body(&bytes),
        });
        Captured::Storable(stored, Response::from_parts(parts, Body::from(bytes)))
    }
}

/// A body's data frames as they are read: one frame (the usual case) is kept as it came, with no
/// list and no copy; several are joined once, at the end. Request and response bodies both.
#[derive(Default)]
pub(crate) struct Chunks {
    first: Bytes,
    more: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    pub(crate) fn push(&mut self, data: Bytes) {
        self.len = self.len.saturating_add(data.len());
        if self.first.is_empty() {
            self.first = data;
        } else {
            self.more.push(data);
        }
    }

    /// The bytes read so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The whole body.
    pub(crate) fn into_bytes(self) -> Bytes {
        if self.more.is_empty() {
            return self.first;
        }
        let mut all = BytesMut::with_capacity(self.len);
        all.extend_from_slice(&self.first);
        self.more
            .iter()
            .for_each(|chunk| all.extend_from_slice(chunk));
        all.freeze()
    }

    /// The frames as they came.
    fn into_frames(self) -> impl Iterator<Item = Bytes> {
        std::iter::once(self.first).chain(self.more)
    }
}

/// Bodies up to this size are stored as a copy of their own (see [`stored_body`]).
const COPIED_BODY: usize = 512;

/// The body as the record keeps it. A small body is copied to an allocation of its exact size:
/// the buffer it came in is usually larger (a serializer's first 128 bytes, say) and is freed
/// once the response is sent, while a record lives for its whole TTL. A larger body is shared,
/// not copied. (Memory per key, `bench/run.sh` part 5.)
fn stored_body(bytes: &Bytes) -> Bytes {
    if bytes.len() <= COPIED_BODY {
        Bytes::copy_from_slice(bytes)
    } else {
        bytes.clone()
    }
}

/// The headers worth storing: all but hop-by-hop ones and those named in `Connection`.
fn end_to_end(headers: &HeaderMap) -> Vec<(String, Bytes)> {
    let named_in_connection: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    // Sized for every header up front: a stored response keeps its list for as long as the
    // record lives, and a collected `Vec` would start at room for four.
    let mut kept = Vec::with_capacity(headers.len());
    kept.extend(
        headers
            .iter()
            .filter(|(name, _)| {
                let name = name.as_str();
                !HOP_BY_HOP.contains(&name)
                    && name != REPLAYED_HEADER
                    && !named_in_connection.iter().any(|n| n == name)
            })
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    Bytes::copy_from_slice(value.as_bytes()),
                )
            }),
    );
    kept
}

/// The stored response as sent again: same status, headers and bytes, plus
/// `Idempotent-Replayed: true`. Headers that no longer parse are skipped. A payload that is not
/// a response (a plain function's value under the same handler name) is a 500.
pub(crate) fn replay(payload: &Payload) -> Response {
    let Payload::Response {
        status,
        headers: stored,
        body,
    } = payload
    else {
        tracing::error!("the stored payload is not an HTTP response; answering 500");
        return crate::http::problem::Problem::HandlerPanicked.response(None, None);
    };
    let mut response = Response::new(Body::from(body.clone()));
    *response.status_mut() =
        StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    // Room for the stored headers, `Idempotent-Replayed`, and the `Content-Length` that the
    // server adds.
    headers.reserve(stored.len() + 2);
    for (name, value) in stored {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_maybe_shared(value.clone()),
        ) {
            headers.append(name, value);
        } else {
            tracing::warn!("a stored header could not be replayed and was skipped");
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum_core::response::IntoResponse;

    #[tokio::test]
    async fn stores_status_end_to_end_headers_and_bytes() {
        let mut response = (StatusCode::CREATED, "hello").into_response();
        let h = response.headers_mut();
        h.insert("x-trace", HeaderValue::from_static("abc"));
        h.insert("connection", HeaderValue::from_static("x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let Captured::Storable(stored, sent) = capture(response, 1024).await else {
            panic!("a small body is storable");
        };
        let Payload::Response {
            status,
            headers,
            body,
        } = &*stored
        else {
            panic!("an HTTP response is stored as one");
        };
        assert_eq!(*status, 201);
        assert_eq!(&body[..], b"hello");
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "x-trace"]);
        let sent = sent.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&sent[..], b"hello");
    }

    #[tokio::test]
    async fn small_copied_and_large_shared_bodies_are_stored_byte_for_byte() {
        for size in [0, 40, COPIED_BODY, COPIED_BODY + 1, 64 * 1024] {
            let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let chunks = body
                .chunks(3000)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)));
            let response = Response::new(Body::from_stream(futures_util::stream::iter(
                chunks.collect::<Vec<_>>(),
            )));
            let Captured::Storable(stored, sent) = capture(response, 1 << 20).await else {
                panic!("{size} bytes are under the limit");
            };
            assert_eq!(&stored.body()[..], &body[..], "{size} bytes stored");
            let sent = sent.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&sent[..], &body[..], "{size} bytes sent");
        }
    }

    #[tokio::test]
    async fn an_oversized_body_is_sent_whole_but_not_stored() {
        let chunks = (0..10).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i as u8; 100])));
        let response = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
        let Captured::TooLarge(sent) = capture(response, 250).await else {
            panic!("1000 bytes are over a 250-byte limit");
        };
        let sent = sent.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(sent.len(), 1000);
        assert_eq!(sent[999], 9);
    }

    #[test]
    fn replay_adds_the_replayed_header() {
        let stored = Payload::Response {
            status: 202,
            headers: vec![("x-a".into(), Bytes::from_static(b"1"))],
            body: Bytes::from_static(b"ok"),
        };
        let response = replay(&stored);
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(response.headers()["x-a"], "1");
        assert_eq!(response.headers()[REPLAYED_HEADER], "true");
    }
}
