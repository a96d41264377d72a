//! A request's hold on its layer's state without a locked instruction per request.
//!
//! A request in flight holds its layer's state by reference count, and an `Arc` cloned at the
//! call and dropped at the end costs two locked read-modify-writes: about 16 ns together on
//! the machines the benchmarks run on, even when no other thread touches the count, which is
//! more than the rest of a breaker's closed path.
//!
//! When a layer has one state for every request ([`SingleState`]), a finished request's
//! handle is put in a slot of its thread's, and the next request on that thread takes it from
//! there instead of cloning: in the steady state no reference count changes. Each state has
//! one of [`SLOTS`] slots per thread, given out in turn as states are made, so that the few
//! layers of one stack usually keep theirs apart (two states that share a slot take turns,
//! and clone when the other one is there). Keyed states are not kept: their handles' counts
//! are their in-flight requests, which decide when an idle key may go.
//!
//! When a layer's single state is dropped, the dropping thread lets go of its own spare at
//! once; another thread's spare is let go the next time that thread takes or puts back a
//! handle on any single state, or when it exits. Until then it keeps the state, and what the
//! state holds (a breaker's transition listeners, say), alive; at thread exit the state is
//! dropped among the thread's other thread-locals.

use std::any::Any;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::keyed::{KeyRef, KeyState};

/// How many slots each thread has for spare handles.
pub const SLOTS: usize = 8;

// A slot's index is kept in a byte.
const _: () = assert!(SLOTS <= 256);

/// How many single states have been dropped in the process: a thread whose slots last saw
/// another number lets go of the handles they keep on dropped states.
static RETIREMENTS: AtomicU64 = AtomicU64::new(0);

/// The slot the next single state made will use.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// A spare handle whose value type the slot has forgotten: it can still say whether its
/// layer dropped it, and be turned back into its type (through `Any`).
trait Spare: Any + Send + Sync {
    fn is_retired(&self) -> bool;
}

impl<V: Send + Sync + 'static> Spare for KeyState<V> {
    fn is_retired(&self) -> bool {
        self.is_evicted()
    }
}

/// One thread's spare handles.
struct Spares {
    slots: [Cell<Option<Arc<dyn Spare>>>; SLOTS],
    /// The value of [`RETIREMENTS`] when this thread last let go of retired states' spares.
    retirements_seen: Cell<u64>,
}

thread_local! {
    static SPARES: Spares = const {
        Spares {
            slots: [const { Cell::new(None) }; SLOTS],
            retirements_seen: Cell::new(0),
        }
    };
}

impl Spares {
    /// Lets go of the spares on states dropped since this thread last looked.
    #[inline]
    fn sweep_if_due(&self) {
        let retirements = RETIREMENTS.load(Ordering::Acquire);
        if self.retirements_seen.get() != retirements {
            self.retirements_seen.set(retirements);
            self.sweep();
        }
    }

    #[cold]
    fn sweep(&self) {
        for slot in &self.slots {
            let spare = slot.take();
            if let Some(spare) = spare
                && !spare.is_retired()
            {
                slot.set(Some(spare));
            }
        }
    }
}

/// A layer's state when every request has the same one: requests hold it through
/// [`hold`](Self::hold), which reuses their thread's spare handle.
pub struct SingleState<V: Send + Sync + 'static> {
    handle: KeyRef<V>,
}

