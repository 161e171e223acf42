//! The operator's HTTP endpoints: `/healthz` and `/readyz` for the kubelet's probes, and
//! `/metrics` for Prometheus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// The content type of the OpenMetrics text format that `/metrics` answers in.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoints read: the metrics and whether the operator is ready.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// The metrics `/metrics` encodes.
    pub metrics: Arc<Metrics>,
    /// `/readyz` answers 200 while this is true, 503 otherwise.
    pub ready: Arc<AtomicBool>,
}

/// Listens on `addr` (port 0 picks a free port) and returns the bound address and the future
/// that serves the endpoints until it is dropped or fails.
pub async fn bind(
    addr: SocketAddr,
    state: HttpState,
) -> std::io::Result<(
    SocketAddr,
    impl Future<Output = std::io::Result<()>> + Send + 'static,
)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    Ok((bound, async move { axum::serve(listener, app).await }))
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_text(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Server {
        base: String,
        ready: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
        serve: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.serve.abort();
        }
    }

    async fn start() -> Server {
        let state = HttpState {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
        };
        let (addr, serve) = bind(SocketAddr::from(([127, 0, 0, 1], 0)), state.clone())
            .await
            .expect("binds");
        Server {
            base: format!("http://{addr}"),
            ready: state.ready,
            metrics: state.metrics,
            serve: tokio::spawn(serve),
        }
    }

    async fn get(url: String) -> (u16, String, String) {
        let response = reqwest::get(url).await.expect("request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, response.text().await.expect("body"))
    }

    #[tokio::test]
    async fn bind_on_port_zero_reports_the_port_it_picked() {
        let server = start().await;
        assert!(!server.base.ends_with(":0"), "{}", server.base);
    }

    #[tokio::test]
    async fn healthz_answers_ok_even_when_not_ready() {
        let server = start().await;
        let (status, _, body) = get(format!("{}/healthz", server.base)).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
    }

    #[tokio::test]
    async fn readyz_follows_the_ready_flag() {
        let server = start().await;
        let (status, _, body) = get(format!("{}/readyz", server.base)).await;
        assert_eq!((status, body.as_str()), (503, "not ready"));

        server.ready.store(true, Ordering::Release);
        let (status, _, body) = get(format!("{}/readyz", server.base)).await;
        assert_eq!((status, body.as_str()), (200, "ok"));

        server.ready.store(false, Ordering::Release);
        let (status, _, _) = get(format!("{}/readyz", server.base)).await;
        assert_eq!(status, 503);
    }

    #[tokio::test]
    async fn metrics_are_served_as_openmetrics_text() {
        let server = start().await;
        server.metrics.agent_recovered();
        let (status, content_type, body) = get(format!("{}/metrics", server.base)).await;
        assert_eq!(status, 200);
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        assert!(
            body.lines().any(|l| l == "maos_agent_recoveries_total 1"),
            "{body}"
        );
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
    }

    #[tokio::test]
    async fn unknown_paths_are_not_found() {
        let server = start().await;
        let (status, _, _) = get(format!("{}/nope", server.base)).await;
        assert_eq!(status, 404);
    }
}
