//! The admin port: liveness, readiness, metrics and the current table.
//!
//! `/metrics`, `/healthz` and `/readyz` are always open (probes and scrapers carry no
//! credentials). `/debug/*` shows the routing table and the spend ledger: with a token
//! configured it needs `Authorization: Bearer <token>`, compared in constant time.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use subtle::ConstantTimeEq;
use switchyard_router::TableHandle;
use switchyard_telemetry::{prometheus_error, Metrics};

use crate::{
    admit::Limits,
    body::{self, Body},
    error::json_response,
};

/// Serves `/healthz`, `/readyz`, `/metrics`, `/debug/routes` and `/debug/spend`.
#[derive(Clone)]
pub struct Admin {
    table: Arc<TableHandle>,
    metrics: Arc<Metrics>,
    draining: Arc<AtomicBool>,
    limits: Arc<Limits>,
    /// SHA-256 of the token `/debug/*` requires, if one is set. Digests of equal length are
    /// compared, so neither the token nor its length leaks through timing.
    debug_token: Option<[u8; 32]>,
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
            debug_token: None,
        }
    }

    /// Requires `Authorization: Bearer <token>` on `/debug/*` when `token` is set.
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.debug_token = token.map(|t| switchyard_router::consumer::digest(t.as_bytes()));
        self
    }

    /// Whether the request may see `/debug/*`.
    fn debug_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.debug_token else {
            return true;
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| {
                let v = v.as_bytes();
                v.strip_prefix(b"Bearer ")
                    .or_else(|| v.strip_prefix(b"bearer "))
            })
            .map(<[u8]>::trim_ascii)
            .unwrap_or_default();
        let got = switchyard_router::consumer::digest(presented);
        bool::from(got.ct_eq(want))
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
        let path = req.uri().path();
        if path.starts_with("/debug/") && !self.debug_allowed(req.headers()) {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "/debug needs the admin token: Authorization: Bearer <token>\n",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"switchyard-admin\""),
            );
            return r;
        }
        match path {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(token: Option<&str>) -> Admin {
        let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
        Admin::new(
            Arc::new(TableHandle::new()),
            metrics.clone(),
            Arc::new(AtomicBool::new(false)),
            Arc::new(Limits::local(metrics)),
        )
        .with_token(token)
    }

    async fn status(a: &Admin, path: &str, auth: Option<&str>) -> StatusCode {
        let mut req = Request::get(path);
        if let Some(v) = auth {
            req = req.header(header::AUTHORIZATION, v);
        }
        a.handle(&req.body(()).unwrap()).await.status()
    }

    #[tokio::test]
    async fn debug_endpoints_need_the_token_and_probes_stay_open() {
        let a = admin(Some("s3cret-admin"));
        for path in ["/debug/routes", "/debug/spend", "/debug/anything"] {
            assert_eq!(
                status(&a, path, None).await,
                StatusCode::UNAUTHORIZED,
                "{path}"
            );
            for wrong in [
                "Bearer nope",
                "Bearer s3cret-admin2",
                "Basic s3cret-admin",
                "Bearer ",
            ] {
                assert_eq!(
                    status(&a, path, Some(wrong)).await,
                    StatusCode::UNAUTHORIZED,
                    "{path} {wrong}"
                );
            }
            assert_ne!(
                status(&a, path, Some("Bearer s3cret-admin")).await,
                StatusCode::UNAUTHORIZED,
                "{path}"
            );
        }
        assert_eq!(
            status(&a, "/debug/routes", Some("Bearer s3cret-admin")).await,
            StatusCode::OK
        );
        assert_eq!(status(&a, "/metrics", None).await, StatusCode::OK);
        assert_eq!(status(&a, "/healthz", None).await, StatusCode::OK);
        // Not ready (no table), but answered without credentials.
        assert_eq!(
            status(&a, "/readyz", None).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        // Without a token configured, /debug is open as before.
        let open = admin(None);
        assert_eq!(status(&open, "/debug/routes", None).await, StatusCode::OK);
    }
}
