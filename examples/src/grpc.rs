//! `grpc_payments`: the payments service over gRPC (`proto/payments.proto`), with the same
//! store choices, settings and database tables as the HTTP service (docs/contract.md, "The
//! gRPC adapter"). `CreatePayment` is idempotent: the key travels in the `idempotency-key`
//! metadata entry.
//!
//! - `CreatePayment { amount, currency }`: the payment; `amount <= 0` or a currency that is
//!   not three letters is `INVALID_ARGUMENT` from the method itself (kept and replayed, as a
//!   422 is on HTTP); currency `"ERR"` is `INTERNAL` (released: a retry runs again).
//! - `ListPayments`: every payment recorded, in order.

use std::future::Future;
use std::time::Duration;

use idem_runtime::{PgTx, SqliteTx, Store, idempotent};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::app::{self, Error};
use crate::payments::{self, Payments};
use crate::settings::{Mode, Settings};

/// The code generated from `proto/payments.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("payments.v1");
}

use pb::payments_server::{Payments as PaymentsApi, PaymentsServer};
use pb::{CreatePaymentRequest, ListPaymentsRequest, ListPaymentsResponse, Payment};

/// What every method shares: cloned into each idempotent call (an `Arc` and two pools).
#[derive(Clone)]
pub struct Service {
    /// The idempotency store.
    pub idem: Store,
    /// Where payments are recorded.
    pub payments: Payments,
    /// A simulated processor delay.
    pub latency: Duration,
}

/// The service in plain mode, and on the memory store: a payment once per key while the
/// process lives.
#[derive(Clone)]
pub struct Plain(pub Service);

/// The service on Postgres in transactional mode: each payment is written in the transaction
/// that stores the answer.
#[derive(Clone)]
pub struct OnPostgres(pub Service);

/// The service on SQLite in transactional mode.
#[derive(Clone)]
pub struct OnSqlite(pub Service);

#[tonic::async_trait]
impl PaymentsApi for Plain {
    #[idempotent(store = self.0.idem)]
    async fn create_payment(
        &self,
        request: Request<CreatePaymentRequest>,
    ) -> Result<Response<Payment>, Status> {
        let req = request.into_inner();
        process(&self.0, &req).await?;
        let payment = self.0.payments.record(req.amount, &req.currency).await;
        answer(payment)
    }

    async fn list_payments(
        &self,
        _: Request<ListPaymentsRequest>,
    ) -> Result<Response<ListPaymentsResponse>, Status> {
        list(&self.0).await
    }
}

/// `CreatePayment` in transactional mode on one database (its service type and its `Tx`):
/// the payment is written in the transaction that stores the answer, so a key makes one
/// payment or none, whenever the process dies (docs/contract.md, "Transactional mode").
macro_rules! transactional {
    ($service:ident, $tx:ty) => {
        #[tonic::async_trait]
        impl PaymentsApi for $service {
            #[idempotent(store = self.0.idem, transactional)]
            async fn create_payment(
                &self,
                mut tx: $tx,
                request: Request<CreatePaymentRequest>,
            ) -> Result<Response<Payment>, Status> {
                let req = request.into_inner();
                process(&self.0, &req).await?;
                answer(
                    self.0
                        .payments
                        .record_in(&mut *tx, req.amount, &req.currency)
                        .await,
                )
            }

            async fn list_payments(
                &self,
                _: Request<ListPaymentsRequest>,
            ) -> Result<Response<ListPaymentsResponse>, Status> {
                list(&self.0).await
            }
        }
    };
}

transactional!(OnPostgres, PgTx);
transactional!(OnSqlite, SqliteTx);

/// The HTTP service's authentication (`app::authenticate`), as a tonic interceptor: the
/// `authorization: Bearer <caller>` metadata entry names the caller, whose keys the store
/// scopes; a call without it is [`app::GUEST`]'s; any other value is `UNAUTHENTICATED`.
pub fn authenticate(mut request: Request<()>) -> Result<Request<()>, Status> {
    let authorization = request
        .metadata()
        .get("authorization")
        .map(|value| value.as_encoded_bytes());
    match app::caller_of(authorization) {
        Some(caller) => {
            request.extensions_mut().insert(app::Caller(caller));
            Ok(request)
        }
        None => Err(Status::unauthenticated(
            "expected authorization: Bearer <caller>",
        )),
    }
}

/// The HTTP service's checks, in gRPC codes: `INVALID_ARGUMENT` for a payment that is not
/// acceptable, `INTERNAL` for the failing processor; then the simulated processor delay.
async fn process(service: &Service, req: &CreatePaymentRequest) -> Result<(), Status> {
    if req.amount <= 0 {
        return Err(Status::invalid_argument(
            "amount must be a positive integer",
        ));
    }
    if req.currency == "ERR" {
        return Err(Status::internal("the payment processor failed"));
    }
    if req.currency.len() != 3 || !req.currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(Status::invalid_argument("currency must be three letters"));
    }
    if !service.latency.is_zero() {
        tokio::time::sleep(service.latency).await;
    }
    Ok(())
}

fn answer<E: std::fmt::Display>(
    payment: Result<payments::Payment, E>,
) -> Result<Response<Payment>, Status> {
    match payment {
        Ok(payment) => Ok(Response::new(Payment {
            id: payment.id,
            amount: payment.amount,
            currency: payment.currency,
        })),
        Err(error) => {
            tracing::error!(%error, "recording a payment failed");
            Err(Status::internal("the payment could not be recorded"))
        }
    }
}

async fn list(service: &Service) -> Result<Response<ListPaymentsResponse>, Status> {
    match service.payments.list().await {
        Ok(list) => Ok(Response::new(ListPaymentsResponse {
            payments: list
                .into_iter()
                .map(|p| Payment {
                    id: p.id,
                    amount: p.amount,
                    currency: p.currency,
                })
                .collect(),
        })),
        Err(error) => {
            tracing::error!(%error, "listing payments failed");
            Err(Status::internal("the payments could not be listed"))
        }
    }
}

/// Serves `service` in the settings' mode on `listener` until `shutdown` completes, purging
/// expired keys every `settings.purge_every`.
pub async fn serve(
    listener: TcpListener,
    settings: &Settings,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let purge = service.idem.purge_every(settings.purge_every, 1000);
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let router = tonic::transport::Server::builder();
    let served = match (settings.mode, &service.payments) {
        (Mode::Transactional, Payments::Postgres { .. }) => {
            router
                .clone()
                .add_service(PaymentsServer::with_interceptor(
                    OnPostgres(service),
                    authenticate,
                ))
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        (Mode::Transactional, Payments::Sqlite(_)) => {
            router
                .clone()
                .add_service(PaymentsServer::with_interceptor(
                    OnSqlite(service),
                    authenticate,
                ))
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        (Mode::Plain, _) | (_, Payments::Memory(_) | Payments::Redis(_)) => {
            router
                .clone()
                .add_service(PaymentsServer::with_interceptor(
                    Plain(service),
                    authenticate,
                ))
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    };
    purge.stop().await;
    Ok(served?)
}
