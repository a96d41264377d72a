//! Per-host figures, bounded: a table of at most `max_hosts` hosts, and an `_OTHER` entry
//! for every host beyond.
//!
//! A request finds its host's entry among its thread's last four hosts, else with one
//! lock-free map read (papaya) keyed by the authority it already carries; the first request
//! to a new host makes its entry, while the table has room. A thread that sends to at most
//! four hosts in turn allocates nothing once they are known; each host it takes into its
//! four makes a handle and a copy of the key.

use std::cell::RefCell;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use http::Uri;
use http::uri::Scheme;

use crate::attempt::AttemptShared;

/// The label value of the entry that stands for every host beyond the bound (the
/// OpenTelemetry convention for a value cut off to bound cardinality).
pub const OTHER_HOST: &str = "_OTHER";

/// The default bound on the hosts a per-host series is kept for.
pub const DEFAULT_MAX_HOSTS: usize = 100;

/// The OpenTelemetry advice for `http.client.request.duration`, in seconds.
pub(crate) const ATTEMPT_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const ATTEMPT_BOUNDS_NANOS: [u64; 14] = [
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    75_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    750_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    7_500_000_000,
    10_000_000_000,
];

/// How many stripes a host's counts are split into: threads take them in turn, so that two
/// threads sending to one host add on cache lines of their own.
const STRIPES: usize = 4;

/// The calling thread's stripe.
#[inline]
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|stripe| *stripe)
}

/// One stripe of a histogram: its bucket counts and sum, on two cache lines of their own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct HistogramStripe {
    counts: [AtomicU64; 15],
    sum_nanos: AtomicU64,
}

/// A histogram with OpenTelemetry's advised bounds. Each thread adds to its stripe; a
/// reading adds the stripes up.
#[derive(Debug, Default)]
pub(crate) struct AttemptHistogram {
    stripes: [HistogramStripe; STRIPES],
    /// The latest sample recorded with a trace id.
    pub(crate) exemplar: ExemplarSlot,
}

/// One exemplar, written without a lock: a writer that finds another writing gives up (an
/// exemplar is a sample, any recent one will do), and a reader retries until it reads one
/// whole (a sequence lock over atomics).
#[derive(Debug, Default)]
pub(crate) struct ExemplarSlot {
    /// Even when stable, odd while written; 0 until the first exemplar.
    version: AtomicU64,
    trace_high: AtomicU64,
    trace_low: AtomicU64,
    nanos: AtomicU64,
    unix_millis: AtomicU64,
}

/// An exemplar read whole: trace id, value, when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exemplar {
    pub(crate) trace_id: u128,
    pub(crate) nanos: u64,
    pub(crate) unix_millis: u64,
}

