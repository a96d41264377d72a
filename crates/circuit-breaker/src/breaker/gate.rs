//! The breaker as a [`Gate`]: a call it admitted that a layer below held back (a rate
//! limiter's queue) is asked about again before it is sent.

use std::fmt;

use seawall_core::admission::Gate;
use tokio::time::Instant;
use tower::BoxError;

use super::{ADMISSION_PROBE, ADMISSION_TRACKED, Admission, Breaker, Word};
use crate::error::CircuitOpen;
use crate::event::State;
use crate::sync::Ordering;

impl Admission {
    /// The admission as a [`Gate`] ticket.
    pub(crate) fn ticket(self) -> u64 {
        self.0
    }

    fn from_ticket(ticket: u64) -> Self {
        Admission(ticket & (u64::from(u32::MAX) | ADMISSION_PROBE | ADMISSION_TRACKED))
    }
}

impl<K: fmt::Debug> Breaker<K> {
    /// Whether a call admitted with `admission` may still be sent now: yes while the breaker
    /// is closed (whatever happened in between), and for a probe of the half-open round still
    /// in progress; otherwise refused as a new call would be (counted as a refusal), never
    /// turned into a probe.
    pub(crate) fn readmit(&self, admission: Admission) -> Result<(), CircuitOpen> {
        let word = Word(self.word.load(Ordering::Acquire));
        let generation = word.generation();
        match word.state() {
            State::Closed | State::MetricsOnly | State::Disabled => Ok(()),
            State::HalfOpen => {
                let deadline = self.half_open_deadline(generation);
                let in_time =
                    deadline.is_some_and(|deadline| self.nanos(Instant::now()) < deadline);
                if admission.probe() && admission.generation() == generation && in_time {
                    return Ok(());
                }
                Err(self.reject(State::HalfOpen, self.half_open_retry_at(deadline)))
            }
            State::ForcedOpen => Err(self.reject(State::ForcedOpen, None)),
            State::Open => {
                let until = self.phase(generation).map(|until| self.instant(until));
                Err(self.reject(State::Open, until))
            }
        }
    }
}

impl<K: fmt::Debug + Send + Sync + 'static> Gate for Breaker<K> {
    fn readmit(&self, ticket: u64) -> Result<(), BoxError> {
        Breaker::readmit(self, Admission::from_ticket(ticket)).map_err(BoxError::from)
    }
}

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use std::sync::Arc;

    use super::super::Verdict;
    use super::*;
    use crate::config::Config;

    #[tokio::test(start_paused = true)]
    async fn a_held_call_is_readmitted_only_while_the_breaker_would_admit_it_and_refused_as_it_refuses()
     {
        let config = Config::default();
        let open_for = config.open.ceiling(1);
        let breaker = Breaker::new((), Arc::new(config), 1);
        let held = breaker.try_acquire().expect("closed");
        assert_eq!(breaker.readmit(held), Ok(()));

        breaker.force(State::Open);
        let refusal = breaker.readmit(held).expect_err("open");
        let new_call = breaker.try_acquire().expect_err("open");
        assert_eq!(refusal, new_call, "refused as a new call is");
        assert_eq!(refusal.state(), State::Open);
        // The open time, jittered below its ceiling.
        let reopens = refusal.retry_at().expect("an open breaker says when");
        assert!(reopens > Instant::now() && reopens <= Instant::now() + open_for);

        // The open time over, the next call probes: a probe of this round is readmitted, the
        // call held since the breaker was closed is not.
        tokio::time::advance(reopens - Instant::now()).await;
        let probe = breaker.try_acquire().expect("the first probe");
        assert_eq!(breaker.readmit(probe), Ok(()));
        let refusal = breaker.readmit(held).expect_err("half-open: not a probe");
        assert_eq!(refusal.state(), State::HalfOpen);
        assert!(refusal.retry_at().is_some_and(|at| at > Instant::now()));

        // Closed again, whatever happened in between, the held call may go.
        let mut probes = vec![probe];
        while probes.len() < breaker.config().half_open_successes as usize {
            probes.push(breaker.try_acquire().expect("a probe permit"));
        }
        for probe in probes {
            breaker.record(
                probe,
                Verdict::Success { slow: false },
                Some(Instant::now()),
            );
        }
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.readmit(held), Ok(()));
        // Each refusal counted once: two readmissions and the new call.
        assert_eq!(breaker.counters.rejected.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_ticket_carries_the_admission_whole() {
        for admission in [
            Admission::new(u32::MAX, true, false),
            Admission::new(7, false, true),
        ] {
            assert_eq!(Admission::from_ticket(admission.ticket()), admission);
        }
    }
}
