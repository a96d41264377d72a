//! A stored answer, and the RFC 9111 decisions about it: whether an answer may be stored and
//! for how long it is fresh (through `http-cache-semantics`), whether a stored answer
//! matches a request, its `stale-if-error` allowance, and its refresh by a `304`.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode, Uri};
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy, RequestLike, ResponseLike};

use crate::body::CacheBody;
use crate::clock::since;
use crate::config::Config;
use crate::key::kept_value;
use crate::status::CacheStatus;

/// A stored answer: status, headers, body, and what the cache knows about its freshness.
///
/// Opaque: a [`CacheStore`](crate::CacheStore) keeps it and hands it back; with the `redis`
/// feature it also has a byte encoding for stores outside the process.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) policy: CachePolicy,
    /// When it was received (or last refreshed by a `304`).
    pub(crate) stored_at: SystemTime,
    /// The `Age` the upstream gave it when it was received.
    pub(crate) age_base: Duration,
    pub(crate) fresh_until: SystemTime,
    /// The end of its `stale-if-error` allowance.
    pub(crate) stale_until: SystemTime,
    /// When a store may forget it: the end of its allowance, or of the revalidation window
    /// when it has a validator.
    pub(crate) keep_until: SystemTime,
    pub(crate) vary: Vary,
}

/// The request headers a stored answer was chosen by (its `Vary`), as the cache keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Vary {
    /// `Vary: *`: it never matches a later request.
    Any,
    /// The named headers and the request's values (credentials as digests); empty when the
    /// answer has no `Vary`.
    Fields(Box<[(HeaderName, Option<HeaderValue>)]>),
}

/// Whether a stored answer can answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usable {
    /// As it is, without asking the upstream.
    Fresh,
    /// After revalidation, or when the upstream fails (within its allowance).
    Stale,
    /// Not at all (another variant, or past what a store keeps).
    No,
}

/// The parts of a request the cache keeps while the upstream answers.
#[derive(Debug, Clone)]
pub(crate) struct RequestHead {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
}

/// The request as `http-cache-semantics` sees it: only the headers that matter to caching,
/// credentials replaced by their digests, so that a stored policy never holds a secret.
struct PolicyRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl RequestLike for PolicyRequest {
    fn uri(&self) -> Uri {
        self.uri.clone()
    }
    fn is_same_uri(&self, other: &Uri) -> bool {
        &self.uri == other
    }
    fn method(&self) -> &Method {
        &self.method
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

struct PolicyResponse<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
}

impl ResponseLike for PolicyResponse<'_> {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

/// The statuses the cache stores: successful and permanent-redirect answers that RFC 9111
/// lets a cache store. Error answers are never stored (a 5xx is what `stale-if-error` is
/// for), nor partial ones (`206`, ranges are not supported).
fn storable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 308)
}

/// Headers about one connection, or about a transfer, which a stored answer must not carry.
const NOT_STORED: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TRAILER,
    header::PROXY_AUTHENTICATE,
];

/// Headers a `304` must not replace in the stored answer (they describe the 304 itself).
const NOT_REFRESHED: [HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::TRANSFER_ENCODING,
    header::CONTENT_RANGE,
];

/// The directives of a `Cache-Control` header, lowercased, with their values.
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<&str>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|directive| {
            let mut parts = directive.splitn(2, '=');
            let name = parts.next()?.trim().to_ascii_lowercase();
            let value = parts.next().map(|v| v.trim().trim_matches('"'));
            (!name.is_empty()).then_some((name, value))
        })
}

fn has_directive(headers: &HeaderMap, wanted: &str) -> bool {
    directives(headers).any(|(name, _)| name == wanted)
}

/// The largest number of seconds the cache reasons with: RFC 9111 (section 1.2.2) has a
/// larger delta-seconds value, or a calculation that overflows, count as 2^31 seconds. A
/// server's `max-age`, `stale-if-error` or `Age` of 20 digits is therefore about 68 years,
/// not an overflow.
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// `time + delta`, the delta at most [`MAX_DELTA_SECONDS`].
fn later(time: SystemTime, delta: Duration) -> SystemTime {
    let delta = delta.min(Duration::from_secs(MAX_DELTA_SECONDS));
    // 68 years past any clock this runs on is representable; were it not, the answer is
    // simply not kept past `time`.
    time.checked_add(delta).unwrap_or(time)
}

/// A delta-seconds value: digits only, clamped to [`MAX_DELTA_SECONDS`] however many.
fn delta_seconds(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some(value.parse().unwrap_or(u64::MAX).min(MAX_DELTA_SECONDS))
}

fn directive_seconds(headers: &HeaderMap, wanted: &str) -> Option<u64> {
    directives(headers)
        .find(|(name, _)| name == wanted)
        .and_then(|(_, value)| delta_seconds(value?))
}

