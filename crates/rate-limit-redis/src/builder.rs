//! Configuration of a [`RedisStore`](crate::RedisStore).

use std::fmt;
use std::time::Duration;

use seawall_core::{ConfigError, check_range};

use crate::lease::MAX_LEASE;
use crate::store::RedisStore;

/// What the store answers when Redis cannot be asked (down, unreachable, or slower than the
/// timeout).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailurePolicy {
    /// Refuse the request with `Rejected::StoreUnavailable`: the shared quota is never
    /// exceeded, and nothing is sent while Redis is down. The default.
    FailClosed,
    /// Admit every request: traffic flows unlimited while Redis is down.
    FailOpen,
    /// Limit locally at `share` of each quota (for example `0.25` for one of four
    /// processes), so the fleet stays near its quota without Redis.
    FallBack {
        /// The fraction of every quota this process takes on its own, over 0 and at most 1.
        share: f64,
    },
}

/// Whose clock times the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Redis's `TIME`: one clock for every process, whatever their own clocks say. The
    /// default.
    Server,
    /// The limiter's own clock (tokio's, so it follows paused time), as microseconds since
    /// the Unix epoch. Processes sharing a quota must agree on the time; tests use it to
    /// drive the script with exact instants.
    Local,
}

/// Builds a [`RedisStore`]; start with [`RedisStore::builder`].
///
/// Its `Debug` rendering, like every error it gives, shows the URL without its credentials.
#[derive(Clone)]
pub struct RedisStoreBuilder {
    /// The node's URL; on a Cluster, the first of `cluster`.
    pub(crate) url: String,
    /// The URLs of some of a Redis Cluster's nodes, for a store on that Cluster.
    pub(crate) cluster: Option<Vec<String>>,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) recheck_after: Duration,
    pub(crate) policy: FailurePolicy,
    pub(crate) clock: Clock,
    pub(crate) lease: Option<u32>,
    pub(crate) max_pending: usize,
    /// PEM certificates of the authorities a `rediss://` server's certificate must chain to.
    #[cfg(feature = "tls")]
    pub(crate) root_certificates: Option<Vec<u8>>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("RedisStoreBuilder");
        match &self.cluster {
            None => f.field("url", &redacted(&self.url)),
            Some(nodes) => f.field(
                "cluster",
                &nodes.iter().map(|url| redacted(url)).collect::<Vec<_>>(),
            ),
        };
        f.field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("recheck_after", &self.recheck_after)
            .field("policy", &self.policy)
            .field("clock", &self.clock)
            .field("lease", &self.lease)
            .field("max_pending", &self.max_pending);
        #[cfg(feature = "tls")]
        f.field(
            "root_certificates",
            &self.root_certificates.as_ref().map(|_| "(PEM)"),
        );
        f.finish()
    }
}

/// Root certificates go with a `rediss://` URL, and must be one or more PEM certificates.
#[cfg(feature = "tls")]
fn check_root_certificates(url: &str, pem: &[u8]) -> Result<(), ConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let scheme = url::Url::parse(url).map(|url| url.scheme().to_owned());
    if !matches!(scheme.as_deref(), Ok("rediss" | "valkeys")) {
        return Err(ConfigError::new(
            "root_certificates",
            "(PEM)",
            "root certificates only with a rediss:// URL",
        ));
    }
    let certificates: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match certificates {
        Ok(certificates) if !certificates.is_empty() => Ok(()),
        _ => Err(ConfigError::new(
            "root_certificates",
            format!("{} bytes", pem.len()),
            "one or more PEM certificates (-----BEGIN CERTIFICATE-----)",
        )),
    }
}

/// `url` as it may be shown: user name and password, query (where a `redis+unix` URL
/// carries them) and fragment each replaced by `***`, and nothing of a URL that does not
/// parse as one with a host or a path, since where its credentials are cannot be told.
pub(crate) fn redacted(url: &str) -> String {
    const HIDDEN: &str = "***";
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "(a URL that does not parse; not shown)".to_owned();
    };
    if parsed.cannot_be_a_base() {
        // `user:password@host` parses as the scheme `user`.
        return "(a URL that names no host; not shown)".to_owned();
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let hidden = parsed.set_username(HIDDEN).and(parsed.set_password(None));
        if hidden.is_err() {
            return format!("(a {}: URL with credentials; not shown)", parsed.scheme());
        }
    }
    if parsed.query().is_some() {
        parsed.set_query(Some(HIDDEN));
    }
    if parsed.fragment().is_some() {
        parsed.set_fragment(Some(HIDDEN));
    }
    parsed.into()
}

