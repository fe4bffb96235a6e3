//! The admin port: liveness, readiness, metrics and the current table.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use switchyard_router::TableHandle;
use switchyard_telemetry::{prometheus_error, Metrics};

use crate::{
    admit::Limits,
    body::{self, Body},
    error::json_response,
};

/// Serves `/healthz`, `/readyz`, `/metrics` and `/debug/routes`.
#[derive(Clone)]
pub struct Admin {
    table: Arc<TableHandle>,
    metrics: Arc<Metrics>,
    draining: Arc<AtomicBool>,
    limits: Arc<Limits>,
}

impl Admin {
    /// An admin service over the gateway's table and metrics. `draining` turns `/readyz`
    /// false during shutdown, so load balancers stop sending before the listener closes.
    pub fn new(
        table: Arc<TableHandle>,
        metrics: Arc<Metrics>,
        draining: Arc<AtomicBool>,
        limits: Arc<Limits>,
    ) -> Self {
        Admin {
            table,
            metrics,
            draining,
            limits,
        }
    }

    /// Sets the per-backend gauges from live state at scrape time, so the request path never
    /// touches them.
    fn refresh_backend_gauges(&self) {
        let table = self.table.load();
        self.metrics.backend_healthy.reset();
        self.metrics.backend_in_flight.reset();
        for b in table.backends() {
            let state = b.state();
            self.metrics
                .backend_healthy
                .with_label_values(&[&b.name, b.provider.as_str()])
                .set(i64::from(state.is_healthy()));
            self.metrics
                .backend_in_flight
                .with_label_values(&[&b.name])
                .set(i64::from(state.in_flight()));
        }
    }

    fn scrape(&self) -> Result<String, prometheus_error::Error> {
        self.refresh_backend_gauges();
        self.metrics.encode_text()
    }

    /// Answers one admin request.
    pub async fn handle<B>(&self, req: &Request<B>) -> Response<Body> {
        match req.uri().path() {
            "/debug/spend" => {
                let consumers = self
                    .table
                    .load()
                    .consumers()
                    .iter()
                    .map(|c| (c.name.clone(), c.state().clone()))
                    .collect();
                let view = self.limits.ledger(consumers).await;
                let body = serde_json::to_vec_pretty(&view).unwrap_or_default();
                json_response(StatusCode::OK, Bytes::from(body))
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.draining.load(Ordering::Acquire) {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else if self.table.is_ready() {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no routing table loaded yet\n",
                    )
                }
            }
            "/metrics" => match self.scrape() {
                Ok(s) => {
                    let mut r = Response::new(body::full(s));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    r
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            },
            "/debug/routes" => {
                let view = self.table.load().debug_view();
                let body = serde_json::to_vec_pretty(&view).unwrap_or_default();
                json_response(StatusCode::OK, Bytes::from(body))
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn text(status: StatusCode, s: &str) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::copy_from_slice(s.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
