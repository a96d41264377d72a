//! The retry budget: retries may be at most a share of recent requests, plus a floor.
//!
//! Every logical request deposits `percent` of a retry; every retry withdraws one. Deposits
//! and withdrawals are kept in a ring of time slots covering `ttl`, so old traffic stops
//! counting; a reserve of `min_per_sec × ttl` retries is always available, so a quiet client
//! can still retry. This is the Finagle / gRPC budget: when an upstream is down, retries add
//! at most `percent` to the load instead of multiplying it by the attempt count.
//!
//! Deposits and withdrawals are [`SlidingCount`]s: lock-free, no background task. Deposits,
//! made by every request, are counted per thread, so a request writes only to its own
//! thread's count.
//!
//! The budget's windows run on tokio's clock by default, from the reading the caller passes
//! (the retry layer's call shares one with the layers it wraps). A budget built
//! [`with_clock`](RetryBudget::with_clock)`(Clock::tsc())` reads the processor's time-stamp
//! counter itself instead and ignores the readings it is given: for a caller that does not
//! read tokio's clock anyway, and never on paused time (see [`Clock`]).

use std::time::Duration;

use crossbeam_utils::CachePadded;
use seawall_core::{Clock, ConfigError, SlidingCount, check_range};
use thread_local::ThreadLocal;
use tokio::time::Instant;

/// Units per retry: deposits are fractions of a retry, kept in thousandths.
const UNIT: u64 = 1_000;
/// The ring's length: the window slides in steps of `ttl / SLOTS`.
const SLOTS: usize = 10;

/// The settings of a [`RetryBudget`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    ttl: Duration,
    min_per_sec: u32,
    percent: f64,
}

impl Default for BudgetConfig {
    /// 20 % of the requests of the last 10 s, plus 10 retries per second.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            percent: 20.0,
        }
    }
}

impl BudgetConfig {
    /// A budget of `percent` % of the requests seen over the last `ttl`, plus `min_per_sec`
    /// retries per second of `ttl` that are always allowed.
    ///
    /// `ttl` must be 1 s to 1 h, `min_per_sec` at most 1,000,000, `percent` 0 to 1,000.
    pub fn new(ttl: Duration, min_per_sec: u32, percent: f64) -> Result<Self, ConfigError> {
        check_range(
            "budget_ttl",
            ttl,
            Duration::from_secs(1),
            Duration::from_secs(3600),
            "a duration from 1 s to 1 h",
        )?;
        check_range(
            "budget_min_per_sec",
            min_per_sec,
            0,
            1_000_000,
            "an integer from 0 to 1,000,000",
        )?;
        if !(0.0..=1_000.0).contains(&percent) {
            return Err(ConfigError::new(
                "budget_percent",
                percent,
                "a percentage from 0 to 1,000",
            ));
        }
        Ok(Self {
            ttl,
            min_per_sec,
            percent,
        })
    }

    /// How long a request counts towards the budget.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Retries per second always allowed, whatever the traffic.
    pub fn min_per_sec(&self) -> u32 {
        self.min_per_sec
    }

    /// The share of recent requests that may be retried, in percent.
    pub fn percent(&self) -> f64 {
        self.percent
    }
}

/// A lock-free retry budget, shared by every clone of a retry service.
pub struct RetryBudget {
    deposit_units: u64,
    reserve_units: u64,
    /// The deposits of each thread that has made a request. Every request deposits, so a
    /// shared count would take a locked read-modify-write per request, and with several
    /// threads a cache line they all write; each thread writes only its own count. Kept
    /// when the thread exits (its deposits still count) and reused by a later thread. Padded,
    /// because the threads' counts sit side by side and would otherwise share cache lines.
    deposits: ThreadLocal<CachePadded<SlidingCount<SLOTS>>>,
    /// Made only by retries, which are few; one count shared by every thread.
    withdrawals: SlidingCount<SLOTS>,
    /// Where the windows start.
    origin: Instant,
    ttl: Duration,
    /// tokio's (the readings given are used), or the counter (read instead of them).
    clock: Clock,
}

impl std::fmt::Debug for RetryBudget {
    /// The settings and the retries available now, across every thread's deposits (a
    /// derived `Debug` would show only the calling thread's).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("deposit_units", &self.deposit_units)
            .field("reserve_units", &self.reserve_units)
            .field("ttl", &self.ttl)
            .field("clock", &self.clock)
            .field("available", &self.available(self.clock.now()))
            .finish()
    }
}

