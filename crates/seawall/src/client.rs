//! [`Client`]: the standard stack over hyper-util's client, calling one API: a base URL,
//! reqwest-shaped requests ([`RequestBuilder`]) and responses ([`Response`]).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE, USER_AGENT,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use seawall_core::{ClassifyError, ConfigError, FailureKind, QueueWait};
use seawall_rate_limit::{Cost, Priority};
use seawall_retry::{BoxError, ReplayBody, RetryReport};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use url::Url;

use crate::{Stack, StandardService};

/// The default cap on a response body a [`Response`] reads (16 MiB), so that a hostile
/// upstream cannot make a caller buffer without bound.
pub const DEFAULT_MAX_BODY_SIZE: usize = 16 << 20;

/// The `User-Agent` a [`Client`] sends unless told otherwise.
const DEFAULT_USER_AGENT: &str = concat!("seawall/", env!("CARGO_PKG_VERSION"));

/// The body of a [`Response`] taken apart with [`Response::into_inner`]: hyper's, measured by
/// the metrics layer.
pub type ResponseBody = seawall_metrics::MetricsBody<hyper::body::Incoming>;

/// The error of the standard stack over the client's [`Transport`].
pub type StackError = <StandardService<Transport> as Service<Request<Full<Bytes>>>>::Error;

#[cfg(feature = "rustls")]
type Inner = crate::HttpsClient<Full<Bytes>>;
#[cfg(not(feature = "rustls"))]
type Inner = crate::HyperClient<Full<Bytes>>;

/// The HTTP client under a [`Client`]'s stack: hyper-util's client, over HTTPS with rustls
/// (HTTP/1.1 or HTTP/2 by ALPN) and plain HTTP with the `rustls` feature, plain HTTP without
/// it. One type either way, so that the feature does not change [`Client::service`]'s type.
#[derive(Clone)]
pub struct Transport {
    inner: Inner,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("tls", &cfg!(feature = "rustls"))
            .finish_non_exhaustive()
    }
}

impl Service<Request<ReplayBody<Full<Bytes>>>> for Transport {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReplayBody<Full<Bytes>>>) -> Self::Future {
        self.inner.call(request)
    }
}

/// The standard stack over hyper-util's client, calling one API: paths are joined to its base
/// URL, requests are built as with reqwest ([`get`](Self::get), [`post`](Self::post), ...,
/// then [`send`](RequestBuilder::send)), and [`get_json`](Self::get_json) /
/// [`post_json`](Self::post_json) are shortcuts for JSON.
///
/// HTTPS works out of the box with the `rustls` feature (on by default): Mozilla's root
/// certificates, HTTP/2 when the server offers it by ALPN; a private authority or client
/// certificates through [`ClientBuilder`].
///
/// Credentials in the base URL (`https://user:password@host/`) are sent as Basic
/// authentication and kept out of every request's URI, so that no layer, log or figure sees
/// them; neither the client's `Debug` rendering nor its errors show them.
///
/// Cheap to clone; clones share the stack and the connection pool.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    service: StandardService<Transport>,
}

