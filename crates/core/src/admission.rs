//! A seam between a layer that admits requests (a circuit breaker) and a layer below it that
//! holds requests back (a rate limiter's wait queue), so that an admission can be withdrawn
//! while the request waits.
//!
//! A breaker decides when a request is called; a limiter below it may then hold the request
//! for seconds. If the upstream fails meanwhile and the breaker opens, the held request must
//! not go out when its turn comes: it is refused as the breaker would refuse it now, before it
//! takes a token.
//!
//! Neither layer depends on the other. The admitting layer opens an [`AdmissionScope`] around
//! its inner `call`; a layer below that decides to hold the request asks for a [`Readmission`]
//! with [`hold_back`] while that `call` runs on the same thread, and the admitting layer binds
//! its [`Gate`] to it when the scope closes. When the request's turn comes, the holding layer
//! asks [`Readmission::check`]. Layers in between that call their inner service from their own
//! `call` (timeouts, tracing, request mapping, tower's `ConcurrencyLimit`) keep the seam; a
//! layer that hands the request to another task before calling on (tower's `Buffer`) breaks it,
//! and the request is then judged by the breaker only when it is called.
//!
//! The steady state, where nobody is held back, costs the admitting layer three thread-local
//! accesses and allocates nothing; only a request that is held back allocates its
//! [`Readmission`].

use std::cell::Cell;
use std::error::Error;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tower::BoxError;

/// [`STATE`]: an admitting layer's `call` is in progress on this thread.
const LISTENING: u8 = 1;
/// [`STATE`]: a layer below asked for a readmission during it (it is in [`WANTED`]).
const ASKED: u8 = 2;

thread_local! {
    /// `LISTENING | ASKED`. A plain byte, so that the steady state, where nothing is held
    /// back, never touches `WANTED` (a thread-local with a destructor costs more to reach).
    static STATE: Cell<u8> = const { Cell::new(0) };
    /// The readmission a layer below asked for during that `call`.
    static WANTED: Cell<Option<Readmission>> = const { Cell::new(None) };
}

/// An admitting layer's view of a request it admitted: asked again when the request leaves
/// a queue below it.
pub trait Gate: Send + Sync + 'static {
    /// `Ok` if the request admitted with `ticket` may still be sent now; otherwise the
    /// refusal, as the layer would refuse a new request (for a breaker: its open error, with
    /// when it next admits). Counting the refusal is the gate's business.
    fn readmit(&self, ticket: u64) -> Result<(), BoxError>;
}

struct Shared {
    gate: OnceLock<(Arc<dyn Gate>, u64)>,
    refusal: OnceLock<BoxError>,
    waited: OnceLock<Duration>,
}

/// One held-back request's link to the layer that admitted it. Cheap to clone.
#[derive(Clone)]
pub struct Readmission(Arc<Shared>);

impl fmt::Debug for Readmission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readmission")
            .field("bound", &self.0.gate.get().is_some())
            .field("withdrawn", &self.0.refusal.get().is_some())
            .finish()
    }
}

impl Readmission {
    fn new() -> Self {
        Readmission(Arc::new(Shared {
            gate: OnceLock::new(),
            refusal: OnceLock::new(),
            waited: OnceLock::new(),
        }))
    }

    /// Binds the admitting layer's gate and the request's ticket (by the admitting layer, when
    /// its scope closes). Only the first binding counts: the innermost admitting layer's.
    pub fn bind(&self, gate: Arc<dyn Gate>, ticket: u64) {
        let _ = self.0.gate.set((gate, ticket));
    }

    /// Asks the admitting layer whether the request may still be sent (by the holding layer,
    /// when the request's turn comes, before it takes anything for it). `Ok` when no layer
    /// bound a gate.
    pub fn check(&self) -> Result<(), Withdrawn> {
        if self.0.refusal.get().is_some() {
            return Err(Withdrawn(self.clone()));
        }
        let Some((gate, ticket)) = self.0.gate.get() else {
            return Ok(());
        };
        match gate.readmit(*ticket) {
            Ok(()) => Ok(()),
            Err(refusal) => {
                let _ = self.0.refusal.set(refusal);
                Err(Withdrawn(self.clone()))
            }
        }
    }

    /// The admitting layer's refusal, if the admission was withdrawn (for the admitting layer
    /// to answer with its own error instead of the holding layer's).
    pub fn refusal(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.0.refusal.get().map(|refusal| &**refusal)
    }

    /// Records how long the request was held back (by the holding layer, when it lets the
    /// request go). A response says it too ([`QueueWait`](crate::QueueWait)); an error has no
    /// room for it, and the admitting layer must not take that time for the upstream's (a
    /// breaker's slow calls). Only the first record counts.
    pub fn record_wait(&self, waited: Duration) {
        let _ = self.0.waited.set(waited);
    }

    /// How long the request was held back, as the holding layer recorded it; zero until it
    /// lets the request go.
    pub fn waited(&self) -> Duration {
        self.0.waited.get().copied().unwrap_or_default()
    }
}

/// Opened by an admitting layer around its inner `call`; see the [module docs](self).
///
/// A scope opened inside another (two admitting layers in one call) takes over: a request
/// held back inside it is bound to the inner layer, and one the outer scope had already seen
/// is no longer bound (it is then sent when its turn comes, as without the seam).
#[derive(Debug)]
#[must_use = "a layer below can ask for a readmission only while the scope is open"]
pub struct AdmissionScope {
    /// The thread's state before this scope opened, restored when it drops (even by a
    /// panicking call), less any request asked for: that one belonged to this scope.
    outer_state: u8,
    _not_send: PhantomData<*const ()>,
}

