//! A strict check of a text exposition, in-process, so that `cargo test` needs nothing
//! installed by hand (CI also lints the same exposition with `promtool check metrics`).
//!
//! It follows the OpenMetrics 1.0 text format and the Prometheus text format 0.0.4, and is
//! stricter than either where the stack has no reason to differ:
//!
//! - lines: no blank line and no other comment in OpenMetrics; the OpenMetrics text ends with
//!   `# EOF`, the Prometheus text has none and ends with a newline;
//! - families: `HELP` and `TYPE` (and `UNIT`, OpenMetrics only, which the name must end with)
//!   each at most once, all before the family's first sample; every family has both `HELP`
//!   and `TYPE`; a family's lines stand together and its name is not used again; the types
//!   are those the stack writes (counter, gauge, histogram): any other is refused;
//! - names and labels: metric names `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names
//!   `[a-zA-Z_][a-zA-Z0-9_]*` not starting with `__` and not repeated in one sample, label
//!   values quoted with only the `\\`, `\"` and `\n` escapes, no spaces and no trailing comma
//!   in a label set, one space before the value, an exemplar only on an OpenMetrics histogram
//!   bucket (labels of at most 128 characters), and no label set twice in a
//!   family;
//! - samples: a counter's samples are `<family>_total` in OpenMetrics (and `_created`), and in
//!   the Prometheus text the family itself is named `…_total`; a gauge's are the family name;
//!   a histogram's are `_bucket` (with `le`), `_sum` and `_count` (and `_created`); values are
//!   numbers, never NaN, and counters are never negative;
//! - histograms: per label set, bucket bounds rise strictly to a last `le="+Inf"`, bucket
//!   counts are whole and never fall, the `+Inf` bucket equals `_count`, and `_sum` is there.

use std::collections::{BTreeMap, HashSet};

/// Which text format the exposition claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    OpenMetrics,
    Prometheus,
}

/// Checks an OpenMetrics text exposition (`application/openmetrics-text; version=1.0.0`).
pub(crate) fn check_openmetrics(text: &str) -> Result<(), String> {
    let body = text
        .strip_suffix("# EOF\n")
        .or_else(|| text.strip_suffix("# EOF"))
        .ok_or("does not end with `# EOF`")?;
    check(body, Form::OpenMetrics)
}

/// Checks a Prometheus text exposition (`text/plain; version=0.0.4`).
pub(crate) fn check_prometheus_text(text: &str) -> Result<(), String> {
    check(text, Form::Prometheus)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One histogram's samples for one label set (without `le`).
#[derive(Debug, Default)]
struct Histogram {
    /// `(le, count)` in the order they came.
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
}

#[derive(Debug)]
struct Family {
    name: String,
    help: bool,
    kind: Option<Kind>,
    unit: bool,
    has_samples: bool,
    /// Sample name and label set of each sample, to refuse one twice.
    series: HashSet<String>,
    histograms: BTreeMap<String, Histogram>,
}

impl Family {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            help: false,
            kind: None,
            unit: false,
            has_samples: false,
            series: HashSet::new(),
            histograms: BTreeMap::new(),
        }
    }

    fn finish(self) -> Result<(), String> {
        let name = &self.name;
        if !self.help {
            return Err(format!("{name}: no HELP"));
        }
        if self.kind.is_none() {
            return Err(format!("{name}: no TYPE"));
        }
        for (labels, histogram) in &self.histograms {
            check_histogram(histogram).map_err(|error| format!("{name}{{{labels}}}: {error}"))?;
        }
        Ok(())
    }
}

