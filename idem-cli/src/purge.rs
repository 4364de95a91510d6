//! `idem purge`: deletes expired records a batch at a time, with a progress bar on a terminal.

use std::time::Duration;

use idem_runtime::Store;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::failure::Failure;
use crate::report::Report;

/// Deletes batches of `batch` expired records until a batch comes back short.
pub async fn run(store: &Store, batch: u32, progress: bool) -> Result<Report, Failure> {
    let bar = if progress {
        bar(store).await
    } else {
        ProgressBar::hidden()
    };
    let size = usize::try_from(batch).unwrap_or(usize::MAX);
    let mut purged = 0u64;
    loop {
        let deleted = match store.backend().purge(size).await {
            Ok(deleted) => deleted,
            Err(error) => {
                bar.abandon();
                let doing = format!("purging failed after deleting {purged} expired records");
                return Err(Failure::from_store(&doing, &error));
            }
        };
        purged += deleted;
        if bar.length().is_some_and(|len| purged > len) {
            bar.set_length(purged);
        }
        bar.inc(deleted);
        if deleted < u64::from(batch) {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(Report {
        human: format!(
            "purged {purged} expired record{}",
            if purged == 1 { "" } else { "s" }
        ),
        json: json!({ "command": "purge", "purged": purged, "batch": batch }),
    })
}

/// A bar as long as the expired records counted now, or a counter when they cannot be counted.
async fn bar(store: &Store) -> ProgressBar {
    let (bar, template) = match store.stats().await {
        Ok(stats) => (
            ProgressBar::new(stats.expired),
            "{spinner} purging expired records {wide_bar} {pos}/{len} ({per_sec})",
        ),
        Err(_) => (
            ProgressBar::new_spinner(),
            "{spinner} purged {pos} expired records ({per_sec})",
        ),
    };
    let bar = match ProgressStyle::with_template(template) {
        Ok(style) => bar.with_style(style),
        Err(_) => bar,
    };
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
