//! A throwaway Postgres server for tests, one per test binary, and a fresh database per test.
//!
//! With `DATABASE_URL` set, that server is used instead and each test creates its database
//! there. Otherwise the server is started from the system's binaries (`initdb`, `postgres`,
//! found under `/usr/lib/postgresql/*/bin` or on `PATH`) in a folder under the temp dir, as
//! the `postgres` user when running as root (initdb refuses root). A watchdog shell owns the
//! server: it waits on a pipe from this process and, when the pipe closes (the test binary
//! exits, however it exits), stops the server and deletes the folder.
//!
//! Without binaries and without `DATABASE_URL` the tests print a loud notice and skip, except
//! under `CI=true`, where they fail.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use idem_runtime::{OwnerToken, PostgresStore, Store};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

/// The server the tests in this binary share.
pub struct Server {
    admin: PgConnectOptions,
    /// The admin URL, from which each test database's URL is made.
    url: String,
    /// Whether `pg_stat_statements` is loaded (always on a server started here).
    pub stat_statements: bool,
    /// Kept open for the life of the process: closing it stops a server started here.
    _watchdog: Option<Mutex<(Child, ChildStdin)>>,
    /// Where a server started here lives, to stop and start it again.
    local: Option<Local>,
}

/// A server started here: its binaries, folder and port.
struct Local {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

/// A database of its own for one test. On a server started here it goes with the server;
/// on `DATABASE_URL`'s server it stays until a later run finds its process gone and drops it.
pub struct TestDb {
    /// Options that connect to the test's database.
    pub options: PgConnectOptions,
    url: String,
    /// The database's name.
    pub name: String,
}

static SERVER: OnceCell<Result<Server, String>> = OnceCell::const_new();

/// Skips (printing why) or, under `CI=true`, fails.
pub fn skip(reason: &str) {
    let line = "!".repeat(78);
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason} (Postgres tests may not be skipped under CI=true)");
    }
    eprintln!("\n{line}\n!! SKIPPED Postgres test: {reason}\n{line}\n");
}

/// The shared server, started on first use; `None` when unavailable (after [`skip`]).
pub async fn server() -> Option<&'static Server> {
    match SERVER.get_or_init(start).await {
        Ok(server) => Some(server),
        Err(reason) => {
            skip(reason);
            None
        }
    }
}

/// A fresh database on the shared server.
pub async fn database() -> Option<TestDb> {
    let server = server().await?;
    Some(server.create_database().await)
}

/// A server of its own for one test (never `DATABASE_URL`'s), which the test may stop and
/// start again ([`Server::stop_immediately`], [`Server::restart`]) without disturbing the
/// other tests of the binary. Its commits are durable, so they survive the stop. `None` when
/// no binaries are found (after [`skip`]).
pub async fn own_server() -> Option<Server> {
    let Some(bin) = find_binaries() else {
        skip("no initdb/postgres binaries under /usr/lib/postgresql/*/bin or on PATH");
        return None;
    };
    match start_local(bin, true).await {
        Ok(server) => Some(server),
        Err(reason) => panic!("{reason}"),
    }
}

/// A fresh database and a migrated store on it: the conformance suite's constructor.
pub async fn fixture() -> Option<(Store, TestDb)> {
    let db = database().await?;
    let store = db.store().await;
    Some((Store::new(store), db))
}

/// A fresh database and a store on connections of its own ([`PostgresStore::connect`]), migrated.
pub async fn own_fixture() -> Option<(Store, TestDb)> {
    let db = database().await?;
    let store = db.own_store().await;
    Some((Store::new(store), db))
}

impl Server {
    /// The server's host and port.
    pub fn address(&self) -> (String, u16) {
        (self.admin.get_host().to_owned(), self.admin.get_port())
    }

    /// The user the tests connect as.
    pub fn username(&self) -> String {
        self.admin.get_username().to_owned()
    }

    async fn admin(&self) -> PgConnection {
        PgConnection::connect_with(&self.admin)
            .await
            .expect("the test server accepts connections")
    }

    /// Stops a server started here as a crash would (`pg_ctl stop -m immediate`): every
    /// connection drops, nothing is shut down cleanly.
    pub async fn stop_immediately(&self) {
        let local = self.local.as_ref().expect("a server started by the tests");
        let script = r#""$1/pg_ctl" -D "$2/data" -m immediate -w stop"#;
        run_as_owner(script, &[&local.bin, &local.dir]).await;
    }

