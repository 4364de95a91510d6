//! Property tests: the key parser and the fingerprint input never panic and accept exactly
//! what they should (the SQL stores' column decoding has its own, beside it); and random interleavings of claims,
//! renewals, completions, failures, releases, expiries and takeovers on the memory store follow
//! a simple model of the records' state machine (docs/contract.md, "Records"). Case counts stay
//! modest for CI; `PROPTEST_CASES` raises them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use idem_runtime::{
    Acquired, Claim, ClaimOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, InspectedState,
    MAX_KEY_LEN, MIN_KEY_LEN, MemoryStore, OwnerToken, Ownership, Payload, Record, RecordId,
    RecordState, Stats,
};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- the key parser -----------------------------------------------------------------------

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

/// The key grammar (docs/contract.md, "What a request meets"), written out plainly: the key the
/// parser must return, or `None`.
fn grammar(value: &[u8]) -> Option<&[u8]> {
    let inner = match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    };
    let ok =
        (MIN_KEY_LEN..=MAX_KEY_LEN).contains(&inner.len()) && inner.iter().all(|&b| allowed(b));
    ok.then_some(inner)
}

/// Bytes that hit the grammar's edges often: key characters, quotes, and anything else.
fn key_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        6 => prop::sample::select(b"abcXYZ019._:-".to_vec()),
        1 => Just(b'"'),
        1 => any::<u8>(),
    ];
    prop_oneof![
        prop::collection::vec(byte.clone(), 0..140),
        (prop::collection::vec(byte, 0..140)).prop_map(|inner| {
            let mut quoted = vec![b'"'];
            quoted.extend(inner);
            quoted.push(b'"');
            quoted
        }),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn the_key_parser_accepts_exactly_the_grammar(value in key_bytes()) {
        let parsed = IdempotencyKey::parse_bytes(&value);
        match grammar(&value) {
            Some(inner) => {
                let key = parsed.expect("a key of the grammar is accepted");
                prop_assert_eq!(key.as_str().as_bytes(), inner);
                prop_assert_eq!(key.prefix().len(), MIN_KEY_LEN);
            }
            None => {
                let error = parsed.expect_err("anything else is refused");
                prop_assert_eq!(error.is_missing(), value.is_empty());
                // The message never carries the key.
                let message = error.to_string();
                if value.len() >= MIN_KEY_LEN {
                    prop_assert!(!message.as_bytes().windows(value.len()).any(|w| w == value));
                }
            }
        }
    }

    #[test]
    fn any_text_key_parses_the_same_as_its_bytes(text in "\\PC{0,140}") {
        prop_assert_eq!(
            IdempotencyKey::parse(&text).ok(),
            IdempotencyKey::parse_bytes(text.as_bytes()).ok()
        );
    }

    // ---- the fingerprint input ------------------------------------------------------------

    #[test]
    fn fingerprints_tell_requests_apart_and_survive_hex(
        a in (any::<String>(), any::<String>(), any::<String>(), any::<Vec<u8>>()),
        b in (any::<String>(), any::<String>(), any::<String>(), any::<Vec<u8>>()),
        split in 0usize..8,
    ) {
        let fa = Fingerprint::of_request(&a.0, &a.1, &a.2, &a.3);
        let fb = Fingerprint::of_request(&b.0, &b.1, &b.2, &b.3);
        prop_assert_eq!(fa == fb, a == b);
        prop_assert_eq!(Fingerprint::from_hex(&fa.to_hex()), Some(fa));
        // Moving bytes from one part to the next is another request (length prefixes).
        let path = format!("{}{}", a.1, a.2);
        let cut = path.char_indices().map(|(i, _)| i).nth(split).unwrap_or(path.len());
        let (p, q) = path.split_at(cut);
        let moved = Fingerprint::of_request(&a.0, p, q, &a.3);
        prop_assert_eq!(moved == fa, (p, q) == (a.1.as_str(), a.2.as_str()));
    }

    #[test]
    fn fingerprint_hex_parsing_never_panics(text in "\\PC{0,70}|[0-9a-fA-F]{64}") {
        if let Some(fp) = Fingerprint::from_hex(&text) {
            prop_assert_eq!(fp.to_hex(), text.to_ascii_lowercase());
        }
    }
}

// ---- the store's state machine against a model -------------------------------------------

/// One step of an interleaving. Claims are numbered in the order made; later steps act
/// through any earlier claim, so stale owners (taken over, released, expired) act too.
#[derive(Debug, Clone)]
enum Step {
    Claim {
        key: usize,
        fingerprint: u8,
        lease: u64,
        ttl: u64,
    },
    Renew(usize),
    Complete(usize, u16),
    Fail(usize),
    Release(usize),
    Advance(u64),
    Get(usize),
    Purge,
    Evict(usize),
    Stats,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 0..2u8, 1..6u64, 1..12u64).prop_map(|(key, fingerprint, lease, ttl)| {
            Step::Claim { key, fingerprint, lease: lease * 100, ttl: ttl * 100 }
        }),
        1 => any::<usize>().prop_map(Step::Renew),
        2 => (any::<usize>(), 200u16..500).prop_map(|(c, s)| Step::Complete(c, s)),
        1 => any::<usize>().prop_map(Step::Fail),
        1 => any::<usize>().prop_map(Step::Release),
        3 => (0..8u64).prop_map(|t| Step::Advance(t * 100)),
        1 => (0..3usize).prop_map(Step::Get),
        1 => Just(Step::Purge),
        1 => (0..3usize).prop_map(Step::Evict),
        1 => Just(Step::Stats),
    ]
}

