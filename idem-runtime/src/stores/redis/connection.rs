//! Where the Redis store's commands go: one server through redis-rs's connection manager, or
//! a cluster through its cluster client; how a URL names either; which errors may pass; and
//! the check at connect that the server never evicts a key.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

use crate::engine::store::{StoreError, StoreResult};

/// How long connecting to a server may take before the attempt fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may wait for its answer. The executor's store timeout is usually
/// shorter; this bounds the store's own calls (stats, the check at connect).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one Redis server or to a cluster: cheap to clone, each clone sharing the
/// same multiplexed connections, and reconnecting by itself after the server comes back.
///
/// [`RedisStore::connection`](super::RedisStore::connection) hands it out, so that the
/// application keeps its own data in the same Redis (it implements redis-rs's
/// [`ConnectionLike`], so every command and script runs on it).
#[derive(Clone)]
pub enum RedisConnection {
    /// One server (or a proxy in front of several), through redis-rs's connection manager.
    Single(ConnectionManager),
    /// A Redis Cluster: each command goes to the master of its key's slot.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConnection::Single(_) => "RedisConnection::Single",
            RedisConnection::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

/// What a store URL names: one server, or the seed nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// A `redis://` or `rediss://` URL, as redis-rs reads it.
    Single(String),
    /// One `redis://` (or `rediss://`) URL per seed node.
    Cluster(Vec<String>),
}

impl Target {
    /// Reads `redis://…`, `rediss://…`, `redis+cluster://[USER:PASS@]HOST:PORT[,HOST:PORT…]`
    /// or `rediss+cluster://…`.
    pub(super) fn parse(url: &str) -> StoreResult<Target> {
        let cluster = [
            ("redis+cluster://", "redis://"),
            ("rediss+cluster://", "rediss://"),
        ]
        .into_iter()
        .find_map(|(scheme, node)| url.strip_prefix(scheme).map(|rest| (rest, node)));
        let Some((rest, node_scheme)) = cluster else {
            if url.starts_with("redis://") || url.starts_with("rediss://") {
                return Ok(Target::Single(url.to_owned()));
            }
            return Err(StoreError::permanent(
                "a Redis store URL starts with redis://, rediss://, redis+cluster:// or \
                 rediss+cluster://",
            ));
        };
        let (credentials, hosts) = match rest.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = hosts.split(['/', '?']).next().unwrap_or_default();
        let nodes: Vec<String> = hosts
            .split(',')
            .filter(|host| !host.is_empty())
            .map(|host| format!("{node_scheme}{credentials}{host}"))
            .collect();
        if nodes.is_empty() {
            return Err(StoreError::permanent(
                "a redis+cluster:// URL names at least one HOST:PORT",
            ));
        }
        Ok(Target::Cluster(nodes))
    }

    /// Connects, checking that the server (every node of a cluster) answers.
    pub(super) async fn connect(&self) -> StoreResult<RedisConnection> {
        match self {
            Target::Single(url) => {
                let client = redis::Client::open(url.as_str()).map_err(classify)?;
                // One quick attempt per reconnection: while the server is down, a step fails
                // at once (503 for the client) instead of waiting through a backoff, and the
                // next step tries again.
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                let manager = ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(classify)?;
                Ok(RedisConnection::Single(manager))
            }
            Target::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(3)
                    .build()
                    .map_err(classify)?;
                let connection = client.get_async_connection().await.map_err(classify)?;
                Ok(RedisConnection::Cluster(connection))
            }
        }
    }
}

/// Each master's `maxmemory-policy`, by address (`""` for a single server); a master whose
/// `CONFIG GET` failed answers its error's text instead.
pub(super) async fn eviction_policies(
    connection: &mut RedisConnection,
) -> StoreResult<Vec<(String, Result<String, String>)>> {
    let mut get = redis::cmd("CONFIG");
    get.arg("GET").arg("maxmemory-policy");
    let policy = |value: Value| -> Result<String, String> {
        match value {
            Value::ServerError(error) => Err(error.to_string()),
            value => redis::from_redis_value::<HashMap<String, String>>(value)
                .map_err(|e| e.to_string())?
                .remove("maxmemory-policy")
                .ok_or_else(|| "CONFIG GET maxmemory-policy answered nothing".to_owned()),
        }
    };
    match connection {
        RedisConnection::Single(manager) => match get.query_async::<Value>(manager).await {
            Ok(value) => Ok(vec![(String::new(), policy(value))]),
            Err(error) => {
                let text = error.to_string();
                match classify(error) {
                    failed if failed.is_transient() => Err(failed),
                    // Refused (renamed or forbidden CONFIG): said in the refusal.
                    _ => Ok(vec![(String::new(), Err(text))]),
                }
            }
        },
        RedisConnection::Cluster(cluster) => {
            let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
            let answers = cluster
                .route_command(get, routing)
                .await
                .map_err(classify)?;
            let Value::Map(answers) = answers else {
                return Err(StoreError::permanent(
                    "CONFIG GET on every master did not answer by address",
                ));
            };
            Ok(answers
                .into_iter()
                .map(|(address, value)| {
                    let address = redis::from_redis_value::<String>(address).unwrap_or_default();
                    (address, policy(value))
                })
                .collect())
        }
    }
}

