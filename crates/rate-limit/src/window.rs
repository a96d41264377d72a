//! The exact sliding window of a window quota ([`Quota::window`](crate::Quota::window)): the
//! instants of the admissions of the last period, oldest first.
//!
//! A request of cost `c` is admitted at `now` when the admissions after `now - period`, and
//! it, number at most `n`; otherwise it could be when enough of the oldest have left the
//! window, at the instant the last of them does (its admission plus the period). So no
//! interval of length `period` ever holds more than `n` admissions.

use std::collections::VecDeque;

/// One key's log for one window quota: `(instant, tokens)` pairs, oldest first. Admissions
/// at one instant share an entry, so the log holds at most `n` entries (16 bytes each).
#[derive(Debug, Default)]
pub(crate) struct WindowLog {
    entries: VecDeque<(u64, u64)>,
    /// The tokens of all the entries.
    total: u64,
    /// The window's period in nanoseconds, as last used.
    period: u64,
}

impl WindowLog {
    /// Forgets the admissions that left the window by `now` (at or before `now - period`).
    pub(crate) fn expire(&mut self, period: u64, now: u64) {
        self.period = period;
        while let Some(&(at, tokens)) = self.entries.front() {
            if at.saturating_add(period) > now {
                break;
            }
            self.entries.pop_front();
            self.total -= tokens;
        }
    }

    /// The instant the `index`-th token (1-based, oldest first) was admitted.
    fn instant_of(&self, index: u64) -> Option<u64> {
        let mut seen = 0;
        for &(at, tokens) in &self.entries {
            seen += tokens;
            if seen >= index {
                return Some(at);
            }
        }
        None
    }

    /// The first instant from `now` at which `cost` tokens fit under `n` (after
    /// [`expire`](Self::expire) at `now`).
    pub(crate) fn earliest(&self, n: u64, period: u64, cost: u64, now: u64) -> u64 {
        let excess = (self.total + cost).saturating_sub(n);
        if excess == 0 {
            return now;
        }
        self.instant_of(excess)
            .map_or(now, |at| at.saturating_add(period).max(now))
    }

    /// When the last of `tokens` more tokens would be admitted, each as soon as the window
    /// allows and none before `from`: token `k` of the whole log goes at
    /// `max(from, token(k - n) + period)`, which unrolls to the formula below.
    pub(crate) fn predict(&self, n: u64, period: u64, tokens: u64, from: u64) -> u64 {
        if tokens == 0 {
            return from;
        }
        let rounds = tokens.div_ceil(n);
        let paced = from.saturating_add((rounds - 1).saturating_mul(period));
        // The token of the log `rounds` windows before the last one, if there is one.
        let index = (self.total + tokens).checked_sub(rounds.saturating_mul(n));
        match index
            .filter(|&index| index >= 1)
            .and_then(|i| self.instant_of(i))
        {
            Some(at) => paced.max(at.saturating_add(rounds.saturating_mul(period))),
            None => paced,
        }
    }

    /// Records `tokens` admitted at `now`. An instant earlier than the newest entry (a
    /// caller that read the clock before another took the lock) is recorded as the newest:
    /// later, never earlier, so the window is never undercounted.
    pub(crate) fn push(&mut self, now: u64, tokens: u64) {
        match self.entries.back_mut() {
            Some((at, held)) if *at >= now => *held += tokens,
            _ => self.entries.push_back((now, tokens)),
        }
        self.total += tokens;
    }

    /// Gives back up to `tokens` of the newest admissions.
    pub(crate) fn refund(&mut self, tokens: u64) {
        self.refund_at(u64::MAX, tokens);
    }

    /// Gives back up to `tokens` of a request admitted at `at`: the newest of those recorded
    /// no later (its own, unless a race for the log recorded it later, and older ones, which
    /// leave the window no later than it), never later ones, which would free room early.
    pub(crate) fn refund_at(&mut self, at: u64, mut tokens: u64) {
        let mut end = self
            .entries
            .partition_point(|&(entry_at, _)| entry_at <= at);
        while tokens > 0 && end > 0 {
            end -= 1;
            let held = &mut self.entries[end].1;
            let give = tokens.min(*held);
            *held -= give;
            self.total -= give;
            tokens -= give;
            if *held == 0 {
                self.entries.remove(end);
            }
        }
    }

    /// The tokens in the window (after [`expire`](Self::expire)).
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Whether every admission has left the window by `now`.
    pub(crate) fn is_idle(&self, now: u64) -> bool {
        self.entries
            .back()
            .is_none_or(|&(at, _)| at.saturating_add(self.period) <= now)
    }
}
