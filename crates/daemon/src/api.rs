//! The HTTP API (boundary): JSON status, history and events, a server-sent-events stream of
//! live updates, and Prometheus metrics. Loopback only; every route needs the bearer token,
//! and a request without it gets 401 and nothing else.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::shared::Shared;
use homebase_proto::clock::now;

pub fn router(shared: Arc<Shared>) -> Router {
    let protected = Router::new()
        .route("/api/status", get(status))
        .route("/api/history", get(history))
        .route("/api/events", get(events))
        .route("/api/stream", get(stream))
        .route("/api/login-code", post(login_code))
        .route("/api/alerts/test", post(alerts_test))
        .route("/api/loops", get(loops))
        .route("/api/loops/{project}/{name}/history", get(loop_history))
        .route("/api/loops/{project}/{name}/{action}", post(loop_control))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), auth));
    // The page and its assets carry no data; without the token they show a sign-in form.
    // A session is opened with the token or a one-time code (checked by the handler).
    Router::new()
        .route("/api/session", post(new_session))
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .merge(protected)
        .layer(middleware::from_fn(same_host))
        .with_state(shared)
}

/// Whether `host` (a `Host` header) names this machine's loopback: `127.0.0.1`, `[::1]` or
/// `localhost` (a subdomain of it too), with any port (an SSH tunnel's on the laptop).
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                n
            } else {
                host
            }
        }),
    };
    let name = name.to_ascii_lowercase();
    name == "127.0.0.1" || name == "::1" || name == "localhost" || name.ends_with(".localhost")
}

/// DNS rebinding and cross-origin requests: the `Host` must be a loopback name, and an
/// `Origin`, when the browser sends one, must be this very origin (`http://` + `Host`): a
/// page of another site, or of another server on another 127.0.0.1 port, gets 403.
async fn same_host(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !loopback_host(host) {
        return (
            StatusCode::FORBIDDEN,
            "this API answers only to a loopback Host (127.0.0.1, localhost, [::1])",
        )
            .into_response();
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(host));
        if !ok {
            return (StatusCode::FORBIDDEN, "cross-origin requests are refused").into_response();
        }
    }
    next.run(req).await
}

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// How long a dashboard session and a one-time login code live.
const SESSION_SECS: i64 = 12 * 3600;
const CODE_SECS: i64 = 120;

/// Dashboard sessions and one-time login codes, by value → expiry (unix seconds).
#[derive(Default)]
pub struct Sessions {
    sessions: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    codes: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

impl Sessions {
    fn insert(
        map: &std::sync::Mutex<std::collections::HashMap<String, i64>>,
        ttl: i64,
    ) -> Option<String> {
        let id = crate::random_hex(32).ok()?;
        let t = now();
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, exp| *exp > t);
        m.insert(id.clone(), t + ttl);
        Some(id)
    }

    fn valid_session(&self, id: &str) -> bool {
        let m = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .any(|(k, exp)| *exp > now() && same(k.as_bytes(), id.as_bytes()))
    }

    /// Uses up a login code; true when it was valid.
    fn redeem(&self, code: &str) -> bool {
        let mut m = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        let found = m
            .iter()
            .find(|(k, exp)| **exp > now() && same(k.as_bytes(), code.as_bytes()))
            .map(|(k, _)| k.clone());
        found.is_some_and(|k| m.remove(&k).is_some())
    }
}

fn bearer_ok(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim().as_bytes(), token.as_bytes()))
}

/// Opens a dashboard session: with the bearer token, or with a one-time login code in the
/// `X-Homebase-Login` header (what `homebase dash` puts in the page's URL fragment). The
/// answer is the session id, never the token; the page keeps it in `sessionStorage`, which
/// belongs to this origin (scheme, host and port) alone, and sends it as
/// `Authorization: Session ID`. No cookie: a cookie would go to every server on 127.0.0.1,
/// whatever its port.
async fn new_session(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let code_ok = headers
        .get("x-homebase-login")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| shared.sessions.redeem(c.trim()));
    if !bearer_ok(&headers, &shared.token) && !code_ok {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(id) = Sessions::insert(&shared.sessions.sessions, SESSION_SECS) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(homebase_proto::DashSession {
            session: id,
            expires_in: SESSION_SECS,
        }),
    )
        .into_response()
}