impl RetryBudget {
    /// A budget with the given settings, its window starting now, on tokio's clock.
    pub fn new(config: BudgetConfig) -> Self {
        Self::starting_at(config, Instant::now())
    }

    /// A budget with the given settings on `clock`, its window starting now. On tokio's
    /// clock (the default) it counts at the instants its callers pass; on the time-stamp
    /// counter ([`Clock::tsc`]) it reads the counter for every deposit and withdrawal and
    /// ignores them, which is cheaper only for a caller that has no reading of tokio's clock
    /// to pass, and which paused time does not move (tests on paused time keep the default).
    pub fn with_clock(config: BudgetConfig, clock: Clock) -> Self {
        let origin = clock.now();
        Self {
            clock,
            ..Self::starting_at(config, origin)
        }
    }

    pub(crate) fn starting_at(config: BudgetConfig, origin: Instant) -> Self {
        let reserve_units =
            (f64::from(config.min_per_sec) * config.ttl.as_secs_f64() * UNIT as f64).round() as u64;
        Self {
            // Rounded, so that 20 % is exactly 200 thousandths.
            deposit_units: (config.percent * UNIT as f64 / 100.0).round() as u64,
            reserve_units,
            deposits: ThreadLocal::new(),
            withdrawals: SlidingCount::new(config.ttl, origin),
            origin,
            ttl: config.ttl,
            clock: Clock::default(),
        }
    }

    /// The instant to count at: `given` on tokio's clock, a reading of the counter on it.
    #[inline]
    fn at(&self, given: Instant) -> Instant {
        if self.clock.is_tokio() {
            given
        } else {
            self.clock.now()
        }
    }

    /// Records one logical request made at `now` (ignored on the counter's clock).
    #[inline]
    pub fn deposit(&self, now: Instant) {
        if self.deposit_units > 0 {
            let now = self.at(now);
            self.deposits
                .get_or(|| CachePadded::new(SlidingCount::new(self.ttl, self.origin)))
                .add_unshared(now, self.deposit_units);
        }
    }

    /// Takes one retry from the budget if one is available; `false` when it is empty.
    ///
    /// Two threads that find exactly one retry left may both take it, so under contention
    /// the budget can be overdrawn by one retry per racing thread; never by more.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let now = self.at(now);
        if self.balance_units(now) < UNIT {
            return false;
        }
        self.withdrawals.add(now, UNIT);
        true
    }

    /// Gives back a retry taken at `withdrawn` (tokio's clock) for an attempt that was never
    /// sent: the withdrawal is taken back where it was counted, unless it has left the window
    /// already (a backoff longer than the window), so that a refund never adds a retry the
    /// window no longer holds. On the counter's clock the withdrawal's instant is found by
    /// going back from a reading now as far as tokio's clock went since.
    pub(crate) fn refund(&self, withdrawn: Instant) {
        let ago = Instant::now().saturating_duration_since(withdrawn);
        if let Some(withdrawn) = self.at(Instant::now()).checked_sub(ago) {
            self.withdrawals.take_back(withdrawn, UNIT);
        }
    }

    /// A retry taken at `withdrawn`, given back if the guard is dropped before
    /// [`Unsent::sent`] (its request was dropped during the backoff).
    pub(crate) fn unsent(&self, withdrawn: Instant) -> Unsent<'_> {
        Unsent {
            budget: Some(self),
            withdrawn,
        }
    }

    /// How many whole retries are available at `now` (on the counter's clock, now).
    pub fn available(&self, now: Instant) -> u64 {
        self.balance_units(self.at(now)) / UNIT
    }

    fn balance_units(&self, now: Instant) -> u64 {
        let deposits: u64 = self.deposits.iter().map(|count| count.sum(now)).sum();
        (self.reserve_units + deposits).saturating_sub(self.withdrawals.sum(now))
    }
}

/// A retry taken from a budget and not sent yet: given back when dropped unsent.
pub(crate) struct Unsent<'a> {
    budget: Option<&'a RetryBudget>,
    withdrawn: Instant,
}

