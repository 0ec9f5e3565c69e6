/*!
`--http ADDR:PORT`: where a person looks when a value seems wrong, and where Grafana scrapes.

- `GET /cm?cmnd=Status%2010`: Tasmota's HTTP command API, `{"StatusSNS":{...}}` with the object a
  teleperiod would publish on SENSOR now, byte for byte (scripts and tools written for a Tasmota
  device read sml the same way). `Status 8` is Tasmota's older name for it; any other command is
  answered `{"Command":"Unknown"}`, as Tasmota does.
- `GET /metrics`: Prometheus' text format ([`metrics`]).
- `GET /`: a live page laid out as Tasmota's web UI lays out a script's lines (label, value, unit,
  the `=h` lines), polling `/api/live` every two seconds, with a 24 h chart per value drawn by uPlot
  (MIT licence, shipped in the binary: the page works with no internet).

The server is axum on the run's own current-thread runtime; it reads [`live::Live`], which the run
loop keeps beside the engine. With `--http-password-file` every request needs basic auth as user
`admin` (Tasmota's web user); the password is compared in constant time and never logged.
*/

pub mod live;
pub mod metrics;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use serde_json::json;
use subtle::ConstantTimeEq;

use self::live::{lock, Live, Row};
use crate::engine::json as sensor_json;
use crate::publish::mqtt::Secret;

/// Tasmota's web user name.
pub const USER: &str = "admin";

const PAGE: &str = include_str!("assets/page.html");
const UPLOT_JS: &str = include_str!("assets/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/uPlot.min.css");

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("--http {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("the HTTP server stopped: {0}")]
    Serve(#[source] std::io::Error),
}

/// `--http` resolved: the socket, bound before the run starts (a port in use is said at once),
/// and the password when one is asked for.
#[derive(Debug)]
pub struct HttpConfig {
    pub listener: std::net::TcpListener,
    pub password: Option<Secret>,
}

impl HttpConfig {
    /// Bind `addr` as the user wrote it: `ADDR:PORT`, or a port alone for loopback.
    pub fn bind(addr: &str, password: Option<Secret>) -> Result<HttpConfig, HttpError> {
        let bind_error = |source| HttpError::Bind {
            addr: addr.to_string(),
            source,
        };
        let target = if addr.parse::<u16>().is_ok() {
            format!("127.0.0.1:{addr}")
        } else {
            addr.to_string()
        };
        let listener = std::net::TcpListener::bind(&target).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        Ok(HttpConfig { listener, password })
    }
}

#[derive(Clone)]
struct AppState {
    live: Arc<Mutex<Live>>,
    password: Option<Arc<Secret>>,
}

/// Serve until the task is aborted (the run's end) or the socket fails.
pub async fn serve(config: HttpConfig, live: Arc<Mutex<Live>>) -> Result<(), HttpError> {
    let listener = tokio::net::TcpListener::from_std(config.listener).map_err(HttpError::Serve)?;
    let state = AppState {
        live,
        password: config.password.map(Arc::new),
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/cm", get(command))
        .route("/metrics", get(prometheus))
        .route("/api/live", get(api_live))
        .route(
            "/uPlot.iife.min.js",
            get(|| async { asset(UPLOT_JS, "text/javascript") }),
        )
        .route(
            "/uPlot.min.css",
            get(|| async { asset(UPLOT_CSS, "text/css") }),
        )
        .layer(middleware::from_fn_with_state(state.clone(), basic_auth))
        .with_state(state);
    axum::serve(listener, app).await.map_err(HttpError::Serve)
}

/// With a password: `Authorization: Basic` as `admin` and that password, else 401.
async fn basic_auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(password) = &s.password else {
        return next.run(req).await;
    };
    if authorized(req.headers(), password.expose()) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"sml\"")],
        "401 Unauthorized\n",
    )
        .into_response()
}

/// Whether the request carries `admin` and `password`; the password is compared in constant time.
fn authorized(headers: &HeaderMap, password: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
    else {
        return false;
    };
    let Some(colon) = given.iter().position(|b| *b == b':') else {
        return false;
    };
    let (user, pass) = (&given[..colon], &given[colon + 1..]);
    let user_ok = user.ct_eq(USER.as_bytes());
    let pass_ok = pass.ct_eq(password.as_bytes());
    bool::from(user_ok & pass_ok)
}

fn asset(body: &'static str, content_type: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type)], body)
}

fn json_response(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn wall_now() -> chrono::NaiveDateTime {
    chrono::Local::now().naive_local()
}

/// `/cm?cmnd=Status 10`.
async fn command(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let cmnd = q.get("cmnd").map(String::as_str).unwrap_or("");
    let words: Vec<String> = cmnd
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["status", "10"] | ["status", "8"] => {
            let sensor = lock(&s.live).sensor_json(Instant::now(), &wall_now());
            json_response(format!("{{\"StatusSNS\":{sensor}}}"))
        }
        _ => json_response("{\"Command\":\"Unknown\"}".into()),
    }
}

async fn prometheus(State(s): State<AppState>) -> Response {
    let body = metrics::render(&lock(&s.live), Instant::now());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

/// What the page shows: each meter's rows with their values, and the chart points after `since`.
async fn api_live(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let since: i64 = q.get("since").and_then(|v| v.parse().ok()).unwrap_or(0);
    let live = lock(&s.live);
    let now = Instant::now();
    let mut history = serde_json::Map::new();
    let meters: Vec<serde_json::Value> = live
        .meters
        .iter()
        .filter(|m| m.prefix.is_some())
        .map(|m| {
            let rows: Vec<serde_json::Value> = m
                .rows
                .iter()
                .filter_map(|r| match r {
                    Row::Html(h) => Some(json!({ "html": h })),
                    // Tasmota hides a line labelled `*` on the page.
                    Row::Value(v) if v.label == "*" => None,
                    Row::Value(v) => {
                        let points = live.history_since(v.entry, since);
                        if !points.is_empty() {
                            history.insert(v.entry.to_string(), json!(points));
                        }
                        Some(json!({
                            "entry": v.entry,
                            "label": v.label,
                            "unit": v.unit,
                            "name": v.name,
                            "value": live.shown(v, now),
                        }))
                    }
                })
                .collect();
            json!({ "index": m.index, "prefix": m.prefix, "rows": rows })
        })
        .collect();
    let time = live.last_time.as_ref().map(sensor_json::format_time);
    let body = json!({
        "time": time,
        "now": chrono::Utc::now().timestamp(),
        "meters": meters,
        "history": history,
    });
    json_response(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        );
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn only_admin_with_the_password_is_let_in() {
        assert!(authorized(&basic("admin:s3cret"), "s3cret"));
        assert!(!authorized(&basic("admin:s3cre"), "s3cret"));
        assert!(!authorized(&basic("root:s3cret"), "s3cret"));
        assert!(!authorized(&basic("admins3cret"), "s3cret"));
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
    }

    #[test]
    fn a_port_alone_binds_loopback() {
        let c = HttpConfig::bind("0", None).unwrap();
        assert!(c.listener.local_addr().unwrap().ip().is_loopback());
        let e = HttpConfig::bind("256.1.1.1:80", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--http 256.1.1.1:80"), "{e}");
    }
}