#[derive(Debug, Clone, PartialEq)]
enum ModelState {
    InProgress,
    FailedStorage,
    Completed(u16),
}

/// A record as the model keeps it; times in milliseconds since the start.
#[derive(Debug, Clone)]
struct ModelRecord {
    fingerprint: u8,
    token: usize,
    state: ModelState,
    locked_until: u64,
    expires_at: u64,
}

#[derive(Default)]
struct Model {
    now: u64,
    records: HashMap<usize, ModelRecord>,
}

impl Model {
    fn record(&self, r: &ModelRecord) -> Record {
        Record {
            fingerprint: fingerprint(r.fingerprint),
            state: match r.state {
                ModelState::InProgress => RecordState::InProgress {
                    lease_remaining: Duration::from_millis(r.locked_until.saturating_sub(self.now)),
                },
                ModelState::FailedStorage => RecordState::FailedStorage,
                ModelState::Completed(status) => RecordState::Completed(response(status)),
            },
        }
    }

    fn claim(&mut self, key: usize, fp: u8, token: usize, lease: u64, ttl: u64) -> ClaimOutcome {
        let now = self.now;
        let acquired = match self.records.get(&key) {
            None => Some(Acquired::New),
            Some(r) if r.expires_at <= now => Some(Acquired::New),
            Some(r) if r.fingerprint != fp => None,
            Some(r) => match r.state {
                ModelState::FailedStorage => Some(Acquired::FailedStorage),
                ModelState::InProgress if r.locked_until <= now => Some(Acquired::Abandoned),
                _ => None,
            },
        };
        match acquired {
            Some(how) => {
                let record = ModelRecord {
                    fingerprint: fp,
                    token,
                    state: ModelState::InProgress,
                    locked_until: now + lease,
                    expires_at: now + ttl,
                };
                self.records.insert(key, record);
                ClaimOutcome::Acquired(how)
            }
            None => ClaimOutcome::Existing(self.record(&self.records[&key])),
        }
    }

    fn owned(&mut self, key: usize, token: usize) -> Option<&mut ModelRecord> {
        self.records.get_mut(&key).filter(|r| r.token == token)
    }
}

fn fingerprint(n: u8) -> Fingerprint {
    Fingerprint::from_bytes([n; 32])
}

fn response(status: u16) -> Arc<Payload> {
    Arc::new(Payload::Response {
        status,
        headers: vec![("content-type".into(), Bytes::from_static(b"text/plain"))],
        body: Bytes::from(format!("status {status}")),
    })
}

fn id(key: usize) -> RecordId {
    let key = IdempotencyKey::parse(&format!("model-key-{key:03}")).expect("a valid key");
    RecordId::new("tenant", "properties::handler", key)
}