impl RedisStoreBuilder {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            cluster: None,
            prefix: "seawall:rl".to_owned(),
            timeout: Duration::from_millis(50),
            recheck_after: Duration::from_millis(500),
            policy: FailurePolicy::FailClosed,
            clock: Clock::Server,
            lease: None,
            max_pending: 10_000,
            #[cfg(feature = "tls")]
            root_certificates: None,
        }
    }

    /// A builder for a store on the Redis Cluster one or more of whose nodes are at `nodes`.
    pub(crate) fn new_cluster<I>(nodes: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let nodes: Vec<String> = nodes
            .into_iter()
            .map(|url| url.as_ref().to_owned())
            .collect();
        Self {
            url: nodes.first().cloned().unwrap_or_default(),
            cluster: Some(nodes),
            ..Self::new("")
        }
    }

    /// The start of every key name (default `seawall:rl`); quotas of one limiter key live
    /// under `<prefix>:{<hash of the key>}`.
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// How long one admission may take before Redis counts as unavailable (default 50 ms,
    /// 1 ms to 10 s). Connecting is bounded by the same time.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// After a failure, how long the failure policy answers without asking Redis (default
    /// 500 ms, 1 ms to 60 s); then the next request asks again, so admission resumes within
    /// this long of Redis coming back.
    pub fn recheck_after(mut self, recheck_after: Duration) -> Self {
        self.recheck_after = recheck_after;
        self
    }

    /// What to answer when Redis cannot be asked (default [`FailurePolicy::FailClosed`]).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Whose clock times the quota (default [`Clock::Server`]).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Takes up to `tokens` tokens per round trip (2 to 65,535, and at most each quota's
    /// burst) and spends them locally. A fleet of `P` processes may then admit up to
    /// `tokens × P` more than the quota in any window; unspent tokens lapse after the time
    /// the quota takes to earn them, or one second if that is longer.
    pub fn lease(mut self, tokens: u32) -> Self {
        self.lease = Some(tokens);
        self
    }

    /// The most admissions of one key that wait in the store for their call to Redis
    /// (default 10,000, 1 to 10,000,000); past it, an admission is answered at once by the
    /// failure policy. Waiting requests of the rate limiter count the admissions out with
    /// the store toward its `max_waiting`, so this bound is met only by a store shared by
    /// several limiters, or used directly.
    pub fn max_pending(mut self, max_pending: usize) -> Self {
        self.max_pending = max_pending;
        self
    }

    /// For a `rediss://` URL, trusts the certificate authorities in `pem` (one or more PEM
    /// `CERTIFICATE` blocks) instead of Mozilla's roots: for a Redis whose certificate a
    /// private authority signed. Needs the `tls` feature.
    #[cfg(feature = "tls")]
    pub fn root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates = Some(pem.into());
        self
    }

    /// Validates the configuration and creates the store. The connection is made lazily
    /// and remade after failures, so an unreachable Redis is not an error here: the failure
    /// policy answers until it is back. Must be called within a tokio runtime.
    pub async fn connect(self) -> Result<RedisStore, ConfigError> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(ConfigError::new(
                "prefix",
                &self.prefix,
                "a non-empty key prefix without braces",
            ));
        }
        check_range(
            "timeout",
            self.timeout,
            Duration::from_millis(1),
            Duration::from_secs(10),
            "a duration from 1 ms to 10 s",
        )?;
        check_range(
            "recheck_after",
            self.recheck_after,
            Duration::from_millis(1),
            Duration::from_secs(60),
            "a duration from 1 ms to 60 s",
        )?;
        if let FailurePolicy::FallBack { share } = self.policy
            && !(share > 0.0 && share <= 1.0)
        {
            return Err(ConfigError::new(
                "failure_policy",
                share,
                "a fallback share over 0 and at most 1",
            ));
        }
        if let Some(tokens) = self.lease {
            check_range("lease", tokens, 2, MAX_LEASE, "a count from 2 to 65,535")?;
        }
        check_range(
            "max_pending",
            self.max_pending,
            1,
            10_000_000,
            "a count from 1 to 10,000,000",
        )?;
        #[cfg(feature = "tls")]
        if let Some(pem) = &self.root_certificates {
            check_root_certificates(&self.url, pem)?;
        }
        RedisStore::connect(self)
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn urls_are_shown_without_their_credentials() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "redis://alice:pw@127.0.0.1:6379/0",
                "redis://***@127.0.0.1:6379/0",
            ),
            ("redis://:pw@redis.internal/", "redis://***@redis.internal/"),
            ("redis://alice@redis.internal", "redis://***@redis.internal"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=pw",
                "redis+unix:///run/redis.sock?***",
            ),
            (
                "rediss://redis.internal/#insecure",
                "rediss://redis.internal/#***",
            ),
            (
                "alice:pw@redis.internal",
                "(a URL that names no host; not shown)",
            ),
            ("://alice:pw@", "(a URL that does not parse; not shown)"),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }
}
