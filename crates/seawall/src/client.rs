//! [`Client`]: the standard stack over hyper-util's client, with a base URL and JSON calls.

use std::fmt;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::{Service, ServiceExt};

use crate::{HyperClient, Stack, StandardService};

/// The largest response body the JSON calls read (16 MiB), so a hostile upstream cannot make
/// a caller buffer without bound.
const MAX_JSON_BODY: usize = 16 << 20;

/// The error of the standard stack over hyper-util's client.
pub type StackError =
    <StandardService<HyperClient<Full<Bytes>>> as Service<Request<Full<Bytes>>>>::Error;

/// The standard stack over hyper-util's client, calling one API: paths are joined to its base
/// URL, and [`get_json`](Self::get_json) / [`post_json`](Self::post_json) send and read JSON.
///
/// Credentials in the base URL (`http://user:password@host/`) are sent as Basic
/// authentication and kept out of every request's URI, so that no layer, log or figure sees
/// them; neither the client's `Debug` rendering nor its errors show them.
///
/// Cheap to clone; clones share the stack.
#[derive(Clone)]
pub struct Client {
    /// The base URL without user information.
    base: String,
    /// `Basic <credentials>`, marked sensitive, when the base URL carried user information.
    authorization: Option<HeaderValue>,
    /// Also bounds the reading of each response body, which the stack's attempt timeout (over
    /// the head) does not cover.
    body_timeout: std::time::Duration,
    service: StandardService<HyperClient<Full<Bytes>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("basic_auth", &self.authorization.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn new(stack: &Stack, base_url: &str) -> Result<Self, seawall_core::ConfigError> {
        let base = base_url.trim_end_matches('/');
        // Paths are appended, so a query or fragment in the base would swallow them.
        let authority = base
            .parse::<Uri>()
            .ok()
            .filter(|uri| !base.contains(['?', '#']) && uri.scheme_str() == Some("http"))
            .and_then(|uri| {
                uri.authority()
                    .map(|authority| authority.as_str().to_owned())
            });
        let Some(authority) = authority else {
            // The error shows no credentials: where they end in a URL that does not parse
            // cannot be told, so such a URL is not shown at all.
            let shown = if base_url.contains('@') {
                "(a URL with user information; not shown)"
            } else {
                base_url
            };
            return Err(seawall_core::ConfigError::new(
                "base_url",
                shown,
                "an absolute http:// URL without query or fragment, such as \
                 `http://api.example.com/v1`",
            ));
        };
        let (base, authorization) = match authority.rsplit_once('@') {
            None => (base.to_owned(), None),
            Some((user_info, host)) => {
                // The authority follows `http://`, as spelt in the URL the URI parsed from.
                let start = base.find("://").map_or(0, |at| at + 3);
                let rest = base.get(start + authority.len()..).unwrap_or_default();
                let prefix = base.get(..start).unwrap_or_default();
                (format!("{prefix}{host}{rest}"), Some(basic_auth(user_info)))
            }
        };
        Ok(Self {
            base,
            authorization,
            body_timeout: stack.attempt_timeout,
            service: stack.hyper_client(),
        })
    }

    /// `GET` the base URL joined with `path`, and read the answer as JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(Method::GET, path, None).await
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
        let body = serde_json::to_vec(body).map_err(ClientError::Encode)?;
        self.json(Method::POST, path, Some((body, None))).await
    }

    /// As [`post_json`](Self::post_json), with an `Idempotency-Key`, so the retry layer may
    /// send it again after a failure.
    pub async fn post_json_idempotent<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        idempotency_key: &str,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(ClientError::Encode)?;
        self.json(Method::POST, path, Some((body, Some(idempotency_key))))
            .await
    }

    /// The service underneath, for any other request.
    pub fn service(&self) -> &StandardService<HyperClient<Full<Bytes>>> {
        &self.service
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, Option<&str>)>,
    ) -> Result<T, ClientError> {
        let separator = if path.is_empty() || path.starts_with(['/', '?']) {
            ""
        } else {
            "/"
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{separator}{path}", self.base))
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let body = match body {
            Some((json, key)) => {
                request =
                    request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                if let Some(key) = key {
                    request = request.header("idempotency-key", key);
                }
                Full::new(Bytes::from(json))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).map_err(ClientError::Request)?;
        let response = self
            .service
            .clone()
            .oneshot(request)
            .await
            .map_err(ClientError::Stack)?;
        let status = response.status();
        let read = Limited::new(response.into_body(), MAX_JSON_BODY).collect();
        let bytes = tokio::time::timeout(self.body_timeout, read)
            .await
            .map_err(|elapsed| ClientError::Body(Box::new(elapsed)))?
            .map_err(ClientError::Body)?
            .to_bytes();
        if !status.is_success() {
            return Err(ClientError::Status {
                status,
                body: bytes,
            });
        }
        serde_json::from_slice(&bytes).map_err(ClientError::Decode)
    }
}

/// The `Authorization` value for a URL's user information (`user[:password]`, each
/// percent-decoded), marked sensitive so that it is left out of logs and HTTP/2's header
/// compression.
fn basic_auth(user_info: &str) -> HeaderValue {
    use base64::Engine as _;
    let (user, password) = user_info.split_once(':').unwrap_or((user_info, ""));
    let decode = |part: &str| percent_encoding::percent_decode_str(part).collect::<Vec<u8>>();
    let mut credentials = decode(user);
    credentials.push(b':');
    credentials.extend(decode(password));
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    // Base64 is printable ASCII, always a valid header value.
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

/// Why a JSON call did not give a value.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The path (or the idempotency key) did not make a valid request.
    Request(http::Error),
    /// The stack refused or failed the request (see [`StackError`]).
    Stack(StackError),
    /// The response body broke off, was over 16 MiB, or took longer than the attempt timeout
    /// to arrive.
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// The upstream answered with a status other than 2xx; its body is kept.
    Status {
        /// The status.
        status: StatusCode,
        /// The body, as sent.
        body: Bytes,
    },
    /// The request body could not be written as JSON.
    Encode(serde_json::Error),
    /// The response was not the JSON expected.
    Decode(serde_json::Error),
}

/// Says which step failed; the cause is the [`source`](std::error::Error::source), not
/// repeated here, so that a report that walks the chain prints it once.
impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Request(_) => f.write_str("invalid request"),
            ClientError::Stack(_) => f.write_str("the request failed"),
            ClientError::Body(_) => f.write_str("reading the response body"),
            ClientError::Status { status, .. } => write!(f, "the upstream answered {status}"),
            ClientError::Encode(_) => f.write_str("writing the request as JSON"),
            ClientError::Decode(_) => f.write_str("reading the response as JSON"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Request(error) => Some(error),
            ClientError::Stack(error) => Some(error),
            ClientError::Body(error) => Some(error.as_ref()),
            ClientError::Status { .. } => None,
            ClientError::Encode(error) | ClientError::Decode(error) => Some(error),
        }
    }
}
