//! Coalescing: at most one call to Redis per key at a time; the admissions that arrive while
//! it is out go together in the next call.
//!
//! A key's admissions are decided by one Lua script run per call, in arrival order, exactly
//! as the same number of calls at that instant would be. Each admission still takes one round
//! trip (the one its batch travels in), but Redis runs the script once per batch instead of
//! once per admission, so a busy key costs Redis a fraction of a script per admission.
//! Redis's one thread, not the network, is what limits a key's admissions per second.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use seawall_rate_limit::{Decision, Quota, StoreError};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::store::{Inner, SlotState};

/// The most admissions one script call carries; more wait for the next call.
pub(crate) const MAX_BATCH: usize = 256;

/// The answer an admission waits for.
pub(crate) type Answer = Result<Decision, StoreError>;

/// Admissions of one key waiting for their call.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Whether a task is sending this key's calls (and will take what is waiting).
    sending: bool,
    waiting: Vec<Waiting>,
}

/// One admission waiting to be sent, or a lease's refill.
#[derive(Debug)]
pub(crate) struct Waiting {
    pub(crate) cost: u32,
    pub(crate) now: Instant,
    /// The quotas asked for, when they differ from the key's usual ones (a limiter passes the
    /// same quotas every time, so this is `None` but for a store shared oddly).
    pub(crate) quotas: Option<Box<[Quota]>>,
    /// Where the caller waits; `None` for a refill, which takes tokens for the lease pool
    /// ahead of need and has nobody waiting on it.
    pub(crate) answer: Option<oneshot::Sender<Answer>>,
}

impl Waiting {
    /// A refill of the lease pool, asked for at `now`.
    pub(crate) fn refill(now: Instant) -> Self {
        Self {
            cost: 0,
            now,
            quotas: None,
            answer: None,
        }
    }

    pub(crate) fn is_refill(&self) -> bool {
        self.answer.is_none()
    }

    /// Whether the caller has gone (a refill's is never waited on, so never gone).
    pub(crate) fn is_abandoned(&self) -> bool {
        self.answer.as_ref().is_some_and(oneshot::Sender::is_closed)
    }

    pub(crate) fn reply(self, answer: Answer) {
        if let Some(sender) = self.answer {
            // The caller may have gone; the answer is then nobody's.
            let _ = sender.send(answer);
        }
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Nothing here can leave the queue half-changed, so a panic elsewhere does not
        // spoil it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `waiting`, unless `bound` wait already once those whose callers have gone are
    /// dropped (then it is handed back); true when the caller must start the key's sending
    /// task.
    pub(crate) fn push(&self, waiting: Waiting, bound: usize) -> Result<bool, Waiting> {
        let mut state = self.lock();
        if state.waiting.len() >= bound {
            state.waiting.retain(|waiting| !waiting.is_abandoned());
            if state.waiting.len() >= bound {
                return Err(waiting);
            }
        }
        state.waiting.push(waiting);
        Ok(!std::mem::replace(&mut state.sending, true))
    }

    /// Moves the next batch into `batch`: the oldest waiting admissions that ask for the same
    /// quotas, at most [`MAX_BATCH`]. False, and the task's turn ends, when none wait.
    fn next_batch(&self, batch: &mut Vec<Waiting>) -> bool {
        let mut state = self.lock();
        let Some(first) = state.waiting.first() else {
            state.sending = false;
            return false;
        };
        let alike = state
            .waiting
            .iter()
            .take(MAX_BATCH)
            .take_while(|waiting| waiting.quotas == first.quotas)
            .count();
        batch.extend(state.waiting.drain(..alike));
        true
    }

    /// How many wait (the live and the abandoned).
    pub(crate) fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Whether nothing waits and no call is out: the key may be forgotten without a second
    /// task ever sending for it.
    pub(crate) fn is_quiet(&self) -> bool {
        let state = self.lock();
        !state.sending && state.waiting.is_empty()
    }

    /// Ends the sending task's turn without sending: everything waiting is handed back.
    pub(crate) fn stop(&self) -> Vec<Waiting> {
        let mut state = self.lock();
        state.sending = false;
        std::mem::take(&mut state.waiting)
    }
}

/// Sends `slot`'s calls until none wait. Spawned by the admission that found no task sending.
///
/// The guard exists before the task is first polled: a task dropped unpolled (spawned as its
/// runtime shuts down) still hands the key back, so a later admission starts a new task.
pub(crate) fn send_batches(
    inner: Arc<Inner>,
    slot: Arc<SlotState>,
) -> impl Future<Output = ()> + Send + 'static {
    let mut sending = Sending {
        inner,
        slot,
        batch: Vec::new(),
        done: false,
    };
    async move {
        while sending.slot.queue.next_batch(&mut sending.batch) {
            let Sending {
                inner, slot, batch, ..
            } = &mut sending;
            inner.send(slot, batch).await;
        }
        sending.finish();
    }
}

/// A key's sending task. If it is dropped before it ends (its runtime shutting down), the
/// admissions in the call that was out and those still waiting get the failure policy's answer
/// instead of waiting forever, and a later admission starts a new task.
struct Sending {
    inner: Arc<Inner>,
    slot: Arc<SlotState>,
    /// The admissions of the call being sent.
    batch: Vec<Waiting>,
    done: bool,
}

impl Sending {
    /// The queue was found empty and handed back: nothing is left to answer.
    fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let error = StoreError::new("the task sending this key's calls stopped");
        let stopped = std::mem::take(&mut self.batch);
        let waiting = stopped.into_iter().chain(self.slot.queue.stop());
        self.inner.answer_unavailable(&self.slot, waiting, &error);
    }
}