struct Shared {
    /// The base URL without user information, query or fragment.
    base: Url,
    /// What every request carries unless it sets the same header: the user agent, the base
    /// URL's credentials as `Authorization`, the builder's headers.
    default_headers: HeaderMap,
    /// The time a whole call may take by default, if any.
    timeout: Option<Duration>,
    /// Bounds the reading of each response body, which the stack's attempt timeout (over the
    /// head) does not cover.
    body_timeout: Duration,
    max_body_size: usize,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.shared.base.as_str())
            // Whether requests carry credentials, never what they are.
            .field(
                "authorization",
                &self.shared.default_headers.contains_key(AUTHORIZATION),
            )
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Client`]: TLS, headers every request carries, a per-call timeout, the body
/// size cap and the connection pool. Made by [`Stack::client_builder`].
pub struct ClientBuilder {
    stack: Stack,
    base_url: String,
    default_headers: HeaderMap,
    /// The first header that could not be made, reported by `build`.
    header_error: Option<ConfigError>,
    timeout: Option<Duration>,
    max_body_size: usize,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    #[cfg(feature = "rustls")]
    root_certificates: Vec<Vec<u8>>,
    #[cfg(feature = "rustls")]
    tls: Option<rustls::ClientConfig>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The base URL may carry credentials: it is not shown.
        f.debug_struct("ClientBuilder")
            .field("timeout", &self.timeout)
            .field("max_body_size", &self.max_body_size)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    pub(crate) fn new(stack: &Stack, base_url: &str) -> Self {
        Self {
            stack: stack.clone(),
            base_url: base_url.to_owned(),
            default_headers: HeaderMap::new(),
            header_error: None,
            timeout: None,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: usize::MAX,
            #[cfg(feature = "rustls")]
            root_certificates: Vec::new(),
            #[cfg(feature = "rustls")]
            tls: None,
        }
    }

    /// A header every request carries unless it sets the same one (replacing an earlier
    /// default of that name). An invalid name or value is a [`ConfigError`] from `build`. A
    /// credential header (`Authorization`, `Proxy-Authorization`, `Cookie`) is marked
    /// sensitive, kept out of `Debug` output.
    pub fn default_header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        HeaderValue: TryFrom<V>,
    {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(name), Ok(mut value)) => {
                guard(&name, &mut value);
                self.default_headers.insert(name, value);
            }
            _ => self.fail(ConfigError::new(
                "default_header",
                "(not shown)",
                "a valid header name and value",
            )),
        }
        self
    }

    /// Headers every request carries unless it sets the same ones; each replaces an earlier
    /// default of its name.
    pub fn default_headers(mut self, mut headers: HeaderMap) -> Self {
        for (name, value) in headers.iter_mut() {
            guard(name, value);
        }
        self.default_headers.extend(headers);
        self
    }

    /// The `User-Agent` (default `seawall/<version>`).
    pub fn user_agent<V>(self, value: V) -> Self
    where
        HeaderValue: TryFrom<V>,
    {
        self.default_header(USER_AGENT, value)
    }

    /// `Authorization: Bearer <token>` on every request, marked sensitive.
    pub fn bearer_auth(mut self, token: impl fmt::Display) -> Self {
        match sensitive(format!("Bearer {token}")) {
            Some(value) => {
                self.default_headers.insert(AUTHORIZATION, value);
            }
            None => self.fail(ConfigError::new(
                "bearer_auth",
                "(not shown)",
                "a token that is a valid header value",
            )),
        }
        self
    }

    /// The time a whole call may take by default, attempts and waits included (no default:
    /// the stack's attempt timeout and retry budget bound it). From 1 ms to 1 h.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The largest response body read by [`Response::bytes`] and the calls built on it
    /// (default 16 MiB; at least 1 byte).
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// How long an idle pooled connection is kept (default 90 s; `None` keeps it until the
    /// server closes it).
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// How many idle connections are kept per host (default unbounded; 0 keeps none).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// Trusts the certificates in `pem` (one or more PEM `CERTIFICATE` blocks) besides
    /// Mozilla's roots: a private certificate authority. With the `rustls` feature.
    #[cfg(feature = "rustls")]
    pub fn add_root_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.root_certificates.push(pem.as_ref().to_vec());
        self
    }

    /// The whole TLS configuration, used as given (its roots, client certificates, protocol
    /// versions) but for its ALPN protocols, which are replaced by the ones this client
    /// speaks (HTTP/2 and HTTP/1.1). Not combined with
    /// [`add_root_certificate`](Self::add_root_certificate). With the `rustls` feature.
    #[cfg(feature = "rustls")]
    pub fn tls_config(mut self, tls: rustls::ClientConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    fn fail(&mut self, error: ConfigError) {
        if self.header_error.is_none() {
            self.header_error = Some(error);
        }
    }

    /// Checks every setting and builds the client.
    pub fn build(self) -> Result<Client, ConfigError> {
        if let Some(error) = self.header_error {
            return Err(error);
        }
        let (base, credentials) = parse_base(&self.base_url)?;
        let timeout = self
            .timeout
            .map(|timeout| {
                seawall_core::check_range(
                    "timeout",
                    timeout,
                    Duration::from_millis(1),
                    Duration::from_secs(3600),
                    "a duration from 1 ms to 1 h",
                )
            })
            .transpose()?;
        if self.max_body_size == 0 {
            return Err(ConfigError::new("max_body_size", 0, "at least 1 byte"));
        }
        let mut default_headers = HeaderMap::new();
        default_headers.insert(USER_AGENT, HeaderValue::from_static(DEFAULT_USER_AGENT));
        if let Some(credentials) = credentials {
            default_headers.insert(AUTHORIZATION, credentials);
        }
        default_headers.extend(self.default_headers);

        let mut pool = LegacyClient::builder(TokioExecutor::new());
        pool.pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host);
        #[cfg(feature = "rustls")]
        let inner = {
            if self.tls.is_some() && !self.root_certificates.is_empty() {
                return Err(ConfigError::new(
                    "tls_config",
                    "(a configuration with its own roots)",
                    "either tls_config or add_root_certificate, not both",
                ));
            }
            let tls = match self.tls {
                Some(tls) => tls,
                None => default_tls(&self.root_certificates)?,
            };
            pool.build(https_connector(tls))
        };
        #[cfg(not(feature = "rustls"))]
        let inner = pool.build_http();

        Ok(Client {
            shared: Arc::new(Shared {
                base,
                default_headers,
                timeout,
                body_timeout: self.stack.attempt_timeout,
                max_body_size: self.max_body_size,
            }),
            service: self.stack.service(Transport { inner }),
        })
    }
}

/// rustls with ring, the safe default protocol versions, Mozilla's roots and `extra` PEM
/// certificates.
#[cfg(feature = "rustls")]
fn default_tls(extra: &[Vec<u8>]) -> Result<rustls::ClientConfig, ConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for pem in extra {
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|error| {
                ConfigError::new("root_certificate", error, "PEM CERTIFICATE blocks")
            })?;
            roots.add(certificate).map_err(|error| {
                ConfigError::new("root_certificate", error, "a valid CA certificate")
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(ConfigError::new(
                "root_certificate",
                "(no CERTIFICATE block)",
                "PEM CERTIFICATE blocks",
            ));
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| ConfigError::new("tls", error, "rustls's default protocol versions"))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// hyper-rustls's connector for `tls`, offering HTTP/2 and HTTP/1.1 by ALPN, and plain HTTP
/// for `http://` URLs.
#[cfg(feature = "rustls")]
pub(crate) fn https_connector(
    mut tls: rustls::ClientConfig,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    // hyper-rustls sets ALPN itself and refuses a configuration that already has some.
    tls.alpn_protocols.clear();
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .build()
}

