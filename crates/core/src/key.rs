//! Request keys: which upstream a request is for, so that limits and breakers can be kept per
//! upstream.

use std::fmt;
use std::hash::Hash;

use http::uri::{Authority, Scheme};
use http::{Extensions, HeaderMap, Method, Request, Uri, header};

/// The parts of a request a key is taken from: everything but the body, so that one
/// extractor serves every body type.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions.
    pub extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// The head of `request`.
    pub fn of<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }
}

/// Extracts the key a request is limited or broken by.
///
/// Implemented by [`ByHost`] (the default), [`Global`] and every closure
/// `Fn(&RequestHead<'_>) -> K`.
pub trait KeyExtractor {
    /// The key type. Cheap to clone: it is cloned into the keyed map on first use.
    type Key: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static;

    /// The key of a request.
    fn extract(&self, head: &RequestHead<'_>) -> Self::Key;

    /// The key of `request`.
    fn extract_from<B>(&self, request: &Request<B>) -> Self::Key {
        self.extract(&RequestHead::of(request))
    }

    /// `Some` when every request has this same key, so a layer can keep one state and skip
    /// the keyed map. Only [`Global`] says so.
    fn single_key(&self) -> Option<Self::Key> {
        None
    }
}

impl<F, K> KeyExtractor for F
where
    F: Fn(&RequestHead<'_>) -> K,
    K: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static,
{
    type Key = K;

    fn extract(&self, head: &RequestHead<'_>) -> K {
        self(head)
    }
}

/// One key for every request: a single shared limit or breaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Global;

impl KeyExtractor for Global {
    type Key = ();

    fn extract(&self, _head: &RequestHead<'_>) {}

    fn single_key(&self) -> Option<()> {
        Some(())
    }
}

/// Keys requests by scheme and authority (`https://api.example.com`), the default.
///
/// The authority compares case-insensitively and a port equal to the scheme's default is
/// dropped, so `http://A.example:80/x` and `http://a.example/y` share a key. A request with a
/// relative URI is keyed by its `Host` header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByHost;

/// The key [`ByHost`] extracts.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HostKey {
    scheme: Option<Scheme>,
    authority: Option<Authority>,
}

impl HostKey {
    /// The scheme, if the request had one.
    pub fn scheme(&self) -> Option<&Scheme> {
        self.scheme.as_ref()
    }

    /// The authority (host and non-default port), if the request named one.
    pub fn authority(&self) -> Option<&Authority> {
        self.authority.as_ref()
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.scheme, &self.authority) {
            (Some(scheme), Some(authority)) => write!(f, "{scheme}://{authority}"),
            (None, Some(authority)) => write!(f, "{authority}"),
            (_, None) => f.write_str("(no host)"),
        }
    }
}

/// `HostKey("http://a.example:8080")`: lowercased, because keys that compare equal must
/// render alike where the rendering names shared state (a Redis key, say).
impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HostKey")
            .field(&self.to_string().to_ascii_lowercase())
            .finish()
    }
}

impl KeyExtractor for ByHost {
    type Key = HostKey;

    fn extract(&self, head: &RequestHead<'_>) -> HostKey {
        let uri = head.uri;
        let scheme = uri.scheme().cloned();
        let authority = uri.authority().cloned().or_else(|| {
            head.headers
                .get(header::HOST)
                .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        });
        let authority = authority.map(|authority| strip_default_port(scheme.as_ref(), authority));
        HostKey { scheme, authority }
    }
}

fn strip_default_port(scheme: Option<&Scheme>, authority: Authority) -> Authority {
    let default_port = match scheme {
        Some(s) if *s == Scheme::HTTP => 80,
        Some(s) if *s == Scheme::HTTPS => 443,
        _ => return authority,
    };
    if authority.port_u16() != Some(default_port) {
        return authority;
    }
    // Only this rare spelling allocates; the host alone is always a valid authority.
    let host = authority.host();
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Authority::try_from(host).unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uri: &str) -> HostKey {
        let request = Request::builder().uri(uri).body(()).expect("valid uri");
        ByHost.extract_from(&request)
    }

    #[test]
    fn by_host_normalises() {
        assert_eq!(key("http://A.example:80/x"), key("http://a.example/y?q=1"));
        assert_eq!(key("https://a.example:443/"), key("https://a.example/"));
        assert_ne!(key("https://a.example:8443/"), key("https://a.example/"));
        assert_ne!(key("http://a.example/"), key("https://a.example/"));
        assert_eq!(key("http://[::1]:80/").to_string(), "http://[::1]");
        assert_eq!(
            key("http://a.example:8080/").to_string(),
            "http://a.example:8080"
        );
    }

    #[test]
    fn relative_uri_uses_host_header() {
        let request = Request::builder()
            .uri("/path")
            .header("host", "b.example:9000")
            .body(())
            .expect("valid request");
        assert_eq!(ByHost.extract_from(&request).to_string(), "b.example:9000");
        let bare = Request::builder().uri("/path").body(()).expect("valid");
        assert_eq!(ByHost.extract_from(&bare).to_string(), "(no host)");
    }

    #[test]
    fn closures_and_global() {
        let by_method = |head: &RequestHead<'_>| head.method.clone();
        let request = Request::builder().uri("/").body(()).expect("valid");
        assert_eq!(by_method.extract_from(&request), http::Method::GET);
        let _: () = Global.extract_from(&request);
    }
}
