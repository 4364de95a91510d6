//! A small HTTP/1.1 client on hyper, for the tour and the black-box tests.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Any failure to talk to the server.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A whole response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// True when the response carries `Idempotent-Replayed: true`.
    pub fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }
}

/// Talks to one server, a fresh connection per request.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    addr: SocketAddr,
}

impl Client {
    /// A client of the server at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Client { addr }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request with raw headers (values may be any bytes a header allows).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &[u8])],
        body: impl Into<Bytes>,
    ) -> Result<Reply, Error> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .body(Full::new(body.into()))?;
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_bytes(value)?,
            );
        }
        let stream = TcpStream::connect(self.addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// `POST /payments` with a JSON body and, when given, an `Idempotency-Key`.
    pub async fn pay(&self, key: Option<&str>, json: &str) -> Result<Reply, Error> {
        let mut headers: Vec<(&str, &[u8])> = vec![(CONTENT_TYPE.as_str(), b"application/json")];
        if let Some(key) = key {
            headers.push(("idempotency-key", key.as_bytes()));
        }
        self.send(Method::POST, "/payments", &headers, json.to_owned())
            .await
    }

    /// [`Client::pay`] as `caller` (`Authorization: Bearer <caller>`).
    pub async fn pay_as(&self, caller: &str, key: &str, json: &str) -> Result<Reply, Error> {
        let bearer = format!("Bearer {caller}");
        let headers: [(&str, &[u8]); 3] = [
            (CONTENT_TYPE.as_str(), b"application/json"),
            ("idempotency-key", key.as_bytes()),
            ("authorization", bearer.as_bytes()),
        ];
        self.send(Method::POST, "/payments", &headers, json.to_owned())
            .await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Reply, Error> {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    /// How many payments `GET /payments` lists.
    pub async fn payment_count(&self) -> Result<usize, Error> {
        let reply = self.get("/payments").await?;
        reply.json().as_array().map(Vec::len).ok_or_else(|| {
            format!("GET /payments answered {}: {}", reply.status, reply.text()).into()
        })
    }
}