fn check(text: &str, form: Form) -> Result<(), String> {
    if form == Form::Prometheus && !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line has no newline".to_owned());
    }
    let mut current: Option<Family> = None;
    let mut finished: HashSet<String> = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let at = |error: String| format!("line {}: {error}: {line:?}", index + 1);
        if line.is_empty() {
            if form == Form::OpenMetrics {
                return Err(at("a blank line".to_owned()));
            }
            continue;
        }
        if form == Form::Prometheus && line.trim_end() == "# EOF" {
            return Err(at("`# EOF` marks the OpenMetrics form".to_owned()));
        }
        if let Some(comment) = line.strip_prefix('#') {
            let Some((keyword, rest)) = comment
                .strip_prefix(' ')
                .and_then(|comment| comment.split_once(' '))
            else {
                match form {
                    Form::OpenMetrics => {
                        return Err(at("not a HELP, TYPE or UNIT line".to_owned()));
                    }
                    Form::Prometheus => continue,
                }
            };
            let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
            if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
                match form {
                    Form::OpenMetrics => {
                        return Err(at("not a HELP, TYPE or UNIT line".to_owned()));
                    }
                    Form::Prometheus => continue,
                }
            }
            check_metric_name(name).map_err(at)?;
            if current.as_ref().is_none_or(|family| family.name != name) {
                if let Some(done) = current.take() {
                    finished.insert(done.name.clone());
                    done.finish()?;
                }
                if finished.contains(name) {
                    return Err(at(format!("family {name} appears a second time")));
                }
                current = Some(Family::new(name));
            }
            let family = current.as_mut().ok_or("no family")?;
            if family.has_samples {
                return Err(at("metadata after the family's samples".to_owned()));
            }
            match keyword {
                "HELP" => {
                    if std::mem::replace(&mut family.help, true) {
                        return Err(at("a second HELP".to_owned()));
                    }
                    check_escapes(value, form).map_err(at)?;
                }
                "TYPE" => {
                    let kind = match (value, form) {
                        ("counter", _) => Kind::Counter,
                        ("gauge", _) => Kind::Gauge,
                        ("histogram", _) => Kind::Histogram,
                        _ => return Err(at(format!("type {value:?} is not one the stack writes"))),
                    };
                    if family.kind.replace(kind).is_some() {
                        return Err(at("a second TYPE".to_owned()));
                    }
                    if kind == Kind::Counter
                        && form == Form::Prometheus
                        && !name.ends_with("_total")
                    {
                        return Err(at("a counter family without the `_total` suffix".to_owned()));
                    }
                }
                _ => {
                    if form == Form::Prometheus {
                        return Err(at("UNIT is OpenMetrics only".to_owned()));
                    }
                    if std::mem::replace(&mut family.unit, true) {
                        return Err(at("a second UNIT".to_owned()));
                    }
                    if value.is_empty() || !name.ends_with(&format!("_{value}")) {
                        return Err(at(format!("the name does not end with its unit {value:?}")));
                    }
                }
            }
            continue;
        }
        let sample = parse_sample(line, form).map_err(at)?;
        let Some(family) = current.as_mut() else {
            return Err(at("a sample before any TYPE".to_owned()));
        };
        let Some(kind) = family.kind else {
            return Err(at("a sample before its family's TYPE".to_owned()));
        };
        family.has_samples = true;
        let suffix = sample
            .name
            .strip_prefix(family.name.as_str())
            .ok_or_else(|| at(format!("a sample outside its family ({})", family.name)))?;
        let allowed: &[&str] = match (kind, form) {
            (Kind::Counter, Form::OpenMetrics) => &["_total", "_created"],
            (Kind::Counter | Kind::Gauge, _) => &[""],
            (Kind::Histogram, Form::OpenMetrics) => &["_bucket", "_sum", "_count", "_created"],
            (Kind::Histogram, Form::Prometheus) => &["_bucket", "_sum", "_count"],
        };
        if !allowed.contains(&suffix) {
            return Err(at(format!(
                "not a sample of the {kind:?} family {}",
                family.name
            )));
        }
        let mut labels = sample.labels.clone();
        labels.sort();
        let key = format!("{}{labels:?}", sample.name);
        if !family.series.insert(key) {
            return Err(at("the same label set twice".to_owned()));
        }
        if suffix == "_created" {
            continue;
        }
        if kind == Kind::Counter && sample.value < 0.0 {
            return Err(at("a negative counter".to_owned()));
        }
        if kind != Kind::Histogram {
            continue;
        }
        let le = labels.iter().position(|(name, _)| name == "le");
        let le = match (suffix, le) {
            ("_bucket", Some(position)) => Some(labels.remove(position).1),
            ("_bucket", None) => return Err(at("a bucket without `le`".to_owned())),
            (_, Some(_)) => return Err(at("`le` on a sample that is no bucket".to_owned())),
            (_, None) => None,
        };
        let histogram = family.histograms.entry(format!("{labels:?}")).or_default();
        match (suffix, le) {
            ("_bucket", Some(le)) => {
                let bound = parse_number(&le).map_err(at)?;
                if bound.is_nan() {
                    return Err(at("a NaN bucket bound".to_owned()));
                }
                histogram.buckets.push((bound, sample.value));
            }
            ("_sum", _) => histogram.sum = Some(sample.value),
            _ => histogram.count = Some(sample.value),
        }
    }
    if let Some(done) = current.take() {
        done.finish()?;
    }
    Ok(())
}

fn check_histogram(histogram: &Histogram) -> Result<(), String> {
    let mut previous: Option<(f64, f64)> = None;
    for &(bound, count) in &histogram.buckets {
        if count < 0.0 || count.fract() != 0.0 {
            return Err(format!("bucket count {count} is not a whole number"));
        }
        if let Some((last_bound, last_count)) = previous {
            if bound <= last_bound {
                return Err(format!(
                    "bucket bounds do not rise: {last_bound} then {bound}"
                ));
            }
            if count < last_count {
                return Err(format!("bucket counts fall: {last_count} then {count}"));
            }
        }
        previous = Some((bound, count));
    }
    let Some((last_bound, last_count)) = previous else {
        return Err("no buckets".to_owned());
    };
    if last_bound != f64::INFINITY {
        return Err("the last bucket is not le=\"+Inf\"".to_owned());
    }
    match (histogram.count, histogram.sum) {
        (None, _) => Err("no `_count`".to_owned()),
        (_, None) => Err("no `_sum`".to_owned()),
        (Some(count), Some(_)) if count != last_count => Err(format!(
            "the +Inf bucket holds {last_count} but `_count` is {count}"
        )),
        _ => Ok(()),
    }
}

struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse_sample(line: &str, form: Form) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    check_metric_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels: Vec<(String, String)> = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                if labels.is_empty() || form == Form::Prometheus {
                    rest = after;
                    break;
                }
                return Err("a trailing comma in the label set".to_owned());
            }
            let (label, after) = inner.split_once('=').ok_or("a label without `=`")?;
            check_label_name(label)?;
            if labels.iter().any(|(name, _)| name == label) {
                return Err(format!("label {label} twice"));
            }
            let after = after
                .strip_prefix('"')
                .ok_or("a label value without quotes")?;
            let (value, after) = read_quoted(after)?;
            labels.push((label.to_owned(), value));
            if let Some(after) = after.strip_prefix(',') {
                inner = after;
            } else if let Some(after) = after.strip_prefix('}') {
                rest = after;
                break;
            } else {
                return Err("an unclosed label set".to_owned());
            }
        }
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or("no single space before the value")?;
    // OpenMetrics: a histogram bucket may carry one exemplar, `# {labels} value [timestamp]`.
    let rest = match rest.split_once(" # ") {
        Some((sample, exemplar)) if form == Form::OpenMetrics && name.ends_with("_bucket") => {
            check_exemplar(exemplar)?;
            sample
        }
        _ => rest,
    };
    let mut fields = rest.split(' ');
    let value = parse_number(fields.next().unwrap_or(""))?;
    if value.is_nan() {
        return Err("a NaN value".to_owned());
    }
    if let Some(timestamp) = fields.next() {
        parse_number(timestamp).map_err(|error| format!("timestamp: {error}"))?;
    }
    if fields.next().is_some() {
        return Err("more than a value and a timestamp (an exemplar?)".to_owned());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// An exemplar: a label set of at most 128 characters (names and values), a value and an
/// optional timestamp.
fn check_exemplar(exemplar: &str) -> Result<(), String> {
    let inner = exemplar
        .strip_prefix('{')
        .ok_or("an exemplar without a label set")?;
    let mut rest = inner;
    let mut length = 0;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            rest = after;
            break;
        }
        let (name, after) = rest
            .split_once("=\"")
            .ok_or("an exemplar label without a value")?;
        check_label_name(name)?;
        let (value, after) = read_quoted(after)?;
        length += name.chars().count() + value.chars().count();
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    if length > 128 {
        return Err(format!(
            "an exemplar's labels of {length} characters (at most 128)"
        ));
    }
    let mut fields = rest
        .strip_prefix(' ')
        .ok_or("no space before the exemplar's value")?
        .split(' ');
    parse_number(fields.next().unwrap_or("")).map_err(|error| format!("exemplar: {error}"))?;
    if let Some(timestamp) = fields.next() {
        parse_number(timestamp).map_err(|error| format!("exemplar timestamp: {error}"))?;
    }
    if fields.next().is_some() {
        return Err("more than a value and a timestamp after an exemplar".to_owned());
    }
    Ok(())
}

/// Reads a label value up to its closing quote; returns it unescaped and what follows.
fn read_quoted(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[index + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                other => return Err(format!("a bad escape in a label value: {other:?}")),
            },
            c => value.push(c),
        }
    }
    Err("an unterminated label value".to_owned())
}

/// HELP text: OpenMetrics escapes `\\`, `\"` and `\n`; the Prometheus text `\\` and `\n`.
fn check_escapes(text: &str, form: Form) -> Result<(), String> {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match (chars.next(), form) {
                (Some('\\' | 'n'), _) | (Some('"'), Form::OpenMetrics) => {}
                (other, _) => return Err(format!("a bad escape in HELP: {other:?}")),
            }
        }
    }
    Ok(())
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{name:?} is not a metric name"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with("__") {
        Ok(())
    } else {
        Err(format!("{name:?} is not a label name"))
    }
}

/// A number as both formats write it: decimal with an optional exponent, or an infinity, or
/// NaN (refused by the callers where it has no place).
fn parse_number(text: &str) -> Result<f64, String> {
    let unsigned = text.trim_start_matches(['+', '-']);
    let words = ["inf", "infinity", "nan"];
    let word = words.iter().any(|word| unsigned.eq_ignore_ascii_case(word));
    let decimal = unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && unsigned
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if text.len() - unsigned.len() > 1 || !(word || decimal) {
        return Err(format!("{text:?} is not a number"));
    }
    text.parse()
        .map_err(|_| format!("{text:?} is not a number"))
}
