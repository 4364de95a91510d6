//! The payments service over gRPC (`proto/payments.proto`). The same settings as `payments`:
//! `IDEM_STORE`, `BIND`, `PAYMENTS_LATENCY_MS`, `IDEM_LEASE`, `IDEM_RETRIES`, `IDEM_MODE`,
//! `IDEM_PG_POOL`, `IDEM_PG_POOLER` and `IDEM_PG_LISTEN_URL`; `RUST_LOG` sets the log level.

use std::process::ExitCode;

use idem_examples::app::{self, AppState};
use idem_examples::grpc::{self, Service};
use idem_examples::settings::Settings;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("grpc_payments: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), app::Error> {
    let settings = Settings::from_env()?;
    let (backend, payments) = app::open(&settings).await?;
    // The HTTP service's state gives the store with the settings' overrides applied.
    let state = AppState::new(&settings, backend, payments, None)?;
    let service = Service {
        idem: state.idem,
        payments: state.payments,
        latency: state.latency,
    };
    let listener = TcpListener::bind(settings.bind).await?;
    // Tests read this line to learn the port when BIND asks for port 0.
    println!(
        "grpc_payments listening on http://{}",
        listener.local_addr()?
    );
    tracing::info!(
        store = settings.store.kind(),
        mode = settings.mode.name(),
        "grpc_payments started"
    );
    grpc::serve(listener, &settings, service, app::shutdown_signal()).await
}
