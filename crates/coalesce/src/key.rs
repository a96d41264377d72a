//! What makes two requests identical.

use std::hash::{BuildHasher, Hash, Hasher};

use http::{HeaderName, HeaderValue, Method, Request, Uri};

/// The identity of a request for coalescing: method, URI and the values of the headers the
/// layer was told to compare (`vary`), like a response's `Vary` names them.
///
/// The hash is computed once, when the key is made, and is all that `Hash` writes, so that
/// the in-flight map hashes a `u64` on insert and on removal rather than the URI twice.
#[derive(Debug)]
pub(crate) struct FlightKey {
    hash: u64,
    method: Method,
    uri: Uri,
    /// `(index in the vary list, value)` for every value present, in order. Empty when none
    /// of the headers is present, which needs no allocation; comparing keys of one layer is
    /// still exact, since every key of a layer is made from the same list.
    vary: Vec<(usize, HeaderValue)>,
}

impl FlightKey {
    pub(crate) fn new<B>(
        request: &Request<B>,
        vary: &[HeaderName],
        hasher: &foldhash::fast::RandomState,
    ) -> Self {
        let headers = request.headers();
        let mut values = Vec::new();
        for (index, name) in vary.iter().enumerate() {
            for value in headers.get_all(name) {
                values.push((index, value.clone()));
            }
        }
        let mut state = hasher.build_hasher();
        request.method().hash(&mut state);
        request.uri().hash(&mut state);
        for (index, value) in &values {
            index.hash(&mut state);
            value.hash(&mut state);
        }
        Self {
            hash: state.finish(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            vary: values,
        }
    }
}

impl Hash for FlightKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for FlightKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && self.method == other.method
            && self.uri == other.uri
            && self.vary == other.vary
    }
}

impl Eq for FlightKey {}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(request: Request<()>) -> FlightKey {
        // One hasher, as one layer has.
        thread_local! {
            static HASHER: foldhash::fast::RandomState = foldhash::fast::RandomState::default();
        }
        let vary = [http::header::AUTHORIZATION, http::header::ACCEPT];
        HASHER.with(|hasher| FlightKey::new(&request, &vary, hasher))
    }

    fn get(uri: &str) -> http::request::Builder {
        Request::get(uri)
    }

    #[test]
    fn identity_is_method_uri_and_named_headers() {
        let plain = || key(get("http://a/x").body(()).expect("request"));
        assert_eq!(plain(), plain());
        // A header not in the list does not matter.
        assert_eq!(
            plain(),
            key(get("http://a/x")
                .header("x-trace", "1")
                .body(())
                .expect("request"))
        );
        assert_ne!(plain(), key(get("http://a/y").body(()).expect("request")));
        assert_ne!(
            plain(),
            key(Request::head("http://a/x").body(()).expect("request"))
        );
        let auth = |token: &str| {
            key(get("http://a/x")
                .header("authorization", token)
                .body(())
                .expect("request"))
        };
        assert_eq!(auth("Bearer a"), auth("Bearer a"));
        assert_ne!(auth("Bearer a"), auth("Bearer b"));
        assert_ne!(auth("Bearer a"), plain());
        // The same value under a different listed name is a different request.
        assert_ne!(
            auth("v"),
            key(get("http://a/x")
                .header("accept", "v")
                .body(())
                .expect("request"))
        );
    }
}
