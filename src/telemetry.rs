//! Prometheus metrics, shared by `revocd serve` and `revocd agent`: one
//! recorder per process, latency buckets, periodic upkeep, and the
//! `/metrics` body.
//!
//! Metrics are recorded with the `metrics` crate's macros wherever the
//! event happens; nothing here knows their names except the bucket rule:
//! every histogram named `*_seconds` gets [`LATENCY_BUCKETS`].
//!
//! Logs: [`LogFields`], the text log's field formatter.

mod log_fields;

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use self::log_fields::{LogFieldVisitor, LogFields};

/// Histogram buckets of every `*_seconds` metric: 10 µs to 5 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    5.0,
];
/// How often recorded histogram samples are folded into buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed on first use. Call it at
/// start-up, before the first metric is recorded.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            // A fixed, non-empty bucket list is always accepted.
            .expect("valid buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (by an embedding
        // program); revocd's metrics then go there.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The metrics in Prometheus text format.
pub fn render() -> String {
    prometheus().render()
}

/// Serves `GET /metrics` on `listener` until `stop` (the server's health is
/// its gRPC health service; the agent has its own router with `/healthz`).
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve_metrics(listener: TcpListener, stop: CancellationToken) -> std::io::Result<()> {
    let router = Router::new().route(
        "/metrics",
        get(|| async { ([(CONTENT_TYPE, TEXT_FORMAT)], render()) }),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

/// Content type of the Prometheus text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4";

/// Folds recorded histogram samples into their buckets every few seconds
/// until `stop`; without it they pile up until `/metrics` is scraped, and
/// a process nobody scrapes would grow without bound.
pub async fn upkeep(stop: CancellationToken) {
    let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => prometheus().run_upkeep(),
        }
    }
}
