//! What makes two requests identical.

use std::hash::{BuildHasher, Hash, Hasher};

use http::{HeaderName, Request, header};

/// Key texts up to this many bytes are kept inside the flight's own allocation.
const INLINE: usize = 118;

/// Headers that make a request's answer its own, so that it shares a call only with requests
/// that send the same: the virtual host (`Host` beside the URI's authority), a range (a `206`
/// with part of the body) and validators (a `304` without one, or a `412`).
const OWN_ANSWER: [HeaderName; 7] = [
    header::HOST,
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// The index byte of `OWN_ANSWER`'s first header in a key, past any `vary` index (at most 32).
const OWN_ANSWER_INDEX: u8 = 64;

/// The identity of a request for coalescing: method, URI, the values of the headers the
/// layer was told to compare (`vary`), like a response's `Vary` names them, and those of the
/// headers that make an answer the request's own (`OWN_ANSWER`: `Host`, `Range`, `If-*`).
///
/// Kept as one byte string, `method NUL scheme NUL authority NUL path-and-query`, then
/// `NUL index NUL value` for every value of a named header present (`index` in the vary
/// list, as one byte). No part can contain a NUL byte (`http` refuses them in methods, URIs
/// and header values), so two keys are equal exactly when their parts are. A short key is
/// stored inline: a request that finds no identical one in flight copies its key into its
/// flight, with no allocation of its own (cloning the URI would allocate the first time its
/// bytes are shared).
///
/// The hash is computed once, when the key is made, and is all that `Hash` writes.
#[derive(Debug)]
pub(crate) struct FlightKey {
    hash: u64,
    text: KeyText,
}

#[derive(Debug)]
enum KeyText {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl KeyText {
    fn as_bytes(&self) -> &[u8] {
        match self {
            KeyText::Inline { len, bytes } => &bytes[..usize::from(*len)],
            KeyText::Heap(bytes) => bytes,
        }
    }
}

/// Writes a key inline while it fits, then on the heap.
struct KeyWriter {
    len: usize,
    inline: [u8; INLINE],
    heap: Vec<u8>,
}

impl KeyWriter {
    fn push(&mut self, part: &[u8]) {
        if self.heap.is_empty() && self.len + part.len() <= INLINE {
            self.inline[self.len..self.len + part.len()].copy_from_slice(part);
            self.len += part.len();
            return;
        }
        if self.heap.is_empty() {
            self.heap.reserve(self.len + part.len() + 64);
            self.heap.extend_from_slice(&self.inline[..self.len]);
        }
        self.heap.extend_from_slice(part);
    }

    fn finish(self) -> KeyText {
        match u8::try_from(self.len) {
            Ok(len) if self.heap.is_empty() => KeyText::Inline {
                len,
                bytes: self.inline,
            },
            _ => KeyText::Heap(self.heap.into_boxed_slice()),
        }
    }
}

impl FlightKey {
    /// `vary` holds at most 32 names (the builder checks), so an index fits in a byte.
    pub(crate) fn new<B>(
        request: &Request<B>,
        vary: &[HeaderName],
        hasher: &foldhash::fast::RandomState,
    ) -> Self {
        let uri = request.uri();
        let mut key = KeyWriter {
            len: 0,
            inline: [0; INLINE],
            heap: Vec::new(),
        };
        key.push(request.method().as_str().as_bytes());
        key.push(b"\0");
        key.push(uri.scheme_str().unwrap_or_default().as_bytes());
        key.push(b"\0");
        key.push(uri.authority().map_or("", |a| a.as_str()).as_bytes());
        key.push(b"\0");
        key.push(uri.path_and_query().map_or("", |p| p.as_str()).as_bytes());
        let headers = request.headers();
        for (index, name) in vary.iter().enumerate() {
            for value in headers.get_all(name) {
                key.push(&[0, index as u8, 0]);
                key.push(value.as_bytes());
            }
        }
        // Headers that change the answer itself, whatever `vary` says: one pass over the
        // request's headers (usually a few), which a request without any skips.
        for (name, value) in headers {
            if let Some(index) = OWN_ANSWER.iter().position(|own| own == name) {
                key.push(&[0, OWN_ANSWER_INDEX + index as u8, 0]);
                key.push(value.as_bytes());
            }
        }
        let text = key.finish();
        Self {
            hash: hasher.hash_one(text.as_bytes()),
            text,
        }
    }

    /// The hash computed when the key was made.
    pub(crate) fn hash_value(&self) -> u64 {
        self.hash
    }
}

impl Hash for FlightKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for FlightKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.text.as_bytes() == other.text.as_bytes()
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
        assert_ne!(plain(), key(get("http://a/x?q").body(()).expect("request")));
        assert_ne!(plain(), key(get("https://a/x").body(()).expect("request")));
        assert_ne!(plain(), key(get("/x").body(()).expect("request")));
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
        // Two values of one header are not one value.
        let two = key(get("http://a/x")
            .header("accept", "a")
            .header("accept", "b")
            .body(())
            .expect("request"));
        assert_ne!(
            two,
            key(get("http://a/x")
                .header("accept", "a")
                .body(())
                .expect("request"))
        );
    }

    #[test]
    fn long_keys_spill_to_the_heap_and_still_compare_exactly() {
        let token = format!("Bearer {}", "t".repeat(800));
        let long = |token: &str| {
            key(get("http://a/x")
                .header("authorization", token)
                .body(())
                .expect("request"))
        };
        let a = long(&token);
        assert!(matches!(a.text, KeyText::Heap(_)));
        assert_eq!(a, long(&token));
        assert_ne!(a, long(&format!("{token}u")));
        let short = key(get("http://a/x").body(()).expect("request"));
        assert!(matches!(short.text, KeyText::Inline { .. }));
    }
}