/// Clamps the answer's `Age` to [`MAX_DELTA_SECONDS`], before the policy reads it (it adds
/// the time the answer was kept to it, which overflows for an age near `u64::MAX`), and
/// drops an `Age` that is not delta-seconds: the policy reads it with Rust's integer parser,
/// which takes `+18446744073709551615` for `u64::MAX`.
fn clamp_age(headers: &mut HeaderMap) {
    let Some(value) = headers.get(header::AGE) else {
        return;
    };
    match value.to_str().ok().and_then(delta_seconds) {
        Some(MAX_DELTA_SECONDS) => {
            headers.insert(header::AGE, HeaderValue::from(MAX_DELTA_SECONDS));
        }
        Some(_) => {}
        None => {
            headers.remove(header::AGE);
        }
    }
}

/// Whether an answer says nothing about its freshness, so that a configured TTL applies.
fn without_freshness(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::EXPIRES)
        && !directives(headers).any(|(name, _)| {
            matches!(
                name.as_str(),
                "max-age" | "s-maxage" | "no-store" | "no-cache" | "must-revalidate"
            )
        })
}

fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

impl RequestHead {
    pub(crate) fn of<B>(request: &http::Request<B>) -> Self {
        RequestHead {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
        }
    }

    /// This request as the policy sees it, for an answer that varies on `vary`.
    fn policy_request<'a>(
        &self,
        vary: impl Iterator<Item = &'a HeaderName>,
        config: &Config,
    ) -> PolicyRequest {
        policy_request(&self.method, &self.uri, &self.headers, vary, config)
    }
}

fn policy_request<'a>(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    vary: impl Iterator<Item = &'a HeaderName>,
    config: &Config,
) -> PolicyRequest {
    let mut kept = HeaderMap::new();
    for name in [header::HOST, header::CACHE_CONTROL, header::PRAGMA] {
        for value in headers.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    for name in vary {
        if let Some(value) = headers.get(name) {
            kept.insert(name.clone(), kept_value(name, value, &config.key_headers));
        }
    }
    PolicyRequest {
        method: method.clone(),
        uri: uri.clone(),
        headers: kept,
    }
}

/// The header names an answer's `Vary` lists, or `None` for `Vary: *`.
fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        let Ok(value) = value.to_str() else { continue };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                names.push(name);
            }
        }
    }
    Some(names)
}

impl CachedResponse {
    /// The entry for an answer to `request`, received at `now`, if the cache may store it;
    /// `None` when it may not (the caller still gets the answer).
    pub(crate) fn admit(
        request: &RequestHead,
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        now: SystemTime,
        config: &Config,
    ) -> Option<CachedResponse> {
        if !storable_status(status) {
            return None;
        }
        for name in NOT_STORED {
            headers.remove(name);
        }
        clamp_age(&mut headers);
        let names = vary_names(&headers);
        let policy_request = request.policy_request(names.iter().flatten(), config);
        let ttl = if without_freshness(&headers) {
            config.ttl.for_path(request.uri.path())
        } else {
            None
        };
        let policy = match ttl {
            // A route whose TTL is zero is never stored.
            Some(ttl) if ttl.is_zero() => return None,
            Some(ttl) => {
                // The policy is told what the TTL means in HTTP terms; the stored answer
                // keeps the upstream's own headers.
                let mut with_ttl = headers.clone();
                with_ttl.append(
                    header::CACHE_CONTROL,
                    HeaderValue::from_str(&format!("max-age={}", ttl.as_secs())).ok()?,
                );
                policy(&policy_request, status, &with_ttl, now)
            }
            None => policy(&policy_request, status, &headers, now),
        };
        if !policy.is_storable() {
            return None;
        }
        let fresh_until = later(now, policy.time_to_live(now));
        let allowance = match directive_seconds(&headers, "stale-if-error") {
            Some(seconds) => Duration::from_secs(seconds),
            None if has_directive(&headers, "must-revalidate")
                || has_directive(&headers, "no-cache") =>
            {
                Duration::ZERO
            }
            None => config.stale_if_error,
        };
        let stale_until = later(fresh_until, allowance);
        let keep_until = if has_validator(&headers) {
            stale_until.max(later(fresh_until, config.revalidation_window))
        } else {
            stale_until
        };
        if keep_until <= now {
            return None;
        }
        let vary = match names {
            None => Vary::Any,
            Some(names) => Vary::Fields(
                names
                    .into_iter()
                    .map(|name| {
                        let value = policy_request.headers.get(&name).cloned();
                        (name, value)
                    })
                    .collect(),
            ),
        };
        let age_base = Duration::from_secs(
            headers
                .get(header::AGE)
                .and_then(|v| v.to_str().ok())
                .and_then(delta_seconds)
                .unwrap_or(0),
        );
        Some(CachedResponse {
            status,
            headers,
            body,
            policy,
            stored_at: now,
            age_base,
            fresh_until,
            stale_until,
            keep_until,
            vary,
        })
    }

