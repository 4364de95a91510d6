//! `idem`: the idempotency records of a SQLite or Postgres store, from a shell.
//!
//! `inspect` reads one record (never its stored body or headers), `evict` deletes one (how an
//! operator frees a stuck key), `purge` deletes the expired ones and `stats` counts them by
//! state. Every command prints a human-readable answer, or with `--json` one JSON object on
//! stdout; failures are one message on stderr and an exit code that says whose fault it was.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod duration;
mod evict;
mod failure;
mod inspect;
mod purge;
mod record;
mod report;
mod stats;
mod store_url;

use failure::Failure;
use report::Report;
use store_url::StoreUrl;

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  the store failed or could not be reached, or the record does not exist
  2  usage: bad arguments, a bad store URL, a missing SQLite file, an invalid key

With --json, stdout holds one JSON object per command, a failure included (but for
arguments the parser refuses, which are text on stderr only):
  {\"command\": ..., \"error\": {\"kind\": \"usage\" | \"store\" | \"not_found\", \"message\": ...}}";

/// Inspect, evict, purge and count the records of an idem store.
#[derive(Debug, Parser)]
#[command(name = "idem", version, after_help = EXIT_CODES)]
struct Cli {
    /// The store: `sqlite://PATH` (an existing database file; none is created) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    #[arg(long, value_name = "URL", global = true)]
    store: Option<String>,

    /// The table that holds the records, as the service configured it.
    #[arg(long, value_name = "NAME", global = true, default_value = idem_runtime::DEFAULT_TABLE)]
    table: String,

    /// Print one JSON object on stdout instead of text, for scripts.
    #[arg(long, global = true)]
    json: bool,

    /// The Postgres URL goes through a pooler in transaction mode (PgBouncer): send each
    /// statement as text, as the service's `PostgresStore::behind_pooler()` does.
    #[arg(long, global = true)]
    behind_pooler: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show one record's state, times, response status and sizes
    ///
    /// Never its stored body or headers. A key with no record is an error (exit 1).
    #[command(after_help = EXIT_CODES)]
    Inspect(RecordArgs),
    /// Delete one record, whatever its state: how to free a stuck key
    ///
    /// The next request with the key runs the handler. A handler still running under the
    /// deleted claim can no longer store its response. A key with no record is an error
    /// (exit 1).
    #[command(after_help = EXIT_CODES)]
    Evict(RecordArgs),
    /// Delete every expired record, in batches, and print how many were deleted
    ///
    /// Shows a progress bar when stderr is a terminal, and nothing but the total otherwise.
    #[command(after_help = EXIT_CODES)]
    Purge {
        /// Records deleted per statement.
        #[arg(long, value_name = "N", default_value_t = 1000,
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        batch: u32,
    },
    /// Count the records by state: in_progress, completed, failed_storage, expired.
    #[command(after_help = EXIT_CODES)]
    Stats,
}

/// Which record: the handler, the scope and the key, as the service stored them.
#[derive(Debug, Args)]
struct RecordArgs {
    /// The handler's name in the record: the function's path (`payments::create_payment`),
    /// a method's `Type::method`, or for the tower layer the method and route
    /// (`POST /orders/{id}`).
    #[arg(long, value_name = "NAME")]
    handler: String,

    /// The scope (tenant) the key was used under; none by default.
    #[arg(long, value_name = "S", default_value = "", hide_default_value = true)]
    scope: String,

    /// The idempotency key, as the client sent it (8 to 128 of A-Z a-z 0-9 . _ : -).
    #[arg(value_name = "KEY")]
    key: String,
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Inspect(_) => "inspect",
            Command::Evict(_) => "evict",
            Command::Purge { .. } => "purge",
            Command::Stats => "stats",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = cli.command.name();
    let outcome = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(&cli)),
        Err(error) => Err(Failure::store(format!(
            "cannot start the async runtime: {error}"
        ))),
    };
    match outcome {
        Ok(report) => {
            report.print(cli.json);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            failure.print(name, cli.json);
            ExitCode::from(failure.exit_code())
        }
    }
}

async fn run(cli: &Cli) -> Result<Report, Failure> {
    let url = cli.store.as_deref().ok_or_else(|| {
        Failure::usage("--store URL is required: sqlite://PATH or postgres://USER@HOST/DATABASE")
    })?;
    let url = StoreUrl::parse(url, cli.behind_pooler)?;
    match &cli.command {
        Command::Inspect(args) => {
            // The key is checked before the store is touched.
            let id = record::id(&args.scope, &args.handler, &args.key)?;
            inspect::run(&url.open(&cli.table).await?, &id).await
        }
        Command::Evict(args) => {
            let id = record::id(&args.scope, &args.handler, &args.key)?;
            evict::run(&url.open(&cli.table).await?, &id).await
        }
        Command::Purge { batch } => {
            let progress = std::io::stderr().is_terminal();
            purge::run(&url.open(&cli.table).await?, *batch, progress).await
        }
        Command::Stats => stats::run(&url.open(&cli.table).await?).await,
    }
}
