//! What a retry keeps of a request to send it again.
//!
//! The first attempt takes the request itself; a retry needs a copy made before it is sent.
//! Cloning the request's head costs most of what the retry layer costs a request that
//! succeeds first time: a header map clone is two allocations, the first clone of a header
//! value that was made from a string allocates the value's shared counter, and the URI's
//! parts are reference-counted, so every clone and every drop of each is a locked write.
//! The copy therefore keeps the URI's and the headers' text in one buffer, one allocation and
//! no shared writes, and rebuilds the URI and the header map from it when a retry is made,
//! which is rare and already waits out a backoff.

use std::str;

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Extensions, HeaderMap, Method, Request, Uri, Version};

use crate::replay::ReplayBody;

/// A request kept for the attempts after the first: the same method, URI, version, headers
/// and extensions, and a body that every attempt reads from its beginning.
pub(crate) struct RequestCopy<B> {
    method: Method,
    version: Version,
    scheme: Option<Scheme>,
    /// Whether the URI has an authority, and a path and query.
    has_authority: bool,
    has_path_and_query: bool,
    /// The lengths of the authority and of the path and query (native-endian `usize`s,
    /// 0 for a part the URI lacks) and their text, then per header: the name's and the
    /// value's lengths, whether the value is sensitive (one byte), the name and the value.
    /// The lengths are kept here rather than beside the text, so that the copy, which every
    /// request's future carries and moves, stays small. A map kept in `cloned_headers` has
    /// no headers here.
    text: Vec<u8>,
    /// The header map itself, cloned, when a value holds a byte that `HeaderValue::from_bytes`
    /// refuses (only http's unchecked constructor can make one): such a value cannot be
    /// rebuilt from its bytes. Boxed, so that the usual copy carries no room for it.
    cloned_headers: Option<Box<HeaderMap>>,
    extensions: Extensions,
    body: ReplayBody<B>,
}

/// The bytes of a length or a flag in [`RequestCopy::text`].
const LENGTH: usize = size_of::<usize>();

impl<B> RequestCopy<B> {
    /// A copy of `request`.
    pub(crate) fn new(request: &Request<ReplayBody<B>>) -> Self {
        let uri = request.uri();
        let authority = uri.authority().map(Authority::as_str);
        let path_and_query = uri.path_and_query().map(PathAndQuery::as_str);
        let headers = request.headers();
        let authority_len = authority.map_or(0, str::len);
        let path_and_query_len = path_and_query.map_or(0, str::len);
        let mut length = 2 * LENGTH + authority_len + path_and_query_len;
        let mut rebuildable = true;
        for (name, value) in headers {
            length += 2 * LENGTH + 1 + name.as_str().len() + value.len();
            rebuildable &= value.as_bytes().iter().fold(true, |valid, &byte| {
                valid & ((byte >= b' ' && byte != 0x7f) || byte == b'\t')
            });
        }
        let mut text = Vec::with_capacity(length);
        text.extend_from_slice(&authority_len.to_ne_bytes());
        text.extend_from_slice(&path_and_query_len.to_ne_bytes());
        text.extend_from_slice(authority.unwrap_or_default().as_bytes());
        text.extend_from_slice(path_and_query.unwrap_or_default().as_bytes());
        let cloned_headers = if rebuildable {
            for (name, value) in headers {
                let name = name.as_str().as_bytes();
                text.extend_from_slice(&name.len().to_ne_bytes());
                text.extend_from_slice(&value.len().to_ne_bytes());
                text.push(u8::from(value.is_sensitive()));
                text.extend_from_slice(name);
                text.extend_from_slice(value.as_bytes());
            }
            None
        } else {
            Some(Box::new(headers.clone()))
        };
        Self {
            method: request.method().clone(),
            version: request.version(),
            scheme: uri.scheme().cloned(),
            has_authority: authority.is_some(),
            has_path_and_query: path_and_query.is_some(),
            text,
            cloned_headers,
            extensions: request.extensions().clone(),
            body: request.body().clone(),
        }
    }

    /// The body the next attempt would send (a reader of it, not yet read).
    pub(crate) fn body(&self) -> &ReplayBody<B> {
        &self.body
    }

    /// A request for another attempt: the kept head, and a body read from its beginning.
    pub(crate) fn request(&self) -> Request<ReplayBody<B>> {
        let mut request = Request::new(self.body.clone());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers();
        *request.extensions_mut() = self.extensions.clone();
        request
    }

    fn uri(&self) -> Uri {
        let (authority_len, rest) = take_length(&self.text);
        let (path_and_query_len, rest) = take_length(rest);
        let (authority, rest) = rest.split_at(authority_len);
        let path_and_query = &rest[..path_and_query_len];
        let mut parts = http::uri::Parts::default();
        parts.scheme = self.scheme.clone();
        // The text is what a valid authority and path and query gave as their own, which
        // parse back to the same parts, in the shape the URI had: none of this can fail.
        parts.authority = self.has_authority.then(|| {
            Authority::try_from(authority).expect("an authority's own text parses as one")
        });
        parts.path_and_query = self.has_path_and_query.then(|| {
            PathAndQuery::try_from(path_and_query).expect("a path's own text parses as one")
        });
        Uri::from_parts(parts).expect("a URI's own parts make a URI")
    }

