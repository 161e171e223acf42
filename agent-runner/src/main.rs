//! `maos-agent`: a Claude agent of a MAOS AgentPool. Its configuration comes from flags or the
//! environment the operator sets in its pod (`maos-agent --help`); the API key only from
//! `ANTHROPIC_API_KEY`.

use std::process::ExitCode;

use clap::Parser as _;
use maos_agent_runner::claude::ClientConfig;
use maos_agent_runner::config::AgentConfig;
use maos_agent_runner::metrics::AgentMetrics;
use maos_agent_runner::{http, worker};
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> ExitCode {
    let config = AgentConfig::parse();
    init_logging(config.log_json);
    let claude = match ClientConfig::from_env() {
        Ok(claude) => claude,
        Err(err) => {
            tracing::error!(error = %err, "cannot configure the Claude client");
            return ExitCode::from(2);
        }
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let grace = config.shutdown_grace();
    tokio::spawn(async move {
        wait_for_termination().await;
        tracing::info!("termination requested: finishing the current turn, then releasing work");
        let _ = stop.send(true);
        // A turn stuck on an unreachable Redis or model must not outlive the pod's grace
        // period: leave, and let the operator reclaim what this agent held.
        tokio::time::sleep(grace).await;
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "shutdown took longer than its grace period; exiting"
        );
        std::process::exit(0);
    });
    let metrics = Arc::new(AgentMetrics::default());
    let mut http_stop = stopped.clone();
    let served = http::serve(config.http_addr, metrics.clone(), async move {
        let _ = http_stop.wait_for(|stop| *stop).await;
    });
    match served.await {
        Ok(addr) => tracing::info!(%addr, "serving /healthz and /metrics"),
        Err(err) => {
            tracing::error!(error = %err, addr = %config.http_addr, "cannot serve /healthz and /metrics");
            return ExitCode::FAILURE;
        }
    }
    match worker::run(config, claude, metrics, stopped).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "agent failed");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
async fn wait_for_termination() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still dies on the signal, just not gracefully.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into a pod's collected logs.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
