//! dist_counter's HTTP routes on `--http-listen`, for people coming from the Elixir demos:
//! `GET /ping`, `GET /config`, `POST /counter/{name}` (a strong add of the integer body),
//! `GET /counter/{name}/value` (EVENTUAL) and `GET /counter/{name}/consistent_value` (LINEARIZABLE),
//! plus `GET /metrics` for Prometheus.
//!
//! `/ping` and `/metrics` stay open when `--client-token` is set, as etcd's do: probes and scrapers
//! carry no secrets, and neither route reveals or changes data. Every other route needs the token.
//!
//! Errors use the same conversion as gRPC, then map the gRPC code to its HTTP status, so both ports
//! always agree on what went wrong.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::auth::require_http_token;
use super::metrics::Metrics;
use crate::domain::{Command, CounterName, DomainError, Query, QueryReply, Reply};
use crate::error::{Error, LEADER_METADATA};
use crate::node::{Consistency, Node, ReadResult};

/// An add's body is one integer; anything longer is refused before it is read.
const MAX_BODY: usize = 64;

struct HttpError(Error);

impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        HttpError(e)
    }
}

impl From<DomainError> for HttpError {
    fn from(e: DomainError) -> Self {
        HttpError(e.into())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = tonic::Status::from(self.0);
        let http = match status.code() {
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
            tonic::Code::OutOfRange => StatusCode::UNPROCESSABLE_ENTITY,
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = json!({ "error": status.message(), "code": format!("{:?}", status.code()) });
        let mut response = (http, Json(body)).into_response();
        if let Some(leader) = status.metadata().get(LEADER_METADATA).and_then(|v| v.to_str().ok()) {
            if let Ok(v) = HeaderValue::from_str(leader) {
                response.headers_mut().insert(LEADER_METADATA, v);
            }
        }
        response
    }
}

type JsonReply = Result<Json<Value>, HttpError>;

pub fn router(node: Arc<Node>, metrics: Arc<Metrics>, token: Option<Arc<str>>) -> Router {
    let guarded = Router::new()
        .route("/config", get(config))
        .route("/counter/{name}", post(add))
        .route("/counter/{name}/value", get(|s, p| read(s, p, Consistency::Eventual)))
        .route("/counter/{name}/consistent_value", get(|s, p| read(s, p, Consistency::Linearizable)))
        .route_layer(middleware::from_fn_with_state(token, require_http_token))
        .with_state(node.clone());
    Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route("/metrics", get(move || scrape(node.clone(), metrics.clone())))
        .merge(guarded)
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

pub async fn serve(
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    token: Option<String>,
    listener: TcpListener,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let app = router(node, metrics, token.map(Arc::from));
    axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await?;
    Ok(())
}

/// The OpenMetrics text that prometheus-client writes; Prometheus reads it natively.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn scrape(node: Arc<Node>, metrics: Arc<Metrics>) -> Response {
    match metrics.render(&node) {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => HttpError(Error::internal(format!("cannot encode metrics: {e}"))).into_response(),
    }
}

async fn config(State(node): State<Arc<Node>>) -> Json<Value> {
    let (leader, term, members) = node.membership();
    let members: Vec<Value> = members
        .into_iter()
        .map(|(id, m)| json!({ "id": id, "client_addr": m.client_addr, "peer_addr": m.peer_addr }))
        .collect();
    Json(json!({ "node_id": node.id, "leader_id": leader, "term": term, "members": members }))
}

async fn add(State(node): State<Arc<Node>>, Path(name): Path<String>, body: Bytes) -> JsonReply {
    let name = CounterName::parse(name)?;
    let text = std::str::from_utf8(&body).map_err(|_| DomainError::invalid("body", "is not UTF-8 text"))?;
    let delta: i64 = text
        .trim()
        .parse()
        .map_err(|_| DomainError::invalid("body", format!("{:?} is not an integer in the i64 range", text.trim())))?;
    let applied = node.write(Command::Add { name, delta }, None).await?;
    match applied.outcome.map_err(Error::from)? {
        Reply::Added { name, value } => Ok(Json(json!({ "name": name, "value": value, "log_index": applied.index }))),
        other => Err(Error::internal(format!("an add was answered with {other:?}")).into()),
    }
}

async fn read(State(node): State<Arc<Node>>, Path(name): Path<String>, consistency: Consistency) -> JsonReply {
    let name = CounterName::parse(name)?;
    let ReadResult { reply, meta } = node.read(Query::Counter(name.clone()), consistency).await?;
    match reply {
        QueryReply::Counter { value, exists } => Ok(Json(json!({
            "name": name.as_str(),
            "value": value,
            "exists": exists,
            "meta": meta,
        }))),
        other => Err(Error::internal(format!("a counter read was answered with {other:?}")).into()),
    }
}