impl ExemplarSlot {
    pub(crate) fn write(&self, exemplar: Exemplar) {
        let version = self.version.load(Ordering::Relaxed);
        if version & 1 == 1
            || self
                .version
                .compare_exchange(version, version + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.trace_high
            .store((exemplar.trace_id >> 64) as u64, Ordering::Relaxed);
        self.trace_low
            .store(exemplar.trace_id as u64, Ordering::Relaxed);
        self.nanos.store(exemplar.nanos, Ordering::Relaxed);
        self.unix_millis
            .store(exemplar.unix_millis, Ordering::Relaxed);
        self.version.store(version + 2, Ordering::Release);
    }

    pub(crate) fn read(&self) -> Option<Exemplar> {
        loop {
            let before = self.version.load(Ordering::Acquire);
            if before == 0 {
                return None;
            }
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let exemplar = Exemplar {
                trace_id: (u128::from(self.trace_high.load(Ordering::Relaxed)) << 64)
                    | u128::from(self.trace_low.load(Ordering::Relaxed)),
                nanos: self.nanos.load(Ordering::Relaxed),
                unix_millis: self.unix_millis.load(Ordering::Relaxed),
            };
            std::sync::atomic::fence(Ordering::Acquire);
            if self.version.load(Ordering::Relaxed) == before {
                return Some(exemplar);
            }
        }
    }
}

impl AttemptHistogram {
    #[inline]
    fn record(&self, nanos: u64) {
        let bucket = ATTEMPT_BOUNDS_NANOS
            .iter()
            .position(|bound| nanos <= *bound)
            .unwrap_or(ATTEMPT_BOUNDS_NANOS.len());
        let stripe = &self.stripes[stripe()];
        stripe.counts[bucket].fetch_add(1, Ordering::Relaxed);
        stripe.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Per-bucket counts (not cumulative; the last is `+Inf`) and the sum in seconds.
    pub(crate) fn read(&self) -> ([u64; 15], f64) {
        let mut counts = [0u64; 15];
        let mut sum_nanos = 0u64;
        for stripe in &self.stripes {
            for (count, cell) in counts.iter_mut().zip(&stripe.counts) {
                *count += cell.load(Ordering::Relaxed);
            }
            sum_nanos = sum_nanos.wrapping_add(stripe.sum_nanos.load(Ordering::Relaxed));
        }
        (counts, sum_nanos as f64 / 1e9)
    }

    /// Whether any sample was recorded.
    fn has_samples(&self) -> bool {
        self.stripes.iter().any(|stripe| {
            stripe
                .counts
                .iter()
                .any(|count| count.load(Ordering::Relaxed) > 0)
        })
    }
}

/// Status codes 100 to 599 each have a slot; then one for a code outside that range, one per
/// failure kind of an attempt that ended without a response, and one for a cancelled attempt.
pub(crate) const STATUS_SLOTS: usize = 500;
/// The most status codes one host's figures keep apart; codes past them are counted as odd
/// ones (`_OTHER`), so that a server cannot make a host's series without bound.
pub(crate) const MAX_STATUS_CODES: usize = 32;
pub(crate) const ODD_STATUS_SLOT: usize = STATUS_SLOTS;
pub(crate) const FIRST_ERROR_SLOT: usize = STATUS_SLOTS + 1;
pub(crate) const CANCELLED_SLOT: usize = FIRST_ERROR_SLOT + seawall_core::FailureKind::ALL.len();
/// Codes below 400 past a host's [`MAX_STATUS_CODES`]: `_OTHER`, without an `error_type`
/// (codes from 400 on past them go to [`ODD_STATUS_SLOT`], an error).
pub(crate) const OTHER_SUCCESS_SLOT: usize = CANCELLED_SLOT + 1;
const SLOTS: usize = OTHER_SUCCESS_SLOT + 1;

/// Whether a slot's attempts failed: a 4xx or 5xx code, an odd code, or no response.
pub(crate) fn slot_is_error(slot: usize) -> bool {
    slot >= 300 && slot != OTHER_SUCCESS_SLOT
}

/// The `error_type` of an error slot: the failure kind, or `cancelled`.
pub(crate) fn slot_error(slot: usize) -> &'static str {
    match slot.checked_sub(FIRST_ERROR_SLOT) {
        Some(kind) if kind < seawall_core::FailureKind::ALL.len() => {
            seawall_core::FailureKind::ALL[kind].as_str()
        }
        _ if slot == CANCELLED_SLOT => "cancelled",
        _ => "_OTHER",
    }
}

/// The slot of a response's status code.
#[inline]
pub(crate) fn status_slot(status: http::StatusCode) -> usize {
    match status.as_u16() {
        code @ 100..=599 => usize::from(code - 100),
        _ => ODD_STATUS_SLOT,
    }
}

/// One histogram per method (see [`METHODS`](crate::labels::METHODS)) for one status slot.
type MethodHistograms = [AttemptHistogram; crate::labels::METHODS.len()];

/// Every per-host figure of one host (or of `_OTHER`).
#[derive(Debug)]
pub(crate) struct HostSeries {
    /// `server.address`: the host as the request's URI names it, or `_OTHER`.
    pub(crate) address: Box<str>,
    /// `server.port`: the port in the URI, else the scheme's default; none for `_OTHER`.
    pub(crate) port: Option<u16>,
    /// `url.scheme`.
    pub(crate) scheme: &'static str,
    /// Attempts sent and not yet answered (headers) or failed, in stripes: an attempt adds
    /// to its thread's stripe when sent and takes from that stripe when done; the sum is the
    /// count.
    active: [ActiveStripe; STRIPES],
    /// Histograms by status slot, then method; a slot's eight are made at its first use.
    slots: Box<[OnceLock<Box<MethodHistograms>>]>,
    /// Status-code slots made, at most [`MAX_STATUS_CODES`].
    status_codes: AtomicUsize,
    /// The upstream's last stated quota and what was left of it (`u64::MAX`: never stated).
    pub(crate) quota_limit: AtomicU64,
    pub(crate) quota_remaining: AtomicU64,
}

/// One stripe of a host's active count, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct ActiveStripe(AtomicI64);

/// A quota figure the upstream never stated.
pub(crate) const UNSTATED: u64 = u64::MAX;

impl HostSeries {
    fn new(address: Box<str>, port: Option<u16>, scheme: &'static str) -> Self {
        Self {
            address,
            port,
            scheme,
            active: Default::default(),
            slots: (0..SLOTS).map(|_| OnceLock::new()).collect(),
            status_codes: AtomicUsize::new(0),
            quota_limit: AtomicU64::new(UNSTATED),
            quota_remaining: AtomicU64::new(UNSTATED),
        }
    }

