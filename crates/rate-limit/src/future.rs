//! The response future of [`RateLimit`](crate::RateLimit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use seawall_core::admission::Readmission;
use seawall_core::{Held, QueueWait};
use tokio::time::{Instant, Sleep, sleep_until};
use tower::Service;

use crate::error::{RateLimitError, Rejected};
use crate::limiter::{Limiter, Settling};
use crate::queue::{KeyEntry, Place, Turn, later, stall_grace};
use crate::store::{Decision, RateStore};

/// How long a waiter that waits to be told its turn sleeps before looking again: if the head
/// ahead of it is never polled, it must come back to find the head stalled.
const UNTIL_TOLD: Duration = Duration::from_millis(250);

/// A request waiting for its turn. Dropping it leaves the queue at once and, if it was at
/// the head, hands the turn to the next waiter.
pub(crate) struct Queued<S, B, K, St: RateStore> {
    /// The service to ready and the request to send, boxed as the `Readying` state takes
    /// them when the request is admitted: inline, the request would widen every response
    /// future of this layer and of the layers above, which are moved whole, to save a
    /// waiting request one allocation.
    parts: Option<Box<(S, Request<B>)>>,
    limiter: Arc<Limiter<K, St>>,
    entry: Held<KeyEntry<St>>,
    cost: u32,
    /// When it was called, in nanoseconds from the limiter's origin (one word, not two).
    since: u64,
    /// An answer still out with a shared store, and when it was asked for (a refund gives
    /// back only what the quotas still hold from then). Boxed: a store that answers at once
    /// (the in-process one) never leaves one here, so its waiters do not carry the room.
    attempt: Option<Box<(St::Future, Instant)>>,
    pub(crate) place: Option<Place>,
    /// Whether it ever joined the queue (a remote store's first answer may admit it without).
    pub(crate) joined: bool,
    polled: bool,
    /// The link to a layer above that admitted it, asked again before a token is taken.
    pub(crate) readmission: Option<Readmission>,
}

impl<S, B, K, St: RateStore> Queued<S, B, K, St> {
    pub(crate) fn new(
        service: S,
        request: Request<B>,
        limiter: Arc<Limiter<K, St>>,
        entry: Held<KeyEntry<St>>,
        cost: u32,
        since: Instant,
        attempt: Option<St::Future>,
    ) -> Self {
        let asked = since;
        let since = entry.context.nanos(since);
        Self {
            parts: Some(Box::new((service, request))),
            limiter,
            entry,
            cost,
            since,
            attempt: attempt.map(|attempt| Box::new((attempt, asked))),
            place: None,
            joined: false,
            polled: false,
            readmission: None,
        }
    }

    /// When `max_wait` runs out for a request that joined the queue.
    fn give_up_at(&self) -> Option<Instant> {
        let max_wait = self.limiter.max_wait()?;
        Some(later(self.entry.context.instant(self.since), max_wait))
    }

    /// The refusal of a waiter whose `max_wait` ran out at `give_up`, with the wait now
    /// predicted for it from when it was called; `None` if its turn is due within its
    /// budget after all (the head's hand-off is due this instant), unless it is well past.
    fn too_long(&self, place: Place, now: Instant, give_up: Instant) -> Option<Rejected> {
        let max_wait = self.limiter.max_wait()?;
        let since = self.entry.context.instant(self.since);
        let ahead = self.entry.tokens_ahead(place);
        let remaining = self
            .limiter
            .predict(&self.entry, ahead, self.cost, now, Duration::ZERO);
        let predicted = now.saturating_duration_since(since) + remaining;
        let overdue = now >= later(give_up, stall_grace(self.limiter.interval));
        (predicted > max_wait || overdue).then_some(Rejected::WaitTooLong {
            predicted: predicted.max(max_wait),
            max_wait,
        })
    }

    fn leave(&mut self, now: Instant) {
        if let Some(place) = self.place.take() {
            let (limiter, entry) = (&self.limiter, &self.entry);
            entry.leave(place, |cost| limiter.next_slot(entry, cost, now));
        }
    }
}

