//! Per-key state: the store's slot, a server-driven pause, and the fair wait queue.
//!
//! Waiters are ordered by priority, then by arrival. The queue holds one timer, the head's:
//! armed for the head's slot with the head's waker. When the head is admitted (or leaves),
//! the next waiter's slot is computed from the store and the same timer is armed for it, with
//! its waker, without waking it; so each waiter is woken once, at its slot, however far the
//! schedule has drifted from what was predicted when it joined (a busy runtime taking its
//! tokens late, a waiter ahead leaving, a pause). Each waiter also keeps a timer of its own,
//! well after its predicted slot, only to notice a head that is held but never polled.
//! The queue's mutex is taken only by requests that wait; the steady state, where a token is
//! free and nobody waits, never touches it.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::task::Waker;
use std::time::Duration;

use http::Response;
use seawall_core::{Clock, HintPolicy, ServerHints};
use tokio::time::Instant;

use crate::store::RateStore;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};

/// What every key of one limiter shares: its clock and origin, and how it reads server hints.
#[derive(Debug)]
pub(crate) struct Context {
    /// Where the limiter reads the time; every instant it keeps is on this clock.
    pub(crate) clock: Clock,
    pub(crate) origin: Instant,
    pub(crate) hints: Option<HintPolicy>,
    /// A counter, outside the wait queue's model.
    pub(crate) pauses: std::sync::atomic::AtomicU64,
    /// Priority aging: how long a waiter of priority 0 must have waited to go ahead of one
    /// of priority 255 that joins then (see [`aged_place_of`]); `None` for strict
    /// priorities.
    pub(crate) aging: Option<Duration>,
}

impl Context {
    /// The time now, on the limiter's clock.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.origin + Duration::from_nanos(nanos)
    }

    /// `at` as a waiter's slot: nanoseconds from the origin plus one, never zero, so that an
    /// `Option` of it is one word (an `Instant` is two).
    fn slot_of(&self, at: Instant) -> NonZeroU64 {
        NonZeroU64::new(self.nanos(at).saturating_add(1)).unwrap_or(NonZeroU64::MAX)
    }

    fn instant_of(&self, slot: NonZeroU64) -> Instant {
        self.instant(slot.get() - 1)
    }
}

/// How late (beyond one interval) the head may be before waiters behind it go ahead.
const STALLED_HEAD: Duration = Duration::from_millis(100);

/// How late a head may be, with quotas emitting one token per `interval`, before those
/// behind it stop waiting for it.
pub(crate) fn stall_grace(interval: Duration) -> Duration {
    STALLED_HEAD.saturating_add(interval)
}

pub(crate) use seawall_core::clock::later;

/// A waiter's place: higher priority first, then first come first served. One word, so that
/// a waiter's entry and its future stay small: the top byte is `255 - priority`, the rest the
/// arrival number on this key (2^56 arrivals: over two years at a billion a second, on one key).
/// Never zero (arrivals count from 1), so that an `Option<Place>` is one word too.
pub(crate) type Place = NonZeroU64;

const ARRIVAL_BITS: u32 = 56;

fn place_of(priority: u8, arrival: u64) -> Place {
    let packed =
        (u64::from(u8::MAX - priority) << ARRIVAL_BITS) | (arrival & ((1 << ARRIVAL_BITS) - 1));
    NonZeroU64::new(packed).unwrap_or(NonZeroU64::MAX)
}

/// Arrival bits of an aged place: the arrival number breaks ties within a millisecond.
const AGED_ARRIVAL_BITS: u32 = 20;

/// With priority aging, a waiter's place is its join time plus `(255 - priority) / 255` of
/// `aging`, in milliseconds (2^44 of them: over 500 years), then its arrival: each priority
/// level is worth `aging / 255` of waiting, so a waiter is never overtaken by one that joins
/// more than `aging` after it, whatever their priorities.
fn aged_place_of(priority: u8, arrival: u64, joined_nanos: u64, aging: Duration) -> Place {
    let handicap = aging.as_nanos() * u128::from(u8::MAX - priority) / u128::from(u8::MAX);
    let effective_ms =
        ((u128::from(joined_nanos) + handicap) / 1_000_000) & ((1 << (64 - AGED_ARRIVAL_BITS)) - 1);
    let effective_ms = u64::try_from(effective_ms).unwrap_or(0);
    let packed = (effective_ms << AGED_ARRIVAL_BITS) | (arrival & ((1 << AGED_ARRIVAL_BITS) - 1));
    NonZeroU64::new(packed.saturating_add(1)).unwrap_or(NonZeroU64::MAX)
}

