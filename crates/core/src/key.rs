//! Request keys: which upstream a request is for, so that limits and breakers can be kept per
//! upstream.

use std::fmt;
use std::hash::{Hash, Hasher};

use http::uri::{Authority, Scheme};
use http::{Extensions, HeaderMap, Method, Request, Uri, header};
use tokio::time::Instant;

use crate::call_key;
use crate::keyed::{KeyRef, KeyedMap};

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

    /// The state `map` holds for the key of `head`, made by `make` when the key is new (see
    /// [`KeyedMap::get_or_insert_with`]).
    ///
    /// The default extracts the key and looks it up. An extractor that can compare a request
    /// with a stored key without building one overrides it, so that the steady state (a key
    /// already held) costs no allocation and no reference count: [`ByHost`] does.
    fn entry<V: Send + Sync + 'static>(
        &self,
        head: &RequestHead<'_>,
        map: &KeyedMap<Self::Key, V>,
        now: Instant,
        make: impl FnOnce(&Self::Key) -> V,
        keep: impl Fn(&V) -> bool,
    ) -> KeyRef<V> {
        entry_by_key(self.extract(head), map, now, make, keep)
    }
}

/// Looks an extracted key up, building its state when it is new.
fn entry_by_key<K, V>(
    key: K,
    map: &KeyedMap<K, V>,
    now: Instant,
    make: impl FnOnce(&K) -> V,
    keep: impl Fn(&V) -> bool,
) -> KeyRef<V>
where
    K: Clone + Eq + Hash + Send + 'static,
    V: Send + Sync + 'static,
{
    map.get_or_insert_by(&key, || key.clone(), now, make, keep)
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
#[derive(Clone, PartialEq, Eq)]
pub struct HostKey {
    scheme: Option<Scheme>,
    authority: Option<Authority>,
}

/// Hashes as the derived form would compare: scheme and authority both ignore ASCII case.
impl Hash for HostKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_host(self.authority.as_ref().map(Authority::as_str), state);
    }
}

/// A request's [`HostKey`] as a view into its URI, to look the key up without building it
/// (building one clones the URI's shared bytes, and may allocate to share them).
struct HostKeyView<'a> {
    scheme: Option<&'a Scheme>,
    /// The authority with a default port dropped, as [`HostKey`] holds it.
    authority: &'a str,
}

impl<'a> HostKeyView<'a> {
    /// The view of an absolute URI's key. A spelling the view does not normalise (user
    /// information, which no key holds; a default port written with leading zeros) finds no
    /// key and takes the slow path, which builds the key and finds the same state.
    fn of(uri: &'a Uri) -> Option<Self> {
        let authority = uri.authority()?.as_str();
        let scheme = uri.scheme();
        let default_suffix = match default_port(scheme) {
            Some(80) => ":80",
            Some(443) => ":443",
            _ => "",
        };
        Some(Self {
            scheme,
            authority: authority.strip_suffix(default_suffix).unwrap_or(authority),
        })
    }
}

impl Hash for HostKeyView<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_host(Some(self.authority), state);
    }
}

impl papaya::Equivalent<HostKey> for HostKeyView<'_> {
    fn equivalent(&self, key: &HostKey) -> bool {
        let Some(authority) = key.authority.as_ref().map(Authority::as_str) else {
            return false;
        };
        // The same spelling is the common case, and a plain comparison is much cheaper.
        (authority == self.authority || authority.eq_ignore_ascii_case(self.authority))
            && key.scheme.as_ref() == self.scheme
    }
}

