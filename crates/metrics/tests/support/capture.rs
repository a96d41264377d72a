//! A tracing subscriber that keeps every span (name, parent, fields) and every event (fields,
//! and the span it happened in), for tests that assert them: this crate's and the
//! cross-crate tests', which include this file by its path.

#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "test support: a poisoned lock should stop the test"
)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A span as the subscriber saw it.
#[derive(Debug, Clone)]
pub(crate) struct CapturedSpan {
    pub(crate) name: &'static str,
    pub(crate) parent: Option<u64>,
    pub(crate) fields: BTreeMap<String, String>,
}

/// An event: its fields, and the innermost span entered when it happened.
#[derive(Debug, Clone)]
pub(crate) struct CapturedEvent {
    pub(crate) span: Option<u64>,
    pub(crate) fields: BTreeMap<String, String>,
}

#[derive(Default)]
pub(crate) struct Captured {
    pub(crate) spans: BTreeMap<u64, CapturedSpan>,
    pub(crate) events: Vec<CapturedEvent>,
    stack: Vec<u64>,
}

impl Captured {
    /// The events whose message is `message`, with the name of the span they happened in.
    pub(crate) fn events_named(
        &self,
        message: &str,
    ) -> Vec<(Option<&'static str>, BTreeMap<String, String>)> {
        self.events
            .iter()
            .filter(|e| e.fields.get("message").is_some_and(|m| m == message))
            .map(|e| (e.span.map(|id| self.spans[&id].name), e.fields.clone()))
            .collect()
    }
}

/// Install with `tracing::subscriber::set_default(capture.clone())`.
#[derive(Clone, Default)]
pub(crate) struct Capture {
    pub(crate) captured: Arc<Mutex<Captured>>,
    next: Arc<AtomicU64>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attributes: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut captured = self.captured.lock().unwrap();
        let parent = match attributes.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if attributes.is_contextual() => captured.stack.last().copied(),
            None => None,
        };
        let mut fields = BTreeMap::new();
        attributes.record(&mut Fields(&mut fields));
        let name = attributes.metadata().name();
        captured.spans.insert(
            id,
            CapturedSpan {
                name,
                parent,
                fields,
            },
        );
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut captured = self.captured.lock().unwrap();
        if let Some(span) = captured.spans.get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut captured = self.captured.lock().unwrap();
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let span = captured.stack.last().copied();
        captured.events.push(CapturedEvent { span, fields });
    }
    fn enter(&self, span: &Id) {
        self.captured.lock().unwrap().stack.push(span.into_u64());
    }
    fn exit(&self, span: &Id) {
        let mut captured = self.captured.lock().unwrap();
        if let Some(position) = captured.stack.iter().rposition(|id| *id == span.into_u64()) {
            captured.stack.remove(position);
        }
    }
}