impl<V: Send + Sync + 'static> SingleState<V> {
    /// The single state holding `value`.
    pub fn new(value: V) -> Self {
        // Below `SLOTS`, which fits a byte.
        let slot = (NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS) as u8;
        Self {
            handle: KeyState::detached_in(value, Some(slot)),
        }
    }

    /// A handle for a request: the calling thread's spare one when it has it, else a clone.
    #[inline]
    pub fn hold(&self) -> Held<V> {
        let target = Arc::as_ptr(&self.handle);
        let index = usize::from(self.handle.spare_slot().unwrap_or_default());
        let spare = SPARES
            .try_with(|spares| {
                spares.sweep_if_due();
                let slot = &spares.slots[index];
                let spare = slot.take()?;
                if std::ptr::addr_eq(Arc::as_ptr(&spare), target) {
                    let spare: Arc<dyn Any + Send + Sync> = spare;
                    spare.downcast::<KeyState<V>>().ok()
                } else {
                    // Another state's: left where it was.
                    slot.set(Some(spare));
                    None
                }
            })
            .ok()
            .flatten();
        Held {
            handle: Some(spare.unwrap_or_else(|| Arc::clone(&self.handle))),
        }
    }
}

impl<V: Send + Sync + 'static> std::ops::Deref for SingleState<V> {
    type Target = KeyRef<V>;

    #[inline]
    fn deref(&self) -> &KeyRef<V> {
        &self.handle
    }
}

impl<V: Send + Sync + 'static + std::fmt::Debug> std::fmt::Debug for SingleState<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.handle.fmt(f)
    }
}

impl<V: Send + Sync + 'static> Drop for SingleState<V> {
    fn drop(&mut self) {
        self.handle.retire();
        // Released after the mark, so that a thread that sees the new count sees the mark.
        RETIREMENTS.fetch_add(1, Ordering::Release);
        // This thread's spare goes now; the others' at their threads' next use.
        let _ = SPARES.try_with(Spares::sweep_if_due);
    }
}

/// A request's handle on its layer's state. One on a [`SingleState`]'s state is put back in
/// its thread's slot when dropped; one on a key's state is dropped as usual.
///
/// One word, so that it moves as one: built and copied on right after as a wider value, its
/// pieces would cost a store-forwarding stall. The slot is the state's to say.
pub struct Held<V: Send + Sync + 'static> {
    /// `None` only while being dropped.
    handle: Option<KeyRef<V>>,
}

impl<V: Send + Sync + 'static> Held<V> {
    /// Holds `handle`, as [`SingleState::hold`] would if it is a single state's (then it is
    /// put back in its thread's slot when dropped); a key's handle is dropped as usual.
    pub fn new(handle: KeyRef<V>) -> Self {
        Self {
            handle: Some(handle),
        }
    }

    /// The handle. A clone of it is an ordinary reference: dropped as usual.
    #[inline]
    pub fn handle(&self) -> &KeyRef<V> {
        match &self.handle {
            Some(handle) => handle,
            None => unreachable!("a held handle is there until it is dropped"),
        }
    }
}

/// Another handle on the same state (a clone of a single state's goes back to a slot too).
impl<V: Send + Sync + 'static> Clone for Held<V> {
    fn clone(&self) -> Self {
        Self {
            handle: Some(Arc::clone(self.handle())),
        }
    }
}

impl<V: Send + Sync + 'static> std::ops::Deref for Held<V> {
    type Target = KeyRef<V>;

    #[inline]
    fn deref(&self) -> &KeyRef<V> {
        self.handle()
    }
}

impl<V: Send + Sync + 'static + std::fmt::Debug> std::fmt::Debug for Held<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.handle().fmt(f)
    }
}

