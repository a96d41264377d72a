//! The [`Cache`] service.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body::Body;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::body::{Buffered, CacheBody, buffer};
use crate::clock::Clock;
use crate::config::Config;
use crate::entry::{CachedResponse, Refreshed, RequestHead, Usable};
use crate::future::{ResponseFuture, mark};
use crate::handle::Stats;
use crate::key::CacheKey;
use crate::status::CacheStatus;
use crate::store::CacheStore;

/// What every service of one layer shares.
pub(crate) struct Shared<St> {
    pub(crate) store: St,
    pub(crate) config: Config,
    pub(crate) stats: Stats,
    pub(crate) clock: Clock,
}

/// A private HTTP cache in front of `S`; built by [`CacheLayer`](crate::CacheLayer).
///
/// It is always ready: a fresh hit needs nothing from the upstream, and a request that must
/// reach the upstream waits, inside the response future, for a clone of it to be ready (as
/// [`ServiceExt::oneshot`] does). So `S` must be `Clone` (wrap it in `tower::buffer::Buffer`
/// if it is not).
pub struct Cache<S, St = crate::MemoryStore> {
    inner: S,
    shared: Arc<Shared<St>>,
}

impl<S: Clone, St> Clone for Cache<S, St> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: std::fmt::Debug, St> std::fmt::Debug for Cache<S, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("inner", &self.inner).finish()
    }
}

impl<S, St> Cache<S, St> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<St>>) -> Self {
        Cache { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Whether the cache handles a request at all: GET and HEAD, neither conditional nor for a
/// range (those answers belong to the caller's own validators), nor `no-store`.
fn handles(method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    const OWN: [header::HeaderName; 5] = [
        header::RANGE,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
    ];
    if OWN.iter().any(|name| headers.contains_key(name)) {
        return false;
    }
    !headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-store"))
}

impl<S, St, ReqBody, ResBody> Service<Request<ReqBody>> for Cache<S, St>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    St: CacheStore,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + Unpin + 'static,
    ResBody::Error: Send,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<ReqBody>, ResBody>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness of the upstream is awaited in the response future, on a clone, only by
        // the requests that reach it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let inner = self.inner.clone();
        if !handles(request.method(), request.headers()) {
            shared.stats.bypassed.add(1);
            if !request.method().is_safe() {
                // RFC 9111 4.4: a successful unsafe request (POST, PUT, DELETE, ...)
                // invalidates what is stored for its URI.
                let keys = [Method::GET, Method::HEAD].map(|method| {
                    CacheKey::of(
                        &method,
                        request.uri(),
                        request.headers(),
                        &shared.config.key_headers,
                    )
                });
                let shared = Arc::clone(shared);
                return ResponseFuture::fetch(Box::pin(async move {
                    let response = inner.oneshot(request).await?;
                    let status = response.status();
                    if status.is_success() || status.is_redirection() {
                        for key in &keys {
                            remove(&shared, key).await;
                        }
                    }
                    Ok(mark(
                        response.map(CacheBody::upstream),
                        CacheStatus::Bypass,
                        shared.config.status_header.as_ref(),
                    ))
                }));
            }
            return ResponseFuture::bypass(
                inner.oneshot(request),
                shared.config.status_header.clone(),
            );
        }
        let now = shared.clock.at(Instant::now());
        let key = CacheKey::of(
            request.method(),
            request.uri(),
            request.headers(),
            &shared.config.key_headers,
        );
        let shared = Arc::clone(shared);
        match shared.store.get(&key).now_or_later() {
            Ok(found) => match usable(&shared, &request, found, now) {
                Lookup::Fresh(entry) => {
                    shared.stats.hits.add(1);
                    ResponseFuture::ready(entry.respond(
                        now,
                        CacheStatus::Hit,
                        shared.config.status_header.as_ref(),
                    ))
                }
                Lookup::Stale(entry) => {
                    ResponseFuture::fetch(Box::pin(fetch(shared, inner, request, key, entry)))
                }
            },
            Err(pending) => ResponseFuture::fetch(Box::pin(async move {
                let found = pending.await;
                let now = shared.clock.now();
                match usable(&shared, &request, found, now) {
                    Lookup::Fresh(entry) => {
                        shared.stats.hits.add(1);
                        Ok(entry.respond(
                            now,
                            CacheStatus::Hit,
                            shared.config.status_header.as_ref(),
                        ))
                    }
                    Lookup::Stale(entry) => fetch(shared, inner, request, key, entry).await,
                }
            })),
        }
    }
}

enum Lookup {
    Fresh(Arc<CachedResponse>),
    /// A stale entry to revalidate or to fall back on, or none.
    Stale(Option<Arc<CachedResponse>>),
}