impl AdmissionScope {
    /// Opens a scope on this thread.
    #[inline]
    pub fn open() -> Self {
        AdmissionScope {
            outer_state: STATE.replace(LISTENING),
            _not_send: PhantomData,
        }
    }

    /// Closes the scope: the readmission a layer below asked for during it, for the admitting
    /// layer to [`bind`](Readmission::bind).
    #[inline]
    pub fn close(self) -> Option<Readmission> {
        if STATE.get() & ASKED != 0 {
            WANTED.take()
        } else {
            None
        }
    }
}

impl Drop for AdmissionScope {
    #[inline]
    fn drop(&mut self) {
        // A readmission asked for and not taken (a panicking call) stays in its slot until
        // the next one is asked for, which replaces it.
        STATE.set(self.outer_state & LISTENING);
    }
}

/// Called by a layer that holds a request back, from its `call`: the request's link to the
/// layer above that admitted it, if one is listening. Two holding layers in one `call` share
/// one readmission.
pub fn hold_back() -> Option<Readmission> {
    let state = STATE.get();
    if state & LISTENING == 0 {
        return None;
    }
    let readmission = match WANTED.take() {
        Some(existing) if state & ASKED != 0 => existing,
        _ => Readmission::new(),
    };
    WANTED.set(Some(readmission.clone()));
    STATE.set(state | ASKED);
    Some(readmission)
}

/// The error of a held-back request whose admission was withdrawn while it waited. Its
/// [`source`](Error::source) is the admitting layer's refusal.
#[derive(Clone)]
pub struct Withdrawn(Readmission);

impl Withdrawn {
    /// The admitting layer's refusal.
    pub fn refusal(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.0.refusal()
    }
}

impl fmt::Debug for Withdrawn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Withdrawn").field(&self.refusal()).finish()
    }
}

impl fmt::Display for Withdrawn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the layer that admitted this request refused it while it waited")
    }
}

impl Error for Withdrawn {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.refusal()
            .map(|refusal| refusal as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    #[derive(Default)]
    struct Switch {
        open: AtomicBool,
        asked: AtomicU64,
    }

    impl Gate for Switch {
        fn readmit(&self, ticket: u64) -> Result<(), BoxError> {
            self.asked.fetch_add(ticket, Ordering::Relaxed);
            if self.open.load(Ordering::Relaxed) {
                Err("open".into())
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn a_request_held_back_inside_a_scope_is_bound_to_the_admitting_gate() {
        let gate = Arc::new(Switch::default());
        let scope = AdmissionScope::open();
        let held = hold_back().expect("a scope is open");
        let again = hold_back().expect("a scope is open");
        let wanted = scope.close().expect("asked for during the scope");
        wanted.bind(gate.clone(), 7);
        assert!(held.check().is_ok());
        assert_eq!(gate.asked.load(Ordering::Relaxed), 7);
        gate.open.store(true, Ordering::Relaxed);
        let withdrawn = again.check().expect_err("the gate refuses now");
        assert_eq!(
            withdrawn.refusal().map(ToString::to_string),
            Some("open".into())
        );
        assert_eq!(
            withdrawn.source().map(ToString::to_string),
            Some("open".into())
        );
        // Asked once more: the refusal stands without asking the gate again.
        assert!(held.check().is_err());
        assert_eq!(gate.asked.load(Ordering::Relaxed), 14);
    }

    #[test]
    fn nothing_is_held_back_outside_a_scope_and_a_scope_with_no_request_yields_none() {
        assert!(hold_back().is_none());
        let scope = AdmissionScope::open();
        assert!(scope.close().is_none());
        assert!(hold_back().is_none(), "the closed scope stopped listening");
    }

    #[test]
    fn a_nested_scope_takes_over_and_the_outer_one_listens_again_after_it() {
        let outer = AdmissionScope::open();
        let inner = AdmissionScope::open();
        let first = hold_back().expect("inner scope");
        let inner_wanted = inner.close().expect("inner asked");
        assert!(Arc::ptr_eq(&inner_wanted.0, &first.0));
        let second = hold_back().expect("the outer scope listens again");
        let outer_wanted = outer.close().expect("outer asked");
        assert!(Arc::ptr_eq(&outer_wanted.0, &second.0));
        assert!(!Arc::ptr_eq(&first.0, &second.0));
        assert!(hold_back().is_none());
    }

    #[test]
    fn a_panicking_call_leaves_nothing_listening() {
        let result = std::panic::catch_unwind(|| {
            let _scope = AdmissionScope::open();
            let _held = hold_back();
            panic!("a layer's call panics");
        });
        assert!(result.is_err());
        assert!(hold_back().is_none());
        let scope = AdmissionScope::open();
        assert!(
            scope.close().is_none(),
            "the stale request is not this scope's"
        );
    }

    #[test]
    fn an_unbound_readmission_admits_and_a_dropped_scope_stops_listening() {
        let scope = AdmissionScope::open();
        let held = hold_back().expect("a scope is open");
        drop(scope);
        assert!(hold_back().is_none());
        assert!(held.check().is_ok());
    }
}
