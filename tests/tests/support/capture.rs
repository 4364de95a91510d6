//! A `tracing` layer that captures every span and event field as text, for tests that check
//! what the logs carry.

use std::fmt::{Debug, Write as _};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Every span (name and fields, at creation and on record) and every event (target and
/// fields), as text.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<String>>);

impl Capture {
    /// Captures everything on this thread until the guard is dropped.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::registry().with(self.clone());
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    fn line(&self, head: std::fmt::Arguments, record: impl FnOnce(&mut dyn Visit)) {
        let mut text = self.0.lock().unwrap();
        let _ = write!(text, "{head}");
        record(&mut Fields(&mut text));
        text.push('\n');
    }
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        let name = attrs.metadata().name();
        self.line(format_args!("span {name}:"), |v| attrs.record(v));
    }

    fn on_record(&self, _: &Id, values: &Record<'_>, _: Context<'_, S>) {
        self.line(format_args!("record:"), |v| values.record(v));
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let head = format_args!("{} {}:", meta.level(), meta.target());
        self.line(head, |v| event.record(v));
    }
}