/// The schemes a base URL may have in this build.
#[cfg(feature = "rustls")]
const SCHEMES: (&[&str], &str) = (
    &["http", "https"],
    "an absolute http:// or https:// URL without query or fragment, such as \
     `https://api.example.com/v1`",
);
#[cfg(not(feature = "rustls"))]
const SCHEMES: (&[&str], &str) = (
    &["http"],
    "an absolute http:// URL without query or fragment, such as `http://api.example.com/v1` \
     (https:// needs the `rustls` feature)",
);

/// The base URL without user information, and the `Authorization` its user information makes.
fn parse_base(base_url: &str) -> Result<(Url, Option<HeaderValue>), ConfigError> {
    let parsed = Url::parse(base_url).ok().filter(|url| {
        SCHEMES.0.contains(&url.scheme())
            && url.host().is_some()
            && url.query().is_none()
            && url.fragment().is_none()
    });
    let Some(mut base) = parsed else {
        // The error shows no credentials: where they end in a URL that does not parse cannot
        // be told, so such a URL is not shown at all; nor is a query, which may hold a key.
        let shown = if base_url.contains('@') {
            "(a URL with user information; not shown)"
        } else if let Some((before, _)) = base_url.split_once('?') {
            &format!("{before}?…")
        } else {
            base_url
        };
        return Err(ConfigError::new("base_url", shown, SCHEMES.1));
    };
    let credentials = (!base.username().is_empty() || base.password().is_some())
        .then(|| basic_auth_value(&decode(base.username()), base.password().map(decode)));
    // Both succeed on a URL with a host.
    let _ = base.set_username("");
    let _ = base.set_password(None);
    Ok((base, credentials))
}

fn decode(part: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(part).collect()
}

/// `Basic base64(user:password)`, marked sensitive so that it is left out of `Debug` and of
/// HTTP/2's header compression.
fn basic_auth_value(user: &[u8], password: Option<Vec<u8>>) -> HeaderValue {
    use base64::Engine as _;
    let mut credentials = user.to_vec();
    credentials.push(b':');
    credentials.extend(password.unwrap_or_default());
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    // Base64 is printable ASCII, always a valid header value.
    sensitive(format!("Basic {encoded}")).unwrap_or_else(|| HeaderValue::from_static("Basic"))
}

/// Marks the value of a header that carries credentials (`Authorization`,
/// `Proxy-Authorization`, `Cookie`) sensitive, however it was set, so that no `Debug` output
/// shows it and HTTP/2 never indexes it.
fn guard(name: &HeaderName, value: &mut HeaderValue) {
    if [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE].contains(name) {
        value.set_sensitive(true);
    }
}

