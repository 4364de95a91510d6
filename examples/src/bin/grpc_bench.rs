//! gRPC first calls and replays against a bare tonic method, for bench/run.sh.
//!
//! ```text
//! grpc_bench serve                      # prints "bare ADDR" and "idem ADDR", serves until killed
//! grpc_bench load ADDR first|replay CONCURRENCY SECONDS
//! ```
//!
//! `serve` runs the same trivial `CreatePayment` twice in one process: bare on one loopback
//! port, under `#[idempotent]` on the memory store on another. `load` keeps CONCURRENCY calls
//! in flight over one HTTP/2 connection per caller for one warm-up second and SECONDS
//! measured, a new key per call (`first`) or 8 completed keys per caller cycled (`replay`),
//! and prints one JSON line: calls, how many were replays, calls per second, p50 and p99
//! latency. The lines `measuring` and `measured` on stderr mark the window, for bench/run.sh,
//! which reads the CPU of every process around it (bench/measure.py).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use idem_examples::grpc::pb::payments_client::PaymentsClient;
use idem_examples::grpc::pb::payments_server::{Payments, PaymentsServer};
use idem_examples::grpc::pb::{
    CreatePaymentRequest, ListPaymentsRequest, ListPaymentsResponse, Payment,
};
use idem_runtime::{MemoryStore, Store, idempotent};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The trivial method, bare.
#[derive(Clone)]
struct Bare;

/// The same method under `#[idempotent]`.
#[derive(Clone)]
struct Idem {
    idem: Store,
}

fn payment(request: CreatePaymentRequest) -> Response<Payment> {
    Response::new(Payment {
        id: 1,
        amount: request.amount,
        currency: request.currency,
    })
}

#[tonic::async_trait]
impl Payments for Bare {
    async fn create_payment(
        &self,
        request: Request<CreatePaymentRequest>,
    ) -> Result<Response<Payment>, Status> {
        Ok(payment(request.into_inner()))
    }

    async fn list_payments(
        &self,
        _: Request<ListPaymentsRequest>,
    ) -> Result<Response<ListPaymentsResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
}

#[tonic::async_trait]
impl Payments for Idem {
    #[idempotent(store = self.idem)]
    async fn create_payment(
        &self,
        request: Request<CreatePaymentRequest>,
    ) -> Result<Response<Payment>, Status> {
        Ok(payment(request.into_inner()))
    }

    async fn list_payments(
        &self,
        _: Request<ListPaymentsRequest>,
    ) -> Result<Response<ListPaymentsResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve"] => serve().await,
        ["load", addr, mode, concurrency, seconds] => {
            load(addr, mode, concurrency.parse()?, seconds.parse()?).await
        }
        _ => Err("usage: grpc_bench serve | grpc_bench load ADDR first|replay C SECONDS".into()),
    }
}

async fn serve() -> Result<(), Error> {
    let bare = TcpListener::bind("127.0.0.1:0").await?;
    let idem = TcpListener::bind("127.0.0.1:0").await?;
    println!("bare {}", bare.local_addr()?);
    println!("idem {}", idem.local_addr()?);
    let store = Store::new(MemoryStore::new());
    let bare = tonic::transport::Server::builder()
        .add_service(PaymentsServer::new(Bare))
        .serve_with_incoming(TcpIncoming::from(bare));
    let idem = tonic::transport::Server::builder()
        .add_service(PaymentsServer::new(Idem { idem: store }))
        .serve_with_incoming(TcpIncoming::from(idem));
    tokio::try_join!(bare, idem)?;
    Ok(())
}

fn request(key: &str) -> Result<Request<CreatePaymentRequest>, Error> {
    let mut request = Request::new(CreatePaymentRequest {
        amount: 1200,
        currency: "EUR".to_owned(),
    });
    request
        .metadata_mut()
        .insert("idempotency-key", key.parse()?);
    Ok(request)
}

async fn load(addr: &str, mode: &str, concurrency: usize, seconds: u64) -> Result<(), Error> {
    let replay = match mode {
        "first" => false,
        "replay" => true,
        other => return Err(format!("mode {other:?}: first or replay").into()),
    };
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let replayed = Arc::new(AtomicU64::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..concurrency {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let mut client = PaymentsClient::new(channel);
        let (measuring, stop) = (measuring.clone(), stop.clone());
        let replayed = replayed.clone();
        let tag = std::process::id();
        callers.spawn(async move {
            let keys: Vec<String> = (0..8)
                .map(|k| format!("replay-{tag}-{caller}-{k}"))
                .collect();
            if replay {
                for key in &keys {
                    client.create_payment(request(key)?).await?;
                }
            }
            let mut n: u64 = 0;
            // The latency of every call answered in the measured window, in microseconds.
            let mut latencies: Vec<u32> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let key = if replay {
                    keys[(n % 8) as usize].clone()
                } else {
                    format!("first-{tag}-{caller}-{n}")
                };
                let sent = Instant::now();
                let answer = client.create_payment(request(&key)?).await?;
                n += 1;
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                    if answer.metadata().get("idempotent-replayed").is_some() {
                        replayed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok::<Vec<u32>, Error>(latencies)
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("measuring");
    let started = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let took = started.elapsed();
    eprintln!("measured");
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    while let Some(done) = callers.join_next().await {
        latencies.extend(done??);
    }
    latencies.sort_unstable();
    let percentile = |p: usize| {
        let rank = (latencies.len() * p).div_ceil(100).max(1);
        latencies.get(rank - 1).copied().unwrap_or(0)
    };
    let calls = latencies.len() as u64;
    let replayed = replayed.load(Ordering::Relaxed);
    println!(
        "{{\"mode\":\"{mode}\",\"concurrency\":{concurrency},\"requests\":{calls},\"replayed\":{replayed},\"rps\":{:.0},\"seconds\":{:.3},\"p50_us\":{},\"p99_us\":{}}}",
        calls as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        percentile(50),
        percentile(99),
    );
    Ok(())
}