    /// Starts a server stopped by [`Server::stop_immediately`] again, on the same port and
    /// data folder (it recovers from its log), and waits until it accepts connections.
    pub async fn restart(&self) {
        let local = self.local.as_ref().expect("a server started by the tests");
        let script = format!(
            r#"dir="$2"; bin="$1"; port="$3"; sync=on
{PRELOAD}
"$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -o "{OPTIONS}" start >/dev/null"#
        );
        let port = local.port.to_string();
        run_as_owner(&script, &[&local.bin, &local.dir, Path::new(&port)]).await;
        wait_until_ready(self)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", logs(&local.dir)));
    }

    /// Creates a database named `idem_t_<pid>_<n>_<random>`.
    pub async fn create_database(&self) -> TestDb {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "idem_t_{}_{}_{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed),
            &OwnerToken::random().to_hex()[..8]
        );
        let mut admin = self.admin().await;
        // The name is made of [a-z0-9_] above: safe to splice.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE");
        TestDb {
            options: self.admin.clone().database(&name),
            url: with_database(&self.url, &name),
            name,
        }
    }
}

/// `url` with its database replaced by `name` (its query string kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

impl TestDb {
    /// A `postgres://` URL of this database (credentials and parameters as in
    /// `DATABASE_URL`), for processes started by the tests.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A pool of its own on this database (each pool stands for one application instance).
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire(false)
            .connect_with(self.options.clone())
            .await
            .expect("connect to the test database")
    }

    /// A store on a pool of its own, migrated.
    pub async fn store(&self) -> PostgresStore {
        let store = PostgresStore::new(self.pool().await);
        store.migrate().await.expect("migrations run");
        store
    }

    /// A store made by [`PostgresStore::connect`] (connections of its own rather than a
    /// pool), migrated.
    pub async fn own_store(&self) -> PostgresStore {
        self.own_store_at(&self.url).await
    }

    /// A store made by [`PostgresStore::connect`] on `url` (this database through something
    /// in between, say), migrated.
    pub async fn own_store_at(&self, url: &str) -> PostgresStore {
        let store = PostgresStore::connect(url)
            .await
            .expect("connect to the test database");
        store.migrate().await.expect("migrations run");
        store
    }

    /// One plain connection.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect_with(&self.options)
            .await
            .expect("connect to the test database")
    }
}

async fn start() -> Result<Server, String> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return external(&url).await;
    }
    let bin = find_binaries().ok_or(
        "no initdb/postgres binaries under /usr/lib/postgresql/*/bin or on PATH, and no \
         DATABASE_URL (install the `postgresql` package; .ci/run does)",
    )?;
    start_local(bin, false).await
}

/// Starts a server here; `durable` makes its commits survive a crash.
async fn start_local(bin: PathBuf, durable: bool) -> Result<Server, String> {
    let spawned = bin.clone();
    let (watchdog, port, dir) =
        tokio::task::spawn_blocking(move || spawn_server(&spawned, durable))
            .await
            .map_err(|e| format!("starting postgres panicked: {e}"))??;
    let admin = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("postgres")
        .database("postgres");
    let server = Server {
        admin,
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        stat_statements: true,
        _watchdog: Some(Mutex::new(watchdog)),
        local: Some(Local {
            bin,
            dir: dir.clone(),
            port,
        }),
    };
    wait_until_ready(&server)
        .await
        .map_err(|e| format!("{e}\n{}", logs(&dir)))?;
    Ok(server)
}

async fn external(url: &str) -> Result<Server, String> {
    let admin = PgConnectOptions::from_str(url).map_err(|e| format!("DATABASE_URL: {e}"))?;
    let mut conn = PgConnection::connect_with(&admin)
        .await
        .map_err(|e| format!("DATABASE_URL does not connect: {e}"))?;
    let loaded: Option<String> = sqlx::query_scalar(
        "SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'",
    )
    .fetch_optional(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    drop_stale_databases(&mut conn).await;
    Ok(Server {
        admin,
        url: url.to_owned(),
        stat_statements: loaded.is_some_and(|l| l.contains("pg_stat_statements")),
        _watchdog: None,
        local: None,
    })
}

/// Drops databases left by earlier test processes that are no longer running.
async fn drop_stale_databases(conn: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'idem\\_t\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name.split('_').nth(2).unwrap_or("");
        let alive = !pid.is_empty() && Path::new("/proc").join(pid).exists();
        let safe = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !alive && safe {
            let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
                .execute(&mut *conn)
                .await;
        }
    }
}