    /// Counts an attempt sent, on the calling thread's stripe, which it returns: the attempt
    /// is counted done on the same stripe, wherever it ends.
    #[inline]
    pub(crate) fn start(&self) -> usize {
        let stripe = stripe();
        self.active[stripe].0.fetch_add(1, Ordering::Relaxed);
        stripe
    }

    /// Counts an attempt done (answered, failed or cancelled) that [`start`](Self::start)
    /// counted on `stripe`. No stripe goes below zero, so neither does a reading.
    #[inline]
    pub(crate) fn end(&self, stripe: usize) {
        self.active[stripe].0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Attempts sent and not yet done.
    pub(crate) fn active(&self) -> i64 {
        self.active
            .iter()
            .map(|stripe| stripe.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Records one attempt of `method` that ended in `slot` after `nanos`, the histogram it
    /// went into returned (for an exemplar).
    #[inline]
    pub(crate) fn record(&self, slot: usize, method: usize, nanos: u64) -> &AttemptHistogram {
        let histograms = match self.slots[slot].get() {
            Some(histograms) => histograms,
            None => self.first_of(slot),
        };
        histograms[method].record(nanos);
        &histograms[method]
    }

    /// The histograms of a slot used for the first time: its own while the host has used
    /// fewer than [`MAX_STATUS_CODES`] status codes, else an `_OTHER` one (an error from 400
    /// on, as odd codes are; a success below). A server that answers with every code from
    /// 100 to 599 would otherwise make 500 slots a host (about 2.6 MB, and 4,000 series a
    /// scrape).
    #[cold]
    fn first_of(&self, slot: usize) -> &MethodHistograms {
        if slot >= STATUS_SLOTS {
            return self.slots[slot].get_or_init(Default::default);
        }
        let reserved = self
            .status_codes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_STATUS_CODES).then_some(n + 1)
            })
            .is_ok();
        if !reserved {
            let other = if slot_is_error(slot) {
                ODD_STATUS_SLOT
            } else {
                OTHER_SUCCESS_SLOT
            };
            return self.slots[other].get_or_init(Default::default);
        }
        let mut made = false;
        let histograms = self.slots[slot].get_or_init(|| {
            made = true;
            Default::default()
        });
        if !made {
            // Another thread made this slot first, and counted it.
            self.status_codes.fetch_sub(1, Ordering::Relaxed);
        }
        histograms
    }

    /// Attempts recorded, those with an `error_type` (a 4xx or 5xx answer, or none), and the
    /// per-bucket counts of all of them merged.
    pub(crate) fn totals(&self) -> (u64, u64, [u64; 15]) {
        let (mut attempts, mut errors, mut merged) = (0, 0, [0u64; 15]);
        self.for_each(|slot, _, histogram| {
            let (counts, _) = histogram.read();
            let n: u64 = counts.iter().sum();
            attempts += n;
            if slot_is_error(slot) {
                errors += n;
            }
            for (total, count) in merged.iter_mut().zip(counts) {
                *total += count;
            }
        });
        (attempts, errors, merged)
    }

