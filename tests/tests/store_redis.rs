//! The store conformance suite on [`RedisStore`], on a standalone server and on a 3-master
//! cluster (each test under a key prefix of its own), and what only Redis has: one command
//! per step counted by the server, records spread over every master, the refusal of an
//! evicting server, scripts reloaded after `SCRIPT FLUSH`, key names without the client's key.

use idem_tests::redis;

idem_tests::conformance_tests!(redis::fixture, expires_by_itself);

/// The conformance suite again, on a 3-master Redis Cluster: records spread over its slots.
mod cluster {
    use idem_tests::redis;

    idem_tests::conformance_tests!(redis::cluster_fixture, expires_by_itself);
}

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use idem_runtime::redis::AsyncCommands;
use idem_runtime::{
    Acquired, ClaimOutcome, IdempotencyStore, Ownership, Payload, RecordState, RedisOptions,
    RedisStore,
};
use idem_tests::conformance::{LONG, claim, fresh_id, response};

/// The commands each node ran since the last reset, leaving out the test's own `INFO` and
/// `CONFIG RESETSTAT`.
async fn commands_since_reset(server: &redis::Server) -> HashMap<String, u64> {
    let mut calls = server.command_calls().await;
    calls.retain(|name, _| name != "info" && name != "config|resetstat");
    calls
}

/// What one script ran, as `INFO commandstats` counts it: the `EVALSHA` the client sent and
/// the commands the script ran inside it.
fn script(inside: &[(&str, u64)]) -> HashMap<String, u64> {
    let mut calls: HashMap<String, u64> = inside.iter().map(|(n, c)| ((*n).into(), *c)).collect();
    calls.insert("evalsha".into(), 1);
    calls
}

/// Counts, on every node, what each step costs: exactly one command from the client (an
/// `EVALSHA`), whatever the script runs inside it.
async fn one_command_per_step(server: &redis::Server) {
    let store = server.store().await;
    let id = fresh_id();
    // Load every script first (a script's first call loads it), so that only the steps are
    // counted.
    assert!(matches!(store.get(&id).await, Ok(None)));
    for _ in 0..2 {
        let warm = claim(&fresh_id(), "w", LONG, LONG);
        store.claim(&warm).await.expect("claim");
        let _ = store.renew(&warm).await.expect("renew");
        let _ = store.fail(&warm).await.expect("fail");
        let _ = store
            .complete(&warm, &response(200, b"w"))
            .await
            .expect("complete");
        let _ = store.release(&warm).await.expect("release");
    }

    let first = claim(&id, "a", LONG, LONG);
    server.reset_command_stats().await;
    assert_eq!(
        store.claim(&first).await.ok(),
        Some(ClaimOutcome::Acquired(Acquired::New))
    );
    let new = [("time", 1), ("hmget", 1), ("hset", 1), ("pexpireat", 1)];
    assert_eq!(commands_since_reset(server).await, script(&new));

    let stored = response(201, b"{\"id\":1}");
    server.reset_command_stats().await;
    assert_eq!(
        store.complete(&first, &stored).await.ok(),
        Some(Ownership::Held)
    );
    let complete = [("time", 1), ("hget", 1), ("hset", 1), ("pexpireat", 1)];
    assert_eq!(commands_since_reset(server).await, script(&complete));

    server.reset_command_stats().await;
    let replay = store.claim(&claim(&id, "a", LONG, LONG)).await;
    assert!(
        matches!(&replay, Ok(ClaimOutcome::Existing(r)) if r.state == RecordState::Completed(stored.clone())),
        "{replay:?}"
    );
    assert_eq!(
        commands_since_reset(server).await,
        script(&[("time", 1), ("hmget", 1)]),
        "a replay reads and writes nothing"
    );

    // Renew, fail and release: one script each too.
    let other = claim(&fresh_id(), "b", LONG, LONG);
    store.claim(&other).await.expect("claim");
    for (step, inside) in [
        ("renew", vec![("time", 1), ("hmget", 1), ("hset", 1)]),
        (
            "fail",
            vec![("time", 1), ("hget", 1), ("hset", 1), ("hdel", 1)],
        ),
    ] {
        server.reset_command_stats().await;
        let done = match step {
            "renew" => store.renew(&other).await,
            _ => store.fail(&other).await,
        };
        assert_eq!(done.ok(), Some(Ownership::Held), "{step}");
        assert_eq!(
            commands_since_reset(server).await,
            script(&inside),
            "{step}"
        );
    }
    let third = claim(&fresh_id(), "c", LONG, LONG);
    store.claim(&third).await.expect("claim");
    server.reset_command_stats().await;
    assert_eq!(store.release(&third).await.ok(), Some(Ownership::Held));
    let release = [("time", 1), ("hmget", 1), ("del", 1)];
    assert_eq!(commands_since_reset(server).await, script(&release));
}

/// One round trip per step (docs/contract.md, "Records"): a first call is one `EVALSHA` to
/// claim and one to complete, a replay one, on a standalone server. Counted by the server,
/// in `INFO commandstats`.
#[tokio::test]
async fn a_first_call_costs_two_commands_and_a_replay_one() {
    let Some(server) = redis::own_server().await else {
        return;
    };
    one_command_per_step(&server).await;
}