fn find_binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    versions.sort_by_key(|dir| {
        let version = dir.parent().and_then(|v| v.file_name());
        version.and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    versions
        .into_iter()
        .rev()
        .chain(on_path)
        .chain([PathBuf::from("/usr/local/bin")])
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// Sets `preload` to `pg_stat_statements` when the extension is installed.
const PRELOAD: &str = r#"preload=""
if [ -f "$("$bin/pg_config" --pkglibdir 2>/dev/null)/pg_stat_statements.so" ] \
    || [ -f "$bin/../lib/pg_stat_statements.so" ]; then
    preload="pg_stat_statements"
fi"#;

/// The server's options (shell text: `$port`, `$dir`, `$preload` and `$sync` are the
/// script's). Commits wait for their log to be written (`$sync` = `on`) only on servers a test
/// crashes: with `off`, `pg_ctl stop -m immediate` loses commits already acknowledged.
const OPTIONS: &str = "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off \
    -c synchronous_commit=$sync -c full_page_writes=off -c max_connections=300 \
    -c shared_preload_libraries=$preload";

/// The script the watchdog runs: initdb, start postgres, wait for stdin to close, stop, clean.
/// It stops the server with `pg_ctl`, which also finds one that a test restarted.
fn watchdog_script() -> String {
    format!(
        r#"
dir="$1"; bin="$2"; port="$3"; sync="$4"
"$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
    >"$dir/initdb.log" 2>&1 || {{ echo "initdb failed" >"$dir/failed"; exit 1; }}
{PRELOAD}
"$bin/postgres" -D "$dir/data" {OPTIONS} >"$dir/postgres.log" 2>&1 &
pid=$!
cat >/dev/null
"$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir"
"#
    )
}

/// Runs `script` with `args` as `$1..`, as the `postgres` user when running as root, and
/// panics with its output if it fails.
async fn run_as_owner(script: &str, args: &[&Path]) {
    let mut command = if is_root() {
        let mut c = tokio::process::Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", script, "pg"]);
        c
    } else {
        let mut c = tokio::process::Command::new("sh");
        c.args(["-c", script, "pg"]);
        c
    };
    let out = command.args(args).output().await.expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A folder of its own under the temp dir (`idem-<what>-<pid>-<random>`) and a free loopback
/// port, for a server the tests start.
pub(crate) fn folder_and_port(what: &str) -> Result<(PathBuf, u16), String> {
    let dir = std::env::temp_dir().join(format!(
        "idem-{what}-{}-{}",
        std::process::id(),
        &OwnerToken::random().to_hex()[..8]
    ));
    std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    Ok((dir, port))
}

/// `sh -c script watchdog`, as the `postgres` user (given `dir` and what is in it) when running
/// as root, which initdb and PgBouncer refuse.
pub(crate) fn owner_shell(script: &str, dir: &Path) -> Result<Command, String> {
    if !is_root() {
        let mut c = Command::new("sh");
        c.args(["-c", script, "watchdog"]);
        return Ok(c);
    }
    let owner = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status();
    if !owner.is_ok_and(|s| s.success()) {
        return Err("running as root, and `chown postgres` failed (no postgres user?)".into());
    }
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--", "sh", "-c", script, "watchdog"]);
    Ok(c)
}

fn spawn_server(bin: &Path, durable: bool) -> Result<((Child, ChildStdin), u16, PathBuf), String> {
    let (dir, port) = folder_and_port("pg")?;
    let mut child = owner_shell(&watchdog_script(), &dir)?
        .arg(&dir)
        .arg(bin)
        .arg(port.to_string())
        .arg(if durable { "on" } else { "off" })
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn the postgres watchdog: {e}"))?;
    let stdin = child.stdin.take().ok_or("the watchdog has no stdin pipe")?;
    eprintln!(
        "test postgres: {} on 127.0.0.1:{port}, data in {}",
        bin.display(),
        dir.display()
    );
    Ok(((child, stdin), port, dir))
}

async fn wait_until_ready(server: &Server) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match PgConnection::connect_with(&server.admin).await {
            Ok(conn) => {
                let _ = conn.close().await;
                return Ok(());
            }
            Err(error) => {
                if let Some(watchdog) = &server._watchdog {
                    let mut guard = watchdog.lock().unwrap_or_else(|p| p.into_inner());
                    if let Ok(Some(status)) = guard.0.try_wait() {
                        return Err(format!(
                            "the postgres watchdog exited ({status}) before the server was \
                             ready; last error: {error}"
                        ));
                    }
                }
                if Instant::now() > deadline {
                    return Err(format!("postgres did not start within 30s: {error}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What initdb and postgres wrote, for a failure message.
fn logs(dir: &Path) -> String {
    ["initdb.log", "postgres.log"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            format!("--- {name} ({}) ---\n{text}", dir.display())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn test_database_urls_keep_everything_but_the_database() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/app?sslmode=disable", "t"),
            "postgres://u:p@h:5432/t?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t"), "postgres://h/t");
        assert_eq!(with_database("postgres://h/", "t"), "postgres://h/t");
    }
}
