//! Request extensions that steer the limiter per request.

/// A request's place in line: higher goes first; equal priorities are first come, first
/// served. Requests without one have priority 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Priority(pub u8);

/// How many tokens a request takes from every quota (default 1), for endpoints that an
/// upstream counts as several requests. A cost of 0 counts as 1: every request the upstream
/// sees is one it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cost(pub u32);

impl Cost {
    /// The tokens the request takes: its cost, and at least 1.
    pub fn tokens(self) -> u32 {
        self.0.max(1)
    }
}

/// The tokens a request really cost, known only from its answer (an LLM API's tokens, say):
/// put on the response by the service below, it settles the request's [`Cost`] with a
/// limiter that settles costs ([`settle_costs`](crate::RateLimitBuilder::settle_costs)):
/// the difference is taken from the key, or given back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActualCost(pub u32);
