//! The example's gRPC service as the tests reach it: a service served in this process on
//! loopback, or the real `grpc_payments` binary, and the requests they send.
#![allow(dead_code)]

use std::sync::atomic::{AtomicI64, Ordering};

use idem_examples::grpc::pb::payments_client::PaymentsClient;
use idem_examples::grpc::pb::payments_server::{Payments, PaymentsServer};
use idem_examples::grpc::pb::{CreatePaymentRequest, ListPaymentsResponse, Payment};
use tokio::net::TcpListener;
use tokio::process::Child;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Serves `service` on a free loopback port of this process, and answers a client of it.
pub async fn client_of<S: Payments>(service: S) -> PaymentsClient<Channel> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let addr = listener.local_addr().expect("the port's address");
    let server = tonic::transport::Server::builder()
        .add_service(PaymentsServer::new(service))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    PaymentsClient::connect(format!("http://{addr}"))
        .await
        .expect("the server accepts connections")
}

/// A running `grpc_payments` process (killed when dropped) and a client of it.
pub struct Instance {
    _child: Child,
    pub client: PaymentsClient<Channel>,
}

impl Instance {
    /// Starts `grpc_payments` on a free port with `env` added to its environment.
    pub async fn start(env: &[(&str, &str)]) -> Instance {
        let path = env!("CARGO_BIN_EXE_grpc_payments");
        let (child, addr) = super::start_binary(path, "grpc_payments", None, env).await;
        let client = PaymentsClient::connect(format!("http://{addr}"))
            .await
            .expect("grpc_payments accepts connections");
        Instance {
            _child: child,
            client,
        }
    }
}

/// A `CreatePayment` request, with `key` in the `idempotency-key` entry when given.
pub fn pay(key: Option<&str>, amount: i64, currency: &str) -> Request<CreatePaymentRequest> {
    let mut request = Request::new(CreatePaymentRequest {
        amount,
        currency: currency.to_owned(),
    });
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().expect("an ASCII key"));
    }
    request
}

/// Whether an answer is a replay of a stored one.
pub fn replayed(metadata: &MetadataMap) -> bool {
    metadata
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

/// A test service's payment: the one asked for, its id the number of this run in `runs`.
pub fn numbered(
    runs: &AtomicI64,
    request: Request<CreatePaymentRequest>,
) -> Result<Response<Payment>, Status> {
    let id = runs.fetch_add(1, Ordering::SeqCst) + 1;
    let req = request.into_inner();
    Ok(Response::new(Payment {
        id,
        amount: req.amount,
        currency: req.currency,
    }))
}

/// A test service's `ListPayments`, when the test has no use for it.
pub fn unlisted() -> Result<Response<ListPaymentsResponse>, Status> {
    Err(Status::unimplemented("not in this test"))
}