/// The same on a cluster, summed over its three masters: each step goes to its key's master
/// alone.
#[tokio::test]
async fn on_a_cluster_each_step_is_one_command_on_one_master() {
    let Some(cluster) = redis::own_cluster().await else {
        return;
    };
    one_command_per_step(&cluster).await;
}

/// A record's key holds a hash of its identity, never the client's key; keys spread over
/// every master of a cluster (no hash tag).
#[tokio::test]
async fn key_names_hide_the_client_key_and_spread_over_every_master() {
    let Some(cluster) = redis::cluster().await else {
        return;
    };
    let store = cluster.store().await;
    let mut ids = Vec::new();
    for _ in 0..60 {
        let c = claim(&fresh_id(), "a", LONG, LONG);
        store.claim(&c).await.expect("claim");
        ids.push(c.id);
    }
    let pattern = format!("{}:*", store.prefix());
    let mut seen = Vec::new();
    for &port in &cluster.ports {
        let keys = cluster.cli(port, &["--scan", "--pattern", &pattern]).await;
        let keys: Vec<String> = keys.lines().map(str::to_owned).collect();
        assert!(!keys.is_empty(), "node {port} holds some of the 60 records");
        seen.extend(keys);
    }
    assert_eq!(seen.len(), 60);
    for id in &ids {
        let key = store.key_of(id);
        assert!(seen.contains(&key));
        assert!(
            !key.contains(id.key.as_str()) && !key.contains("key-"),
            "{key}"
        );
        assert_eq!(key.len(), store.prefix().len() + 1 + 32);
    }
}

/// Only `noeviction` is safe: any policy that may evict (and `volatile-*` may, since every
/// record has a TTL) is refused at connect, saying what to set; the opt-out skips the check.
#[tokio::test]
async fn an_evicting_server_is_refused_at_connect() {
    let Some(server) = redis::own_server().await else {
        return;
    };
    let port = server.ports[0];
    for policy in ["allkeys-lru", "volatile-lru", "volatile-ttl"] {
        server
            .cli(port, &["CONFIG", "SET", "maxmemory-policy", policy])
            .await;
        let refused = RedisStore::connect(&server.url()).await.unwrap_err();
        let text = refused.to_string();
        assert!(!refused.is_transient(), "{text}");
        assert!(
            text.contains(policy) && text.contains("noeviction"),
            "{text}"
        );
        let trusted = RedisOptions::new().assume_noeviction();
        assert!(
            RedisStore::connect_with(&server.url(), trusted)
                .await
                .is_ok()
        );
    }
    server
        .cli(port, &["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .await;
    assert!(RedisStore::connect(&server.url()).await.is_ok());
}

/// A server that lost its scripts (a restart, `SCRIPT FLUSH`, a failover) gets them again:
/// `NOSCRIPT` loads the script and sends it again.
#[tokio::test]
async fn scripts_flushed_from_the_server_are_loaded_again() {
    let Some(server) = redis::own_server().await else {
        return;
    };
    let store = server.store().await;
    let first = claim(&fresh_id(), "a", LONG, LONG);
    store.claim(&first).await.expect("claim");
    server.cli(server.ports[0], &["SCRIPT", "FLUSH"]).await;
    server.reset_command_stats().await;
    let payload = Arc::new(Payload::Value(Bytes::from_static(b"7")));
    assert_eq!(
        store.complete(&first, &payload).await.ok(),
        Some(Ownership::Held)
    );
    let calls = commands_since_reset(&server).await;
    assert_eq!(calls.get("script|load"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("evalsha"), Some(&2), "{calls:?}");
}

/// A stopped server is a transient error, answered at once; the store reconnects by itself
/// once it is back, and the records written before the crash are still there (AOF).
#[tokio::test]
async fn a_killed_server_is_a_transient_error_until_it_is_back() {
    let Some(server) = redis::own_server().await else {
        return;
    };
    let store = server.store().await;
    let kept = claim(&fresh_id(), "a", LONG, LONG);
    store.claim(&kept).await.expect("claim");
    let done = store.complete(&kept, &response(201, b"kept")).await;
    assert_eq!(done.ok(), Some(Ownership::Held));
    server.kill().await;
    let started = Instant::now();
    let down = store.claim(&claim(&fresh_id(), "a", LONG, LONG)).await;
    assert!(down.as_ref().is_err_and(|e| e.is_transient()), "{down:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let back = loop {
        match store.get(&kept.id).await {
            Ok(record) => break record,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the store did not come back: {e}"),
        }
    };
    let back = back.expect("the completed record survived the crash");
    assert_eq!(back.state, RecordState::Completed(response(201, b"kept")));
}

/// A record key holding something else is a script error: permanent, not retried as an
/// outage.
#[tokio::test]
async fn a_script_error_is_permanent() {
    let Some(server) = redis::server().await else {
        return;
    };
    let store = server.store().await;
    let id = fresh_id();
    let mut connection = store.connection().clone();
    let _: () = connection
        .set(store.key_of(&id), "not a hash")
        .await
        .expect("SET");
    let refused = store.claim(&claim(&id, "a", LONG, LONG)).await;
    assert!(refused.is_err_and(|e| !e.is_transient()));
}