impl<S, B, K, St: RateStore> Drop for Queued<S, B, K, St> {
    fn drop(&mut self) {
        if self.place.is_some() {
            self.leave(self.limiter.now());
            self.limiter
                .counters
                .cancelled
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

pin_project! {
    /// The response future of [`RateLimit`](crate::RateLimit).
    pub struct ResponseFuture<S, B, K, St>
    where
        S: Service<Request<B>>,
        St: RateStore,
    {
        #[pin]
        state: State<S, B, K, St>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, K, St>
    where
        S: Service<Request<B>>,
        St: RateStore,
    {
        Rejected { rejected: Option<Rejected> },
        // Admitted; the service below is readied before it is called. Boxed: the request is
        // large, and an admitted request whose service is ready (the steady state) would
        // otherwise carry its room and copy it. A waiting request's state is not boxed
        // beyond its service and request (see `Queued`): a waiter would then carry the box
        // and this future's own room, past what a waiter may take (256 bytes beyond its
        // request).
        Readying {
            readying: Option<Box<(S, Request<B>)>>,
            entry: Held<KeyEntry<St>>,
            waited: Option<Duration>,
            settling: Option<Box<Settling<K, St>>>,
        },
        Called {
            #[pin]
            future: S::Future,
            entry: Held<KeyEntry<St>>,
            waited: Option<Duration>,
            settling: Option<Box<Settling<K, St>>>,
        },
        Queued {
            #[pin]
            sleep: Sleep,
            queued: Queued<S, B, K, St>,
        },
    }
}

impl<S, B, K, St> fmt::Debug for ResponseFuture<S, B, K, St>
where
    S: Service<Request<B>>,
    St: RateStore,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, K, St> ResponseFuture<S, B, K, St>
where
    S: Service<Request<B>>,
    St: RateStore,
{
    pub(crate) fn rejected(rejected: Rejected) -> Self {
        tracing::debug!(reason = rejected.reason(), "rate limiter refused a request");
        Self {
            state: State::Rejected {
                rejected: Some(rejected),
            },
        }
    }

    pub(crate) fn called(
        future: S::Future,
        entry: Held<KeyEntry<St>>,
        settling: Option<Box<Settling<K, St>>>,
    ) -> Self {
        Self {
            state: State::Called {
                future,
                entry,
                waited: None,
                settling,
            },
        }
    }

    pub(crate) fn readying(
        service: S,
        request: Request<B>,
        entry: Held<KeyEntry<St>>,
        settling: Option<Box<Settling<K, St>>>,
    ) -> Self {
        Self {
            state: State::Readying {
                readying: Some(Box::new((service, request))),
                entry,
                waited: None,
                settling,
            },
        }
    }

    pub(crate) fn queued(queued: Queued<S, B, K, St>, slot: Instant) -> Self {
        // The waiter's own timer is the stalled-head fallback; the head's timer, in the
        // queue, wakes it at its slot.
        let fallback = later(slot, stall_grace(queued.limiter.interval));
        let fallback = queued.entry.context.clock.timer_instant(fallback);
        Self {
            state: State::Queued {
                sleep: sleep_until(fallback),
                queued,
            },
        }
    }
}

impl<S, B, K, St, ResBody> Future for ResponseFuture<S, B, K, St>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    K: Clone + Eq + std::hash::Hash + fmt::Debug + Send + Sync + 'static,
    St: RateStore,
    St::Future: Unpin,
{
    type Output = Result<Response<ResBody>, RateLimitError<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Rejected { rejected } => {
                    return match rejected.take() {
                        Some(rejected) => Poll::Ready(Err(RateLimitError::Rejected(rejected))),
                        None => Poll::Pending,
                    };
                }
                StateProj::Readying {
                    readying,
                    entry,
                    waited,
                    settling,
                } => {
                    let Some(parts) = readying.as_mut() else {
                        return Poll::Pending;
                    };
                    if let Err(error) = ready!(parts.0.poll_ready(cx)) {
                        readying.take();
                        return Poll::Ready(Err(RateLimitError::Inner(error)));
                    }
                    let Some(parts) = readying.take() else {
                        return Poll::Pending;
                    };
                    let (mut service, request) = *parts;
                    State::Called {
                        future: service.call(request),
                        entry: entry.clone(),
                        waited: *waited,
                        settling: settling.take(),
                    }
                }
                StateProj::Called {
                    future,
                    entry,
                    waited,
                    settling,
                } => {
                    let mut result = ready!(future.poll(cx));
                    if let Ok(response) = &mut result {
                        entry.observe(response);
                        if let Some(settling) = settling.take() {
                            settling.settle(entry, response);
                        }
                        if let Some(waited) = waited.filter(|w| !w.is_zero()) {
                            response.extensions_mut().insert(QueueWait(waited));
                        }
                    }
                    return Poll::Ready(result.map_err(RateLimitError::Inner));
                }
                StateProj::Queued { sleep, queued } => match poll_queued(sleep, queued, cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(next) => next,
                },
            };
            state.set(next);
        }
    }
}

/// Drives a waiting request until it is admitted (then calls the inner service) or refused.
fn poll_queued<S, B, K, St, ResBody>(
    mut sleep: Pin<&mut Sleep>,
    queued: &mut Queued<S, B, K, St>,
    cx: &mut Context<'_>,
) -> Poll<State<S, B, K, St>>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    K: Clone + Eq + std::hash::Hash + fmt::Debug + Send + Sync + 'static,
    St: RateStore,
    St::Future: Unpin,
{
    let counters = &queued.limiter.counters;
    if queued.polled {
        counters.wakeups.fetch_add(1, Ordering::Relaxed);
    }
    queued.polled = true;
    // A store's answer that came at once, and when it was asked for, for the next turn of
    // the loop.
    let mut answered = None;
    loop {
        let now = queued.limiter.now();
        let decision = match (answered.take(), queued.attempt.as_mut()) {
            (Some(answered), _) => Some(answered),
            (None, Some(attempt)) => {
                let Poll::Ready(decision) = Pin::new(&mut attempt.0).poll(cx) else {
                    return out_with_the_store(sleep, queued, now, cx);
                };
                let asked = attempt.1;
                queued.attempt = None;
                Some((decision, asked))
            }
            (None, None) => None,
        };
        if let Some((decision, asked)) = decision {
            if !matches!(decision, Ok(Decision::Admitted)) {
                queued.limiter.adaptive_refund(&queued.entry, queued.cost);
            }
            match decision {
                Ok(Decision::Admitted) => return Poll::Ready(admit(queued, now, asked)),
                Ok(Decision::Wait(wait)) => match queued.place {
                    Some(place) => queued.entry.retry_at(place, later(now, wait)),
                    None => {
                        let joined = queued.limiter.join(
                            &queued.entry,
                            queued.parts.as_deref().map(|(_, request)| request),
                            queued.cost,
                            now,
                            wait,
                        );
                        match joined {
                            Ok((place, _)) => {
                                queued.place = Some(place);
                                queued.joined = true;
                            }
                            Err(rejected) => return Poll::Ready(refuse(queued, rejected)),
                        }
                    }
                },
                Ok(Decision::Oversize) => {
                    queued.leave(now);
                    return Poll::Ready(refuse(queued, Rejected::Oversize { cost: queued.cost }));
                }
                Err(error) => {
                    queued.leave(now);
                    return Poll::Ready(refuse(queued, Rejected::StoreUnavailable(error)));
                }
            }
            continue;
        }
        let Some(place) = queued.place else {
            return Poll::Pending;
        };
        match queued
            .entry
            .turn(place, now, cx.waker(), queued.limiter.interval)
        {
            Turn::Try => {
                if let Some(Err(withdrawn)) = queued.readmission.as_ref().map(Readmission::check) {
                    queued.leave(now);
                    return Poll::Ready(refuse(queued, Rejected::Withdrawn(withdrawn)));
                }
                let context = &queued.entry.context;
                if let Some(until) = queued.entry.paused_until(now) {
                    queued.entry.retry_at(place, context.instant(until));
                    continue;
                }
                let limiter = &queued.limiter;
                if let Some(paced) = limiter.adaptive_gate(&queued.entry, queued.cost, now) {
                    queued.entry.retry_at(place, later(now, paced));
                    continue;
                }
                let mut attempt = limiter.store.acquire(
                    &queued.entry.slot,
                    limiter.quotas_of(&queued.entry),
                    queued.cost,
                    now,
                );
                match Pin::new(&mut attempt).poll(cx) {
                    Poll::Ready(decision) => answered = Some((decision, now)),
                    Poll::Pending => queued.attempt = Some(Box::new((attempt, now))),
                }
            }
            Turn::Sleep(slot) => {
                let give_up = queued.give_up_at();
                if let Some(give_up) = give_up
                    && now >= give_up
                    && let Some(rejected) = queued.too_long(place, now, give_up)
                {
                    queued.leave(now);
                    return Poll::Ready(refuse(queued, rejected));
                }
                let deadline = slot.unwrap_or_else(|| {
                    // Waiting to be told by the hand-off; the fallback look comes no sooner
                    // than the end of a server-driven pause, which no waiter can beat.
                    let context = &queued.entry.context;
                    let fallback = now + UNTIL_TOLD;
                    match queued.entry.paused_until(now) {
                        Some(until) => fallback.max(context.instant(until) + UNTIL_TOLD),
                        None => fallback,
                    }
                });
                // Never held past `max_wait`: it wakes then to be refused, unless its turn is
                // that very instant (the hand-off, due now, then wakes it, or its stalled-head
                // look after the grace refuses it).
                let deadline = match give_up {
                    Some(give_up) if now < give_up => deadline.min(give_up),
                    Some(give_up) => {
                        deadline.min(later(give_up, stall_grace(queued.limiter.interval)))
                    }
                    None => deadline,
                };
                queued
                    .entry
                    .context
                    .clock
                    .reset_timer(sleep.as_mut(), deadline);
                ready!(sleep.as_mut().poll(cx));
            }
        }
    }
}

/// A request whose answer is still out with a shared store waits no longer than `max_wait`
/// from its call, as it would in line: at that instant it is refused and its attempt dropped
/// (which takes nothing if the store had not sent it yet).
fn out_with_the_store<S, B, K, St>(
    mut sleep: Pin<&mut Sleep>,
    queued: &mut Queued<S, B, K, St>,
    now: Instant,
    cx: &mut Context<'_>,
) -> Poll<State<S, B, K, St>>
where
    S: Service<Request<B>>,
    St: RateStore,
{
    let (Some(max_wait), Some(deadline)) = (queued.limiter.max_wait(), queued.give_up_at()) else {
        return Poll::Pending;
    };
    let since = queued.entry.context.instant(queued.since);
    queued
        .entry
        .context
        .clock
        .reset_timer(sleep.as_mut(), deadline);
    ready!(sleep.as_mut().poll(cx));
    queued.attempt = None;
    queued.leave(now);
    let waited = queued.limiter.now().saturating_duration_since(since);
    Poll::Ready(refuse(
        queued,
        Rejected::WaitTooLong {
            predicted: waited,
            max_wait,
        },
    ))
}

/// Admits a waiting request at `now`, whose tokens the store took when asked at `asked`.
fn admit<S, B, K, St, ResBody>(
    queued: &mut Queued<S, B, K, St>,
    now: Instant,
    asked: Instant,
) -> State<S, B, K, St>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    K: Clone + Eq + std::hash::Hash + fmt::Debug + Send + Sync + 'static,
    St: RateStore,
{
    queued.leave(now);
    let waited = now.saturating_duration_since(queued.entry.context.instant(queued.since));
    if let Some(readmission) = &queued.readmission {
        readmission.record_wait(waited);
    }
    let counters = &queued.limiter.counters;
    counters.admitted.add(1);
    if queued.joined {
        counters.admitted_after_wait.fetch_add(1, Ordering::Relaxed);
        counters.wait_nanos.fetch_add(
            u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
    match queued.parts.take() {
        Some(parts) => State::Readying {
            readying: Some(parts),
            entry: queued.entry.clone(),
            waited: Some(waited),
            settling: queued.limiter.settling(queued.cost, asked),
        },
        // Admission happens once per request; the parts are still here.
        None => State::Rejected { rejected: None },
    }
}

fn refuse<S, B, K, St>(queued: &Queued<S, B, K, St>, rejected: Rejected) -> State<S, B, K, St>
where
    S: Service<Request<B>>,
    St: RateStore,
{
    queued.limiter.counters.count_refusal(&rejected);
    tracing::debug!(reason = rejected.reason(), "rate limiter refused a request");
    State::Rejected {
        rejected: Some(rejected),
    }
}