/// A one-time code (valid 2 minutes, for one session) for `homebase dash` to hand the
/// browser instead of the token.
async fn login_code(State(shared): State<Arc<Shared>>) -> Response {
    match Sessions::insert(&shared.sessions.codes, CODE_SECS) {
        Some(code) => Json(homebase_proto::LoginCode {
            code,
            expires_in: CODE_SECS,
        })
        .into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A test message to every project's sinks, sent now (no cooldown, never an active alert),
/// with what each sink answered: the pre-flight check proves alerts reach the phone.
async fn alerts_test(State(shared): State<Arc<Shared>>) -> Response {
    let mem_total = shared.snapshot.read().await.mem_total;
    let (projects, _) = shared.projects(mem_total);
    let mut out: Vec<homebase_proto::AlertTest> = Vec::new();
    for p in projects {
        let a = crate::alerts::Alert {
            kind: "test".into(),
            project: p.name.clone(),
            service: String::new(),
            message: "a test message from homebase's pre-flight check: alerts reach you".into(),
            status: "notice".into(),
            time: now(),
            host: shared.host.clone(),
        };
        let sinks = p.alerts.clone();
        let failed = tokio::task::spawn_blocking(move || crate::alerts::deliver(&sinks, &a))
            .await
            .unwrap_or_else(|e| vec![format!("the delivery task failed: {e}")]);
        shared
            .event(
                &p.name,
                "",
                "alert_test",
                &format!("test message sent; {} failed", failed.len()),
            )
            .await;
        out.push(homebase_proto::AlertTest {
            project: p.name.clone(),
            sinks: crate::alerts::sink_names(&p.alerts),
            failed,
        });
    }
    Json(out).into_response()
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token authorizes every route; a dashboard session (`Authorization: Session
/// ID`) reads only (GET).
pub fn authorized(method: &axum::http::Method, headers: &HeaderMap, shared: &Shared) -> bool {
    if bearer_ok(headers, &shared.token) {
        return true;
    }
    let reads = method == axum::http::Method::GET || method == axum::http::Method::HEAD;
    reads
        && headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Session "))
            .is_some_and(|id| shared.sessions.valid_session(id.trim()))
}

async fn auth(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if authorized(req.method(), req.headers(), &shared) {
        next.run(req).await
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

/// Internal failures are logged in full and shown briefly.
struct AppError(anyhow::Error);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        tracing::error!("API error: {:#}", self.0);
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the daemon's log",
        )
            .into_response()
    }
}

impl<E: Into<anyhow::Error>> From<E> for AppError {
    fn from(e: E) -> Self {
        AppError(e.into())
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<crate::monitor::Snapshot> {
    Json(shared.snapshot.read().await.clone())
}

#[derive(Deserialize)]
struct HistoryQuery {
    project: String,
    service: String,
    from: Option<i64>,
    to: Option<i64>,
    /// `raw`, `1m` or `15m`; default: chosen from the range.
    resolution: Option<String>,
}

async fn history(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, AppError> {
    let to = q.to.unwrap_or_else(now);
    let from = q.from.unwrap_or(to - 900);
    let res = match q.resolution.as_deref() {
        Some("raw") => 0,
        Some("1m") => 60,
        Some("15m") => 900,
        Some(other) => {
            return Ok((
                StatusCode::BAD_REQUEST,
                format!("unknown resolution `{other}`: use raw, 1m or 15m"),
            )
                .into_response());
        }
        None if to - from <= 3600 => 0,
        None if to - from <= 7 * 86400 => 60,
        None => 900,
    };
    let points = shared
        .store
        .history(&q.project, &q.service, from, to, res)?;
    Ok(Json(homebase_proto::History {
        project: q.project,
        service: q.service,
        resolution_secs: res,
        points,
    })
    .into_response())
}

#[derive(Deserialize)]
struct LoopsQuery {
    project: Option<String>,
    limit: Option<i64>,
}

async fn loops(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<LoopsQuery>,
) -> Json<Vec<homebase_proto::LoopStatus>> {
    Json(crate::loops::statuses(&shared, q.project.as_deref()).await)
}

async fn loop_history(
    State(shared): State<Arc<Shared>>,
    Path((project, name)): Path<(String, String)>,
    Query(q): Query<LoopsQuery>,
) -> Result<Response, AppError> {
    let rows = crate::loops::history(
        &shared,
        &project,
        &name,
        q.limit.unwrap_or(50).clamp(1, 10_000),
    )?;
    Ok(Json(rows).into_response())
}

/// `start`, `stop`, `pause` or `resume`; 404 for an unknown loop, 409 when the loop's state
/// does not allow it, each with a sentence that says what to do.
async fn loop_control(
    State(shared): State<Arc<Shared>>,
    Path((project, name, action)): Path<(String, String, String)>,
) -> Response {
    let Some(c) = crate::loops::Control::parse(&action) else {
        return (
            StatusCode::NOT_FOUND,
            format!("unknown action `{action}`: use start, stop, pause or resume"),
        )
            .into_response();
    };
    match crate::loops::Registry::control(&shared, &project, &name, c).await {
        Ok(status) => Json(status).into_response(),
        Err(crate::loops::ControlError::Unknown(msg)) => {
            (StatusCode::NOT_FOUND, msg).into_response()
        }
        Err(crate::loops::ControlError::Refused(msg)) => {
            (StatusCode::CONFLICT, msg).into_response()
        }
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    since: Option<i64>,
    limit: Option<i64>,
}

async fn events(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, AppError> {
    let rows = shared
        .store
        .events(q.since.unwrap_or(0), q.limit.unwrap_or(200).clamp(1, 5000))?;
    Ok(Json(rows).into_response())
}

async fn stream(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let snapshot = shared.snapshot.read().await.clone();
    let first = serde_json::to_string(&homebase_proto::StreamMessage::Snapshot { snapshot })
        .unwrap_or_default();
    // A lagging client skips what it missed instead of holding others back.
    let live = BroadcastStream::new(shared.tx.subscribe()).filter_map(|m| m.ok());
    let all = tokio_stream::once(first)
        .chain(live)
        .map(|text| Ok(Event::default().data(text)));
    Sse::new(all).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

/// A label value as the exposition format writes it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: `# HELP`, `# TYPE gauge`, then every sample of it together (what
/// `promtool check metrics` and the OpenMetrics parsers require).
fn gauge_family(out: &mut String, name: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Prometheus text exposition (0.0.4) of the latest snapshot.
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let mut s = shared.snapshot.read().await.clone();
    // the loops as they are now (the snapshot's copy is as old as the last round)
    s.loops = crate::loops::statuses(&shared, None).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        exposition(&s),
    )
        .into_response()
}

/// The snapshot as metric families: the host, each project, service and loop, the alerts.
fn exposition(s: &crate::monitor::Snapshot) -> String {
    let mut out = String::new();
    let one = |v: String| vec![(String::new(), v)];
    gauge_family(
        &mut out,
        "homebase_host_memory_total_bytes",
        "Memory of the Docker engine's host (the VM's under Colima).",
        &one(s.mem_total.to_string()),
    );
    project_families(&mut out, s);
    service_families(&mut out, s);
    loop_families(&mut out, s);
    gauge_family(
        &mut out,
        "homebase_alerts_active",
        "Alerts firing now.",
        &one(s.alerts.len().to_string()),
    );
    out
}

fn project_families(out: &mut String, s: &crate::monitor::Snapshot) {
    let per_project =
        |f: &dyn Fn(&homebase_proto::ProjectSnap) -> String| -> Vec<(String, String)> {
            s.projects
                .iter()
                .map(|p| (format!("project=\"{}\"", label(&p.name)), f(p)))
                .collect()
        };
    gauge_family(
        out,
        "homebase_stack_memory_bytes",
        "Memory the project's containers use now.",
        &per_project(&|p| p.memory_bytes.to_string()),
    );
    gauge_family(
        out,
        "homebase_stack_budget_bytes",
        "The project's memory budget: host memory times its target share.",
        &per_project(&|p| p.budget_bytes.to_string()),
    );
}

fn service_families(out: &mut String, s: &crate::monitor::Snapshot) {
    let per_service =
        |f: &dyn Fn(&homebase_proto::ServiceSnap) -> String| -> Vec<(String, String)> {
            s.projects
                .iter()
                .flat_map(|p| {
                    p.services.iter().map(move |svc| {
                        (
                            format!(
                                "project=\"{}\",service=\"{}\"",
                                label(&p.name),
                                label(&svc.name)
                            ),
                            f(svc),
                        )
                    })
                })
                .collect()
        };
    gauge_family(
        out,
        "homebase_service_memory_bytes",
        "Memory a service's containers use now.",
        &per_service(&|svc| svc.memory_bytes.to_string()),
    );
    gauge_family(
        out,
        "homebase_service_cpu_percent",
        "CPU a service's containers use now, in percent of one core.",
        &per_service(&|svc| format!("{:.2}", svc.cpu_percent)),
    );
    gauge_family(
        out,
        "homebase_service_up",
        "1 when the service's container is running.",
        &per_service(&|svc| u8::from(svc.state == "running").to_string()),
    );
    gauge_family(
        out,
        "homebase_service_healthy",
        "1 when the service is healthy (or has no healthcheck).",
        &per_service(&|svc| u8::from(svc.health == "healthy" || svc.health == "none").to_string()),
    );
}

fn loop_families(out: &mut String, s: &crate::monitor::Snapshot) {
    let per_loop = |f: &dyn Fn(&homebase_proto::LoopStatus) -> String| -> Vec<(String, String)> {
        s.loops
            .iter()
            .map(|l| {
                (
                    format!(
                        "project=\"{}\",loop=\"{}\"",
                        label(&l.project),
                        label(&l.name)
                    ),
                    f(l),
                )
            })
            .collect()
    };
    gauge_family(
        out,
        "homebase_loop_iterations",
        "Iterations of the loop's current run.",
        &per_loop(&|l| l.iterations.to_string()),
    );
    gauge_family(
        out,
        "homebase_loop_active",
        "1 when the loop is running iterations.",
        &per_loop(&|l| u8::from(l.state == "active").to_string()),
    );
    gauge_family(
        out,
        "homebase_loop_breaker_open",
        "1 when the loop's circuit breaker is not closed.",
        &per_loop(&|l| u8::from(l.breaker != "closed").to_string()),
    );
    // what each loop's agent reported it spent, by period (loops that read its result)
    let per_period = |f: &dyn Fn(&homebase_proto::LoopSpend) -> [String; 3]| {
        let mut rows = Vec::new();
        for l in &s.loops {
            let Some(spend) = &l.spend else { continue };
            for (period, v) in ["today", "month", "last_hour"].iter().zip(f(spend)) {
                rows.push((
                    format!(
                        "project=\"{}\",loop=\"{}\",period=\"{period}\"",
                        label(&l.project),
                        label(&l.name)
                    ),
                    v,
                ));
            }
        }
        rows
    };
    gauge_family(
        out,
        "homebase_loop_cost_usd",
        "What the loop's agent reported it spent: today, this month (the calendar of [spend] time_zone) and in the last hour.",
        &per_period(&|p| {
            [p.today_cost_usd, p.month_cost_usd, p.hour_cost_usd].map(|v| v.to_string())
        }),
    );
    gauge_family(
        out,
        "homebase_loop_tokens",
        "Tokens the loop's agent reported (input, output, cache writes and reads): today, this month and in the last hour.",
        &per_period(&|p| [p.today_tokens, p.month_tokens, p.hour_tokens].map(|v| v.to_string())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn shared() -> (Arc<Shared>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _) = tokio::sync::broadcast::channel(4);
        let s = Shared {
            home: dir.path().to_path_buf(),
            only: Vec::new(),
            host: "h".into(),
            store: crate::store::Store::open(&dir.path().join("h.db"), Default::default()).unwrap(),
            token: "t0k3n-t0k3n-t0k3n-t0k3n-t0k3n-t0k3n".into(),
            snapshot: Default::default(),
            alerts: Default::default(),
            sinks: Default::default(),
            tx,
            wake: Default::default(),
            loops: Default::default(),
            loop_status: Default::default(),
            sessions: Default::default(),
            watcher: Default::default(),
        };
        (Arc::new(s), dir)
    }

    /// `method path` with the given headers, through the router.
    async fn send(s: &Arc<Shared>, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut b = Request::builder().method(method).uri(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            b = b.header("Host", "127.0.0.1:7000");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        router(Arc::clone(s))
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn session_of(r: Response) -> String {
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["session"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn a_session_is_not_the_token_reads_only_and_codes_work_once() {
        let (s, _d) = shared();
        let bearer = format!("Bearer {}", s.token);
        let with_token = [("Authorization", bearer.as_str())];
        // a session from the token: an id, not the token, and no cookie
        let r = send(&s, "POST", "/api/session", &with_token).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get(header::SET_COOKIE).is_none());
        let id = session_of(r).await;
        assert!(!id.contains(&s.token), "{id}");
        let auth = format!("Session {id}");
        let with_session = [("Authorization", auth.as_str())];
        let r = send(&s, "GET", "/api/events", &with_session).await;
        assert_eq!(r.status(), StatusCode::OK);
        // a session does not authorize a POST
        let r = send(&s, "POST", "/api/loops/p/l/stop", &with_session).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // a cookie is no way in, not even the token as one
        for cookie in [
            format!("hb_session={id}"),
            format!("hb_session={}", s.token),
        ] {
            let r = send(&s, "GET", "/api/events", &[("Cookie", cookie.as_str())]).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        // a one-time code: needs the token, opens one session, once
        let r = send(&s, "POST", "/api/login-code", &[]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = send(&s, "POST", "/api/login-code", &with_token).await;
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        let code = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"]
            .as_str()
            .unwrap()
            .to_string();
        let with_code = [("X-Homebase-Login", code.as_str())];
        let r = send(&s, "POST", "/api/session", &with_code).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_ne!(session_of(r).await, id);
        let r = send(&s, "POST", "/api/session", &with_code).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a code worked twice");
        let r = send(&s, "POST", "/api/session", &[("X-Homebase-Login", "guess")]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    /// DNS rebinding: a name that resolves to 127.0.0.1 is still not a loopback `Host`; a
    /// page of another origin (another port of 127.0.0.1 among them) is refused.
    #[tokio::test]
    async fn only_loopback_hosts_and_the_same_origin_are_answered() {
        let (s, _d) = shared();
        let bearer = format!("Bearer {}", s.token);
        for (host, origin, want) in [
            ("127.0.0.1:7000", None, StatusCode::OK),
            (
                "localhost:7000",
                Some("http://localhost:7000"),
                StatusCode::OK,
            ),
            ("[::1]:7000", None, StatusCode::OK),
            ("evil.example:7000", None, StatusCode::FORBIDDEN),
            ("127.0.0.1.nip.io:7000", None, StatusCode::FORBIDDEN),
            (
                "127.0.0.1:7000",
                Some("http://127.0.0.1:8000"),
                StatusCode::FORBIDDEN,
            ),
            (
                "127.0.0.1:7000",
                Some("http://evil.example"),
                StatusCode::FORBIDDEN,
            ),
            ("127.0.0.1:7000", Some("null"), StatusCode::FORBIDDEN),
        ] {
            let mut h = vec![("Host", host), ("Authorization", bearer.as_str())];
            if let Some(o) = origin {
                h.push(("Origin", o));
            }
            let r = send(&s, "GET", "/api/status", &h).await;
            assert_eq!(r.status(), want, "{host} {origin:?}");
        }
        let r = send(&s, "GET", "/", &[("Host", "rebound.example")]).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn every_route_needs_the_token() {
        let (s, _d) = shared();
        for path in [
            "/api/status",
            "/api/events",
            "/metrics",
            "/api/history?project=p&service=s",
            "/api/stream",
        ] {
            let r = router(Arc::clone(&s))
                .oneshot(
                    Request::get(path)
                        .header("Host", "127.0.0.1")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
            let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
            assert!(body.is_empty(), "{path} leaked a body");
            let r = router(Arc::clone(&s))
                .oneshot(
                    Request::get(path)
                        .header("Host", "127.0.0.1")
                        .header("Authorization", "Bearer wrong")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        let r = router(Arc::clone(&s))
            .oneshot(
                Request::get("/api/events")
                    .header("Host", "127.0.0.1")
                    .header("Authorization", format!("Bearer {}", s.token))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}
