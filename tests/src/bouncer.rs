//! A throwaway PgBouncer in transaction pooling mode, in front of the tests' throwaway
//! Postgres ([`crate::pg`]), one per test binary.
//!
//! Its settings are the ones the README names for running behind a pooler and nothing more:
//! `pool_mode = transaction` and `ignore_startup_parameters = extra_float_digits,options`.
//! `default_pool_size = 2` makes statements really move between server connections. It
//! listens on a loopback port, keeps its config and auth file in a folder under the temp dir,
//! and runs as the `postgres` user when the tests run as root (PgBouncer refuses root). A
//! watchdog shell owns it: when the pipe from this process closes, it stops PgBouncer by its
//! PID and deletes the folder.
//!
//! Without a `pgbouncer` binary the tests print a loud notice and skip, except under
//! `CI=true`, where they fail. With `DATABASE_URL`, its server must let PgBouncer in as the
//! URL's user without a password (PgBouncer here trusts its clients and forwards none).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::Mutex;

use idem_runtime::{PostgresStore, Store};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::OnceCell;

use crate::pg::{self, TestDb};

/// The PgBouncer the tests in this binary share.
pub struct Bouncer {
    port: u16,
    /// Its version line, as it logged it when it came up.
    pub version: String,
    _watchdog: Mutex<(Child, ChildStdin)>,
}

static BOUNCER: OnceCell<Result<Bouncer, String>> = OnceCell::const_new();

/// The shared PgBouncer in front of the shared Postgres, started on first use; `None` when
/// either is unavailable (after [`pg::skip`]).
pub async fn bouncer() -> Option<&'static Bouncer> {
    let server = pg::server().await?;
    let ((host, upstream), user) = (server.address(), server.username());
    let started = BOUNCER
        .get_or_init(|| async move {
            tokio::task::spawn_blocking(move || start(&host, upstream, &user))
                .await
                .map_err(|e| format!("starting pgbouncer panicked: {e}"))?
        })
        .await;
    match started {
        Ok(bouncer) => Some(bouncer),
        Err(reason) => {
            pg::skip(reason);
            None
        }
    }
}

/// A fresh database, and its URL through the shared PgBouncer.
pub async fn database() -> Option<(TestDb, String)> {
    let bouncer = bouncer().await?;
    let db = pg::database().await?;
    let url = bouncer.url(&db);
    Some((db, url))
}

/// A fresh database and a store made by [`PostgresStore::connect`] through PgBouncer, behind
/// the pooler and migrated through it: the conformance suite's constructor.
pub async fn fixture() -> Option<(Store, TestDb)> {
    let (db, url) = database().await?;
    Some((Store::new(store_at(&url).await), db))
}

/// A store made by [`PostgresStore::connect`] on `url` (through PgBouncer), behind the
/// pooler, migrated through it.
pub async fn store_at(url: &str) -> PostgresStore {
    let store = PostgresStore::connect(url)
        .await
        .expect("connect through pgbouncer")
        .behind_pooler();
    store
        .migrate()
        .await
        .expect("migrations run through pgbouncer");
    store
}

/// The same with [`PostgresStore::new`] on an application's pool through PgBouncer, connected
/// without statement logging as the README asks.
pub async fn pool_fixture() -> Option<(Store, TestDb)> {
    let (db, url) = database().await?;
    let options: PgConnectOptions = url.parse().expect("a valid URL");
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .test_before_acquire(false)
        .connect_with(options.disable_statement_logging())
        .await
        .expect("connect through pgbouncer");
    let store = PostgresStore::new(pool).behind_pooler();
    store
        .migrate()
        .await
        .expect("migrations run through pgbouncer");
    Some((Store::new(store), db))
}

impl Bouncer {
    /// `db`'s URL through this PgBouncer.
    pub fn url(&self, db: &TestDb) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}?sslmode=disable",
            db.options.get_username(),
            self.port,
            db.name
        )
    }
}

fn find_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join("pgbouncer"))
        .find(|path| path.is_file())
}

/// Starts PgBouncer in front of `host:port`, waiting for the line in which it says it is up.
fn start(host: &str, upstream: u16, user: &str) -> Result<Bouncer, String> {
    let bin = find_binary().ok_or(
        "no pgbouncer binary on PATH or in /usr/sbin (install the `pgbouncer` package; .ci/run \
         does)",
    )?;
    let (dir, port) = pg::folder_and_port("pgbouncer")?;
    write_config(&dir, host, upstream, port, user)?;
    // The watchdog: PgBouncer in the foreground, logging to the watchdog's stdout; stopped by
    // its PID once this process's pipe closes.
    let script = r#"
"$1" "$2/pgbouncer.ini" 2>&1 &
pid=$!
cat >/dev/null
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$2"
"#;
    let mut child = pg::owner_shell(script, &dir)?
        .arg(&bin)
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn the pgbouncer watchdog: {e}"))?;
    let stdin = child.stdin.take().ok_or("the watchdog has no stdin pipe")?;
    let stdout = child
        .stdout
        .take()
        .ok_or("the watchdog has no stdout pipe")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    let version = loop {
        match lines.next() {
            Some(Ok(line)) => {
                seen.push_str(&line);
                seen.push('\n');
                if let Some(up) = line.split("process up: ").nth(1) {
                    break up.split(',').next().unwrap_or(up).to_owned();
                }
            }
            _ => return Err(format!("pgbouncer exited before it was up:\n{seen}")),
        }
    };
    // Keep reading its log, so that it never blocks on a full pipe; show its errors.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains(" ERROR ") || line.contains(" FATAL ") || line.contains(" WARNING ") {
                eprintln!("pgbouncer: {line}");
            }
        }
    });
    eprintln!(
        "test pgbouncer: {version} on 127.0.0.1:{port}, config in {}",
        dir.display()
    );
    Ok(Bouncer {
        port,
        version,
        _watchdog: Mutex::new((child, stdin)),
    })
}

fn write_config(
    dir: &Path,
    host: &str,
    upstream: u16,
    port: u16,
    user: &str,
) -> Result<(), String> {
    let ini = format!(
        "[databases]
* = host={host} port={upstream}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
pool_mode = transaction
ignore_startup_parameters = extra_float_digits,options
default_pool_size = 2
max_client_conn = 400
",
        users = dir.join("users.txt").display()
    );
    std::fs::write(dir.join("pgbouncer.ini"), ini)
        .and_then(|()| std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n")))
        .map_err(|e| format!("write the pgbouncer config in {}: {e}", dir.display()))
}
