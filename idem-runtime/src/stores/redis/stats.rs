//! The Redis store's `stats`: every master's keys under the store's prefix, a `SCAN` page at a
//! time, each page's states read in one pipeline with the server's clock, sent to the node the
//! page came from. It reads every record, so its cost grows with their number (one `SCAN` and
//! one pipelined `HMGET` per record a page of 1,000): for operators, not for a request path.

use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Pipeline, Value};

use super::connection::{RedisConnection, classify};
use crate::engine::inspect::Stats;
use crate::engine::record::FAILED_STORAGE_STATUS;
use crate::engine::store::{StoreError, StoreResult};

/// How many keys one `SCAN` page asks for.
const SCAN_PAGE: usize = 1000;

/// Counts the records whose keys match `pattern` by state, on the server or every master.
pub(super) async fn count(connection: &RedisConnection, pattern: &str) -> StoreResult<Stats> {
    let mut stats = Stats::default();
    match connection.clone() {
        RedisConnection::Single(manager) => {
            let mut node = Node::Single(manager);
            node.count(pattern, &mut stats).await?;
        }
        RedisConnection::Cluster(mut cluster) => {
            let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
            let masters = cluster
                .route_command(redis::cmd("PING"), routing)
                .await
                .map_err(classify)?;
            let Value::Map(masters) = masters else {
                return Err(StoreError::permanent(
                    "PING on every master answered no map",
                ));
            };
            for (address, _) in masters {
                let address: String =
                    redis::from_redis_value(address).map_err(StoreError::permanent)?;
                let (host, port) = address
                    .rsplit_once(':')
                    .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)))
                    .ok_or_else(|| StoreError::permanent("a master's address has no port"))?;
                let route = SingleNodeRoutingInfo::ByAddress { host, port };
                let mut node = Node::Master(cluster.clone(), route);
                node.count(pattern, &mut stats).await?;
            }
        }
    }
    Ok(stats)
}

/// One server whose keys are counted: the single server, or one master of a cluster.
enum Node {
    Single(redis::aio::ConnectionManager),
    Master(
        redis::cluster_async::ClusterConnection,
        SingleNodeRoutingInfo,
    ),
}

impl Node {
    async fn command(&mut self, command: redis::Cmd) -> StoreResult<Value> {
        match self {
            Node::Single(manager) => command.query_async(manager).await,
            Node::Master(cluster, route) => {
                let routing = RoutingInfo::SingleNode(route.clone());
                cluster.route_command(command, routing).await
            }
        }
        .map_err(classify)
    }

    async fn pipeline(&mut self, pipeline: Pipeline, count: usize) -> StoreResult<Vec<Value>> {
        match self {
            Node::Single(manager) => pipeline.query_async(manager).await,
            Node::Master(cluster, route) => {
                cluster
                    .route_pipeline(pipeline, 0, count, route.clone())
                    .await
            }
        }
        .map_err(classify)
    }

    /// Adds this server's records to `stats`, by their state when read.
    async fn count(&mut self, pattern: &str, stats: &mut Stats) -> StoreResult<()> {
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_PAGE);
            let (next, keys): (u64, Vec<String>) =
                redis::from_redis_value(self.command(scan).await?)
                    .map_err(StoreError::permanent)?;
            if !keys.is_empty() {
                let mut pipeline = redis::pipe();
                pipeline.cmd("TIME");
                for key in &keys {
                    pipeline.cmd("HMGET").arg(key).arg("s").arg("e");
                }
                let mut answers = self.pipeline(pipeline, keys.len() + 1).await?.into_iter();
                let (seconds, micros): (u64, u64) =
                    redis::from_redis_value(answers.next().unwrap_or(Value::Nil))
                        .map_err(StoreError::permanent)?;
                let now = seconds * 1000 + micros / 1000;
                for answer in answers {
                    let (status, expires): (Option<i32>, Option<u64>) =
                        redis::from_redis_value(answer).map_err(StoreError::permanent)?;
                    let Some(expires) = expires else {
                        continue; // deleted between the scan and the read
                    };
                    let counter = match status {
                        _ if expires <= now => &mut stats.expired,
                        None => &mut stats.in_progress,
                        Some(FAILED_STORAGE_STATUS) => &mut stats.failed_storage,
                        Some(_) => &mut stats.completed,
                    };
                    *counter += 1;
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}
