//! `rediss://` against a real redis-server that speaks only TLS, with certificates generated
//! for the run: the coordination layer verifies the server with the configured CA, presents a
//! client certificate to a server that asks for one, and refuses what it cannot trust with a
//! clear error, never a panic and never a plain-text fallback.

mod coord_common;

use std::time::Duration;

use coord_common::{task_uid, unique};
use maos_core::coord::{
    CoordError, Pool, PoolUid, Redis, RedisConfig, RedisTls, RetryPolicy, Topology,
};
use maos_e2e::launch::redis::RedisServer;
use maos_e2e::launch::redis_tls::TlsFiles;

async fn tls_server(require_client_cert: bool) -> (TlsFiles, RedisServer) {
    tokio::task::spawn_blocking(move || {
        let files = TlsFiles::generate(require_client_cert)?;
        let server = RedisServer::start_tls(&files)?;
        Ok::<_, maos_e2e::launch::LaunchError>((files, server))
    })
    .await
    .expect("launcher")
    .expect("start a TLS redis-server")
}

/// A config for `url` that gives up quickly: a refused handshake is not transient.
fn config(url: &str, tls: Option<RedisTls>) -> RedisConfig {
    let mut config = RedisConfig::new(Topology::Standalone, [url]).with_tls(tls);
    config.retry = RetryPolicy {
        max_retries: 1,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
    };
    config
}

async fn round_trip(redis: Redis) -> Result<Option<Vec<u8>>, CoordError> {
    let state = Pool::new(redis, &PoolUid::new(&unique("pool")).expect("uid"))
        .task(&task_uid())
        .state();
    state.put("greeting", b"hello over TLS").await?;
    Ok(state.get("greeting").await?.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordination_works_over_tls_with_the_ca_and_a_client_certificate() {
    let (files, server) = tls_server(true).await;
    assert!(server.url().starts_with("rediss://"), "{}", server.url());
    let tls = RedisTls::from_files(
        Some(&files.ca),
        Some(&files.client_cert),
        Some(&files.client_key),
    )
    .expect("the files load")
    .expect("TLS material");
    let redis = Redis::connect(config(&server.url(), Some(tls)))
        .await
        .expect("connect over TLS");
    assert_eq!(
        round_trip(redis).await.expect("state over TLS").as_deref(),
        Some(&b"hello over TLS"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_asks_for_a_client_certificate_refuses_a_client_without_one() {
    let (files, server) = tls_server(true).await;
    let tls = RedisTls::from_files(Some(&files.ca), None, None).expect("the CA loads");
    let outcome = match Redis::connect(config(&server.url(), tls)).await {
        Ok(redis) => round_trip(redis).await.map(|_| ()),
        Err(error) => Err(error),
    };
    assert!(outcome.is_err(), "a client without a certificate got in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_signed_by_another_ca_is_refused() {
    let (files, server) = tls_server(false).await;
    let tls = RedisTls::from_files(Some(&files.other_ca), None, None).expect("the CA loads");
    let outcome = match Redis::connect(config(&server.url(), tls)).await {
        Ok(redis) => round_trip(redis).await.map(|_| ()),
        Err(error) => Err(error),
    };
    let error = outcome.expect_err("a server the CA did not sign was trusted");
    let shown = error.to_string().to_lowercase();
    assert!(
        shown.contains("certificate") || shown.contains("tls") || shown.contains("issuer"),
        "the error says why: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_needing_no_client_certificate_is_reached_with_the_ca_alone() {
    let (files, server) = tls_server(false).await;
    let pem = std::fs::read(&files.ca).expect("CA file");
    // As agents get it: the CA bundle as text, from the operator's own.
    let tls = RedisTls::with_ca_pem(None, &pem, "MAOS_REDIS_CA_PEM").expect("the CA loads");
    let redis = Redis::connect(config(&server.url(), Some(tls)))
        .await
        .expect("connect over TLS");
    assert!(round_trip(redis).await.expect("state").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_with_a_plain_redis_url_are_refused_before_connecting() {
    let files = tokio::task::spawn_blocking(|| TlsFiles::generate(false))
        .await
        .expect("launcher")
        .expect("certificates");
    let tls = RedisTls::from_files(Some(&files.ca), None, None).expect("the CA loads");
    let error = Redis::connect(config("redis://127.0.0.1:9/", tls))
        .await
        .expect_err("TLS material for a plain URL");
    assert!(matches!(error, CoordError::InvalidConfig(_)), "{error:?}");
    assert!(
        error.to_string().contains("redis://127.0.0.1:9/"),
        "names the URL: {error}"
    );
}