fn usable<St, B>(
    shared: &Shared<St>,
    request: &Request<B>,
    found: Result<Option<Arc<CachedResponse>>, crate::StoreError>,
    now: std::time::SystemTime,
) -> Lookup {
    let entry = match found {
        Ok(entry) => entry,
        Err(error) => {
            shared.stats.store_errors.add(1);
            tracing::debug!(%error, "cache store lookup failed; treated as a miss");
            None
        }
    };
    let Some(entry) = entry else {
        return Lookup::Stale(None);
    };
    match entry.usable(
        request.method(),
        request.uri(),
        request.headers(),
        now,
        &shared.config,
    ) {
        Usable::Fresh => Lookup::Fresh(entry),
        Usable::Stale => Lookup::Stale(Some(entry)),
        Usable::No => Lookup::Stale(None),
    }
}

/// Asks the upstream: a miss, or a revalidation of `stale`, which also answers in place of
/// a failure within its `stale-if-error` allowance.
async fn fetch<S, St, ReqBody, ResBody>(
    shared: Arc<Shared<St>>,
    inner: S,
    mut request: Request<ReqBody>,
    key: CacheKey,
    stale: Option<Arc<CachedResponse>>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    St: CacheStore,
    ResBody: Body<Data = Bytes> + Unpin,
{
    let config = &shared.config;
    let status_header = config.status_header.as_ref();
    let head = RequestHead::of(&request);
    let revalidating = stale
        .as_ref()
        .is_some_and(|entry| entry.add_validators(request.headers_mut()));
    let result = inner.oneshot(request).await;
    let now = shared.clock.now();
    let response = match result {
        Ok(response) if !response.status().is_server_error() => response,
        failed => {
            if let Some(entry) = stale.as_ref().filter(|e| e.serves_stale_at(now)) {
                shared.stats.stale.add(1);
                return Ok(entry.respond(now, CacheStatus::Stale, status_header));
            }
            shared.stats.misses.add(1);
            return failed.map(|response| {
                mark(
                    response.map(CacheBody::upstream),
                    CacheStatus::Miss,
                    status_header,
                )
            });
        }
    };
    if revalidating
        && response.status() == StatusCode::NOT_MODIFIED
        && let Some(entry) = &stale
    {
        match entry.refreshed(&head, response.headers(), now, config) {
            Some(Refreshed::Store(refreshed)) => {
                shared.stats.revalidations.add(1);
                let refreshed = Arc::new(refreshed);
                put(&shared, key, Arc::clone(&refreshed)).await;
                return Ok(refreshed.respond(now, CacheStatus::Revalidated, status_header));
            }
            Some(Refreshed::Answer(answer)) => {
                shared.stats.revalidations.add(1);
                remove(&shared, &key).await;
                return Ok(answer.respond(now, CacheStatus::Revalidated, status_header));
            }
            // The 304 names another version (a strong `ETag` the stored answer does not
            // have) yet says the validators the cache sent still hold. The caller, who sent
            // no condition of its own, must not get a bodiless 304: it gets the stored
            // answer, which those validators identify, and the entry, which the 304 may not
            // refresh, is dropped so that the next request fetches the upstream's version.
            None => {
                shared.stats.revalidations.add(1);
                remove(&shared, &key).await;
                return Ok(entry.respond(now, CacheStatus::Revalidated, status_header));
            }
        }
    }
    shared.stats.misses.add(1);
    let (parts, body) = response.into_parts();
    let admitted = CachedResponse::admit(
        &head,
        parts.status,
        parts.headers.clone(),
        Bytes::new(),
        now,
        config,
    );
    let Some(mut entry) = admitted else {
        if stale.is_some() {
            // The upstream's new answer replaces the stored one, and may not be stored.
            remove(&shared, &key).await;
        }
        let response = Response::from_parts(parts, CacheBody::upstream(body));
        return Ok(mark(response, CacheStatus::Miss, status_header));
    };
    let body = match buffer(body, config.max_body_bytes).await {
        Buffered::Complete(data) => {
            entry.body = data.clone();
            put(&shared, key, Arc::new(entry)).await;
            CacheBody::full(data)
        }
        Buffered::Passed(body) => {
            if stale.is_some() {
                remove(&shared, &key).await;
            }
            body
        }
    };
    let response = Response::from_parts(parts, body);
    Ok(mark(response, CacheStatus::Miss, status_header))
}

async fn put<St: CacheStore>(shared: &Shared<St>, key: CacheKey, entry: Arc<CachedResponse>) {
    match shared.store.put(key, entry).await {
        Ok(()) => shared.stats.stored.add(1),
        Err(error) => {
            shared.stats.store_errors.add(1);
            tracing::debug!(%error, "cache store write failed; the answer is not stored");
        }
    }
}

async fn remove<St: CacheStore>(shared: &Shared<St>, key: &CacheKey) {
    if let Err(error) = shared.store.remove(key).await {
        shared.stats.store_errors.add(1);
        tracing::debug!(%error, "cache store removal failed");
    }
}