fn priority_of(place: Place) -> u8 {
    u8::MAX - u8::try_from(place.get() >> ARRIVAL_BITS).unwrap_or(u8::MAX)
}

#[derive(Debug)]
struct Waiter {
    cost: u32,
    /// When its turn is expected (see [`Context::slot_of`]); `None` once it is known to be
    /// later than predicted and it waits to be told (by the hand-off) when it is head.
    slot: Option<NonZeroU64>,
    waker: Option<Waker>,
}

#[derive(Debug, Default)]
struct WaitQueue {
    waiters: BTreeMap<Place, Waiter>,
    /// The head's timer, while anyone waits.
    head_timer: HeadTimer,
    next_seq: u64,
    /// The cost queued at each priority, to predict a newcomer's slot in O(1). Sized on the
    /// first join, so a key that never waits holds no table.
    cost_by_priority: Vec<u64>,
}

/// One key's limiter state.
pub(crate) struct KeyEntry<St: RateStore> {
    pub(crate) slot: St::Slot,
    /// The key's quota set: 0 for the layer's own quotas, else a tier's.
    pub(crate) tier: u8,
    /// The key's adaptive rate, for a layer with one.
    pub(crate) adaptive: Option<Box<crate::adaptive::AdaptiveRate>>,
    pub(crate) context: std::sync::Arc<Context>,
    /// Nanoseconds (from the limiter's origin) until which the server asked us to hold off.
    paused_until: AtomicU64,
    depth: AtomicUsize,
    queue: Mutex<WaitQueue>,
}

/// What arming the head's timer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    seawall_loom,
    allow(dead_code, reason = "the model's stub timer is always armed")
)]
enum Armed {
    /// The timer will wake the waiter at its slot.
    Yes,
    /// The slot has come: wake the waiter now.
    Due,
    /// There is no tokio runtime here to time it (a waiter polled or dropped outside one).
    NoRuntime,
}

/// The head's timer: made when first armed, dropped when the queue empties, so it never
/// outlives the runtime of the waiters it serves.
#[cfg(not(seawall_loom))]
#[derive(Debug, Default)]
struct HeadTimer(Option<(std::pin::Pin<Box<tokio::time::Sleep>>, tokio::runtime::Id)>);

