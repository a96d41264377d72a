//! The breaker as a [`Gate`]: a call it admitted that a layer below held back (a rate
//! limiter's queue) is asked about again before it is sent.

use std::fmt;

use seawall_core::admission::Gate;
use tokio::time::Instant;
use tower::BoxError;

use super::{Admission, Breaker, Word};
use crate::error::CircuitOpen;
use crate::event::State;
use crate::sync::Ordering;

const PROBE: u64 = 1 << 32;
const TRACKED: u64 = 1 << 33;

impl Admission {
    /// The admission packed into a [`Gate`] ticket.
    pub(crate) fn ticket(self) -> u64 {
        u64::from(self.generation)
            | if self.probe { PROBE } else { 0 }
            | if self.tracked { TRACKED } else { 0 }
    }

    fn from_ticket(ticket: u64) -> Self {
        Admission {
            generation: ticket as u32,
            probe: ticket & PROBE != 0,
            tracked: ticket & TRACKED != 0,
        }
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
                if admission.probe && admission.generation == generation && in_time {
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