    /// Calls `each(slot, method, histogram)` for every histogram that has a sample.
    pub(crate) fn for_each(&self, mut each: impl FnMut(usize, usize, &AttemptHistogram)) {
        for (slot, histograms) in self.slots.iter().enumerate() {
            let Some(histograms) = histograms.get() else {
                continue;
            };
            for (method, histogram) in histograms.iter().enumerate() {
                if histogram.has_samples() {
                    each(slot, method, histogram);
                }
            }
        }
    }
}

/// The scheme index of a map: http, https, anything else.
fn scheme_index(scheme: Option<&Scheme>) -> usize {
    match scheme.map(Scheme::as_str) {
        Some("http") => 0,
        Some("https") => 1,
        _ => 2,
    }
}

const SCHEMES: [&str; 3] = ["http", "https", "_OTHER"];

type HostMap = papaya::HashMap<Box<str>, Arc<HostSeries>, foldhash::fast::RandomState>;

/// The bounded table of hosts.
#[derive(Debug)]
pub(crate) struct HostTable {
    max_hosts: usize,
    /// Hosts with an entry (they are never removed: a scrape keeps their series).
    hosts: AtomicUsize,
    /// Keyed by the URI's authority without user information, one map per scheme.
    maps: [HostMap; 3],
    /// Handles on the `_OTHER` entry of each scheme, shared by every thread.
    other_refs: [Arc<HostRef>; 3],
    /// What an attempt records with besides its host's entry.
    shared: Arc<AttemptShared>,
    /// Each thread's last hosts (scheme index, key, the thread's handle on its entry): a
    /// thread that sends to a few hosts finds their entries without the map's guard, hash
    /// and probe, and each attempt counts a reference to its thread's handle, not to the
    /// entry every thread shares.
    last: Box<thread_local::ThreadLocal<LastHost>>,
}

/// How many hosts each thread remembers.
const REMEMBERED: usize = 4;

/// A thread's last hosts (scheme index, key in the map, the thread's handle), and which
/// place the next new one takes.
type LastHost = RefCell<([Option<(usize, Box<str>, Arc<HostRef>)>; REMEMBERED], usize)>;

/// A handle on a host's entry, with what an attempt records with besides: what an attempt
/// holds while it is out.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct HostRef {
    pub(crate) series: Arc<HostSeries>,
    pub(crate) shared: Arc<AttemptShared>,
}

impl HostTable {
    pub(crate) fn new(max_hosts: usize, shared: Arc<AttemptShared>) -> Self {
        Self {
            max_hosts,
            hosts: AtomicUsize::new(0),
            maps: std::array::from_fn(|_| HostMap::default()),
            other_refs: std::array::from_fn(|i| {
                Arc::new(HostRef {
                    series: Arc::new(HostSeries::new(OTHER_HOST.into(), None, SCHEMES[i])),
                    shared: Arc::clone(&shared),
                })
            }),
            shared,
            last: Box::default(),
        }
    }

    /// A handle on the entry of `uri`'s host: its own while the table has room, else
    /// `_OTHER`.
    #[inline]
    pub(crate) fn entry(&self, uri: &Uri) -> Arc<HostRef> {
        let index = scheme_index(uri.scheme());
        let Some(authority) = uri.authority() else {
            return Arc::clone(&self.other_refs[index]);
        };
        let text = authority.as_str();
        let last = self.last.get_or_default();
        let remembered = |key: &str| {
            last.borrow()
                .0
                .iter()
                .flatten()
                .find(|(last_index, last_key, _)| *last_index == index && **last_key == *key)
                .map(|(_, _, host)| Arc::clone(host))
        };
        // The whole authority first: remembered keys carry no credentials, so the common
        // case, an authority without them, needs no search for them.
        if let Some(host) = remembered(text) {
            return host;
        }
        // Credentials never become a label: the key is what follows them.
        let key = text.rsplit_once('@').map_or(text, |(_, host)| host);
        if key.len() < text.len()
            && let Some(host) = remembered(key)
        {
            return host;
        }
        let map = &self.maps[index];
        let found = match map.pin().get(key) {
            Some(series) => Some(Arc::clone(series)),
            None => self.find_or_insert(index, key, uri),
        };
        // Only a host's own entry is kept: a host sent to `_OTHER` while racing inserts held
        // the last places may get one of its own later.
        let Some(series) = found else {
            return Arc::clone(&self.other_refs[index]);
        };
        let host = Arc::new(HostRef {
            series,
            shared: Arc::clone(&self.shared),
        });
        if let Ok(mut last) = last.try_borrow_mut() {
            let (remembered, next) = &mut *last;
            remembered[*next] = Some((index, key.into(), Arc::clone(&host)));
            *next = (*next + 1) % REMEMBERED;
        }
        host
    }

