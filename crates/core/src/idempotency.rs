//! Which requests may be sent again.
//!
//! GET, HEAD, OPTIONS, TRACE, PUT and DELETE are idempotent (RFC 9110 §9.2.2). POST and
//! PATCH may be resent only when they carry an `Idempotency-Key` header, or when the user opts
//! in. Whatever the method, a request that provably never left this machine (a connect error)
//! may be resent.

use http::{HeaderName, Method, Request};

use crate::classify::FailureKind;

/// The `Idempotency-Key` request header (IETF draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Which methods a layer may resend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Idempotency {
    /// Idempotent methods, and any request with an `Idempotency-Key` header.
    #[default]
    Standard,
    /// Every request: the user vouches that the upstream tolerates duplicates.
    AllMethods,
}

impl Idempotency {
    /// Whether `request` may be sent again after it may have reached the upstream.
    pub fn allows<B>(self, request: &Request<B>) -> bool {
        match self {
            Idempotency::AllMethods => true,
            Idempotency::Standard => {
                is_idempotent_method(request.method())
                    || request.headers().contains_key(IDEMPOTENCY_KEY)
            }
        }
    }

    /// Whether a request that `allows` judged as `may_resend` may be resent after failing with
    /// `kind`: always after a connect error, otherwise only if it may be resent at all.
    pub fn allows_after(may_resend: bool, kind: FailureKind) -> bool {
        may_resend || kind.never_sent()
    }
}

/// `true` for the methods RFC 9110 defines as idempotent.
#[inline]
pub fn is_idempotent_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, key: bool) -> Request<()> {
        let mut builder = Request::builder().method(method).uri("http://a/");
        if key {
            builder = builder.header(IDEMPOTENCY_KEY, "k-1");
        }
        builder.body(()).expect("valid request")
    }

    #[test]
    fn method_rules() {
        for (method, idempotent) in [
            (Method::GET, true),
            (Method::HEAD, true),
            (Method::OPTIONS, true),
            (Method::TRACE, true),
            (Method::PUT, true),
            (Method::DELETE, true),
            (Method::POST, false),
            (Method::PATCH, false),
            (Method::CONNECT, false),
        ] {
            assert_eq!(is_idempotent_method(&method), idempotent, "{method}");
            assert_eq!(
                Idempotency::Standard.allows(&request(method.clone(), false)),
                idempotent,
                "{method}"
            );
            assert!(Idempotency::Standard.allows(&request(method.clone(), true)));
            assert!(Idempotency::AllMethods.allows(&request(method, false)));
        }
    }

    #[test]
    fn connect_errors_are_always_resendable() {
        assert!(Idempotency::allows_after(false, FailureKind::Connect));
        assert!(!Idempotency::allows_after(false, FailureKind::Timeout));
        assert!(!Idempotency::allows_after(false, FailureKind::Transport));
        assert!(Idempotency::allows_after(true, FailureKind::ServerError));
    }
}
