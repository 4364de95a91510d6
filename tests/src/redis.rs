//! Throwaway Redis servers for tests: one standalone server and one 3-master cluster per test
//! binary (each test keeps its records under a prefix of its own), or a server of its own
//! for a test that kills and restarts it.
//!
//! Servers are started from the system's `redis-server` (Debian's `redis-server` package;
//! `redis-cli` from `redis-tools` makes the cluster), each node in a folder of its own under
//! one temp folder, on free loopback ports, with AOF on (`appendfsync everysec`) and
//! `maxmemory-policy noeviction`. A watchdog shell owns them: it waits on a pipe from this
//! process and, when the pipe closes (the test binary exits, however it exits), kills each
//! node by the PID in its pidfile and deletes the folder.
//!
//! Without `redis-server` the tests print a loud notice and skip, except under `CI=true`,
//! where they fail.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use idem_runtime::{OwnerToken, RedisOptions, RedisStore, Store};
use tokio::sync::OnceCell;

/// Running Redis servers: one standalone server, or the masters of one cluster.
pub struct Server {
    /// The nodes' ports.
    pub ports: Vec<u16>,
    dir: PathBuf,
    /// Kept open for the life of the server: closing it stops every node.
    _watchdog: Mutex<(Child, ChildStdin)>,
}

static STANDALONE: OnceCell<Result<Server, String>> = OnceCell::const_new();
static CLUSTER: OnceCell<Result<Server, String>> = OnceCell::const_new();

/// Skips (printing why) or, under `CI=true`, fails.
pub fn skip(reason: &str) {
    let line = "!".repeat(78);
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason} (Redis tests may not be skipped under CI=true)");
    }
    eprintln!("\n{line}\n!! SKIPPED Redis test: {reason}\n{line}\n");
}

fn shared(server: &'static Result<Server, String>) -> Option<&'static Server> {
    match server {
        Ok(server) => Some(server),
        Err(reason) => {
            skip(reason);
            None
        }
    }
}

/// The binary's standalone server, started on first use; `None` when unavailable.
pub async fn server() -> Option<&'static Server> {
    shared(STANDALONE.get_or_init(|| start(1)).await)
}

/// The binary's 3-master cluster, started on first use; `None` when unavailable.
pub async fn cluster() -> Option<&'static Server> {
    shared(CLUSTER.get_or_init(|| start(3)).await)
}

/// A standalone server of its own for one test, which it may kill and restart.
pub async fn own_server() -> Option<Server> {
    own(1).await
}

/// A 3-master cluster of its own for one test (one that counts every node's commands, say).
pub async fn own_cluster() -> Option<Server> {
    own(3).await
}

async fn own(nodes: usize) -> Option<Server> {
    match start(nodes).await {
        Ok(server) => Some(server),
        Err(reason) => {
            skip(&reason);
            None
        }
    }
}

/// A store on the standalone server under a fresh prefix: the conformance suite's constructor.
pub async fn fixture() -> Option<(Store, ())> {
    Some((Store::new(server().await?.store().await), ()))
}

/// A store on the cluster under a fresh prefix: the conformance suite's constructor.
pub async fn cluster_fixture() -> Option<(Store, ())> {
    Some((Store::new(cluster().await?.store().await), ()))
}