#[cfg(not(seawall_loom))]
impl HeadTimer {
    /// Arms the timer to wake `waker` at `at` (on `clock`), by polling it with that waker:
    /// the waiter's own task need not run.
    fn arm(&mut self, at: Instant, clock: &Clock, waker: &Waker) -> Armed {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Armed::NoRuntime;
        };
        // A deadline already past would still wait for the timer driver's next tick (up to a
        // millisecond): a hand-off running late must wake the next waiter now, or every late
        // hand-off would add a tick and the schedule would drift.
        if at <= clock.now() {
            return Armed::Due;
        }
        let timer = match &mut self.0 {
            // A timer belongs to the runtime that made it; one limiter may serve several, and
            // a timer of another (perhaps shut down) runtime must not be reset or polled.
            Some((timer, id)) if *id == runtime.id() => {
                clock.reset_timer(timer.as_mut(), at);
                timer
            }
            slot => {
                let at = clock.timer_instant(at);
                let made = (Box::pin(tokio::time::sleep_until(at)), runtime.id());
                &mut slot.insert(made).0
            }
        };
        // Unconstrained: with this task's cooperative budget spent, the poll would neither
        // register the waiter nor leave the timer to the waiter alone.
        let mut cx = std::task::Context::from_waker(waker);
        let registered = tokio::task::unconstrained(timer.as_mut());
        match std::future::Future::poll(std::pin::pin!(registered), &mut cx) {
            std::task::Poll::Pending => Armed::Yes,
            std::task::Poll::Ready(()) => Armed::Due,
        }
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

/// Under the model checker there is no runtime: the stub keeps the waker it was armed with,
/// so a model can check that a hand-off either woke the next waiter or left the timer to it.
#[cfg(seawall_loom)]
#[derive(Debug, Default)]
struct HeadTimer(Option<Waker>);

#[cfg(seawall_loom)]
impl HeadTimer {
    fn arm(&mut self, _at: Instant, _clock: &Clock, waker: &Waker) -> Armed {
        self.0 = Some(waker.clone());
        Armed::Yes
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

/// What joining the queue gave.
pub(crate) enum Joined {
    /// In line at `place`, predicted to be admitted at `slot`, behind `ahead` tokens.
    Queued {
        place: Place,
        slot: Instant,
        ahead: u64,
    },
    /// The queue already holds `max_waiting` requests.
    Full,
    /// The predicted wait exceeds the budget; nothing was queued.
    TooLong(Duration),
}

/// What a waiter should do after being polled.
pub(crate) enum Turn {
    /// It is at the head and its slot has come: ask the store.
    Try,
    /// Sleep until woken at its slot by the head's timer, or at the latest until this
    /// instant, to look for a stalled head (or, if `None`, for a while: see the future).
    Sleep(Option<Instant>),
}

impl<St: RateStore> KeyEntry<St> {
    pub(crate) fn new(slot: St::Slot, tier: u8, context: std::sync::Arc<Context>) -> Self {
        Self {
            slot,
            tier,
            adaptive: None,
            context,
            paused_until: AtomicU64::new(0),
            depth: AtomicUsize::new(0),
            queue: Mutex::new(WaitQueue::default()),
        }
    }

    /// Live waiters.
    pub(crate) fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// The end of the server-driven pause (in nanoseconds from the limiter's origin), if one
    /// is in force at `now`. A key that was never paused answers from one load: converting
    /// `now` to nanoseconds costs more than the rest of admitting a request.
    pub(crate) fn paused_until(&self, now: Instant) -> Option<u64> {
        let until = self.paused_until.load(Ordering::Acquire);
        if until == 0 {
            return None;
        }
        (until > self.context.nanos(now)).then_some(until)
    }

    /// Holds the key until `until` (nanoseconds from origin), keeping a later pause in force.
    pub(crate) fn pause(&self, until: u64) {
        self.paused_until.fetch_max(until, Ordering::AcqRel);
    }

    /// Applies what a response says about the upstream's limits to this key.
    pub(crate) fn observe<B>(&self, response: &Response<B>) {
        let throttled = self.observe_hints(response);
        if let Some(adaptive) = &self.adaptive {
            adaptive.answered(throttled, self.context.nanos(self.context.now()));
        }
    }

    /// Applies the server's hints; says whether the response throttled the key without a
    /// pause to follow (a 429, or quota-exhausted headers, with no usable reset), the signal
    /// an adaptive rate slows down on.
    fn observe_hints<B>(&self, response: &Response<B>) -> bool {
        let too_many = response.status() == http::StatusCode::TOO_MANY_REQUESTS;
        let Some(policy) = &self.context.hints else {
            return too_many;
        };
        if !might_carry_hints(response) {
            return false;
        }
        let hints = ServerHints::from_response(response, policy);
        let Some(pause) = hints.pause() else {
            return too_many || hints.quota_exhausted();
        };
        let now = self.context.nanos(self.context.now());
        let pause_nanos = u64::try_from(pause.as_nanos()).unwrap_or(u64::MAX);
        self.pause(now.saturating_add(pause_nanos));
        self.context.pauses.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            pause_s = pause.as_secs_f64(),
            "holding a key on the server's word"
        );
        false
    }

    fn lock(&self) -> MutexGuard<'_, WaitQueue> {
        // A panic while holding this lock cannot leave the queue inconsistent (every update
        // is a single map operation), so a poisoned lock is still usable.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Joins the queue, or says why not. `predict(ahead)` is how long until the store would
    /// have admitted the `ahead` tokens queued before this request, and this request.
    pub(crate) fn join(
        &self,
        priority: u8,
        cost: u32,
        now: Instant,
        predict: impl FnOnce(u64) -> Duration,
        max_waiting: usize,
        max_wait: Duration,
    ) -> Joined {
        let mut queue = self.lock();
        if queue.waiters.len() >= max_waiting {
            return Joined::Full;
        }
        let arrival = queue.next_seq + 1;
        let (place, ahead) = match self.context.aging {
            // The tokens ahead of an aged place are summed over the queue: aging costs a walk
            // of the queue per waiter that joins.
            Some(aging) => {
                let place = aged_place_of(priority, arrival, self.context.nanos(now), aging);
                let ahead = queue
                    .waiters
                    .range(..place)
                    .map(|(_, waiter)| u64::from(waiter.cost))
                    .sum();
                (place, ahead)
            }
            None => {
                if queue.cost_by_priority.is_empty() {
                    queue.cost_by_priority = vec![0; usize::from(u8::MAX) + 1];
                }
                let ahead = queue.cost_by_priority[usize::from(priority)..].iter().sum();
                (place_of(priority, arrival), ahead)
            }
        };
        // Its wait: until the store would have admitted everyone ahead of it, and it.
        let wait = predict(ahead);
        if wait > max_wait {
            return Joined::TooLong(wait);
        }
        queue.next_seq = arrival;
        if let Some(level) = queue.cost_by_priority.get_mut(usize::from(priority)) {
            *level += u64::from(cost);
        }
        let slot = now + wait;
        let earlier = queue.waiters.insert(
            place,
            Waiter {
                cost,
                slot: Some(self.context.slot_of(slot)),
                waker: None,
            },
        );
        debug_assert!(earlier.is_none(), "two waiters in one place");
        self.depth.fetch_add(1, Ordering::AcqRel);
        Joined::Queued { place, slot, ahead }
    }

    /// A waiter was polled at `now`: records its waker and says what to do. `interval` is
    /// the slowest quota's emission interval.
    pub(crate) fn turn(
        &self,
        place: Place,
        now: Instant,
        waker: &Waker,
        interval: Duration,
    ) -> Turn {
        let stall = stall_grace(interval);
        let mut queue = self.lock();
        let context = &self.context;
        let (head_place, head_slot) = match queue.waiters.iter().next() {
            Some((head_place, head)) => (
                Some(*head_place),
                head.slot.map(|slot| context.instant_of(slot)),
            ),
            None => (None, None),
        };
        // A head whose caller holds its future without polling it must not wedge the queue:
        // once it is well past its slot, a waiter whose own slot has come may go ahead.
        let head_stalled = head_slot.is_some_and(|slot| slot + stall < now);
        let is_head = head_place == Some(place);
        let queue = &mut *queue;
        let Some(waiter) = queue.waiters.get_mut(&place) else {
            return Turn::Sleep(None);
        };
        if !waiter.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            waiter.waker = Some(waker.clone());
        }
        let cost = waiter.cost;
        match waiter.slot.map(|slot| context.instant_of(slot)) {
            Some(slot) if slot <= now && (is_head || head_stalled) => Turn::Try,
            None if is_head || head_stalled => Turn::Try,
            // Its predicted slot came but others are still ahead (the schedule drifted): wait
            // for the hand-off, and look for a stalled head only once the head and everyone
            // between could have gone. (Only a waiter whose prediction failed counts those
            // ahead of it, so an undisturbed queue never pays for the count.)
            Some(slot) if slot <= now => {
                waiter.slot = None;
                let between: u64 = queue
                    .waiters
                    .range(..place)
                    .skip(1)
                    .map(|(_, waiter)| u64::from(waiter.cost))
                    .sum();
                let tokens = u32::try_from(between + u64::from(cost)).unwrap_or(u32::MAX);
                let base = head_slot.map_or(now, |head| head.max(now));
                let due = later(base, interval.saturating_mul(tokens));
                Turn::Sleep(Some(later(due, stall)))
            }
            Some(slot) if is_head => match queue.head_timer.arm(slot, &context.clock, waker) {
                Armed::Yes => Turn::Sleep(Some(later(slot, stall))),
                // The slot came as the timer was armed: look again at once.
                Armed::Due => {
                    waker.wake_by_ref();
                    Turn::Sleep(Some(slot))
                }
                // No runtime to arm the queue's timer in: the waiter's own timer takes the slot.
                Armed::NoRuntime => Turn::Sleep(Some(slot)),
            },
            // Going ahead of a stalled head, the queue's timer is not armed for it: its own
            // timer takes its slot.
            Some(slot) if head_stalled => Turn::Sleep(Some(slot)),
            Some(slot) => Turn::Sleep(Some(later(slot, stall))),
            None => Turn::Sleep(None),
        }
    }

