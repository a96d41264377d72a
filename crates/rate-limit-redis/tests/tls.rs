//! `rediss://`: the store admits through a `redis-server` that speaks only TLS, with a
//! certificate authority and server certificate made by the test. Run with
//! `cargo test -p seawall-rate-limit-redis --features tls --test tls`.

#![cfg(feature = "tls")]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup is a failed test"
)]

mod support;

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use seawall_rate_limit::{Decision, RateStore};
use seawall_rate_limit_redis::RedisStore;
use seawall_rate_limit_redis::server::RedisServer;
use support::quota;
use tokio::time::Instant;

/// A certificate authority and a certificate it signed for `127.0.0.1`, written to `dir`;
/// returns the authority's certificate (PEM).
fn certificates(dir: &Path) -> String {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "seawall test authority");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    ca_pem
}

fn tls_server(dir: &Path) -> RedisServer {
    RedisServer::start_tls(
        &dir.join("server.pem"),
        &dir.join("server.key"),
        &dir.join("ca.pem"),
    )
    .unwrap()
}

#[tokio::test]
async fn a_rediss_url_admits_through_a_tls_only_redis() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certificates(dir.path());
    let server = tls_server(dir.path());
    assert!(server.url().starts_with("rediss://"), "{}", server.url());
    let store = RedisStore::builder(&server.url())
        .root_certificates(ca)
        .connect()
        .await
        .unwrap();
    let quotas = [quota(10, 2)];
    let slot = store.new_slot(&"over tls");
    let now = Instant::now();
    for _ in 0..2 {
        assert_eq!(
            store.acquire(&slot, &quotas, 1, now).await.unwrap(),
            Decision::Admitted
        );
    }
    assert!(matches!(
        store.acquire(&slot, &quotas, 1, now).await.unwrap(),
        Decision::Wait(_)
    ));
    let stats = store.stats();
    assert_eq!(
        (stats.remote_calls, stats.errors, stats.timeouts),
        (3, 0, 0)
    );
}

#[tokio::test]
async fn a_certificate_from_an_authority_not_trusted_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _ca = certificates(dir.path());
    let server = tls_server(dir.path());
    // Mozilla's roots, which do not hold the test's authority; time enough for the refusal
    // to come back as an error rather than a timeout.
    let store = RedisStore::builder(&server.url())
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let slot = store.new_slot(&"untrusted");
    let error = store
        .acquire(&slot, &[quota(10, 2)], 1, Instant::now())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("certificate"), "{error}");
    let stats = store.stats();
    assert_eq!(
        (stats.errors, stats.closed_refused, stats.remote_admitted),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn root_certificates_need_a_rediss_url_and_pem() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certificates(dir.path());
    let cases = [
        RedisStore::builder("redis://127.0.0.1:1/").root_certificates(ca.clone()),
        RedisStore::builder("rediss://127.0.0.1:1/").root_certificates("not a certificate"),
        RedisStore::builder("rediss://127.0.0.1:1/").root_certificates(Vec::new()),
    ];
    for builder in cases {
        let error = builder.connect().await.unwrap_err();
        assert_eq!(error.field(), "root_certificates", "{error}");
    }
    let shown = format!(
        "{:?}",
        RedisStore::builder("rediss://h/").root_certificates(ca.clone())
    );
    assert!(!shown.contains("BEGIN"), "{shown}");
}