impl Server {
    /// `redis://` for one server, `redis+cluster://` with every master for a cluster.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        match nodes.as_slice() {
            [one] => format!("redis://{one}"),
            all => format!("redis+cluster://{}", all.join(",")),
        }
    }

    /// A store under a prefix no other test uses.
    pub async fn store(&self) -> RedisStore {
        let prefix = format!("t{}", &OwnerToken::random().to_hex()[..12]);
        let options = RedisOptions::new().prefix(&prefix).expect("a valid prefix");
        RedisStore::connect_with(&self.url(), options)
            .await
            .expect("connect to the test Redis")
    }

    /// Runs `redis-cli` on node `port` with `args`, and answers its output.
    pub async fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = tokio::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .await
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every node's `INFO commandstats` calls, summed by command (`evalsha`, `hset`, …).
    pub async fn command_calls(&self) -> HashMap<String, u64> {
        let mut calls = HashMap::new();
        for &port in &self.ports {
            for line in self.cli(port, &["INFO", "commandstats"]).await.lines() {
                let Some((name, rest)) = line
                    .strip_prefix("cmdstat_")
                    .and_then(|l| l.split_once(':'))
                else {
                    continue;
                };
                let count = rest
                    .split(',')
                    .find_map(|field| field.strip_prefix("calls="))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
                *calls.entry(name.to_owned()).or_insert(0) += count;
            }
        }
        calls
    }

    /// Clears every node's command statistics.
    pub async fn reset_command_stats(&self) {
        for &port in &self.ports {
            self.cli(port, &["CONFIG", "RESETSTAT"]).await;
        }
    }

    /// Kills every node at once (SIGKILL by its pidfile's PID), as a crash would.
    pub async fn kill(&self) {
        for &port in &self.ports {
            let pidfile = self.dir.join(port.to_string()).join("redis.pid");
            let pid = std::fs::read_to_string(&pidfile).expect("the node's pidfile");
            let killed = tokio::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .status()
                .await;
            assert!(killed.is_ok_and(|s| s.success()), "kill node {port}");
            // The pidfile is gone once the process is: a restart must not see the old one.
            let _ = std::fs::remove_file(&pidfile);
        }
    }

    /// Starts every node killed by [`Server::kill`] again, on the same ports and folders (each
    /// reloads its AOF), and waits until they answer.
    pub async fn restart(&self) {
        for &port in &self.ports {
            let conf = self.dir.join(port.to_string()).join("redis.conf");
            let started = tokio::process::Command::new("redis-server")
                .arg(&conf)
                .status()
                .await;
            assert!(started.is_ok_and(|s| s.success()), "restart node {port}");
        }
        self.wait_until_ready()
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", logs(&self.dir)));
    }

    async fn wait_until_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for &port in &self.ports {
            loop {
                let pong = self.cli(port, &["PING"]).await;
                if pong.trim() == "PONG" {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("redis on port {port} did not answer within 30 s"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

/// Starts `nodes` servers (more than one: a cluster of that many masters).
async fn start(nodes: usize) -> Result<Server, String> {
    let found = Command::new("redis-server").arg("--version").output();
    if !found.is_ok_and(|out| out.status.success()) {
        return Err(
            "no redis-server on PATH (install Debian's `redis-server` and \
                    `redis-tools`; .ci/run does)"
                .into(),
        );
    }
    let server = tokio::task::spawn_blocking(move || spawn(nodes))
        .await
        .map_err(|e| format!("starting redis panicked: {e}"))??;
    server
        .wait_until_ready()
        .await
        .map_err(|e| format!("{e}\n{}", logs(&server.dir)))?;
    if nodes > 1 {
        make_cluster(&server).await?;
    }
    Ok(server)
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_port() -> Result<u16, String> {
    for _ in 0..100 {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port pair for a cluster node".into())
}

/// The watchdog: starts every node from its config, waits for stdin to close, kills each
/// node by its PID, and deletes the folder.
const WATCHDOG: &str = r#"
dir="$1"
for conf in "$dir"/*/redis.conf; do
    redis-server "$conf" || echo "redis-server $conf failed" >"$dir/failed"
done
cat >/dev/null
for pidfile in "$dir"/*/redis.pid; do
    [ -f "$pidfile" ] && kill -KILL "$(cat "$pidfile")" 2>/dev/null
done
rm -rf "$dir"
"#;

fn spawn(nodes: usize) -> Result<Server, String> {
    let dir = std::env::temp_dir().join(format!(
        "idem-redis-{}-{}",
        std::process::id(),
        &OwnerToken::random().to_hex()[..8]
    ));
    let mut ports = Vec::new();
    for _ in 0..nodes {
        let port = free_port()?;
        let node = dir.join(port.to_string());
        std::fs::create_dir_all(&node).map_err(|e| format!("create {}: {e}", node.display()))?;
        let cluster = if nodes > 1 {
            "cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 2000\n"
        } else {
            ""
        };
        let conf = format!(
            "port {port}\nbind 127.0.0.1\ndaemonize yes\ndir {node}\npidfile {node}/redis.pid\n\
             logfile {node}/redis.log\nsave \"\"\nappendonly yes\nappendfsync everysec\n\
             maxmemory-policy noeviction\n{cluster}",
            node = node.display()
        );
        std::fs::write(node.join("redis.conf"), conf).map_err(|e| e.to_string())?;
        ports.push(port);
    }
    let mut child = Command::new("sh")
        .args(["-c", WATCHDOG, "watchdog"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn the redis watchdog: {e}"))?;
    let stdin = child.stdin.take().ok_or("the watchdog has no stdin pipe")?;
    eprintln!("test redis: ports {ports:?}, data in {}", dir.display());
    Ok(Server {
        ports,
        dir,
        _watchdog: Mutex::new((child, stdin)),
    })
}

/// Joins the nodes into a cluster of masters with `redis-cli --cluster create`, and waits
/// until every node says the cluster is ok.
async fn make_cluster(server: &Server) -> Result<(), String> {
    let nodes: Vec<String> = server
        .ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let out = tokio::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .await
        .map_err(|e| format!("run redis-cli --cluster create: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for &port in &server.ports {
        while !server
            .cli(port, &["CLUSTER", "INFO"])
            .await
            .contains("cluster_state:ok")
        {
            if Instant::now() > deadline {
                return Err(format!("node {port}: the cluster is not ok within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// What the nodes logged, for a failure message.
fn logs(dir: &Path) -> String {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|node| {
            let log = node.path().join("redis.log");
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            format!("--- {} ---\n{text}", log.display())
        })
        .collect()
}
