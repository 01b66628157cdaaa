//! The metrics HTTP endpoint: `/metrics` (Prometheus text format), `/health` (liveness:
//! the process answers) and `/ready` (readiness: the run set it once its transport and sink
//! were open, and clears it when it starts shutting down, while the Kafka brokers do not
//! answer, and while the sink cannot write or does not answer a ping).
//!
//! Plain HTTP/1.1 on a listener the caller binds (127.0.0.1 by default, from `[metrics]`),
//! so the caller reports a bad address before anything else starts.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, Registry, TextEncoder};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a scrape in progress may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Readiness, set by whoever owns the pipeline's lifecycle.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    /// Set while the sink's last write (or idle ping) failed: not ready until one succeeds.
    sink_down: AtomicBool,
    /// Set while the Kafka brokers did not answer the last probe.
    transport_down: AtomicBool,
}

impl Health {
    /// The run is serving (transport and sink open) or draining.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// The sink failed to write (`true`) or wrote again (`false`).
    pub fn set_sink_down(&self, down: bool) {
        self.sink_down.store(down, Ordering::Release);
    }

    /// The transport's brokers stopped answering (`true`) or answer again (`false`).
    pub fn set_transport_down(&self, down: bool) {
        self.transport_down.store(down, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && !self.sink_down.load(Ordering::Acquire)
            && !self.transport_down.load(Ordering::Acquire)
    }
}

/// Why the endpoint stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("metrics listener failed to accept a connection: {0}")]
    Accept(#[source] std::io::Error),
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn respond(req: &Request<Incoming>, registry: &Registry, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let encoder = TextEncoder::new();
            let mut buf = Vec::new();
            match encoder.encode(&registry.gather(), &mut buf) {
                Ok(()) => {
                    let mut r = text(StatusCode::OK, buf);
                    if let Ok(v) = encoder.format_type().parse() {
                        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                    }
                    r
                }
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("encoding metrics failed: {e}\n"),
                ),
            }
        }
        "/health" => text(StatusCode::OK, "ok\n"),
        "/ready" if health.is_ready() => text(StatusCode::OK, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /health, /ready\n",
        ),
    }
}

/// Serves until `stop` fires, then gives connections in progress [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    health: Arc<Health>,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let tracker = TaskTracker::new();
    let result = loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                // A peer that resets before we accept is its problem, not the endpoint's.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) => break Err(ServeError::Accept(e)),
            },
        };
        let (registry, health, stop) = (registry.clone(), health.clone(), stop.clone());
        tracker.spawn(async move {
            let svc = service_fn(move |req| {
                let r = respond(&req, &registry, &health);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
        });
    };
    tracker.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE * 2, tracker.wait()).await;
    result
}