fn sensitive(value: String) -> Option<HeaderValue> {
    let mut value = HeaderValue::try_from(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

impl Client {
    pub(crate) fn new(stack: &Stack, base_url: &str) -> Result<Self, ConfigError> {
        ClientBuilder::new(stack, base_url).build()
    }

    /// The base URL, without credentials.
    pub fn base_url(&self) -> &Url {
        &self.shared.base
    }

    /// A `GET` of the base URL joined with `path`.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// A `POST` to the base URL joined with `path`. Retried only with an
    /// [`idempotency_key`](RequestBuilder::idempotency_key).
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// A `PUT` to the base URL joined with `path`.
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    /// A `PATCH` to the base URL joined with `path`. Retried only with an
    /// [`idempotency_key`](RequestBuilder::idempotency_key).
    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    /// A `DELETE` of the base URL joined with `path`.
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// A `HEAD` of the base URL joined with `path`.
    pub fn head(&self, path: &str) -> RequestBuilder {
        self.request(Method::HEAD, path)
    }

    /// A request with any method to the base URL joined with `path`.
    ///
    /// The path is resolved as a relative reference (the `url` crate's rules, which
    /// percent-encode what needs it) below the base URL's path: `items/7` and `/items/7`
    /// both go to `<base path>/items/7`, `?page=2` keeps the base path and sets the query. A
    /// path that would leave the base URL (another host, `..` above the base path) makes
    /// [`send`](RequestBuilder::send) fail with [`ClientErrorKind::Request`], so that the
    /// client's credentials never go elsewhere.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.join(path).map(|url| Pending {
            method,
            url,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            priority: None,
            cost: None,
            timeout: None,
        });
        RequestBuilder {
            client: self.clone(),
            request: request
                .map_err(|error| ClientError::new(ClientErrorKind::Request(error), None)),
        }
    }

    fn join(&self, path: &str) -> Result<Url, BoxError> {
        let base = &self.shared.base;
        if path.is_empty() || path.starts_with(['?', '#']) {
            let mut url = base.join(path)?;
            // A query or fragment alone keeps the base path as it is.
            url.set_path(base.path());
            return Ok(url);
        }
        let mut directory = base.clone();
        if !directory.path().ends_with('/') {
            let path = format!("{}/", directory.path());
            directory.set_path(&path);
        }
        let relative = path.trim_start_matches('/');
        // A path given from its root (`/users:search`) is one whatever its first segment
        // holds; made relative, a colon in that segment would read as a scheme
        // (RFC 3986, section 4.2), so it is joined as `./users:search`.
        let url = if relative.len() < path.len() {
            directory.join(&format!("./{relative}"))?
        } else {
            directory.join(relative)?
        };
        let inside = url.scheme() == base.scheme()
            && url.host() == base.host()
            && url.port_or_known_default() == base.port_or_known_default()
            && url.username().is_empty()
            && url.password().is_none()
            && (url.path() == base.path() || url.path().starts_with(directory.path()));
        if !inside {
            return Err("the path leaves the client's base URL".into());
        }
        Ok(url)
    }

    /// `GET` the base URL joined with `path`, and read the answer as JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.get(path).send_json().await
    }

    /// `POST` `body` as JSON to the base URL joined with `path`, and read the answer as JSON.
    ///
    /// A POST is retried only with an `Idempotency-Key` (see the retry layer); use
    /// [`post_json_idempotent`](Self::post_json_idempotent) to send one.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.post(path).json(body).send_json().await
    }

    /// As [`post_json`](Self::post_json), with an `Idempotency-Key`, so the retry layer may
    /// send it again after a failure.
    pub async fn post_json_idempotent<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        idempotency_key: &str,
    ) -> Result<T, ClientError> {
        self.post(path)
            .idempotency_key(idempotency_key)
            .json(body)
            .send_json()
            .await
    }

    /// The service underneath, for any other request.
    pub fn service(&self) -> &StandardService<Transport> {
        &self.service
    }
}

/// What a [`RequestBuilder`] has gathered so far.
struct Pending {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Bytes,
    priority: Option<Priority>,
    cost: Option<Cost>,
    timeout: Option<Duration>,
}

/// A request being built, as with reqwest: made by [`Client::get`] and the other methods,
/// sent with [`send`](Self::send). A step that fails (an invalid header, a body that cannot be
/// encoded) makes `send` return that error.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    client: Client,
    request: Result<Pending, ClientError>,
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("RequestBuilder");
        match &self.request {
            // Sensitive header values (the auth helpers') show as `Sensitive`.
            Ok(pending) => debug
                .field("method", &pending.method)
                .field("url", &format_args!("{}", Shown(&pending.url)))
                .field("headers", &pending.headers)
                .field("timeout", &pending.timeout),
            Err(error) => debug.field("error", error),
        };
        debug.finish_non_exhaustive()
    }
}

