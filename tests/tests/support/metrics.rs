//! Metrics recorded on the test's thread (tests run on a current-thread runtime, so spawned
//! tasks record here too).

use std::collections::HashMap;
use std::sync::Mutex;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A counter's name and labels.
type Series = (String, Vec<(String, String)>);

pub struct Metrics {
    snapshotter: Snapshotter,
    /// Counter totals by name and labels: a snapshot drains the recorder's counters.
    totals: Mutex<HashMap<Series, u64>>,
    _guard: metrics::LocalRecorderGuard<'static>,
}

impl Metrics {
    pub fn install() -> Self {
        let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
        let snapshotter = recorder.snapshotter();
        let guard = metrics::set_default_local_recorder(recorder);
        Metrics {
            snapshotter,
            totals: Mutex::default(),
            _guard: guard,
        }
    }

    /// The counter `name` summed over every label set that includes all of `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut totals = self.totals.lock().unwrap();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            if let DebugValue::Counter(n) = value {
                let key = key.key();
                let labels = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                *totals.entry((key.name().to_owned(), labels)).or_default() += n;
            }
        }
        totals
            .iter()
            .filter(|((n, have), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// `idempotency_requests_total` with this outcome, any handler.
    pub fn outcome(&self, outcome: &str) -> u64 {
        self.counter("idempotency_requests_total", &[("outcome", outcome)])
    }

    /// `idempotency_requests_total` for this handler and outcome.
    pub fn handler_outcome(&self, handler: &str, outcome: &str) -> u64 {
        self.counter(
            "idempotency_requests_total",
            &[("handler", handler), ("outcome", outcome)],
        )
    }
}