    /// Whether this entry can answer a request with these parts at `now`.
    pub(crate) fn usable(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        now: SystemTime,
        config: &Config,
    ) -> Usable {
        if now >= self.keep_until {
            return Usable::No;
        }
        let Vary::Fields(fields) = &self.vary else {
            return Usable::No;
        };
        for (name, stored) in fields.iter() {
            let current = headers
                .get(name)
                .map(|value| kept_value(name, value, &config.key_headers));
            if current.as_ref() != stored.as_ref() {
                return Usable::No;
            }
        }
        if headers.contains_key(header::CACHE_CONTROL) || headers.contains_key(header::PRAGMA) {
            // The request has its own directives (no-cache, max-age, max-stale, min-fresh):
            // the policy weighs them.
            let request = policy_request(
                method,
                uri,
                headers,
                fields.iter().map(|(name, _)| name),
                config,
            );
            return match self.policy.before_request(&request, now) {
                BeforeRequest::Fresh(_) => Usable::Fresh,
                BeforeRequest::Stale { matches: true, .. } => Usable::Stale,
                BeforeRequest::Stale { matches: false, .. } => Usable::No,
            };
        }
        if now < self.fresh_until {
            Usable::Fresh
        } else {
            Usable::Stale
        }
    }

    /// Whether this entry may answer in place of a failed upstream at `now`.
    pub(crate) fn serves_stale_at(&self, now: SystemTime) -> bool {
        now < self.stale_until
    }

    /// Adds the validators of this entry to a revalidation request; `false` when it has none.
    pub(crate) fn add_validators(&self, headers: &mut HeaderMap) -> bool {
        let mut added = false;
        if let Some(etag) = self.headers.get(header::ETAG) {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
            added = true;
        }
        if let Some(modified) = self.headers.get(header::LAST_MODIFIED) {
            headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
            added = true;
        }
        added
    }

    /// This entry refreshed by a `304 Not Modified` received at `now`: the `304`'s headers
    /// replace the stored ones. `None` when the `304` names another version (a different
    /// strong `ETag`).
    pub(crate) fn refreshed(
        &self,
        request: &RequestHead,
        not_modified: &HeaderMap,
        now: SystemTime,
        config: &Config,
    ) -> Option<Refreshed> {
        if let Some(new_tag) = not_modified.get(header::ETAG) {
            let new_tag = new_tag.as_bytes();
            if !new_tag.starts_with(b"W/") {
                let old_tag = self.headers.get(header::ETAG).map(|tag| {
                    let tag = tag.as_bytes();
                    tag.strip_prefix(b"W/").unwrap_or(tag)
                });
                if old_tag != Some(new_tag) {
                    return None;
                }
            }
        }
        let mut headers = self.headers.clone();
        for name in not_modified.keys() {
            if NOT_REFRESHED.contains(name) || NOT_STORED.contains(name) {
                continue;
            }
            headers.remove(name);
            for value in not_modified.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        Some(
            match CachedResponse::admit(
                request,
                self.status,
                headers.clone(),
                self.body.clone(),
                now,
                config,
            ) {
                Some(entry) => Refreshed::Store(entry),
                None => Refreshed::Answer(CachedResponse {
                    headers,
                    stored_at: now,
                    age_base: Duration::ZERO,
                    fresh_until: now,
                    stale_until: now,
                    keep_until: now,
                    ..self.clone()
                }),
            },
        )
    }

    /// The answer this entry gives at `now`, marked with `status`.
    pub(crate) fn respond<B>(
        &self,
        now: SystemTime,
        status: CacheStatus,
        status_header: Option<&HeaderName>,
    ) -> Response<CacheBody<B>>
    where
        B: http_body::Body,
    {
        let mut response = Response::new(CacheBody::full(self.body.clone()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        *headers = self.headers.clone();
        let age = self.age_base.saturating_add(since(now, self.stored_at));
        headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
        if let Some(name) = status_header {
            headers.insert(name.clone(), HeaderValue::from_static(status.as_str()));
        }
        response.extensions_mut().insert(status);
        response
    }

    /// About how many bytes this entry takes in memory, for a store's bound.
    pub fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        // The policy holds a copy of the headers, and its parsed directives.
        const FIXED: usize = 512;
        self.body.len() + 2 * headers + FIXED
    }

    /// The wall-clock time until which a store should keep it.
    pub fn keep_until(&self) -> SystemTime {
        self.keep_until
    }
}

/// What a `304` left of an entry.
#[derive(Debug)]
pub(crate) enum Refreshed {
    /// The refreshed entry, to store and answer with.
    Store(CachedResponse),
    /// The refreshed answer, which may no longer be stored (the `304` said `no-store`).
    Answer(CachedResponse),
}

fn policy(
    request: &PolicyRequest,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> CachePolicy {
    let options = CacheOptions {
        // A client's own cache is private: `private` answers may be stored.
        shared: false,
        ..CacheOptions::default()
    };
    CachePolicy::new_options(request, &PolicyResponse { status, headers }, now, options)
}

impl CachedResponse {
    /// How long after it was stored a store should keep it.
    pub fn keep_for(&self) -> Duration {
        since(self.keep_until, self.stored_at)
    }
}
