//! Starts the real `payments` binary and talks to it over HTTP.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use idem_examples::client::Client;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub mod crash;
pub mod db;
pub mod failing_completion;
pub mod grpc;
pub mod outage;
pub mod resp_proxy;
pub mod storm;

/// Starts the example binary at `path` on a free port (in the working folder `dir`, with
/// `env` added to its environment) and waits until it prints `{name} listening on
/// http://ADDR`; keeps draining its output.
pub async fn start_binary(
    path: &str,
    name: &str,
    dir: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> (Child, SocketAddr) {
    let mut command = Command::new(path);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command
        .env("BIND", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("the example binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let banner = format!("{name} listening on http://");
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = line.strip_prefix(banner.as_str()) {
                return url.parse::<SocketAddr>().ok();
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("{name} printed its address within a minute"));
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// A running `payments` process, killed when dropped.
pub struct Service {
    child: Child,
    pub client: Client,
}

impl Service {
    /// Starts `payments` on a free port with `env` added to its environment, and waits until
    /// it says where it listens.
    pub async fn start(env: &[(&str, &str)]) -> Service {
        Self::start_in(None, env).await
    }

    /// Like [`Service::start`], in the working folder `dir`.
    pub async fn start_in(dir: Option<&std::path::Path>, env: &[(&str, &str)]) -> Service {
        let (child, addr) =
            start_binary(env!("CARGO_BIN_EXE_payments"), "payments", dir, env).await;
        Service {
            child,
            client: Client::new(addr),
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Asks the process to stop (SIGTERM) and waits for it to exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("payments exits within 30 s of SIGTERM")
            .expect("waiting for payments works")
    }
}

/// `idempotency_storage_failure_total` summed over its labels, from `/metrics`.
pub async fn storage_failures(client: &Client) -> u64 {
    let text = client.get("/metrics").await.unwrap().text();
    text.lines()
        .filter(|l| l.starts_with("idempotency_storage_failure_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The counter of one outcome, from the service's `/metrics`.
pub async fn outcome_count(client: &Client, outcome: &str) -> u64 {
    let text = client.get("/metrics").await.unwrap().text();
    let label = format!("outcome=\"{outcome}\"");
    text.lines()
        .filter(|l| l.starts_with("idempotency_requests_total") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