/// Refuses a server that may evict keys: an evicted record lets its key run twice. Only
/// `noeviction` is safe, since every record carries a TTL (so `volatile-*` evicts them too).
pub(super) fn refuse_eviction(policies: &[(String, Result<String, String>)]) -> StoreResult<()> {
    for (address, policy) in policies {
        let server = if address.is_empty() {
            "the Redis server".to_owned()
        } else {
            format!("the Redis master {address}")
        };
        match policy {
            Ok(policy) if policy == "noeviction" => {}
            Ok(policy) => {
                return Err(StoreError::permanent(format!(
                    "{server} has maxmemory-policy {policy}, which can evict idempotency \
                     records and let a key run twice; set `maxmemory-policy noeviction` \
                     (see the README, \"Redis\")"
                )));
            }
            Err(error) => {
                return Err(StoreError::permanent(format!(
                    "could not read maxmemory-policy from {server} ({error}); a managed Redis \
                     may refuse CONFIG: make sure its policy is noeviction, then connect with \
                     `RedisOptions::assume_noeviction` (the example: \
                     IDEM_REDIS_ASSUME_NOEVICTION=1)"
                )));
            }
        }
    }
    Ok(())
}

/// Maps a redis-rs error to a [`StoreError`]: transient when the connection failed, timed
/// out or dropped, when the cluster is down or resharding, when the server is loading its
/// data, is read-only (a failover) or is out of memory; permanent otherwise (a script's own
/// error, a wrong type, a refused command, bad settings).
pub(super) fn classify(error: RedisError) -> StoreError {
    let transient = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
                    | ServerErrorKind::ReadOnly
            ) | ErrorKind::ClusterConnectionNotFound
        )
        || error
            .code()
            .is_some_and(|code| matches!(code, "OOM" | "BUSY"));
    if transient {
        StoreError::transient(error)
    } else {
        StoreError::permanent(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_one_server_or_a_cluster_s_seed_nodes() {
        let single = Target::parse("redis://127.0.0.1:6379/0").ok();
        assert_eq!(
            single,
            Some(Target::Single("redis://127.0.0.1:6379/0".into()))
        );
        let cluster = Target::parse("redis+cluster://u:p@a:7000,b:7001/?x=1").ok();
        assert_eq!(
            cluster,
            Some(Target::Cluster(vec![
                "redis://u:p@a:7000".into(),
                "redis://u:p@b:7001".into()
            ]))
        );
        let tls = Target::parse("rediss+cluster://a:7000").ok();
        assert_eq!(tls, Some(Target::Cluster(vec!["rediss://a:7000".into()])));
        for bad in ["postgres://x", "redis+cluster://", "valkey://a:1"] {
            assert!(
                Target::parse(bad).is_err_and(|e| !e.is_transient()),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_noeviction_is_accepted_and_a_refused_config_says_how_to_opt_out() {
        let ok = |p: &str| vec![("a:1".to_owned(), Ok(p.to_owned()))];
        assert!(refuse_eviction(&ok("noeviction")).is_ok());
        for evicting in [
            "allkeys-lru",
            "volatile-lru",
            "volatile-ttl",
            "allkeys-random",
        ] {
            let refused = refuse_eviction(&ok(evicting)).unwrap_err().to_string();
            assert!(refused.contains(evicting) && refused.contains("noeviction"));
            assert!(refused.contains("a:1"), "{refused}");
        }
        let hidden = vec![(
            String::new(),
            Err("ERR unknown command 'CONFIG'".to_owned()),
        )];
        let refused = refuse_eviction(&hidden).unwrap_err().to_string();
        assert!(refused.contains("assume_noeviction"), "{refused}");
    }

    #[test]
    fn errors_are_classified() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(classify(io).is_transient());
        let down = RedisError::from((ErrorKind::Server(ServerErrorKind::ClusterDown), "down"));
        assert!(classify(down).is_transient());
        let loading = RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "l"));
        assert!(classify(loading).is_transient());
        let script = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "s"));
        assert!(!classify(script).is_transient());
        let typed = RedisError::from((ErrorKind::UnexpectedReturnType, "t"));
        assert!(!classify(typed).is_transient());
    }
}