impl<V: Send + Sync + 'static> Drop for Held<V> {
    #[inline]
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        let Some(slot) = handle.spare_slot() else {
            return;
        };
        let displaced = SPARES.try_with(|spares| -> Option<Arc<dyn Spare>> {
            spares.sweep_if_due();
            // Asked after the sweep: a state retired before the count it saw is seen retired
            // here, and one retired after it is swept at this thread's next use. Asked
            // before, a retirement in between would be counted as seen with this handle
            // not yet parked, and it would stay parked.
            if handle.is_evicted() {
                return Some(handle);
            }
            // A handle already in the slot (another state's, or a second spare of this
            // one's when requests overlap) is dropped in its place, outside the
            // thread-local.
            spares.slots[usize::from(slot)].replace(Some(handle))
        });
        drop(displaced);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_requests_handle_is_taken_again_by_the_next_request_on_its_thread() {
        let state = SingleState::new(7u32);
        let first = state.hold();
        assert_eq!(***first, 7);
        assert_eq!(Arc::strong_count(&state), 2);
        drop(first);
        // Kept in the thread's slot, not dropped.
        assert_eq!(Arc::strong_count(&state), 2);
        let second = state.hold();
        // Taken from the slot: no new reference.
        assert_eq!(Arc::strong_count(&state), 2);
        let third = state.hold();
        // The slot is empty: a clone.
        assert_eq!(Arc::strong_count(&state), 3);
        drop(second);
        // The slot holds one spare; the other is dropped in its place.
        drop(third);
        assert_eq!(Arc::strong_count(&state), 2);
    }

    #[test]
    fn a_dropped_states_spare_on_the_dropping_thread_is_let_go_at_once() {
        let state = SingleState::new(String::from("dropped"));
        drop(state.hold());
        let weak = Arc::downgrade(&*state);
        // The spare and the state's own.
        assert_eq!(weak.strong_count(), 2);
        drop(state);
        // Another thread's sweep at its next use is what lets it go there; on this thread,
        // the drop itself did.
        assert_eq!(weak.strong_count(), 0);
    }

    #[test]
    fn another_threads_spare_on_a_dropped_state_is_let_go_at_that_threads_next_use() {
        let state = SingleState::new(String::from("dropped"));
        let weak = Arc::downgrade(&*state);
        let weak_here = weak.clone();
        let (park, parked) = std::sync::mpsc::channel();
        let (go, went) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let held = state.hold();
            scope.spawn(move || {
                drop(held);
                // Parked here, besides the state's own.
                assert_eq!(weak.strong_count(), 2);
                park.send(()).expect("the test waits");
                went.recv().expect("the test says when");
                // Any use of the thread's slots sweeps them: a state's own hold here.
                let other = SingleState::new(String::from("other"));
                let held = other.hold();
                assert_eq!(weak.strong_count(), 0);
                drop(held);
            });
            parked.recv().expect("the thread parks its spare");
            drop(state);
            // The other thread's spare keeps it until that thread's next use.
            assert_eq!(weak_here.strong_count(), 1);
            go.send(()).expect("the thread waits");
        });
    }

    #[test]
    fn a_handle_released_after_its_state_was_dropped_is_not_kept() {
        let state = SingleState::new(1u8);
        let held = state.hold();
        let weak = Arc::downgrade(&*state);
        drop(state);
        drop(held);
        assert_eq!(weak.strong_count(), 0);
    }

    #[test]
    fn a_keyed_handle_is_dropped_as_usual() {
        let handle = KeyState::detached(3u64);
        drop(Held::new(Arc::clone(&handle)));
        assert_eq!(Arc::strong_count(&handle), 1);
    }

    #[test]
    fn states_that_share_a_slot_each_get_a_handle_on_their_own_value() {
        let states: Vec<_> = (0..SLOTS as u32 * 2 + 1).map(SingleState::new).collect();
        for _ in 0..2 {
            for (value, state) in (0u32..).zip(&states) {
                let held = state.hold();
                assert_eq!(***held, value);
            }
        }
        // Whatever the slots hold, no state has more than its own reference and one spare.
        for state in &states {
            assert!(Arc::strong_count(state) <= 2);
        }
    }

    #[test]
    fn a_handle_dropped_on_another_thread_is_kept_there() {
        let state = SingleState::new(9i32);
        let held = state.hold();
        std::thread::scope(|scope| {
            let state = &state;
            scope.spawn(move || {
                drop(held);
                assert_eq!(Arc::strong_count(state), 2);
                // That thread's next request takes it.
                let again = state.hold();
                assert_eq!(Arc::strong_count(state), 2);
                drop(again);
            });
        });
    }
}