/// Runs `steps` on a fresh memory store under a paused clock and on the model, step by step.
fn run_against_model(steps: &[Step]) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = MemoryStore::new();
        let mut model = Model::default();
        // Every claim made, with the key it was made on.
        let mut claims: Vec<(usize, Claim)> = Vec::new();
        let pick = |claims: &Vec<(usize, Claim)>, n: usize| -> Option<(usize, usize, Claim)> {
            (!claims.is_empty()).then(|| {
                let i = n % claims.len();
                (i, claims[i].0, claims[i].1.clone())
            })
        };
        for (i, step) in steps.iter().enumerate() {
            let context = format!("step {i}: {step:?}");
            match *step {
                Step::Claim {
                    key,
                    fingerprint: fp,
                    lease,
                    ttl,
                } => {
                    let claim = Claim {
                        id: id(key),
                        fingerprint: fingerprint(fp),
                        token: OwnerToken::random(),
                        lease: Duration::from_millis(lease),
                        ttl: Duration::from_millis(ttl),
                    };
                    let got = store.claim(&claim).await.expect("memory claims succeed");
                    let want = model.claim(key, fp, claims.len(), lease, ttl);
                    prop_assert_eq!(got, want, "{}", context);
                    claims.push((key, claim));
                }
                Step::Renew(n) => {
                    let Some((token, key, claim)) = pick(&claims, n) else {
                        continue;
                    };
                    let got = store.renew(&claim).await.expect("renew");
                    let now = model.now;
                    let lease = claim.lease.as_millis() as u64;
                    let want = match model.owned(key, token) {
                        Some(r) if r.state == ModelState::InProgress => {
                            r.locked_until = now + lease;
                            true
                        }
                        _ => false,
                    };
                    prop_assert_eq!(got == Ownership::Held, want, "{}", context);
                }
                Step::Complete(n, status) => {
                    let Some((token, key, claim)) = pick(&claims, n) else {
                        continue;
                    };
                    let got = store
                        .complete(&claim, &response(status))
                        .await
                        .expect("complete");
                    let now = model.now;
                    let ttl = claim.ttl.as_millis() as u64;
                    let want = model.owned(key, token).map(|r| {
                        r.state = ModelState::Completed(status);
                        r.expires_at = now + ttl;
                    });
                    prop_assert_eq!(got == Ownership::Held, want.is_some(), "{}", context);
                }
                Step::Fail(n) => {
                    let Some((token, key, claim)) = pick(&claims, n) else {
                        continue;
                    };
                    let got = store.fail(&claim).await.expect("fail");
                    let want = model
                        .owned(key, token)
                        .map(|r| r.state = ModelState::FailedStorage);
                    prop_assert_eq!(got == Ownership::Held, want.is_some(), "{}", context);
                }
                Step::Release(n) => {
                    let Some((token, key, claim)) = pick(&claims, n) else {
                        continue;
                    };
                    let got = store.release(&claim).await.expect("release");
                    // A release deletes only a claim still in progress, never a stored result.
                    let want = model
                        .owned(key, token)
                        .is_some_and(|r| r.state == ModelState::InProgress);
                    if want {
                        model.records.remove(&key);
                    }
                    prop_assert_eq!(got == Ownership::Held, want, "{}", context);
                }
                Step::Advance(ms) => {
                    tokio::time::advance(Duration::from_millis(ms)).await;
                    model.now += ms;
                }
                Step::Get(key) => {
                    let got = store.get(&id(key)).await.expect("get");
                    let want = model
                        .records
                        .get(&key)
                        .filter(|r| r.expires_at > model.now)
                        .map(|r| model.record(r));
                    // Inspecting agrees with reading, state for state.
                    let seen = store.inspect(&id(key)).await.expect("inspect");
                    let inspected = want.as_ref().map(|r| match r.state {
                        RecordState::InProgress { lease_remaining } => {
                            InspectedState::InProgress { lease_remaining }
                        }
                        RecordState::FailedStorage => InspectedState::FailedStorage,
                        RecordState::Completed(_) => InspectedState::Completed,
                    });
                    prop_assert_eq!(seen.map(|i| i.state), inspected, "{}", context);
                    prop_assert_eq!(got, want, "{}", context);
                }
                Step::Evict(key) => {
                    // Any state, expired or not, whoever owns it.
                    let got = store.evict(&id(key)).await.expect("evict");
                    let want = model.records.remove(&key).is_some();
                    prop_assert_eq!(got, want, "{}", context);
                }
                Step::Stats => {
                    let got = store.stats().await.expect("stats");
                    let mut want = Stats::default();
                    for r in model.records.values() {
                        *match r.state {
                            _ if r.expires_at <= model.now => &mut want.expired,
                            ModelState::InProgress => &mut want.in_progress,
                            ModelState::FailedStorage => &mut want.failed_storage,
                            ModelState::Completed(_) => &mut want.completed,
                        } += 1;
                    }
                    prop_assert_eq!(got, want, "{}", context);
                }
                Step::Purge => {
                    let got = store.purge(usize::MAX).await.expect("purge");
                    let now = model.now;
                    let before = model.records.len();
                    model.records.retain(|_, r| r.expires_at > now);
                    prop_assert_eq!(got, (before - model.records.len()) as u64, "{}", context);
                }
            }
        }
        // Whatever happened, the store holds what the model holds.
        for key in 0..3 {
            let got = store.get(&id(key)).await.expect("get");
            let want = model
                .records
                .get(&key)
                .filter(|r| r.expires_at > model.now)
                .map(|r| model.record(r));
            prop_assert_eq!(got, want, "at the end, key {}", key);
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn the_memory_store_follows_the_model(steps in prop::collection::vec(step(), 1..60)) {
        run_against_model(&steps)?;
    }
}

#[test]
fn a_takeover_race_has_one_winner_in_the_model_and_the_store() {
    // A fixed interleaving the random ones cover by chance: an abandoned claim, two racing
    // takeovers, the first owner waking up late.
    let steps = [
        Step::Claim {
            key: 0,
            fingerprint: 0,
            lease: 100,
            ttl: 1000,
        },
        Step::Advance(100),
        Step::Claim {
            key: 0,
            fingerprint: 0,
            lease: 100,
            ttl: 1000,
        },
        Step::Claim {
            key: 0,
            fingerprint: 0,
            lease: 100,
            ttl: 1000,
        },
        Step::Complete(0, 201),
        Step::Complete(1, 202),
        Step::Get(0),
    ];
    run_against_model(&steps).unwrap();
}