impl RequestBuilder {
    fn with(mut self, change: impl FnOnce(&mut Pending) -> Result<(), ClientErrorKind>) -> Self {
        if let Ok(pending) = &mut self.request
            && let Err(kind) = change(pending)
        {
            let url = pending.url.clone();
            self.request = Err(ClientError::new(kind, Some(url)));
        }
        self
    }

    /// Sets `name` to `value` on a request that has no such header of its own, unless the
    /// client's default for it is of the same kind (JSON for the JSON helpers): such a
    /// default (`Accept: application/vnd.github+json`, say) is the user's choice, which a
    /// helper's generic value must not replace; one of another kind (a JSON:API
    /// `Content-Type` on a form) would mislabel the body.
    fn unless_set(
        &self,
        name: HeaderName,
        value: &'static str,
    ) -> impl FnOnce(&mut Pending) + use<> {
        let defaulted = self
            .client
            .shared
            .default_headers
            .get(&name)
            .and_then(|default| default.to_str().ok())
            .is_some_and(|default| same_kind(default, value));
        move |pending| {
            if !defaulted {
                pending
                    .headers
                    .entry(name)
                    .or_insert(HeaderValue::from_static(value));
            }
        }
    }

    /// Appends `query`'s fields to the URL's query, percent-encoded (`&[("q", "a b")]`, a map,
    /// or a struct with `Serialize`).
    pub fn query<T: Serialize + ?Sized>(self, query: &T) -> Self {
        self.with(|pending| {
            {
                let mut pairs = pending.url.query_pairs_mut();
                query
                    .serialize(serde_urlencoded::Serializer::new(&mut pairs))
                    .map_err(|error| ClientErrorKind::Encode(Box::new(error)))?;
            }
            if pending.url.query() == Some("") {
                pending.url.set_query(None);
            }
            Ok(())
        })
    }

    /// Adds a header (after any of the same name this request already has); it replaces the
    /// client's default of that name. A credential header (`Authorization`,
    /// `Proxy-Authorization`, `Cookie`) is marked sensitive, kept out of `Debug` output.
    pub fn header<K, V>(self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.with(|pending| {
            let name = HeaderName::try_from(name)
                .map_err(|error| ClientErrorKind::Request(Box::new(error.into())))?;
            let mut value = HeaderValue::try_from(value)
                .map_err(|error| ClientErrorKind::Request(Box::new(error.into())))?;
            guard(&name, &mut value);
            pending.headers.append(name, value);
            Ok(())
        })
    }

    /// Adds every header of `headers`; each name replaces the client's default of that name.
    pub fn headers(self, headers: HeaderMap) -> Self {
        self.with(|pending| {
            let mut name = None;
            for (next, mut value) in headers {
                name = next.or(name);
                if let Some(name) = &name {
                    guard(name, &mut value);
                    pending.headers.append(name, value);
                }
            }
            Ok(())
        })
    }

    /// `Authorization: Bearer <token>`, marked sensitive; replaces the client's.
    pub fn bearer_auth(self, token: impl fmt::Display) -> Self {
        self.with(|pending| {
            let value = sensitive(format!("Bearer {token}")).ok_or_else(|| {
                ClientErrorKind::Request("the bearer token is not a valid header value".into())
            })?;
            pending.headers.insert(AUTHORIZATION, value);
            Ok(())
        })
    }

    /// `Authorization: Basic base64(user:password)`, marked sensitive; replaces the
    /// client's.
    pub fn basic_auth(self, user: impl fmt::Display, password: Option<impl fmt::Display>) -> Self {
        self.with(|pending| {
            let value = basic_auth_value(
                user.to_string().as_bytes(),
                password.map(|password| password.to_string().into_bytes()),
            );
            pending.headers.insert(AUTHORIZATION, value);
            Ok(())
        })
    }

    /// `body` as JSON, with `Content-Type: application/json` unless the request sets one or
    /// the client's default is JSON too (`application/vnd.api+json`, say).
    pub fn json<T: Serialize + ?Sized>(self, body: &T) -> Self {
        let content_type = self.unless_set(CONTENT_TYPE, "application/json");
        self.with(|pending| {
            let json = serde_json::to_vec(body)
                .map_err(|error| ClientErrorKind::Encode(Box::new(error)))?;
            pending.body = Bytes::from(json);
            content_type(pending);
            Ok(())
        })
    }

