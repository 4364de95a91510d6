//! One conformance suite for every [`IdempotencyStore`](idem_runtime::IdempotencyStore): the records' contract
//! (docs/contract.md, "Records"), case by case. [`conformance_tests!`](crate::conformance_tests)
//! turns it into `#[tokio::test]`s for a store constructor.
//!
//! The cases run on real time with short leases and TTLs, because SQL stores judge time by the
//! database's clock, which a paused tokio clock cannot move. A case sleeps only where the
//! store's clock must pass a lease or a TTL.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use idem_runtime::{
    Acquired, Claim, ClaimOutcome, Fingerprint, IdempotencyKey, InspectedState, Inspection,
    OwnerToken, Ownership, Payload, Record, RecordId, RecordState, Stats, Store,
};

/// A lease or TTL that outlives any case.
pub const LONG: Duration = Duration::from_secs(60);
/// A lease or TTL that a case waits out.
pub const SHORT: Duration = Duration::from_millis(200);
/// How long a case waits for a [`SHORT`] duration to pass on the store's clock.
pub const PAST_SHORT: Duration = Duration::from_millis(350);

const HANDLER: &str = "conformance::create_payment";

/// Generates one `#[tokio::test]` per conformance case. `$make` is an `async fn()` returning
/// `Option<(Store, Guard)>`: `None` skips (it must have said why), and the guard lives as long
/// as the case, to clean up a database or file afterwards.
///
/// A store that deletes expired records by itself (Redis, with a TTL on every key) is written
/// `conformance_tests!($make, expires_by_itself)`: the cases about records kept past their TTL
/// until a purge give way to cases that check the records are gone without one.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@common $make;
            purge_removes_only_expired_records_in_batches,
            stats_count_live_records_by_state_and_expired_ones,
            purge_every_removes_expired_records_and_keeps_live_ones,
        );
    };
    ($make:path, expires_by_itself) => {
        $crate::conformance_tests!(@common $make;
            expired_records_vanish_without_a_purge,
            stats_count_live_records_by_state_and_no_expired_ones,
        );
    };
    (@common $make:path; $($extra:ident),* $(,)?) => {
        $crate::conformance_tests!(@cases $make;
            new_key_is_acquired_as_new,
            completed_record_is_returned_for_replay,
            other_fingerprint_meets_the_standing_record_in_any_state,
            live_claim_is_returned_with_its_lease_remaining,
            abandoned_claim_is_taken_over_as_abandoned,
            failed_storage_is_taken_over_as_failed_storage,
            expired_record_is_new_even_for_another_request,
            stale_owner_cannot_complete_fail_release_or_renew,
            renew_extends_a_live_lease_only,
            release_forgets_the_record,
            get_ignores_expired_records,
            one_winner_among_64_concurrent_claimers,
            one_winner_among_64_concurrent_takeovers,
            many_keys_in_parallel,
            scope_and_handler_isolate_records,
            headers_and_body_bytes_round_trip,
            inspect_shows_a_completed_record_without_its_body,
            inspect_shows_an_in_progress_and_a_failed_storage_record,
            evicting_a_stuck_claim_lets_the_next_claim_acquire_new,
            $($extra),*
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some((store, _guard)) = $make().await else {
                    return;
                };
                $crate::conformance::$case(&store).await;
            }
        )*
    };
}

/// A key no other case uses.
pub fn fresh_key() -> IdempotencyKey {
    let text = format!("key-{}", OwnerToken::random().to_hex());
    IdempotencyKey::parse(&text).expect("generated keys are valid")
}

/// A record identity under the suite's handler and no scope.
pub fn fresh_id() -> RecordId {
    RecordId::new("", HANDLER, fresh_key())
}

/// The fingerprint of a request named `what`.
pub fn fingerprint(what: &str) -> Fingerprint {
    Fingerprint::of_parts(&[what.as_bytes()])
}

/// A claim with a fresh token.
pub fn claim(id: &RecordId, request: &str, lease: Duration, ttl: Duration) -> Claim {
    Claim {
        id: id.clone(),
        fingerprint: fingerprint(request),
        token: OwnerToken::random(),
        lease,
        ttl,
    }
}

/// A small JSON response.
pub fn response(status: u16, body: &'static [u8]) -> Arc<Payload> {
    Arc::new(Payload::Response {
        status,
        headers: vec![(
            "content-type".to_owned(),
            Bytes::from_static(b"application/json"),
        )],
        body: Bytes::from_static(body),
    })
}

