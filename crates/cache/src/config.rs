//! The validated settings of a cache layer.

use std::time::Duration;

use http::HeaderName;

/// The TTLs given to answers that carry no freshness information of their own (no
/// `Expires`, no `max-age`, no `no-cache` or `no-store`): a default, and per path prefix.
#[derive(Debug, Clone, Default)]
pub(crate) struct TtlRules {
    /// Path prefixes and their TTLs, longest prefix first.
    pub(crate) routes: Vec<(String, Duration)>,
    pub(crate) default: Option<Duration>,
}

impl TtlRules {
    /// The TTL for a request path: the longest matching prefix's, else the default.
    pub(crate) fn for_path(&self, path: &str) -> Option<Duration> {
        self.routes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, ttl)| *ttl)
            .or(self.default)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_body_bytes: usize,
    pub(crate) ttl: TtlRules,
    pub(crate) stale_if_error: Duration,
    pub(crate) revalidation_window: Duration,
    pub(crate) key_headers: Vec<HeaderName>,
    pub(crate) status_header: Option<HeaderName>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins_then_the_default() {
        let rules = TtlRules {
            routes: vec![
                ("/v1/items/archive".into(), Duration::from_secs(3600)),
                ("/v1/items".into(), Duration::from_secs(60)),
            ],
            default: Some(Duration::from_secs(5)),
        };
        assert_eq!(
            rules.for_path("/v1/items/archive/3"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(rules.for_path("/v1/items/3"), Some(Duration::from_secs(60)));
        assert_eq!(rules.for_path("/v2"), Some(Duration::from_secs(5)));
        assert_eq!(TtlRules::default().for_path("/v2"), None);
    }
}
