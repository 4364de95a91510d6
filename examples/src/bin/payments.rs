//! The payments service. `IDEM_STORE`, `BIND`, `PAYMENTS_LATENCY_MS`, `IDEM_LEASE`,
//! `IDEM_RETRIES`, `IDEM_WAIT`, `IDEM_MODE` (`plain` or `transactional`), `IDEM_PG_POOL`,
//! `IDEM_PG_POOLER` (`transaction`), `IDEM_PG_LISTEN_URL` and `IDEM_REDIS_ASSUME_NOEVICTION`
//! configure it; `RUST_LOG` sets the log level.

use std::process::ExitCode;

use idem_examples::app::{self, AppState};
use idem_examples::settings::Settings;
use metrics_exporter_prometheus::PrometheusBuilder;
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
            eprintln!("payments: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), app::Error> {
    let settings = Settings::from_env()?;
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let (backend, payments) = app::open(&settings).await?;
    let state = AppState::new(&settings, backend, payments, Some(metrics))?;
    let listener = TcpListener::bind(settings.bind).await?;
    // Tests read this line to learn the port when BIND asks for port 0.
    println!("payments listening on http://{}", listener.local_addr()?);
    tracing::info!(
        store = settings.store.kind(),
        mode = settings.mode.name(),
        "payments started"
    );
    app::serve(
        listener,
        state,
        settings.purge_every,
        app::shutdown_signal(),
    )
    .await?;
    Ok(())
}