    fn headers(&self) -> HeaderMap {
        if let Some(headers) = &self.cloned_headers {
            return HeaderMap::clone(headers);
        }
        let (authority_len, rest) = take_length(&self.text);
        let (path_and_query_len, rest) = take_length(rest);
        let mut text = &rest[authority_len + path_and_query_len..];
        let mut headers = HeaderMap::new();
        while !text.is_empty() {
            let (name_len, rest) = take_length(text);
            let (value_len, rest) = take_length(rest);
            let (sensitive, rest) = rest.split_at(1);
            let (name, rest) = rest.split_at(name_len);
            let (value, rest) = rest.split_at(value_len);
            text = rest;
            // Every byte of the value passed `from_bytes`'s test when the copy was made,
            // and a name's own text is a valid name.
            let name = HeaderName::from_bytes(name).expect("a header name's own text is valid");
            let mut value = HeaderValue::from_bytes(value).expect("the value's bytes were checked");
            value.set_sensitive(sensitive[0] != 0);
            headers.append(name, value);
        }
        headers
    }
}

/// A length written by [`RequestCopy::new`], and the text after it.
fn take_length(text: &[u8]) -> (usize, &[u8]) {
    let (length, rest) = text.split_at(LENGTH);
    let length = length.try_into().map_or(0, usize::from_ne_bytes);
    (length, rest)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use super::*;

    fn copy_of(request: Request<Full<Bytes>>) -> Request<ReplayBody<Full<Bytes>>> {
        let request = request.map(|body| ReplayBody::new(body, 1024));
        RequestCopy::new(&request).request()
    }

    #[test]
    fn every_form_of_uri_comes_back_as_it_was() {
        let uris = [
            "https://api.example.com/v1/items/7",
            "http://example.com",
            "http://user:pw@example.com:8080/a/b?c=d&e=%20f",
            "/relative/path?q=1",
            "/",
            "*",
            "example.com:443",
            "ftp://files.example.com/pub/file.tar.gz",
            "http://[::1]:8080/%C3%BC/{braces}|pipe",
        ];
        for text in uris {
            let uri: Uri = text.parse().expect("a valid URI");
            let method = if uri.scheme().is_none() && uri.authority().is_some() {
                Method::CONNECT
            } else {
                Method::GET
            };
            let request = Request::builder()
                .method(method.clone())
                .uri(uri.clone())
                .body(Full::new(Bytes::new()))
                .expect("a valid request");
            let copy = copy_of(request);
            assert_eq!(copy.uri(), &uri, "{text}");
            assert_eq!(copy.uri().to_string(), uri.to_string(), "{text}");
            assert_eq!(copy.uri().scheme(), uri.scheme(), "{text}");
            assert_eq!(copy.uri().authority(), uri.authority(), "{text}");
            assert_eq!(copy.uri().path_and_query(), uri.path_and_query(), "{text}");
            assert_eq!(copy.method(), method);
        }
    }

    #[test]
    fn headers_come_back_in_order_with_every_value_and_flag() {
        let mut secret = HeaderValue::from_static("Bearer abc");
        secret.set_sensitive(true);
        let request = Request::post("https://api.example.com/")
            .version(Version::HTTP_2)
            .header("content-type", "application/json")
            .header("x-trace", "one")
            .header("accept", "text/plain")
            .header("x-trace", "two")
            .header("authorization", secret)
            .header("x-empty", "")
            .header(
                "x-opaque",
                HeaderValue::from_bytes(b"caf\xe9\tau lait").expect("valid"),
            )
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let expected = request.headers().clone();
        let copy = copy_of(request);
        assert_eq!(copy.version(), Version::HTTP_2);
        assert_eq!(copy.method(), Method::POST);
        let pairs = |map: &HeaderMap| {
            map.iter()
                .map(|(name, value)| (name.clone(), value.clone(), value.is_sensitive()))
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs(copy.headers()), pairs(&expected));
        assert!(copy.headers()["authorization"].is_sensitive());
        assert!(!copy.headers()["x-trace"].is_sensitive());
    }

    #[tokio::test]
    async fn every_copy_sends_the_whole_body_and_the_extensions() {
        #[derive(Clone, Debug, PartialEq)]
        struct Tag(u32);
        let mut request = Request::put("http://a/")
            .body(Full::new(Bytes::from_static(b"payload")))
            .expect("a valid request")
            .map(|body| ReplayBody::new(body, 1024));
        request.extensions_mut().insert(Tag(7));
        let copy = RequestCopy::new(&request);
        for _ in 0..2 {
            let again = copy.request();
            assert_eq!(again.extensions().get::<Tag>(), Some(&Tag(7)));
            let body = again.into_body().collect().await.expect("a body");
            assert_eq!(body.to_bytes(), Bytes::from_static(b"payload"));
        }
    }

    #[test]
    fn a_request_without_headers_copies_its_uri_alone() {
        let request = Request::get("http://a/b")
            .body(Full::new(Bytes::new()))
            .expect("a valid request")
            .map(|body| ReplayBody::new(body, 1024));
        let copy = RequestCopy::new(&request);
        let mut expected = Vec::new();
        expected.extend_from_slice(&1usize.to_ne_bytes());
        expected.extend_from_slice(&2usize.to_ne_bytes());
        expected.extend_from_slice(b"a/b");
        assert_eq!(copy.text, expected);
        assert!(copy.request().headers().is_empty());
    }
}
