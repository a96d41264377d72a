//! [`RateLimitHandle`]: the limiter's figures, and pauses from outside the request path.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::limiter::{Limiter, LimiterStats};
use crate::store::RateStore;

/// Reads a limiter's figures and pauses its keys. Cheap to clone.
pub struct RateLimitHandle<K, St: RateStore> {
    limiter: Arc<Limiter<K, St>>,
}

impl<K, St: RateStore> Clone for RateLimitHandle<K, St> {
    fn clone(&self) -> Self {
        Self {
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<K, St: RateStore> fmt::Debug for RateLimitHandle<K, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHandle")
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl<K, St> RateLimitHandle<K, St>
where
    K: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static,
    St: RateStore,
{
    pub(crate) fn new(limiter: Arc<Limiter<K, St>>) -> Self {
        Self { limiter }
    }

    /// The figures now.
    pub fn stats(&self) -> LimiterStats {
        self.limiter.stats()
    }

    /// How many tokens `key`'s quotas (its tier's) would admit now, if the store can tell
    /// without a round trip (the in-process store can).
    pub fn tokens_available(&self, key: K) -> Option<u64> {
        self.limiter.tokens_available(&key)
    }

    /// Settles a request of `key` admitted at `estimate` tokens at `admitted` whose true
    /// cost, `actual`, is known only now (say, once a streamed answer has been read): the
    /// difference is taken from the key's quotas (the next admissions wait for it, for as
    /// long as [`settle_costs`](crate::RateLimitBuilder::settle_costs) allows at most) or
    /// given back, as far as the quotas still hold it: tokens they have refilled since
    /// `admitted` went to later requests (see [`RateStore::refund`](crate::RateStore::refund)).
    pub fn settle(&self, key: K, estimate: u32, actual: u32, admitted: tokio::time::Instant) {
        self.limiter.settle_key(&key, estimate, actual, admitted);
    }

    /// `key`'s adaptive rate in force, in requests per second (its quotas' own rate until
    /// the server first throttles it); `None` without [`adaptive`](crate::RateLimitBuilder::adaptive).
    pub fn current_rate(&self, key: K) -> Option<f64> {
        self.limiter.current_rate(&key)
    }

    /// Holds `key`'s requests for `duration`, as a server's `Retry-After` would.
    pub fn pause(&self, key: K, duration: Duration) {
        self.limiter.pause_key(key, duration);
    }
}

impl<K, St> seawall_core::FigureSource for RateLimitHandle<K, St>
where
    K: Clone + Eq + Hash + fmt::Debug + seawall_core::KeyLabel + Send + Sync + 'static,
    St: RateStore,
{
    /// The totals carry no `key` label. A keyed layer also reports, with a `key` label, the
    /// queue depth and the tokens available of the keys with the most requests waiting (see
    /// [`figure_top_keys`](crate::RateLimitBuilder::figure_top_keys)); tokens only when the
    /// store can tell without a round trip.
    fn figures(&self, visit: &mut dyn FnMut(seawall_core::Figure<'_>)) {
        use seawall_core::figures::{counter, gauge};
        let s = self.stats();
        visit(counter(
            "seawall_rate_limit_admitted",
            "Requests the rate limiter let through.",
            &[],
            s.admitted,
        ));
        visit(counter(
            "seawall_rate_limit_waited",
            "Admitted requests that waited in the queue first.",
            &[],
            s.admitted_after_wait,
        ));
        visit(seawall_core::Figure {
            name: "seawall_rate_limit_wait_seconds",
            help: "Time admitted requests spent waiting in the queue, in total.",
            kind: seawall_core::FigureKind::Counter,
            labels: &[],
            value: s.wait_total.as_secs_f64(),
        });
        for (reason, n) in [
            ("queue_full", s.rejected_queue_full),
            ("wait_too_long", s.rejected_wait_too_long),
            ("limited", s.rejected_limited),
            ("oversize", s.rejected_oversize),
            ("store_unavailable", s.rejected_store_unavailable),
        ] {
            visit(counter(
                "seawall_rate_limit_rejected",
                "Requests the rate limiter refused, by reason.",
                &[("reason", reason)],
                n,
            ));
        }
        visit(counter(
            "seawall_rate_limit_cancelled",
            "Requests dropped while waiting in the queue.",
            &[],
            s.cancelled,
        ));
        visit(counter(
            "seawall_rate_limit_withdrawn",
            "Waiting requests refused at their turn by the layer above that admitted them (a circuit breaker that opened).",
            &[],
            s.withdrawn,
        ));
        // A key whose label is empty would repeat the totals' series: it counts in them only.
        let keys: Vec<(String, crate::limiter::KeyFigures<K>)> = self
            .limiter
            .key_figures()
            .into_iter()
            .map(|figures| (figures.key.label(), figures))
            .filter(|(label, _)| !label.is_empty())
            .collect();
        const QUEUE_DEPTH_HELP: &str =
            "Requests waiting in the queue now; without a key, over every key.";
        visit(gauge(
            "seawall_rate_limit_queue_depth",
            QUEUE_DEPTH_HELP,
            &[],
            s.queue_depth as f64,
        ));
        for (label, figures) in &keys {
            visit(gauge(
                "seawall_rate_limit_queue_depth",
                QUEUE_DEPTH_HELP,
                &[("key", label)],
                figures.queue_depth as f64,
            ));
        }
        for (label, figures) in &keys {
            if let Some(tokens) = figures.tokens_available {
                visit(gauge(
                    "seawall_rate_limit_tokens_available",
                    "Tokens the key's quotas would admit now.",
                    &[("key", label)],
                    tokens as f64,
                ));
            }
        }
        for (name, help, value) in [
            (
                "seawall_rate_limit_paused_keys",
                "Keys paused by a server's Retry-After or RateLimit headers now.",
                s.paused_keys,
            ),
            ("seawall_rate_limit_keys", "Keys tracked now.", s.keys),
        ] {
            visit(gauge(name, help, &[], value as f64));
        }
    }
}
