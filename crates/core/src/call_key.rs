//! One key lookup per call through a stack of keyed layers.
//!
//! The circuit breaker and the rate limiter of a stack both keep their state per host: each
//! would take the request's authority apart, and compare it with the keys its thread used
//! last, to find the same host. [`CallKey::enter`] lets them share the work, as
//! [`CallTime`](crate::CallTime) shares the clock reading: the outermost keyed layer that
//! looks a host up says, for the rest of its `call`, which key it found (a number that stands
//! for that one key for the life of the process), and the keyed layers its `call` reaches on
//! the same thread find their own state for that key by that number.
//!
//! Only [`ByHost`](crate::ByHost) takes part: a layer keyed otherwise neither says nor reads
//! a key here, so layers keyed differently never share. A scope is tied to the request's URI
//! (the address and length of its scheme's and its authority's text): a layer between that
//! sends on a request with another URI, or the same authority under another scheme, finds
//! no key shared and looks its own up. A layer between that dropped the URI and built one of
//! the same length where the old one's text was would pass that test, so a layer that takes
//! a shared key also compares it with the authority (a comparison of the text with that one
//! key's, rather than taking the authority apart and comparing it with every key the thread
//! used lately) and looks its own up when they differ. A scope never outlives
//! the outermost `call`, so a retry's next attempt looks its key up afresh.

use std::cell::Cell;
use std::marker::PhantomData;

use http::Uri;

/// What the thread's scope holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// No keyed layer's `call` is in progress.
    Closed,
    /// A keyed layer's `call` is in progress, and no host key was looked up yet.
    Open,
    /// The host key of the request whose scheme and authority are at `uri` was looked up:
    /// `serial` stands for it.
    Found { uri: UriText, serial: u64 },
}

thread_local! {
    static CALL_KEY: Cell<Scope> = const { Cell::new(Scope::Closed) };
}

/// Shares one key lookup among the keyed layers a call reaches; see the
/// [module docs](self).
///
/// Internal to seawall's layer crates: hidden from the docs, no stability promise.
///
/// Hold the guard [`enter`](CallKey::enter) returns until `call` returns, and no longer:
/// never across an `.await` (it is not `Send`).
#[derive(Debug)]
#[must_use = "the key is shared only while the guard is held"]
pub struct CallKey {
    /// Whether this guard opened the thread's scope (and closes it when dropped, even by a
    /// panic).
    opened: bool,
    _not_send: PhantomData<*const ()>,
}

impl CallKey {
    /// Opens the thread's scope, unless an enclosing layer's `call` holds one open already.
    #[inline]
    pub fn enter() -> CallKey {
        let opened = CALL_KEY.get() == Scope::Closed;
        if opened {
            CALL_KEY.set(Scope::Open);
        }
        CallKey {
            opened,
            _not_send: PhantomData,
        }
    }
}

impl Drop for CallKey {
    #[inline]
    fn drop(&mut self) {
        if self.opened {
            CALL_KEY.set(Scope::Closed);
        }
    }
}

/// Where a URI's scheme and authority text are (address and length of each).
type UriText = [(usize, usize); 2];

/// Where `uri`'s scheme and authority are, to tell whether a later layer sees the same
/// request.
#[inline]
fn authority_of(uri: &Uri) -> Option<UriText> {
    let place = |text: &str| (text.as_ptr() as usize, text.len());
    let authority = uri.authority()?.as_str();
    Some([uri.scheme_str().map_or((0, 0), place), place(authority)])
}

/// The serial of the host key an enclosing layer found for the request whose URI is `uri`,
/// if one did.
#[inline]
pub(crate) fn shared(uri: &Uri) -> Option<u64> {
    match CALL_KEY.get() {
        Scope::Found { uri: text, serial } if Some(text) == authority_of(uri) => Some(serial),
        _ => None,
    }
}

/// Says, for the rest of the open scope, that `serial` stands for the host key of the
/// request whose URI is `uri`; nothing when no scope is open or a key was said already.
#[inline]
pub(crate) fn share(uri: &Uri, serial: u64) {
    if CALL_KEY.get() == Scope::Open
        && let Some(authority) = authority_of(uri)
    {
        CALL_KEY.set(Scope::Found {
            uri: authority,
            serial,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_shared_within_the_outermost_scope_for_the_same_request_only() {
        let uri: Uri = "https://a.example/x".parse().expect("valid uri");
        let other: Uri = "https://a.example/x".parse().expect("valid uri");
        // No scope: nothing is said or read.
        share(&uri, 7);
        assert_eq!(shared(&uri), None);
        let outer = CallKey::enter();
        assert_eq!(shared(&uri), None);
        share(&uri, 7);
        assert_eq!(shared(&uri), Some(7));
        // Another request (another URI, though it reads the same) shares nothing.
        assert_eq!(shared(&other), None);
        // Nor does the same authority sent on under another scheme, as a layer that moves
        // a request from http to https would.
        let mut parts = uri.clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        let downgraded = Uri::from_parts(parts).expect("valid uri");
        assert_eq!(
            downgraded.authority().map(|a| a.as_str().as_ptr()),
            uri.authority().map(|a| a.as_str().as_ptr()),
            "the same authority text"
        );
        assert_eq!(shared(&downgraded), None);
        // An inner layer's guard neither opens nor closes the scope; a second key is not
        // said over the first.
        let inner = CallKey::enter();
        share(&uri, 8);
        drop(inner);
        assert_eq!(shared(&uri), Some(7));
        drop(outer);
        assert_eq!(shared(&uri), None);
        let next = CallKey::enter();
        assert_eq!(shared(&uri), None, "a later call looks its key up afresh");
        drop(next);
    }

    #[test]
    fn a_panicking_call_closes_its_scope() {
        let uri: Uri = "https://a.example/".parse().expect("valid uri");
        let result = std::panic::catch_unwind(|| {
            let _scope = CallKey::enter();
            share(&uri, 3);
            panic!("a layer's call panics");
        });
        assert!(result.is_err());
        let _scope = CallKey::enter();
        assert_eq!(shared(&uri), None);
    }
}
