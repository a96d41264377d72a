//! How the cache answered: a response extension, and optionally a response header.

/// How the cache answered a request, in the response's extensions
/// (`response.extensions().get::<CacheStatus>()`), and in the header named by
/// [`status_header`](crate::CacheLayerBuilder::status_header) when one is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheStatus {
    /// A fresh stored response answered; the upstream was not called.
    Hit,
    /// No usable stored response: the upstream answered (and the answer may have been stored).
    Miss,
    /// A stale stored response was confirmed by the upstream with `304 Not Modified`; the
    /// caller gets the stored body with the refreshed headers.
    Revalidated,
    /// The upstream failed (an error or a 5xx) and a stale stored response within its
    /// `stale-if-error` allowance answered instead.
    Stale,
    /// The request is not one the cache handles (a method other than GET or HEAD, a
    /// conditional or range request, or a request with `Cache-Control: no-store`).
    Bypass,
}

impl CacheStatus {
    /// The value written into the status header: `HIT`, `MISS`, `REVALIDATED`, `STALE` or
    /// `BYPASS`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