/// One hash for a [`HostKey`] and its view: the authority alone (the scheme only ever tells
/// apart keys that equality checks anyway), with ASCII case folded, eight bytes at a time.
/// Setting bit 5 of every byte maps `A`–`Z` onto `a`–`z`; the other bytes it merges only
/// collide, and equality still decides.
fn hash_host<H: Hasher>(authority: Option<&str>, state: &mut H) {
    const FOLD: u64 = 0x2020_2020_2020_2020;
    let bytes = authority.unwrap_or_default().as_bytes();
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        state.write_u64(u64::from_le_bytes(word) | FOLD);
    }
    let rest = chunks.remainder();
    let mut word = [0; 8];
    word[..rest.len()].copy_from_slice(rest);
    // The last word has a free top byte: the length goes there, so that "a" and "a\0" and
    // no authority at all differ.
    let length = u64::try_from(bytes.len()).unwrap_or(u64::MAX) << 56;
    state.write_u64((u64::from_le_bytes(word) | FOLD) ^ length ^ u64::from(authority.is_none()));
}

impl HostKey {
    /// Whether `uri`, an absolute URI, is for this key's host (a relative one's host is in its
    /// `Host` header, which this does not read): a comparison of the text as the key keeps
    /// it, and, for another spelling of it (a default port, capitals), of the text without
    /// the default port, ignoring case. User information, which keys drop, and a default
    /// port spelled with leading zeros read as another key's: the caller looks the key up.
    #[inline]
    fn is_of(&self, uri: &Uri) -> bool {
        use papaya::Equivalent;
        let authority = uri.authority().map(Authority::as_str);
        (self.authority.as_ref().map(Authority::as_str) == authority
            && self.scheme.as_ref() == uri.scheme())
            || HostKeyView::of(uri).is_some_and(|view| view.equivalent(self))
    }

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
        let authority = authority.and_then(|authority| normalise(scheme.as_ref(), authority));
        HostKey { scheme, authority }
    }

    fn entry<V: Send + Sync + 'static>(
        &self,
        head: &RequestHead<'_>,
        map: &KeyedMap<HostKey, V>,
        now: Instant,
        make: impl FnOnce(&HostKey) -> V,
        keep: impl Fn(&V) -> bool,
    ) -> KeyRef<V> {
        // An enclosing layer keyed by host found this request's key: this thread finds its
        // own state for it by that key's number, without taking the authority apart or
        // comparing it with the thread's other keys. The key found is compared with the
        // authority before it is used: the scope knows the request by where its URI's text
        // is, and a layer between that built a URI for another host of the same length where
        // the old one was freed must not get the old host's state.
        let shared = call_key::shared(head.uri);
        if let Some(via) = shared
            && let Some(state) = map.cached_via(via, |key| key.is_of(head.uri), now)
        {
            return state;
        }
        let state = match HostKeyView::of(head.uri) {
            Some(view) => map.get_or_insert_by(&view, || self.extract(head), now, make, keep),
            None => entry_by_key(self.extract(head), map, now, make, keep),
        };
        match shared {
            Some(via) => map.note_via(&state, via),
            None => call_key::share(head.uri, state.serial()),
        }
        state
    }
}

/// The port a scheme implies, for the two schemes that imply one (the keys here, and the
/// metrics' `server.port`, fill it in when a URI leaves it out).
pub fn default_port(scheme: Option<&Scheme>) -> Option<u16> {
    // By name, inline, where http's equality is a call per comparison (two for `https`); it
    // decides the same, as http never holds `http` or `https` as a scheme it does not know.
    match scheme.map(Scheme::as_str) {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    }
}