    /// `body` as a URL-encoded form, with `Content-Type: application/x-www-form-urlencoded`
    /// unless the request sets one (a client's default of another type is not kept).
    pub fn form<T: Serialize + ?Sized>(self, body: &T) -> Self {
        let content_type = self.unless_set(CONTENT_TYPE, "application/x-www-form-urlencoded");
        self.with(|pending| {
            let form = serde_urlencoded::to_string(body)
                .map_err(|error| ClientErrorKind::Encode(Box::new(error)))?;
            pending.body = Bytes::from(form);
            content_type(pending);
            Ok(())
        })
    }

    /// The body as given; no `Content-Type` is added.
    pub fn body(self, body: impl Into<Bytes>) -> Self {
        self.with(|pending| {
            pending.body = body.into();
            Ok(())
        })
    }

    /// An `Idempotency-Key` header, so that the retry layer may resend a `POST` or `PATCH`.
    pub fn idempotency_key(self, key: &str) -> Self {
        self.header(seawall_core::IDEMPOTENCY_KEY, key)
    }

    /// The request's place in the rate limiter's line: higher goes first (default 0).
    pub fn priority(self, priority: u8) -> Self {
        self.with(|pending| {
            pending.priority = Some(Priority(priority));
            Ok(())
        })
    }

    /// How many tokens the request takes from every quota (default 1; 0 counts as 1).
    pub fn cost(self, tokens: u32) -> Self {
        self.with(|pending| {
            pending.cost = Some(Cost(tokens));
            Ok(())
        })
    }

    /// The time the whole call may take, attempts, backoff and waits in the limiter included,
    /// and the reading of the body after it; replaces the client's. When it runs out, the
    /// attempt in flight is dropped (its connection closed) and `send` fails with
    /// [`ClientErrorKind::TimedOut`].
    pub fn timeout(self, timeout: Duration) -> Self {
        self.with(|pending| {
            pending.timeout = Some(timeout);
            Ok(())
        })
    }

    /// Sends the request through the stack and returns the upstream's answer, whatever its
    /// status (see [`Response::error_for_status`]).
    pub async fn send(self) -> Result<Response, ClientError> {
        let pending = self.request?;
        let shared = &self.client.shared;
        let timeout = pending.timeout.or(shared.timeout);
        let deadline = timeout.map(|timeout| seawall_core::clock::later(Instant::now(), timeout));
        let url = pending.url;
        let mut headers = shared.default_headers.clone();
        headers.extend(pending.headers);
        let mut request = Request::new(Full::new(pending.body));
        *request.method_mut() = pending.method;
        *request.headers_mut() = headers;
        match url.as_str().parse() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(error) => {
                return Err(ClientError::new(
                    ClientErrorKind::Request(Box::new(error)),
                    Some(url),
                ));
            }
        }
        if let Some(priority) = pending.priority {
            request.extensions_mut().insert(priority);
        }
        if let Some(cost) = pending.cost {
            request.extensions_mut().insert(cost);
        }
        let call = self.client.service.clone().oneshot(request);
        let outcome = match (deadline, timeout) {
            (Some(deadline), Some(timeout)) => {
                match tokio::time::timeout_at(deadline, call).await {
                    Ok(outcome) => outcome,
                    Err(_elapsed) => {
                        return Err(ClientError::new(
                            ClientErrorKind::TimedOut(timeout),
                            Some(url),
                        ));
                    }
                }
            }
            _ => call.await,
        };
        match outcome {
            Ok(response) => Ok(Response {
                inner: response,
                url,
                deadline,
                body_timeout: shared.body_timeout,
                max_body_size: shared.max_body_size,
            }),
            Err(error) => Err(ClientError::new(ClientErrorKind::Stack(error), Some(url))),
        }
    }

    /// Sends with `Accept: application/json` (unless the request sets one, or the client's
    /// default accepts JSON too), fails on a status other than 2xx (keeping its body), and
    /// reads the answer as JSON.
    async fn send_json<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        let accept = self.unless_set(ACCEPT, "application/json");
        let response = self
            .with(|pending| {
                accept(pending);
                Ok(())
            })
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let url = response.url.clone();
            let body = response.bytes().await?;
            return Err(ClientError::new(
                ClientErrorKind::Status { status, body },
                Some(url),
            ));
        }
        response.json().await
    }
}

/// An upstream's answer to a [`Client`]'s request, and what the stack did to get it. The
/// body is read with [`bytes`](Self::bytes), [`text`](Self::text) or [`json`](Self::json),
/// up to the client's body size cap.
pub struct Response {
    inner: http::Response<ResponseBody>,
    url: Url,
    /// The call's deadline, which the reading of the body keeps to.
    deadline: Option<Instant>,
    body_timeout: Duration,
    max_body_size: usize,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A cookie the server sets is a credential: shown as `Sensitive`.
        let mut headers = self.headers().clone();
        for (name, value) in headers.iter_mut() {
            if *name == SET_COOKIE {
                value.set_sensitive(true);
            }
        }
        f.debug_struct("Response")
            .field("url", &format_args!("{}", Shown(&self.url)))
            .field("status", &self.status())
            .field("version", &self.version())
            .field("headers", &headers)
            .finish_non_exhaustive()
    }
}