impl Unsent<'_> {
    /// The retry went out: it stays spent.
    pub(crate) fn sent(mut self) {
        self.budget = None;
    }
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if let Some(budget) = self.budget {
            budget.refund(self.withdrawn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ttl_s: u64, min_per_sec: u32, percent: f64) -> (RetryBudget, Instant) {
        let origin = Instant::now();
        let config = BudgetConfig::new(Duration::from_secs(ttl_s), min_per_sec, percent)
            .expect("valid budget");
        (RetryBudget::starting_at(config, origin), origin)
    }

    #[test]
    fn reserve_alone_allows_min_per_sec_times_ttl() {
        let (budget, t0) = budget(10, 3, 20.0);
        assert_eq!(budget.available(t0), 30);
        for _ in 0..30 {
            assert!(budget.try_withdraw(t0));
        }
        assert!(!budget.try_withdraw(t0));
    }

    #[test]
    fn deposits_from_every_thread_count() {
        let (budget, t0) = budget(10, 0, 20.0);
        budget.deposit(t0);
        // All four threads are alive at once, so none reuses another's count.
        let all_deposited = std::sync::Barrier::new(3);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..5 {
                        budget.deposit(t0);
                    }
                    all_deposited.wait();
                });
            }
        });
        // Sixteen requests at 20 %: three whole retries, from three threads and this one.
        assert_eq!(budget.available(t0), 3);
        assert_eq!(budget.deposits.iter().count(), 4);
    }

    #[test]
    fn five_requests_at_twenty_percent_buy_one_retry() {
        let (budget, t0) = budget(10, 0, 20.0);
        for _ in 0..4 {
            budget.deposit(t0);
        }
        assert_eq!(budget.available(t0), 0);
        assert!(!budget.try_withdraw(t0));
        budget.deposit(t0);
        assert!(budget.try_withdraw(t0));
        assert!(!budget.try_withdraw(t0));
    }

    #[test]
    fn deposits_expire_after_ttl() {
        let (budget, t0) = budget(10, 0, 100.0);
        budget.deposit(t0);
        budget.deposit(t0 + Duration::from_millis(5_500));
        assert_eq!(budget.available(t0 + Duration::from_millis(9_999)), 2);
        // The first slot (0 s to 1 s) leaves the window at 10 s; the second at 15 s.
        assert_eq!(budget.available(t0 + Duration::from_secs(10)), 1);
        assert_eq!(budget.available(t0 + Duration::from_secs(16)), 0);
    }

    #[test]
    fn withdrawals_expire_too_so_the_reserve_refills() {
        let (budget, t0) = budget(1, 2, 0.0);
        assert!(budget.try_withdraw(t0));
        assert!(budget.try_withdraw(t0));
        assert!(!budget.try_withdraw(t0));
        assert!(budget.try_withdraw(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_slot_reused_after_a_full_turn_starts_from_zero() {
        let (budget, t0) = budget(10, 0, 100.0);
        for _ in 0..7 {
            budget.deposit(t0);
        }
        // Same slot index, ten epochs later.
        let later = t0 + Duration::from_secs(10);
        budget.deposit(later);
        assert_eq!(budget.available(later), 1);
    }

    #[test]
    fn a_budget_on_the_counter_counts_at_its_own_readings_not_at_those_it_is_given() {
        let t0 = Instant::now();
        let config = BudgetConfig::new(Duration::from_secs(10), 0, 100.0).expect("valid budget");
        let budget = RetryBudget::with_clock(config, Clock::tsc());
        // A reading an hour on would put the deposit outside the window of `t0` on tokio's
        // clock; on the counter both are now.
        budget.deposit(t0 + Duration::from_secs(3_600));
        assert_eq!(budget.available(t0), 1);
        assert!(budget.try_withdraw(t0 + Duration::from_secs(864_000)));
        assert!(!budget.try_withdraw(t0));
        assert_eq!(budget.available(t0 + Duration::from_secs(3_600)), 0);
    }

    #[test]
    fn a_budget_on_tokios_clock_counts_at_the_readings_it_is_given() {
        let t0 = Instant::now();
        let config = BudgetConfig::new(Duration::from_secs(10), 0, 100.0).expect("valid budget");
        let budget = RetryBudget::with_clock(config, Clock::tokio());
        budget.deposit(t0 + Duration::from_secs(3_600));
        assert_eq!(budget.available(t0 + Duration::from_secs(3_600)), 1);
        assert_eq!(budget.available(t0 + Duration::from_secs(3_620)), 0);
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let err = BudgetConfig::new(Duration::ZERO, 1, 20.0).unwrap_err();
        assert_eq!(err.field(), "budget_ttl");
        let err = BudgetConfig::new(Duration::from_secs(1), 2_000_000, 20.0).unwrap_err();
        assert_eq!(err.field(), "budget_min_per_sec");
        let err = BudgetConfig::new(Duration::from_secs(1), 1, f64::NAN).unwrap_err();
        assert_eq!(err.field(), "budget_percent");
        let err = BudgetConfig::new(Duration::from_secs(1), 1, -1.0).unwrap_err();
        assert_eq!(err.field(), "budget_percent");
    }
}