async fn claim_ok(store: &Store, claim: &Claim) -> ClaimOutcome {
    store
        .backend()
        .claim(claim)
        .await
        .expect("the store answers claims")
}

async fn complete_ok(store: &Store, claim: &Claim, payload: &Arc<Payload>) {
    let done = store.backend().complete(claim, payload).await;
    assert!(
        matches!(done, Ok(Ownership::Held)),
        "the owner completes its claim: {done:?}"
    );
}

async fn get_ok(store: &Store, id: &RecordId) -> Option<Record> {
    store.get(id).await.expect("the store answers reads")
}

fn existing(outcome: ClaimOutcome) -> Record {
    match outcome {
        ClaimOutcome::Existing(record) => record,
        other => panic!("expected the standing record, got {other:?}"),
    }
}

fn lease_remaining(record: &Record) -> Duration {
    match record.state {
        RecordState::InProgress { lease_remaining } => lease_remaining,
        ref other => panic!("expected IN_PROGRESS, got {other:?}"),
    }
}

/// No record: the claim is acquired as new and reads back IN_PROGRESS with a live lease.
pub async fn new_key_is_acquired_as_new(store: &Store) {
    let id = fresh_id();
    let first = claim(&id, "a", LONG, LONG);
    assert_eq!(
        claim_ok(store, &first).await,
        ClaimOutcome::Acquired(Acquired::New)
    );
    let record = get_ok(store, &id).await.expect("the claim is stored");
    assert_eq!(record.fingerprint, first.fingerprint);
    let lease = lease_remaining(&record);
    assert!(lease > Duration::ZERO && lease <= LONG, "{lease:?}");
}

