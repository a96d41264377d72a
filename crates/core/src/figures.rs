//! The seam through which every layer reports its figures to a metrics exporter.
//!
//! A layer's handle implements [`FigureSource`]; the metrics layer (or any exporter) asks it
//! for its figures at scrape time. Layers depend only on this trait, never on the metrics
//! crate or on each other, and nothing is recorded twice: the figures are the layer's own
//! counters, read when they are asked for.

/// Whether a figure only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FigureKind {
    /// A count since the layer was built; exported with a `_total` suffix.
    Counter,
    /// A value now (queue depth, state).
    Gauge,
}

/// One value of one figure, with its labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure<'a> {
    /// The metric name, without the `_total` suffix of counters (`seawall_retry_attempts`).
    pub name: &'static str,
    /// What the figure counts, for the exposition's `HELP` line.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: FigureKind,
    /// Label pairs; values come from small fixed sets or from bounded key sets.
    pub labels: &'a [(&'static str, &'a str)],
    /// The value.
    pub value: f64,
}

/// Something that reports figures: a layer's handle.
pub trait FigureSource: Send + Sync {
    /// Calls `visit` once for every value. Values of one name may come in any order; an
    /// exposition brings them together.
    fn figures(&self, visit: &mut dyn FnMut(Figure<'_>));
}

impl<T: FigureSource + ?Sized> FigureSource for std::sync::Arc<T> {
    fn figures(&self, visit: &mut dyn FnMut(Figure<'_>)) {
        (**self).figures(visit)
    }
}

/// Another source's figures, each with one more label first: so that two sources of one kind
/// (two breakers that are not keyed, one per dependency) give series of their own in one
/// exposition, where their figures would otherwise have the same names and labels.
#[derive(Debug, Clone)]
pub struct Labelled<S> {
    label: &'static str,
    value: std::sync::Arc<str>,
    source: S,
}

impl<S> Labelled<S> {
    /// `source`'s figures, each with `label="value"` first.
    pub fn new(label: &'static str, value: impl Into<std::sync::Arc<str>>, source: S) -> Self {
        Self {
            label,
            value: value.into(),
            source,
        }
    }
}

impl<S: FigureSource> FigureSource for Labelled<S> {
    fn figures(&self, visit: &mut dyn FnMut(Figure<'_>)) {
        // At scrape time only: a small vector a figure.
        self.source.figures(&mut |figure| {
            let labels: Vec<(&'static str, &str)> = std::iter::once((self.label, &*self.value))
                .chain(figure.labels.iter().copied())
                .collect();
            visit(Figure {
                labels: &labels,
                ..figure
            });
        });
    }
}

/// A helper for implementations: reports `value` as a counter.
pub fn counter<'a>(
    name: &'static str,
    help: &'static str,
    labels: &'a [(&'static str, &'a str)],
    value: u64,
) -> Figure<'a> {
    Figure {
        name,
        help,
        kind: FigureKind::Counter,
        labels,
        value: value as f64,
    }
}

/// A helper for implementations: reports `value` as a gauge.
pub fn gauge<'a>(
    name: &'static str,
    help: &'static str,
    labels: &'a [(&'static str, &'a str)],
    value: f64,
) -> Figure<'a> {
    Figure {
        name,
        help,
        kind: FigureKind::Gauge,
        labels,
        value,
    }
}

/// How a request key appears as a metric label value (`""` for the single key of a layer
/// that is not keyed, in which case the label is left out).
pub trait KeyLabel {
    /// The label value.
    fn label(&self) -> String;
}

impl KeyLabel for () {
    fn label(&self) -> String {
        String::new()
    }
}

impl KeyLabel for crate::HostKey {
    fn label(&self) -> String {
        self.to_string()
    }
}

impl KeyLabel for String {
    fn label(&self) -> String {
        self.clone()
    }
}

impl KeyLabel for &'static str {
    fn label(&self) -> String {
        (*self).to_owned()
    }
}