/// The authority as a key holds it: without user information (credentials name no other
/// upstream, and must not reach figures' labels or a shared store's key names) and without a
/// port equal to the scheme's default. Only those rare spellings allocate.
fn normalise(scheme: Option<&Scheme>, authority: Authority) -> Option<Authority> {
    let text = authority.as_str();
    let host_port = text
        .rsplit_once('@')
        .map_or(text, |(_, host_port)| host_port);
    let kept = match (default_port(scheme), authority.port_u16()) {
        (Some(default), Some(port)) if default == port => host_port
            .rsplit_once(':')
            .map_or(host_port, |(host, _)| host),
        _ => host_port,
    };
    if kept.len() == text.len() {
        return Some(authority);
    }
    // An empty host whose default port was dropped leaves nothing an authority can be: the
    // port stays. Never the authority as given, which may hold user information: should
    // neither part parse (which the parts of a parsed authority always do), no host is kept.
    Authority::try_from(kept)
        .or_else(|_| Authority::try_from(host_port))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uri: &str) -> HostKey {
        let request = Request::builder().uri(uri).body(()).expect("valid uri");
        ByHost.extract_from(&request)
    }

    /// Only the two schemes http knows imply a port, whatever case a URI spells them in; a
    /// scheme made from other text, `HTTP` among them, implies none, as http's own equality
    /// with `Scheme::HTTP` says.
    #[test]
    fn a_port_is_implied_by_http_and_https_only() {
        let scheme_of = |uri: &str| uri.parse::<Uri>().expect("valid uri").scheme().cloned();
        assert_eq!(default_port(scheme_of("HTTP://a.test/").as_ref()), Some(80));
        assert_eq!(
            default_port(scheme_of("hTTps://a.test/").as_ref()),
            Some(443)
        );
        assert_eq!(default_port(scheme_of("ftp://a.test/").as_ref()), None);
        assert_eq!(default_port(scheme_of("/relative").as_ref()), None);
        let spelled = Scheme::try_from("HTTP").expect("a valid scheme");
        assert_ne!(spelled, Scheme::HTTP);
        assert_eq!(default_port(Some(&spelled)), None);
        assert_eq!(default_port(Some(&Scheme::HTTPS)), Some(443));
    }

    #[test]
    fn by_host_normalises() {
        assert_eq!(key("http://A.example:80/x"), key("http://a.example/y?q=1"));
        assert_eq!(key("https://a.example:443/"), key("https://a.example/"));
        assert_ne!(key("https://a.example:8443/"), key("https://a.example/"));
        assert_ne!(key("http://a.example/"), key("https://a.example/"));
        assert_eq!(key("http://[::1]:80/").to_string(), "http://[::1]");
        assert_eq!(
            key("http://user:secret@a.example:80/").to_string(),
            "http://a.example"
        );
        assert_eq!(
            key("https://user@a.example:8443/").to_string(),
            "https://a.example:8443"
        );
        assert_eq!(
            key("http://a.example:8080/").to_string(),
            "http://a.example:8080"
        );
    }

    /// Every spelling of one host finds the state its first request made, whichever spelling
    /// came first, and distinct hosts get distinct states.
    #[tokio::test(start_paused = true)]
    async fn lookups_without_building_the_key_find_the_same_state() {
        let map = KeyedMap::new(crate::KeyLimits::default());
        let made = std::cell::Cell::new(0);
        let state_of = |uri: &str| {
            let request = Request::builder().uri(uri).body(()).expect("valid uri");
            let state = ByHost.entry(
                &RequestHead::of(&request),
                &map,
                Instant::now(),
                |key| {
                    made.set(made.get() + 1);
                    key.to_string()
                },
                |_| false,
            );
            (*state).clone()
        };
        let spellings = [
            "http://A.Example:80/x",
            "http://a.example/y",
            "http://a.EXAMPLE:80",
            "http://user@a.example:80/",
            "http://user:secret@a.example/",
            "http://a.example:080/",
        ];
        for uri in spellings {
            assert_eq!(state_of(uri), "http://A.Example", "{uri}");
        }
        assert_eq!(made.get(), 1);
        // Longer than one eight-byte word of the hash, with a port kept.
        let long = "https://A-Rather-Long-Host-Name.example.com:8443";
        assert_eq!(state_of(long), long);
        assert_eq!(state_of(&long.to_ascii_lowercase()), long);
        assert_eq!(made.get(), 2);
        for uri in [
            "https://a.example",
            "http://a.example:8080",
            "http://[::1]:80/",
        ] {
            state_of(uri);
        }
        assert_eq!(made.get(), 5);
        assert_eq!(state_of("http://[::1]/"), "http://[::1]");
        assert_eq!(made.get(), 5);
    }

    /// Within one call, a layer keyed by host below another finds the state of the key the
    /// outer layer found (by that key's number after the first time), for every host in
    /// turn; a request with another URI met inside the same call gets its own key.
    #[tokio::test(start_paused = true)]
    async fn inner_layers_find_the_key_the_outer_layer_found() {
        let outer = KeyedMap::new(crate::KeyLimits::default());
        let inner = KeyedMap::new(crate::KeyLimits::default());
        let state_of = |map: &KeyedMap<HostKey, String>, request: &Request<()>| {
            let state = ByHost.entry(
                &RequestHead::of(request),
                map,
                Instant::now(),
                |key| key.to_string(),
                |_| false,
            );
            (*state).clone()
        };
        let a = Request::get("http://A.example:80/x")
            .body(())
            .expect("valid");
        let b = Request::get("https://b.example/y").body(()).expect("valid");
        for _ in 0..3 {
            for (request, other, host) in
                [(&a, &b, "http://A.example"), (&b, &a, "https://b.example")]
            {
                let _scope = crate::CallKey::enter();
                assert_eq!(state_of(&outer, request), host);
                assert_eq!(state_of(&inner, request), host);
                assert_ne!(state_of(&inner, other), host);
                assert_eq!(state_of(&inner, request), host);
            }
        }
        // Without a scope every lookup compares.
        assert_eq!(state_of(&inner, &a), "http://A.example");
        assert_eq!((outer.len(), inner.len()), (2, 2));
    }

    /// A layer between the outer and the inner keyed layer (as a user's failover layer
    /// might) drops the request's URI and builds one for another host, of the same length,
    /// in the very bytes the old one's text had: the inner layer gets the new host's state,
    /// not the one the outer layer found.
    #[tokio::test(start_paused = true)]
    async fn a_uri_rebuilt_where_the_old_one_was_gets_its_own_host_key() {
        let outer = KeyedMap::new(crate::KeyLimits::default());
        let inner = KeyedMap::new(crate::KeyLimits::default());
        let state_of = |map: &KeyedMap<HostKey, String>, uri: &Uri| {
            let request = Request::get(uri.clone()).body(()).expect("valid");
            let state = ByHost.entry(
                &RequestHead::of(&request),
                map,
                Instant::now(),
                |key| key.to_string(),
                |_| false,
            );
            (*state).clone()
        };
        // The inner layer learns the number the outer layer's key for api-a goes by. (The
        // keys keep the text of the URI they were made from.)
        let earlier: Uri = "http://api-a.example/x".parse().expect("valid uri");
        for _ in 0..2 {
            let _scope = crate::CallKey::enter();
            assert_eq!(state_of(&outer, &earlier), "http://api-a.example");
            assert_eq!(state_of(&inner, &earlier), "http://api-a.example");
        }
        let text = bytes::Bytes::from(b"http://api-a.example/x".to_vec());
        let first = Uri::from_maybe_shared(text.clone()).expect("valid uri");
        let where_it_was = first.authority().map(|a| a.as_str().as_ptr());
        let _scope = crate::CallKey::enter();
        assert_eq!(state_of(&outer, &first), "http://api-a.example");
        // The layer between: the old URI goes, and the new one is written in its place.
        drop(first);
        let mut buffer = text.try_into_mut().expect("the only reference left");
        buffer[7..12].copy_from_slice(b"api-b");
        let second = Uri::from_maybe_shared(buffer.freeze()).expect("valid uri");
        assert_eq!(
            second.authority().map(|a| a.as_str().as_ptr()),
            where_it_was,
            "the new authority's text is where the old one's was"
        );
        assert!(
            call_key::shared(&second).is_some(),
            "the scope takes the new URI for the old one"
        );
        assert_eq!(state_of(&inner, &second), "http://api-b.example");
        drop(_scope);
        assert_eq!(inner.len(), 2);
        // Afterwards each host gets its own state, and from the second call on the inner
        // layer finds it by the outer key's number, without a lookup.
        for round in 0..2 {
            for (uri, host) in [
                (&earlier, "http://api-a.example"),
                (&second, "http://api-b.example"),
            ] {
                let _scope = crate::CallKey::enter();
                assert_eq!(state_of(&outer, uri), host);
                let via = call_key::shared(uri).expect("the outer layer said its key");
                let found = inner.cached_via(via, |key| key.is_of(uri), Instant::now());
                if round == 1 {
                    assert_eq!(found.map(|state| (*state).clone()).as_deref(), Some(host));
                }
                assert_eq!(state_of(&inner, uri), host);
            }
        }
    }

    /// The fast path: a view hashes and compares as the key it stands for, for every spelling
    /// of that key, and not as another host's key.
    #[test]
    fn views_hash_and_compare_as_their_keys() {
        use papaya::Equivalent;
        use std::hash::BuildHasher;
        let hasher = std::hash::RandomState::new();
        let canonical = key("http://a.example");
        for spelling in [
            "http://a.example/",
            "http://A.EXAMPLE:80/x",
            "HTTP://a.Example",
        ] {
            let uri: Uri = spelling.parse().expect("valid uri");
            let view = HostKeyView::of(&uri).expect("an absolute URI");
            assert!(view.equivalent(&canonical), "{spelling}");
            assert!(canonical.is_of(&uri), "{spelling}");
            assert_eq!(
                hasher.hash_one(&view),
                hasher.hash_one(&canonical),
                "{spelling}"
            );
        }
        for other in [
            "https://a.example/",
            "http://a.example:8080/",
            "http://b.example/",
        ] {
            let uri: Uri = other.parse().expect("valid uri");
            let view = HostKeyView::of(&uri).expect("an absolute URI");
            assert!(!view.equivalent(&canonical), "{other}");
            assert!(view.equivalent(&key(other)), "{other}");
            assert!(!canonical.is_of(&uri), "{other}");
            assert!(key(other).is_of(&uri), "{other}");
            assert_eq!(
                hasher.hash_one(&view),
                hasher.hash_one(key(other)),
                "{other}"
            );
        }
        // User information matches no key (keys drop it), so it takes the slow path
        // (`lookups_without_building_the_key_find_the_same_state` shows it finds its state).
        let with_user: Uri = "http://user@a.example/".parse().expect("valid uri");
        let view = HostKeyView::of(&with_user).expect("an absolute URI");
        assert!(!view.equivalent(&canonical));
        assert!(!view.equivalent(&key("http://user@a.example/")));
        assert!(!canonical.is_of(&with_user));
        let relative: Uri = "/path".parse().expect("valid uri");
        assert!(HostKeyView::of(&relative).is_none());
    }

    /// User information never reaches a key, whatever is left of the authority without it:
    /// with an empty host and the default port dropped nothing is, and the key keeps the port
    /// rather than the credentials.
    #[test]
    fn host_keys_never_hold_user_information() {
        let host_header = |host: &str| {
            let request = Request::builder()
                .uri("/path")
                .header("host", host)
                .body(())
                .expect("valid request");
            ByHost.extract_from(&request)
        };
        let cases = [
            (key("http://user:secret@a.example/"), "http://a.example"),
            (key("http://user:secret@:80/"), "http://:80"),
            (key("https://user:secret@:443/x"), "https://:443"),
            (key("http://user:secret@:8080/"), "http://:8080"),
            (host_header("user:secret@b.example"), "b.example"),
            (host_header("user:secret@:80"), ":80"),
        ];
        for (key, shown) in cases {
            assert_eq!(key.to_string(), shown);
            assert!(!format!("{key:?}").contains("secret"), "{key:?}");
            let authority = key.authority().map(Authority::as_str);
            assert!(!authority.unwrap_or_default().contains('@'), "{key:?}");
        }
        assert_eq!(key("http://user:secret@:80/"), key("http://:80/"));
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