impl Response {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.inner.status()
    }

    /// The HTTP version the answer came in (HTTP/2 when negotiated by ALPN).
    pub fn version(&self) -> Version {
        self.inner.version()
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// The URL requested, without credentials.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The attempts the stack made for this answer, the first included.
    pub fn attempts(&self) -> u32 {
        self.inner
            .extensions()
            .get::<RetryReport>()
            .map_or(1, |report| report.attempts)
    }

    /// How long the call waited in the rate limiter: every attempt's wait before it was sent,
    /// added up (zero if none waited; an attempt that ended in an error, with no answer, is
    /// not counted).
    pub fn queue_wait(&self) -> Duration {
        QueueWait::of(&self.inner)
    }

    /// This response if its status is not 4xx or 5xx, else a [`ClientErrorKind::Status`]
    /// error with the status (and an empty body: the body is not read).
    pub fn error_for_status(self) -> Result<Self, ClientError> {
        let status = self.status();
        if status.is_client_error() || status.is_server_error() {
            return Err(ClientError::new(
                ClientErrorKind::Status {
                    status,
                    body: Bytes::new(),
                },
                Some(self.url),
            ));
        }
        Ok(self)
    }

    /// The whole body, up to the client's body size cap, within the call's timeout or the
    /// stack's attempt timeout, whichever ends first.
    pub async fn bytes(self) -> Result<Bytes, ClientError> {
        let until = seawall_core::clock::later(Instant::now(), self.body_timeout);
        let until = self.deadline.map_or(until, |deadline| deadline.min(until));
        let url = self.url;
        let read = Limited::new(self.inner.into_body(), self.max_body_size).collect();
        match tokio::time::timeout_at(until, read).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(error)) => Err(ClientError::new(ClientErrorKind::Body(error), Some(url))),
            Err(elapsed) => Err(ClientError::new(
                ClientErrorKind::Body(Box::new(elapsed)),
                Some(url),
            )),
        }
    }

    /// The body as text (invalid UTF-8 replaced).
    pub async fn text(self) -> Result<String, ClientError> {
        let bytes = self.bytes().await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The body as JSON.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        let url = self.url.clone();
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes)
            .map_err(|error| ClientError::new(ClientErrorKind::Decode(error), Some(url)))
    }

    /// The `http` response, its body unread.
    pub fn into_inner(self) -> http::Response<ResponseBody> {
        self.inner
    }
}

/// Why a [`Client`] call did not give an answer or a value: [`kind`](Self::kind) says what
/// went wrong, the accessors answer the common questions, and [`url`](Self::url) says where
/// (never with credentials, which no part of the error shows). Its `Display` and `Debug`
/// show the URL without its query, which may carry a key; `url()` has it whole.
pub struct ClientError {
    inner: Box<(ClientErrorKind, Option<Url>)>,
}

/// What went wrong in a [`Client`] call.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientErrorKind {
    /// The path, a header or the idempotency key did not make a valid request.
    Request(BoxError),
    /// The stack refused or failed the request (see [`StackError`]).
    Stack(StackError),
    /// The call's [`timeout`](RequestBuilder::timeout) ran out before an answer came.
    TimedOut(Duration),
    /// The response body broke off, was over the size cap, or took longer than the time left
    /// to arrive.
    Body(BoxError),
    /// The upstream answered with a status that was not wanted; its body is kept when it was
    /// read.
    Status {
        /// The status.
        status: StatusCode,
        /// The body, as sent (empty from [`Response::error_for_status`]).
        body: Bytes,
    },
    /// The request body or query could not be written (as JSON or as a form).
    Encode(BoxError),
    /// The response was not the JSON expected.
    Decode(serde_json::Error),
}

