//! [`CoalesceLayer`] and its builder.

use std::sync::Arc;

use http::HeaderName;
use seawall_core::{ConfigError, check_range};
use tower::Layer;

use crate::flight::Flights;
use crate::service::{Coalesce, Config};
use crate::stats::{CoalesceHandle, Counters};

/// The body bound a [`CoalesceBuilder`] starts with: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// The most header names a layer compares (see [`CoalesceBuilder::vary`]).
pub const MAX_VARY_HEADERS: usize = 32;

/// Lets identical in-flight requests share one upstream call.
///
/// Each service it builds keeps its own calls in flight (shared by that service's clones);
/// every service it builds, and every clone, adds to one set of figures.
#[derive(Debug, Clone)]
pub struct CoalesceLayer {
    vary: Arc<[HeaderName]>,
    max_body_bytes: u64,
    counters: Arc<Counters>,
}

impl CoalesceLayer {
    /// Starts a configuration with the defaults: requests differing in `Authorization` or
    /// `Cookie` (as the HTTP cache's key) never share a call, and answers with bodies up to
    /// [`DEFAULT_MAX_BODY_BYTES`] are shared.
    pub fn builder() -> CoalesceBuilder {
        CoalesceBuilder {
            vary: vec![http::header::AUTHORIZATION, http::header::COOKIE],
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// A handle on the layer's figures.
    pub fn handle(&self) -> CoalesceHandle {
        CoalesceHandle::new(Arc::clone(&self.counters))
    }

    /// The request headers whose values two requests must share to share a call.
    pub fn vary_headers(&self) -> &[HeaderName] {
        &self.vary
    }

    /// The largest answer body that is shared, in bytes.
    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }
}

impl<S> Layer<S> for CoalesceLayer {
    type Service = Coalesce<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Coalesce::new(
            inner,
            Config {
                vary: Arc::clone(&self.vary),
                max_body_bytes: self.max_body_bytes,
                counters: Arc::clone(&self.counters),
                flights: Flights::default(),
            },
        )
    }
}

/// Configures a [`CoalesceLayer`]; [`build`](Self::build) validates every field.
#[derive(Debug, Clone)]
pub struct CoalesceBuilder {
    vary: Vec<HeaderName>,
    max_body_bytes: u64,
}

impl CoalesceBuilder {
    /// The request headers whose values two requests must share, besides method and URI, to
    /// share a call: like a response's `Vary`. Replaces the default (`Authorization`,
    /// `Cookie`). Name every header the upstream answers differently by (`Accept`,
    /// `Accept-Language`, a tenant header), and keep the default's: requests that differ in a
    /// header not named here share the first one's answer. At most [`MAX_VARY_HEADERS`]
    /// names (field `vary`).
    pub fn vary(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.vary = headers.into_iter().collect();
        self
    }

    /// The largest answer body shared with followers, in bytes (0 to 1 GiB; default 1 MiB).
    /// An answer whose body may be longer (its declared size is above this, or unknown, as
    /// for a streamed answer) goes to the leader alone, and each follower makes its own
    /// call.
    pub fn max_body_bytes(mut self, bytes: u64) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<CoalesceLayer, ConfigError> {
        check_range(
            "vary",
            self.vary.len(),
            0,
            MAX_VARY_HEADERS,
            "at most 32 header names",
        )?;
        let max_body_bytes = check_range(
            "max_body_bytes",
            self.max_body_bytes,
            0,
            1 << 30,
            "a size from 0 to 1 GiB",
        )?;
        // A name given twice would only be compared twice.
        let mut vary: Vec<HeaderName> = Vec::with_capacity(self.vary.len());
        for name in self.vary {
            if !vary.contains(&name) {
                vary.push(name);
            }
        }
        Ok(CoalesceLayer {
            vary: vary.into(),
            max_body_bytes,
            counters: Arc::new(Counters::default()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_validates_and_names_the_field() {
        let layer = CoalesceLayer::builder()
            .build()
            .expect("defaults are valid");
        assert_eq!(
            layer.vary_headers(),
            &[http::header::AUTHORIZATION, http::header::COOKIE]
        );
        assert_eq!(layer.max_body_bytes(), DEFAULT_MAX_BODY_BYTES);

        let err = CoalesceLayer::builder()
            .max_body_bytes((1 << 30) + 1)
            .build()
            .expect_err("above 1 GiB");
        assert_eq!(err.field(), "max_body_bytes");
        assert_eq!(err.value(), "1073741825");

        let names = (0..33).map(|i| HeaderName::try_from(format!("x-h{i}")).expect("name"));
        let err = CoalesceLayer::builder()
            .vary(names)
            .build()
            .expect_err("33 names");
        assert_eq!(err.field(), "vary");
        assert_eq!(err.value(), "33");

        let layer = CoalesceLayer::builder()
            .vary([http::header::ACCEPT])
            .max_body_bytes(0)
            .build()
            .expect("valid");
        assert_eq!(layer.vary_headers(), &[http::header::ACCEPT]);
    }
}
