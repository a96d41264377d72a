//! Store keys: a digest of what identifies a stored answer, never the secrets themselves.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use sha2::{Digest, Sha256};

/// The key of a stored answer: a SHA-256 digest of the method, the URI (with the `Host`
/// header, which names the virtual host whether or not the URI has an authority) and the
/// values of the key headers ([`key_header`](crate::CacheLayerBuilder::key_header);
/// `authorization` and `cookie` by default), so that each credential has its own entries
/// and no store (Redis included) ever holds a credential in a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest in lowercase hexadecimal (64 characters).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub(crate) fn of(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        key_headers: &[HeaderName],
    ) -> Self {
        let mut digest = Sha256::new();
        digest.update(method.as_str().as_bytes());
        digest.update([0]);
        if let Some(scheme) = uri.scheme_str() {
            digest.update(scheme.as_bytes());
        }
        digest.update([0]);
        let host = headers.get(http::header::HOST);
        if let Some(authority) = uri.authority() {
            digest.update(authority.as_str().as_bytes());
            // A `Host` header beside the authority names the virtual host the request
            // reaches (the client sends it as it is): two hosts behind one address hold two
            // resources.
            if host.is_some() {
                digest.update([2]);
            }
        }
        if let Some(host) = host {
            digest.update(host.as_bytes());
        }
        digest.update([0]);
        match uri.path_and_query() {
            Some(path) => digest.update(path.as_str().as_bytes()),
            None => digest.update(b"/"),
        }
        for name in key_headers {
            digest.update([1]);
            digest.update(name.as_str().as_bytes());
            for value in headers.get_all(name) {
                digest.update([0]);
                digest.update(value.as_bytes());
            }
        }
        CacheKey(digest.finalize().into())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

/// Whether a header's value is a credential, which the cache keeps only as a digest.
pub(crate) fn is_secret(name: &HeaderName, key_headers: &[HeaderName]) -> bool {
    name == http::header::AUTHORIZATION
        || name == http::header::PROXY_AUTHORIZATION
        || name == http::header::COOKIE
        || key_headers.contains(name)
}

/// A request header's value as the cache keeps it for `Vary` matching: as sent, or, for a
/// credential, the hex digest of it (equal values still compare equal).
pub(crate) fn kept_value(
    name: &HeaderName,
    value: &HeaderValue,
    key_headers: &[HeaderName],
) -> HeaderValue {
    if is_secret(name, key_headers) {
        let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        // Hex digits are always a valid header value.
        HeaderValue::from_str(&hex(&digest)).unwrap_or_else(|_| HeaderValue::from_static(""))
    } else {
        value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uri: &str, auth: Option<&str>) -> CacheKey {
        let mut headers = HeaderMap::new();
        if let Some(auth) = auth {
            headers.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(auth).unwrap(),
            );
        }
        CacheKey::of(
            &Method::GET,
            &uri.parse().unwrap(),
            &headers,
            &[http::header::AUTHORIZATION],
        )
    }

    #[test]
    fn keys_differ_by_uri_and_credential_and_hide_the_credential() {
        let a = key("http://h/a", Some("Bearer one"));
        assert_eq!(a, key("http://h/a", Some("Bearer one")));
        assert_ne!(a, key("http://h/a", Some("Bearer two")));
        assert_ne!(a, key("http://h/a", None));
        assert_ne!(a, key("http://h/b", Some("Bearer one")));
        assert_eq!(a.to_hex().len(), 64);
        assert!(!format!("{a:?}").contains("Bearer"));
    }

    #[test]
    fn credentials_are_kept_as_digests() {
        let auth = HeaderValue::from_static("Bearer secret");
        let kept = kept_value(&http::header::AUTHORIZATION, &auth, &[]);
        assert_eq!(kept.len(), 64);
        assert_eq!(kept, kept_value(&http::header::AUTHORIZATION, &auth, &[]));
        let accept = HeaderValue::from_static("application/json");
        assert_eq!(kept_value(&http::header::ACCEPT, &accept, &[]), accept);
    }
}