impl ClientError {
    fn new(kind: ClientErrorKind, url: Option<Url>) -> Self {
        Self {
            inner: Box::new((kind, url)),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> &ClientErrorKind {
        &self.inner.0
    }

    /// What went wrong, owned.
    pub fn into_kind(self) -> ClientErrorKind {
        let (kind, _url) = *self.inner;
        kind
    }

    /// The URL of the request, without credentials (`None` if the request could not be
    /// made).
    pub fn url(&self) -> Option<&Url> {
        self.inner.1.as_ref()
    }

    /// The upstream's status, for a [`Status`](ClientErrorKind::Status) error.
    pub fn status(&self) -> Option<StatusCode> {
        match self.kind() {
            ClientErrorKind::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The standard stack's typed error (attempts, why it stopped, a refusal's retry-after),
    /// for a [`Stack`](ClientErrorKind::Stack) error.
    pub fn stack_error(&self) -> Option<&StackError> {
        match self.kind() {
            ClientErrorKind::Stack(error) => Some(error),
            _ => None,
        }
    }

    /// Whether time ran out: the call's timeout, the last attempt's, or the body's.
    pub fn is_timeout(&self) -> bool {
        match self.kind() {
            ClientErrorKind::TimedOut(_) => true,
            ClientErrorKind::Body(error) => error.is::<tokio::time::error::Elapsed>(),
            ClientErrorKind::Stack(error) => error.failure_kind() == FailureKind::Timeout,
            _ => false,
        }
    }

    /// Whether a seawall layer refused the call before it reached the upstream: the circuit
    /// breaker open, the rate limiter's queue full or its wait too long.
    pub fn is_rejected(&self) -> bool {
        self.failure_kind() == Some(FailureKind::Rejected)
    }

    /// The kind of failure, as the layers classify it, for the errors that are failures of
    /// the call (the stack's, a timeout, a 5xx or 429 status, a broken body); `None` for a
    /// request that could not be made or a body that did not decode.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        match self.kind() {
            ClientErrorKind::Stack(error) => Some(error.failure_kind()),
            ClientErrorKind::TimedOut(_) => Some(FailureKind::Timeout),
            ClientErrorKind::Body(_) if self.is_timeout() => Some(FailureKind::Timeout),
            ClientErrorKind::Body(_) => Some(FailureKind::Transport),
            ClientErrorKind::Status { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => {
                Some(FailureKind::Throttled)
            }
            ClientErrorKind::Status { status, .. } if status.is_server_error() => {
                Some(FailureKind::ServerError)
            }
            _ => None,
        }
    }
}

impl fmt::Debug for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientError")
            .field("kind", self.kind())
            .field("url", &self.url().map(|url| format!("{}", Shown(url))))
            .finish()
    }
}

/// Says which step failed, and the URL; the cause is the [`source`](std::error::Error::source),
/// not repeated here, so that a report that walks the chain prints it once.
impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            ClientErrorKind::Request(_) => f.write_str("invalid request")?,
            ClientErrorKind::Stack(_) => f.write_str("the request failed")?,
            ClientErrorKind::TimedOut(timeout) => {
                write!(f, "the call took longer than its timeout of {timeout:?}")?;
            }
            ClientErrorKind::Body(_) => f.write_str("reading the response body")?,
            ClientErrorKind::Status { status, .. } => write!(f, "the upstream answered {status}")?,
            ClientErrorKind::Encode(_) => f.write_str("encoding the request")?,
            ClientErrorKind::Decode(_) => f.write_str("reading the response as JSON")?,
        }
        if let Some(url) = self.url() {
            write!(f, " ({})", Shown(url))?;
        }
        Ok(())
    }
}

/// Whether a media type a client sends by default is of the kind a helper would send (a bare
/// type): JSON (`application/json`, `application/vnd.api+json`, with parameters or not) for
/// JSON, the same type for anything else.
fn same_kind(default: &str, helper: &str) -> bool {
    let essence = |media: &str| {
        media
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    if helper == "application/json" {
        // A list (`Accept: text/html;q=0.9, application/vnd.x+json`) is of the kind if one
        // of its types is.
        return default.split(',').any(|one| {
            let one = essence(one);
            one == "application/json" || one.ends_with("+json")
        });
    }
    essence(default) == helper
}

/// A URL as logs and errors show it: without its query, which may carry a key
/// (`?api_key=`, `?access_token=`, a signature), marked `?…` when there was one. The
/// credentials of the base URL never reach a request's URL.
struct Shown<'a>(&'a Url);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0[..url::Position::AfterPath])?;
        if self.0.query().is_some() {
            f.write_str("?…")?;
        }
        Ok(())
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.kind() {
            ClientErrorKind::Request(error)
            | ClientErrorKind::Body(error)
            | ClientErrorKind::Encode(error) => Some(error.as_ref()),
            ClientErrorKind::Stack(error) => Some(error),
            ClientErrorKind::Decode(error) => Some(error),
            ClientErrorKind::TimedOut(_) | ClientErrorKind::Status { .. } => None,
        }
    }
}