    /// The head tried and must wait until `slot`.
    /// The tokens of the waiters ahead of `place`.
    pub(crate) fn tokens_ahead(&self, place: Place) -> u64 {
        self.lock()
            .waiters
            .range(..place)
            .map(|(_, waiter)| u64::from(waiter.cost))
            .sum()
    }

    pub(crate) fn retry_at(&self, place: Place, slot: Instant) {
        if let Some(waiter) = self.lock().waiters.get_mut(&place) {
            waiter.slot = Some(self.context.slot_of(slot));
        }
    }

    /// Removes a waiter (admitted or cancelled). If it was the head, the next waiter is told
    /// its slot: `next_slot(cost)` says when the store would admit a request of that cost.
    pub(crate) fn leave(&self, place: Place, next_slot: impl FnOnce(u32) -> Instant) {
        let mut queue = self.lock();
        let was_head = queue.waiters.keys().next() == Some(&place);
        let Some(waiter) = queue.waiters.remove(&place) else {
            return;
        };
        self.depth.fetch_sub(1, Ordering::AcqRel);
        if self.context.aging.is_none()
            && let Some(level) = queue
                .cost_by_priority
                .get_mut(usize::from(priority_of(place)))
        {
            *level = level.saturating_sub(u64::from(waiter.cost));
        }
        if !was_head {
            return;
        }
        let queue = &mut *queue;
        let Some((_, next)) = queue.waiters.iter_mut().next() else {
            queue.head_timer.clear();
            return;
        };
        let at = next_slot(next.cost);
        next.slot = Some(self.context.slot_of(at));
        // The head's timer now wakes the next waiter at its slot; it is woken now only if
        // the slot has come (or nothing here can time it). One that has never been polled has
        // no waker yet: its first poll finds it at the head and arms the timer itself, and
        // the departed head's waker must not stay registered meanwhile.
        match &next.waker {
            Some(waker) => match queue.head_timer.arm(at, &self.context.clock, waker) {
                Armed::Yes => {}
                Armed::Due | Armed::NoRuntime => waker.wake_by_ref(),
            },
            None => queue.head_timer.clear(),
        }
    }
}

/// A cheap first look: the status, then one pass over the header names (no name is parsed or
/// hashed), so that a response without rate-limit fields costs next to nothing.
fn might_carry_hints<B>(response: &Response<B>) -> bool {
    let status = response.status().as_u16();
    if status == 429 || status == 503 {
        return true;
    }
    response.headers().keys().any(|name| {
        matches!(
            name.as_str(),
            "ratelimit" | "ratelimit-remaining" | "x-ratelimit-remaining" | "x-ratelimit-used"
        )
    })
}

#[cfg(all(test, seawall_loom))]
mod loom_tests {
    //! Model checks of the wait queue: `RUSTFLAGS="--cfg seawall_loom" cargo test -p
    //! seawall-rate-limit --lib --release loom`.
    #![allow(
        clippy::unwrap_used,
        clippy::panic,
        reason = "a model reports a failure by panicking"
    )]

    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use loom::sync::atomic::AtomicUsize;
    use loom::thread;
    use seawall_core::KeyRef;

    use super::*;
    use crate::InMemoryStore;

    const INTERVAL: Duration = Duration::from_millis(10);

    /// Counts its wake-ups.
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn entry() -> KeyRef<KeyEntry<InMemoryStore>> {
        let context = Arc::new(Context {
            clock: Clock::default(),
            origin: Instant::now(),
            hints: None,
            pauses: std::sync::atomic::AtomicU64::new(0),
            aging: None,
        });
        seawall_core::KeyState::detached(KeyEntry::new(crate::gcra::GcraCells::new(1), 0, context))
    }

    fn join(entry: &KeyEntry<InMemoryStore>, now: Instant) -> Place {
        match entry.join(
            0,
            1,
            now,
            |ahead| INTERVAL * u32::try_from(ahead).unwrap_or(u32::MAX),
            10,
            Duration::from_secs(60),
        ) {
            Joined::Queued { place, .. } => place,
            Joined::Full | Joined::TooLong(_) => panic!("a queue of at most 3 refused a waiter"),
        }
    }

    /// Everything a waiter adds is gone once it leaves.
    fn assert_idle(entry: &KeyEntry<InMemoryStore>) {
        assert_eq!(entry.depth(), 0);
        let queue = entry.lock();
        assert!(queue.waiters.is_empty());
        assert!(queue.cost_by_priority.iter().all(|cost| *cost == 0));
    }

    #[test]
    fn loom_depth_follows_joins_and_cancellations() {
        loom::model(|| {
            let entry = entry();
            let now = Instant::now();
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let entry = Arc::clone(&entry);
                    thread::spawn(move || {
                        let place = join(&entry, now);
                        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
                        let _ = entry.turn(place, now, &Waker::from(wakes), INTERVAL);
                        // Admitted or dropped by its caller: either way it leaves.
                        entry.leave(place, |_| now + INTERVAL);
                    })
                })
                .collect();
            // The depth the fast path reads without the lock agrees with the queue whenever
            // the lock is held: every join and leave updates both under it.
            {
                let queue = entry.lock();
                assert_eq!(entry.depth(), queue.waiters.len());
            }
            for waiter in waiters {
                waiter.join().unwrap();
            }
            assert_idle(&entry);
        });
    }

    #[test]
    fn loom_the_head_leaving_never_loses_the_next_waiters_wake_up() {
        loom::model(|| {
            let entry = entry();
            let now = Instant::now();
            let head = join(&entry, now);
            let next = join(&entry, now);
            let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
            // The second waiter's predicted slot has passed; it is polled while the head,
            // on another thread, is admitted and leaves.
            let polled = {
                let (entry, wakes) = (Arc::clone(&entry), Arc::clone(&wakes));
                thread::spawn(move || {
                    entry.turn(next, now + INTERVAL * 2, &Waker::from(wakes), INTERVAL)
                })
            };
            let leaving = {
                let entry = Arc::clone(&entry);
                thread::spawn(move || entry.leave(head, |_| now + INTERVAL))
            };
            leaving.join().unwrap();
            let turn = polled.join().unwrap();
            // The queue's timer goes off: whoever it was armed for is woken.
            if let Some(armed) = entry.lock().head_timer.0.take() {
                armed.wake();
            }
            let woken = wakes.0.load(Ordering::SeqCst);
            match turn {
                // Polled after the head left: it is the head now and goes at once.
                Turn::Try => assert_eq!(woken, 0),
                // Polled before: it waits for the hand-off, which armed the queue's timer for
                // it (or woke it at once), so it is woken exactly once.
                Turn::Sleep(_) => assert_eq!(woken, 1, "the hand-off was lost"),
            }
            entry.leave(next, |_| now + INTERVAL);
            assert_idle(&entry);
        });
    }

    #[test]
    fn loom_three_waiters_leaving_together_leave_nothing() {
        loom::model(|| {
            let entry = entry();
            let now = Instant::now();
            let places: Vec<_> = (0..3).map(|_| join(&entry, now)).collect();
            let leaving: Vec<_> = places
                .into_iter()
                .map(|place| {
                    let entry = Arc::clone(&entry);
                    thread::spawn(move || entry.leave(place, |_| now + INTERVAL))
                })
                .collect();
            for thread in leaving {
                thread.join().unwrap();
            }
            assert_idle(&entry);
        });
    }
}

#[cfg(test)]
mod place_tests {
    use super::*;

    #[test]
    fn places_order_by_priority_then_arrival() {
        assert!(place_of(200, 9) < place_of(100, 1));
        assert!(place_of(7, 1) < place_of(7, 2));
        assert!(place_of(u8::MAX, u64::MAX) < place_of(u8::MAX - 1, 0));
        for priority in [0, 1, 127, 254, 255] {
            assert_eq!(priority_of(place_of(priority, 12_345)), priority);
        }
    }
}