/// Same key, same fingerprint, COMPLETED: the claim returns the stored response.
pub async fn completed_record_is_returned_for_replay(store: &Store) {
    let id = fresh_id();
    let first = claim(&id, "a", LONG, LONG);
    claim_ok(store, &first).await;
    let stored = response(201, br#"{"id":1}"#);
    complete_ok(store, &first, &stored).await;

    for _ in 0..2 {
        let replay = existing(claim_ok(store, &claim(&id, "a", LONG, LONG)).await);
        assert_eq!(replay.fingerprint, first.fingerprint);
        assert_eq!(replay.state, RecordState::Completed(stored.clone()));
    }
    let read = get_ok(store, &id).await.map(|r| r.state);
    assert_eq!(read, Some(RecordState::Completed(stored)));
}

/// Same key, another fingerprint: whatever the state, nothing is written and the standing
/// record (with its first fingerprint) comes back; its owner still owns it.
pub async fn other_fingerprint_meets_the_standing_record_in_any_state(store: &Store) {
    // IN_PROGRESS, live.
    let id = fresh_id();
    let first = claim(&id, "a", LONG, LONG);
    claim_ok(store, &first).await;
    let met = existing(claim_ok(store, &claim(&id, "b", LONG, LONG)).await);
    assert_eq!(met.fingerprint, first.fingerprint);
    assert!(lease_remaining(&met) > Duration::ZERO);
    // COMPLETED, by the first owner, whose token still holds.
    let stored = response(200, b"done");
    complete_ok(store, &first, &stored).await;
    let met = existing(claim_ok(store, &claim(&id, "b", LONG, LONG)).await);
    assert_eq!(met.fingerprint, first.fingerprint);
    assert_eq!(met.state, RecordState::Completed(stored));

    // FAILED_STORAGE is not taken over by another request.
    let id = fresh_id();
    let first = claim(&id, "a", LONG, LONG);
    claim_ok(store, &first).await;
    assert!(matches!(
        store.backend().fail(&first).await,
        Ok(Ownership::Held)
    ));
    let met = existing(claim_ok(store, &claim(&id, "b", LONG, LONG)).await);
    assert_eq!(met.fingerprint, first.fingerprint);
    assert_eq!(met.state, RecordState::FailedStorage);

    // IN_PROGRESS, abandoned: still not another request's to take.
    let id = fresh_id();
    let first = claim(&id, "a", SHORT, LONG);
    claim_ok(store, &first).await;
    tokio::time::sleep(PAST_SHORT).await;
    let met = existing(claim_ok(store, &claim(&id, "b", LONG, LONG)).await);
    assert_eq!(met.fingerprint, first.fingerprint);
    assert_eq!(lease_remaining(&met), Duration::ZERO);
}

/// Same key and fingerprint, IN_PROGRESS with a live lease: the record comes back with the
/// time left on the lease, for `Retry-After`.
pub async fn live_claim_is_returned_with_its_lease_remaining(store: &Store) {
    let id = fresh_id();
    let first = claim(&id, "a", LONG, LONG);
    claim_ok(store, &first).await;
    let met = existing(claim_ok(store, &claim(&id, "a", LONG, LONG)).await);
    assert_eq!(met.fingerprint, first.fingerprint);
    let lease = lease_remaining(&met);
    assert!(
        lease > LONG - Duration::from_secs(10) && lease <= LONG,
        "{lease:?}"
    );
}

/// Same key and fingerprint, IN_PROGRESS whose lease expired: taken over, as abandoned, and
/// then live for the new owner.
pub async fn abandoned_claim_is_taken_over_as_abandoned(store: &Store) {
    let id = fresh_id();
    let first = claim(&id, "a", SHORT, LONG);
    claim_ok(store, &first).await;
    tokio::time::sleep(PAST_SHORT).await;

    let second = claim(&id, "a", LONG, LONG);
    assert_eq!(
        claim_ok(store, &second).await,
        ClaimOutcome::Acquired(Acquired::Abandoned)
    );
    let met = existing(claim_ok(store, &claim(&id, "a", LONG, LONG)).await);
    assert!(lease_remaining(&met) > SHORT);

    let late = store
        .backend()
        .complete(&first, &response(200, b"late"))
        .await;
    assert!(matches!(late, Ok(Ownership::Lost)), "{late:?}");
    let stored = response(201, b"second");
    complete_ok(store, &second, &stored).await;
    let read = get_ok(store, &id).await.map(|r| r.state);
    assert_eq!(read, Some(RecordState::Completed(stored)));
}

/// Same key and fingerprint, FAILED_STORAGE: taken over, as FAILED_STORAGE.
pub async fn failed_storage_is_taken_over_as_failed_storage(store: &Store) {
    let id = fresh_id();
    let first = claim(&id, "a", LONG, LONG);
    claim_ok(store, &first).await;
    assert!(matches!(
        store.backend().fail(&first).await,
        Ok(Ownership::Held)
    ));
    let read = get_ok(store, &id).await.map(|r| r.state);
    assert_eq!(read, Some(RecordState::FailedStorage));

    let second = claim(&id, "a", LONG, LONG);
    assert_eq!(
        claim_ok(store, &second).await,
        ClaimOutcome::Acquired(Acquired::FailedStorage)
    );
    let read = get_ok(store, &id).await.expect("taken over, not deleted");
    assert!(lease_remaining(&read) > SHORT);
    assert!(matches!(
        store.backend().fail(&first).await,
        Ok(Ownership::Lost)
    ));
    complete_ok(store, &second, &response(200, b"ok")).await;
}

/// An expired record, COMPLETED or IN_PROGRESS, counts as no record: the claim is new, even
/// for another fingerprint, and the old owner is fenced out.
pub async fn expired_record_is_new_even_for_another_request(store: &Store) {
    let done = fresh_id();
    let first = claim(&done, "a", LONG, SHORT);
    claim_ok(store, &first).await;
    complete_ok(store, &first, &response(200, b"old")).await;
    let running = fresh_id();
    let stuck = claim(&running, "a", LONG, SHORT);
    claim_ok(store, &stuck).await;
    tokio::time::sleep(PAST_SHORT).await;

    for (id, old) in [(&done, &first), (&running, &stuck)] {
        let again = claim(id, "b", LONG, LONG);
        assert_eq!(
            claim_ok(store, &again).await,
            ClaimOutcome::Acquired(Acquired::New)
        );
        let read = get_ok(store, id).await.expect("the new claim is stored");
        assert_eq!(read.fingerprint, again.fingerprint);
        assert!(lease_remaining(&read) > SHORT);
        assert!(matches!(
            store.backend().release(old).await,
            Ok(Ownership::Lost)
        ));
    }
}

/// Once a claim is taken over, its old token can change nothing; nor can a token that never
/// claimed.
pub async fn stale_owner_cannot_complete_fail_release_or_renew(store: &Store) {
    let id = fresh_id();
    let stale = claim(&id, "a", SHORT, LONG);
    claim_ok(store, &stale).await;
    tokio::time::sleep(PAST_SHORT).await;
    let owner = claim(&id, "a", LONG, LONG);
    assert_eq!(
        claim_ok(store, &owner).await,
        ClaimOutcome::Acquired(Acquired::Abandoned)
    );
    let stranger = claim(&id, "a", LONG, LONG);

    for intruder in [&stale, &stranger] {
        let backend = store.backend();
        let stored = response(200, b"intruder");
        assert!(matches!(
            backend.complete(intruder, &stored).await,
            Ok(Ownership::Lost)
        ));
        assert!(matches!(backend.fail(intruder).await, Ok(Ownership::Lost)));
        assert!(matches!(
            backend.release(intruder).await,
            Ok(Ownership::Lost)
        ));
        assert!(matches!(backend.renew(intruder).await, Ok(Ownership::Lost)));
    }
    let read = get_ok(store, &id).await.expect("the owner's claim stands");
    assert!(lease_remaining(&read) > SHORT);
    assert!(matches!(
        store.backend().renew(&owner).await,
        Ok(Ownership::Held)
    ));
}

/// Renewing sets the lease to `claim.lease` from now, so a renewed claim is not abandoned;
/// renewing a completed record changes nothing.
pub async fn renew_extends_a_live_lease_only(store: &Store) {
    let id = fresh_id();
    let first = claim(&id, "a", SHORT, LONG);
    claim_ok(store, &first).await;
    let longer = Claim {
        lease: LONG,
        ..first.clone()
    };
    assert!(matches!(
        store.backend().renew(&longer).await,
        Ok(Ownership::Held)
    ));
    tokio::time::sleep(PAST_SHORT).await;

    let met = existing(claim_ok(store, &claim(&id, "a", LONG, LONG)).await);
    let lease = lease_remaining(&met);
    assert!(lease > LONG - Duration::from_secs(10), "{lease:?}");

    complete_ok(store, &first, &response(200, b"ok")).await;
    assert!(matches!(
        store.backend().renew(&first).await,
        Ok(Ownership::Lost)
    ));
}

/// Releasing deletes the record, so that the next claim is new.
pub async fn release_forgets_the_record(store: &Store) {
    let id = fresh_id();
    let first = claim(&id, "a", LONG, LONG);
    claim_ok(store, &first).await;
    assert!(matches!(
        store.backend().release(&first).await,
        Ok(Ownership::Held)
    ));
    assert_eq!(get_ok(store, &id).await, None);
    assert!(matches!(
        store.backend().release(&first).await,
        Ok(Ownership::Lost)
    ));
    assert_eq!(
        claim_ok(store, &claim(&id, "b", LONG, LONG)).await,
        ClaimOutcome::Acquired(Acquired::New)
    );
}

/// A record past its TTL reads as `None`; completing starts the TTL anew.
pub async fn get_ignores_expired_records(store: &Store) {
    // Long enough for the first read to come before expiry on a loaded machine.
    let ttl = Duration::from_millis(700);
    let id = fresh_id();
    let first = claim(&id, "a", LONG, ttl);
    claim_ok(store, &first).await;
    complete_ok(store, &first, &response(200, b"ok")).await;
    assert!(get_ok(store, &id).await.is_some());
    tokio::time::sleep(ttl + Duration::from_millis(150)).await;
    assert_eq!(get_ok(store, &id).await, None);
}

/// Purging deletes expired records, any state, at most `limit` at a time, and nothing live.
pub async fn purge_removes_only_expired_records_in_batches(store: &Store) {
    let live = short_and_live_records(store).await;
    tokio::time::sleep(PAST_SHORT).await;

    let batches = [
        store.backend().purge(2).await.ok(),
        store.backend().purge(2).await.ok(),
        store.backend().purge(2).await.ok(),
        store.backend().purge(2).await.ok(),
    ];
    assert_eq!(batches, [Some(2), Some(2), Some(1), Some(0)]);
    for id in &live {
        assert!(
            get_ok(store, id).await.is_some(),
            "a live record was purged"
        );
    }
    assert!(matches!(store.purge_expired(10).await, Ok(0)));
}

async fn race(store: &Store, id: &RecordId, claimers: usize) -> Vec<ClaimOutcome> {
    let tasks: Vec<_> = (0..claimers)
        .map(|_| {
            let store = store.clone();
            let attempt = claim(id, "a", LONG, LONG);
            tokio::spawn(async move { store.backend().claim(&attempt).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        let outcome = task.await.expect("claimers do not panic");
        outcomes.push(outcome.expect("the store answers every claimer"));
    }
    outcomes
}

/// 64 concurrent claims of one new key: exactly one wins; the others see it in progress.
pub async fn one_winner_among_64_concurrent_claimers(store: &Store) {
    let id = fresh_id();
    let outcomes = race(store, &id, 64).await;
    let winners = outcomes
        .iter()
        .filter(|o| **o == ClaimOutcome::Acquired(Acquired::New))
        .count();
    assert_eq!(winners, 1, "{outcomes:?}");
    for outcome in outcomes {
        if let ClaimOutcome::Existing(record) = outcome {
            assert!(lease_remaining(&record) > SHORT);
        }
    }
}

/// 64 concurrent takeovers of one abandoned claim: exactly one wins, as abandoned.
pub async fn one_winner_among_64_concurrent_takeovers(store: &Store) {
    let id = fresh_id();
    claim_ok(store, &claim(&id, "a", SHORT, LONG)).await;
    tokio::time::sleep(PAST_SHORT).await;
    let outcomes = race(store, &id, 64).await;
    let winners: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, ClaimOutcome::Acquired(_)))
        .collect();
    assert_eq!(
        winners,
        [&ClaimOutcome::Acquired(Acquired::Abandoned)],
        "{outcomes:?}"
    );
    // The losers see the winner's live claim, not the abandoned one they raced for.
    for outcome in outcomes {
        if let ClaimOutcome::Existing(record) = outcome {
            assert!(lease_remaining(&record) > SHORT, "{record:?}");
        }
    }
}

/// Many keys claimed, completed and replayed concurrently keep to themselves.
pub async fn many_keys_in_parallel(store: &Store) {
    const KEYS: usize = 100;
    let tasks: Vec<_> = (0..KEYS)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = fresh_id();
                let first = claim(&id, &format!("request {n}"), LONG, LONG);
                let acquired = store.backend().claim(&first).await;
                assert!(
                    matches!(acquired, Ok(ClaimOutcome::Acquired(Acquired::New))),
                    "{acquired:?}"
                );
                let stored = Arc::new(Payload::Response {
                    status: 200,
                    headers: Vec::new(),
                    body: Bytes::from(format!("response {n}")),
                });
                let done = store.backend().complete(&first, &stored).await;
                assert!(matches!(done, Ok(Ownership::Held)), "{done:?}");
                (id, n, stored)
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for task in tasks {
        let (id, n, stored) = task.await.expect("no task panics");
        let replay =
            existing(claim_ok(store, &claim(&id, &format!("request {n}"), LONG, LONG)).await);
        assert_eq!(replay.state, RecordState::Completed(stored));
        assert!(seen.insert(id.key.as_str().to_owned()));
    }
}

/// One key under two scopes or two handlers is two records.
pub async fn scope_and_handler_isolate_records(store: &Store) {
    let key = fresh_key();
    let ids = [
        RecordId::new("", HANDLER, key.clone()),
        RecordId::new("tenant-a", HANDLER, key.clone()),
        RecordId::new("tenant-b", HANDLER, key.clone()),
        RecordId::new("tenant-a", "conformance::refund", key.clone()),
        // Quotes, backslashes and placeholders in a scope are data, never SQL.
        RecordId::new("o'b\\'; $1 E'\\x' -- ünï", HANDLER, key.clone()),
    ];
    let mut claims = Vec::new();
    for id in &ids {
        let each = claim(id, "a", LONG, LONG);
        assert_eq!(
            claim_ok(store, &each).await,
            ClaimOutcome::Acquired(Acquired::New),
            "{id:?}"
        );
        claims.push(each);
    }
    let stored = response(201, b"tenant-a's");
    complete_ok(store, &claims[1], &stored).await;
    assert!(matches!(
        store.backend().release(&claims[2]).await,
        Ok(Ownership::Held)
    ));

    let mut read = Vec::new();
    for id in &ids {
        read.push(get_ok(store, id).await.map(|r| r.state));
    }
    assert!(matches!(read[0], Some(RecordState::InProgress { .. })));
    assert_eq!(read[1], Some(RecordState::Completed(stored)));
    assert_eq!(read[2], None);
    assert!(matches!(read[3], Some(RecordState::InProgress { .. })));
    assert!(matches!(read[4], Some(RecordState::InProgress { .. })));
}

/// Status, headers (order, repeats, raw non-UTF-8 values) and body bytes come back exactly,
/// and a plain function's value comes back as a value.
pub async fn headers_and_body_bytes_round_trip(store: &Store) {
    let body: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let payloads = [
        Payload::Response {
            status: 202,
            headers: vec![
                (
                    "content-type".into(),
                    Bytes::from_static(b"application/octet-stream"),
                ),
                ("set-cookie".into(), Bytes::from_static(b"a=1")),
                ("x-raw".into(), Bytes::from_static(b"caf\xe9 \xff\x00")),
                ("set-cookie".into(), Bytes::from_static(b"b=2; Path=/")),
                ("x-quote".into(), Bytes::from_static(b"\"[1,2]\" \\ \n")),
                ("x-empty".into(), Bytes::new()),
            ],
            body: Bytes::from(body),
        },
        Payload::Response {
            status: 204,
            headers: Vec::new(),
            body: Bytes::new(),
        },
        Payload::clone(&response(599, b"{\"unicode\":\"\xc3\xa9\xe2\x82\xac\"}")),
        Payload::Value(Bytes::from_static(b"{\"id\":7,\"note\":\"caf\xc3\xa9\"}")),
        Payload::Value(Bytes::new()),
    ];
    for stored in payloads.map(Arc::new) {
        let id = fresh_id();
        let first = claim(&id, "a", LONG, LONG);
        claim_ok(store, &first).await;
        complete_ok(store, &first, &stored).await;
        let replay = existing(claim_ok(store, &claim(&id, "a", LONG, LONG)).await);
        assert_eq!(replay.state, RecordState::Completed(stored));
    }
}

async fn inspect_ok(store: &Store, id: &RecordId) -> Option<Inspection> {
    store
        .inspect(id)
        .await
        .expect("the store answers inspections")
}

async fn stats_ok(store: &Store) -> Stats {
    store.stats().await.expect("the store answers stats")
}

/// Times a SQL store keeps (None for memory) are recent.
fn recent(time: Option<Duration>) {
    assert!(time.is_none_or(|t| t < Duration::from_secs(10)), "{time:?}");
}

/// Inspecting a completed record shows its status and sizes, never its headers or body; a
/// plain function's value has no status; an expired record reads as `None`.
pub async fn inspect_shows_a_completed_record_without_its_body(store: &Store) {
    let id = fresh_id();
    let first = claim(&id, "a", LONG, LONG);
    claim_ok(store, &first).await;
    let stored = response(201, b"secret-body-bytes");
    complete_ok(store, &first, &stored).await;
    let seen = inspect_ok(store, &id).await.expect("a completed record");
    assert_eq!(seen.state, InspectedState::Completed);
    assert_eq!(seen.response_status, Some(201));
    assert_eq!((seen.headers, seen.body_bytes), (1, 17));
    assert!(seen.expires_in > LONG - Duration::from_secs(10) && seen.expires_in <= LONG);
    recent(seen.age);
    recent(seen.since_update);
    let shown = format!("{seen:?}");
    assert!(!shown.contains("secret") && !shown.contains("application/json"));

    let value = fresh_id();
    let first = claim(&value, "a", LONG, LONG);
    claim_ok(store, &first).await;
    let json = Arc::new(Payload::Value(Bytes::from_static(b"{\"id\":7}")));
    complete_ok(store, &first, &json).await;
    let seen = inspect_ok(store, &value).await.expect("a stored value");
    assert_eq!(seen.state, InspectedState::Completed);
    assert_eq!(seen.response_status, None, "a value has no HTTP status");
    assert_eq!((seen.headers, seen.body_bytes), (0, 8));

    let gone = fresh_id();
    let first = claim(&gone, "a", LONG, SHORT);
    claim_ok(store, &first).await;
    complete_ok(store, &first, &response(200, b"old")).await;
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(inspect_ok(store, &gone).await, None);
    assert_eq!(inspect_ok(store, &fresh_id()).await, None);
}

/// Inspecting a claim in progress shows its lease; a FAILED_STORAGE record shows its state;
/// neither has a status, headers or body.
pub async fn inspect_shows_an_in_progress_and_a_failed_storage_record(store: &Store) {
    let id = fresh_id();
    let first = claim(&id, "a", LONG, LONG);
    claim_ok(store, &first).await;
    let seen = inspect_ok(store, &id).await.expect("a claim in progress");
    let InspectedState::InProgress { lease_remaining } = seen.state else {
        panic!("expected in progress, got {seen:?}");
    };
    assert!(lease_remaining > LONG - Duration::from_secs(10) && lease_remaining <= LONG);
    assert_eq!(
        (seen.response_status, seen.headers, seen.body_bytes),
        (None, 0, 0)
    );
    recent(seen.age);

    assert!(matches!(
        store.backend().fail(&first).await,
        Ok(Ownership::Held)
    ));
    let seen = inspect_ok(store, &id)
        .await
        .expect("a FAILED_STORAGE record");
    assert_eq!(seen.state, InspectedState::FailedStorage);
    assert_eq!(
        (seen.response_status, seen.headers, seen.body_bytes),
        (None, 0, 0)
    );
    assert!(seen.expires_in > LONG - Duration::from_secs(10));
}

/// Evicting a claim stuck in progress deletes it whatever its owner: the next claim, even
/// for another request, acquires the key as new at once, and the old owner is fenced out.
pub async fn evicting_a_stuck_claim_lets_the_next_claim_acquire_new(store: &Store) {
    let id = fresh_id();
    let stuck = claim(&id, "a", LONG, LONG);
    claim_ok(store, &stuck).await;
    assert!(matches!(store.evict(&id).await, Ok(true)));
    assert!(matches!(store.evict(&id).await, Ok(false)));
    assert_eq!(inspect_ok(store, &id).await, None);

    let next = claim(&id, "b", LONG, LONG);
    assert_eq!(
        claim_ok(store, &next).await,
        ClaimOutcome::Acquired(Acquired::New)
    );
    let late = store
        .backend()
        .complete(&stuck, &response(200, b"late"))
        .await;
    assert!(matches!(late, Ok(Ownership::Lost)), "{late:?}");

    // A completed record is evicted too: the key runs again.
    complete_ok(store, &next, &response(201, b"done")).await;
    assert!(matches!(store.evict(&id).await, Ok(true)));
    assert_eq!(
        claim_ok(store, &claim(&id, "a", LONG, LONG)).await,
        ClaimOutcome::Acquired(Acquired::New)
    );
}

/// Stats count live records by state, and expired ones (any state) until purged.
pub async fn stats_count_live_records_by_state_and_expired_ones(store: &Store) {
    let live = records_in_every_state(store).await;
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(stats_ok(store).await, Stats { expired: 3, ..live });
    assert!(matches!(store.purge_expired(10).await, Ok(3)));
    assert_eq!(stats_ok(store).await, live);
}

/// The background purge removes expired records, in any state and over several batches,
/// and leaves live ones alone; once stopped it removes nothing more.
pub async fn purge_every_removes_expired_records_and_keeps_live_ones(store: &Store) {
    let live = short_and_live_records(store).await;

    let purge = store.purge_every(Duration::from_millis(20), 2);
    // Wait on the purge's effect, the store's own count, for at most 10 s.
    let only_live = Stats {
        completed: 2,
        ..Stats::default()
    };
    let mut left = stats_ok(store).await;
    for _ in 0..500 {
        if left == only_live {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = stats_ok(store).await;
    }
    purge.stop().await;
    assert_eq!(
        left, only_live,
        "the expired records are purged, the live ones kept"
    );
    for id in &live {
        let seen = inspect_ok(store, id)
            .await
            .expect("a live record was purged");
        assert_eq!(seen.response_status, Some(200));
    }

    // Stopped: an expired record stays until the next purge.
    claim_ok(store, &claim(&fresh_id(), "a", LONG, SHORT)).await;
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(stats_ok(store).await.expired, 1);
}

/// Some records whose TTL is [`SHORT`] (completed, in progress) and two live ones; answers
/// the live ones' identities.
async fn short_and_live_records(store: &Store) -> Vec<RecordId> {
    for n in 0..5 {
        let short = claim(&fresh_id(), "a", LONG, SHORT);
        claim_ok(store, &short).await;
        if n % 2 == 0 {
            complete_ok(store, &short, &response(200, b"ok")).await;
        }
    }
    let mut live = Vec::new();
    for _ in 0..2 {
        let id = fresh_id();
        let long = claim(&id, "a", LONG, LONG);
        claim_ok(store, &long).await;
        complete_ok(store, &long, &response(200, b"kept")).await;
        live.push(id);
    }
    live
}

/// A store that deletes expired records by itself: once past their TTL they are gone, in
/// any state, without a purge; a purge finds nothing, and the background purge takes no live
/// record.
pub async fn expired_records_vanish_without_a_purge(store: &Store) {
    let live = short_and_live_records(store).await;
    tokio::time::sleep(PAST_SHORT).await;
    let only_live = Stats {
        completed: 2,
        ..Stats::default()
    };
    assert_eq!(stats_ok(store).await, only_live, "expired records are gone");
    assert_eq!(store.backend().purge(2).await.ok(), Some(0));
    let purge = store.purge_every(Duration::from_millis(20), 2);
    tokio::time::sleep(Duration::from_millis(100)).await; // a few purges run, and find nothing
    purge.stop().await;
    for id in &live {
        let seen = inspect_ok(store, id)
            .await
            .expect("a live record was deleted");
        assert_eq!(seen.response_status, Some(200));
    }
    assert_eq!(stats_ok(store).await, only_live);
}

/// Stats count live records by state; on a store that deletes expired records by itself,
/// records past their TTL are counted nowhere.
pub async fn stats_count_live_records_by_state_and_no_expired_ones(store: &Store) {
    let live = records_in_every_state(store).await;
    // One more in each state, until the short records expire.
    let all = Stats {
        in_progress: live.in_progress + 1,
        completed: live.completed + 1,
        failed_storage: live.failed_storage + 1,
        expired: 0,
    };
    assert_eq!(stats_ok(store).await, all);
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(stats_ok(store).await, live);
}

/// On an empty store: records in every state that live [`LONG`] (answered as the stats they
/// make), and one in each state that lives [`SHORT`].
async fn records_in_every_state(store: &Store) -> Stats {
    assert_eq!(stats_ok(store).await, Stats::default());
    claim_ok(store, &claim(&fresh_id(), "a", LONG, LONG)).await;
    for _ in 0..2 {
        let done = claim(&fresh_id(), "a", LONG, LONG);
        claim_ok(store, &done).await;
        complete_ok(store, &done, &response(200, b"ok")).await;
    }
    for ttl in [LONG, SHORT] {
        let failed = claim(&fresh_id(), "a", LONG, ttl);
        claim_ok(store, &failed).await;
        assert!(matches!(
            store.backend().fail(&failed).await,
            Ok(Ownership::Held)
        ));
    }
    let short_done = claim(&fresh_id(), "a", LONG, SHORT);
    claim_ok(store, &short_done).await;
    complete_ok(store, &short_done, &response(200, b"ok")).await;
    claim_ok(store, &claim(&fresh_id(), "a", LONG, SHORT)).await;
    Stats {
        in_progress: 1,
        completed: 2,
        failed_storage: 1,
        expired: 0,
    }
}

/// Completed rows exactly as the previous release wrote them, with the payload each must read
/// back as: `(response_status, response_headers, response_body, payload)`. That release
/// stored a plain function's value as a JSON response, so both read back as responses.
pub fn previous_release_rows() -> Vec<(i32, &'static str, &'static [u8], Payload)> {
    vec![
        (
            201,
            r#"[["content-type","application/json"],["x-raw",[99,97,102,233]]]"#,
            b"{\"id\":1}",
            Payload::Response {
                status: 201,
                headers: vec![
                    (
                        "content-type".into(),
                        Bytes::from_static(b"application/json"),
                    ),
                    ("x-raw".into(), Bytes::from_static(b"caf\xe9")),
                ],
                body: Bytes::from_static(b"{\"id\":1}"),
            },
        ),
        (
            200,
            r#"[["content-type","application/json"]]"#,
            b"{\"total\":3}",
            Payload::Response {
                status: 200,
                headers: vec![(
                    "content-type".into(),
                    Bytes::from_static(b"application/json"),
                )],
                body: Bytes::from_static(b"{\"total\":3}"),
            },
        ),
    ]
}