    /// The entry of a host whose authority's text is not a key of the table: the entry of
    /// the same host spelled as the table spells it (lower case, without the scheme's default
    /// port), or a new one if the table has room. Two spellings of one host (`api.test` and
    /// `API.test:80`) would otherwise be two series with the same labels.
    #[cold]
    fn find_or_insert(&self, index: usize, key: &str, uri: &Uri) -> Option<Arc<HostSeries>> {
        let host = uri.host().unwrap_or(key);
        let default_port = seawall_core::key::default_port(uri.scheme());
        let explicit_port = uri.port_u16().filter(|&port| Some(port) != default_port);
        let port = explicit_port.or(default_port);
        // Spelled as the table spells it (the common case, and every request to a host past
        // the bound): no second lookup, and nothing allocated before a place is found.
        let after_host = key.strip_prefix(host);
        let canonical_port = match explicit_port {
            None => after_host == Some(""),
            Some(port) => after_host
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|digits| {
                    !digits.starts_with('0')
                        && digits.bytes().all(|byte| byte.is_ascii_digit())
                        && digits.parse() == Ok(port)
                }),
        };
        if canonical_port && !host.bytes().any(|byte| byte.is_ascii_uppercase()) {
            return self.insert(index, key, host, port);
        }
        let host = host.to_ascii_lowercase();
        let canonical = match explicit_port {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        if let Some(series) = self.maps[index].pin().get(canonical.as_str()) {
            return Some(Arc::clone(series));
        }
        self.insert(index, &canonical, &host, port)
    }

    /// Makes the entry of a host new to the table under its `key`, if it has room.
    fn insert(
        &self,
        index: usize,
        key: &str,
        host: &str,
        port: Option<u16>,
    ) -> Option<Arc<HostSeries>> {
        // Reserve a place before making the entry, so that racing threads cannot take the
        // table past its bound.
        let reserved = self
            .hosts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_hosts).then_some(n + 1)
            })
            .is_ok();
        if !reserved {
            return None;
        }
        let series = Arc::new(HostSeries::new(host.into(), port, SCHEMES[index]));
        let map = self.maps[index].pin();
        let kept = map.get_or_insert(key.into(), Arc::clone(&series));
        if !Arc::ptr_eq(kept, &series) {
            // Another thread made the entry first: give the place back.
            self.hosts.fetch_sub(1, Ordering::Relaxed);
        }
        Some(Arc::clone(kept))
    }

    /// Calls `each` for every entry, the `_OTHER` entries last.
    pub(crate) fn for_each(&self, mut each: impl FnMut(&HostSeries)) {
        for map in &self.maps {
            let map = map.pin();
            let mut entries: Vec<&Arc<HostSeries>> = map.values().collect();
            entries.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
            for series in entries {
                each(series);
            }
        }
        for other in &self.other_refs {
            each(&other.series);
        }
    }

    /// What an attempt records with besides its host's entry.
    pub(crate) fn shared(&self) -> &AttemptShared {
        &self.shared
    }

    /// Hosts with an entry of their own.
    pub(crate) fn hosts(&self) -> usize {
        self.maps.iter().map(|map| map.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_hosts: usize) -> HostTable {
        let shared = Arc::new(AttemptShared::new(
            crate::clock::Clock::new(Default::default()),
            None,
        ));
        HostTable::new(max_hosts, shared)
    }

    /// A thread's last host is found again, and a host after it gets its own entry, whichever
    /// came last; credentials never make another entry; a host beyond the bound is `_OTHER`
    /// every time, not kept as the thread's last.
    #[test]
    fn each_request_finds_its_own_hosts_entry() {
        let table = table(2);
        let uri = |text: &str| text.parse::<Uri>().expect("valid uri");
        let a = uri("https://a.example/x");
        let b = uri("https://b.example:8443/y");
        let first_a = table.entry(&a).series.clone();
        for _ in 0..3 {
            assert!(Arc::ptr_eq(&table.entry(&a).series, &first_a));
            assert!(Arc::ptr_eq(&table.entry(&a).series, &first_a));
            let series_b = table.entry(&b).series.clone();
            assert_eq!(
                (&*series_b.address, series_b.port),
                ("b.example", Some(8443))
            );
        }
        let with_user = uri("https://user:secret@a.example/z");
        assert!(Arc::ptr_eq(&table.entry(&with_user).series, &first_a));
        assert!(!Arc::ptr_eq(
            &table.entry(&uri("http://a.example/")).series,
            &first_a
        ));
        let beyond = uri("https://c.example/");
        for _ in 0..2 {
            let other = table.entry(&beyond);
            assert_eq!(&*other.series.address, OTHER_HOST);
            assert!(Arc::ptr_eq(&other, &table.other_refs[1]));
        }
        // `_OTHER` never takes a place among the thread's last hosts.
        let remembered = table
            .last
            .get_or_default()
            .borrow()
            .0
            .iter()
            .flatten()
            .count();
        // a.example and b.example:8443; http's a.example was past the bound, `_OTHER` too.
        assert_eq!(remembered, 2);
        assert!(Arc::ptr_eq(&table.entry(&a).series, &first_a));
        assert_eq!(table.hosts(), 2);
    }

    /// A host a thread calls only with credentials in its URIs is remembered as well, under
    /// its key without them: the next request finds the thread's handle again, and the
    /// credentials are kept nowhere.
    #[test]
    fn a_host_called_with_credentials_is_remembered_without_them() {
        let table = table(4);
        let with_user: Uri = "https://user:secret@d.example/x"
            .parse()
            .expect("valid uri");
        let first = table.entry(&with_user);
        assert!(Arc::ptr_eq(&first, &table.entry(&with_user)));
        let last = table.last.get_or_default().borrow();
        let keys: Vec<&str> = last.0.iter().flatten().map(|(_, key, _)| &**key).collect();
        assert_eq!(keys, ["d.example"]);
    }

    /// Attempts to one host on one thread hold that thread's handle, not the entry's own
    /// reference count; another thread gets a handle of its own on the same entry.
    #[test]
    fn a_thread_reuses_its_handle_and_another_thread_has_its_own() {
        let table = table(8);
        let a: Uri = "https://a.example/x".parse().expect("valid uri");
        let first = table.entry(&a);
        let again = table.entry(&a);
        assert!(Arc::ptr_eq(&first, &again));
        let entry_references = Arc::strong_count(&first.series);
        for _ in 0..10 {
            let _held = table.entry(&a);
            assert_eq!(Arc::strong_count(&first.series), entry_references);
        }
        // Four hosts in turn keep their handles; a fifth takes the oldest one's place.
        let hosts: Vec<Uri> = ["b", "c", "d"]
            .iter()
            .map(|host| {
                format!("https://{host}.example/")
                    .parse()
                    .expect("valid uri")
            })
            .collect();
        let handles: Vec<_> = hosts.iter().map(|uri| table.entry(uri)).collect();
        for _ in 0..3 {
            assert!(Arc::ptr_eq(&table.entry(&a), &first));
            for (uri, handle) in hosts.iter().zip(&handles) {
                assert!(Arc::ptr_eq(&table.entry(uri), handle));
            }
        }
        let fifth: Uri = "https://e.example/".parse().expect("valid uri");
        let _ = table.entry(&fifth);
        assert!(
            !Arc::ptr_eq(&table.entry(&a), &first),
            "a.example was the oldest"
        );
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let theirs = table.entry(&a);
                assert!(!Arc::ptr_eq(&theirs, &first));
                assert!(Arc::ptr_eq(&theirs.series, &first.series));
            });
        });
    }

    /// Counts made on several threads (each on its stripe, some ending on another thread
    /// than they started on) add up exactly.
    #[test]
    fn striped_counts_add_up_across_threads() {
        let series = HostSeries::new("a.example".into(), Some(443), "https");
        let stripes = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..6u64)
                .map(|thread| {
                    let series = &series;
                    scope.spawn(move || {
                        let mut stripes = Vec::new();
                        for i in 0..1_000 {
                            stripes.push(series.start());
                            series.record(200 - 100, 0, (thread + 1) * 1_000_000 - i);
                        }
                        stripes
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|thread| thread.join().expect("no panic"))
                .collect::<Vec<_>>()
        });
        assert_eq!(series.active(), 6_000);
        // Six threads took at least two stripes.
        assert!(stripes.iter().any(|&stripe| stripe != stripes[0]));
        // Each attempt ends on another thread than it started on, on its own stripe: no
        // stripe ever goes below zero.
        std::thread::scope(|scope| {
            for ends in stripes.chunks(2_000) {
                let series = &series;
                scope.spawn(move || {
                    for &stripe in ends {
                        series.end(stripe);
                        assert!(series.active[stripe].0.load(Ordering::Relaxed) >= 0);
                    }
                });
            }
        });
        assert_eq!(series.active(), 0);
        let (counts, sum) = series.slots[100].get().expect("recorded")[0].read();
        // Threads 0 – 4 recorded at most 5 ms (the first bucket), thread 5 just under 6 ms.
        assert_eq!(counts.iter().sum::<u64>(), 6_000);
        assert_eq!(counts[0], 5_000);
        assert_eq!(counts[1], 1_000);
        let expected: u64 = (0..6u64)
            .map(|thread| {
                (0..1_000)
                    .map(|i| (thread + 1) * 1_000_000 - i)
                    .sum::<u64>()
            })
            .sum();
        assert!((sum - expected as f64 / 1e9).abs() < 1e-9, "{sum}");
    }
}
