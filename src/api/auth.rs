//! Who may call what: the cluster secret on the peer port and the optional client bearer token on
//! the client port and the HTTP routes.
//!
//! Both are shared secrets compared in constant time, so a caller cannot learn one byte by byte from
//! reply timings. A refusal is always `UNAUTHENTICATED` (HTTP 401) with a message naming what was
//! missing or wrong, and it happens before the request is decoded, so a refused call changes nothing.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tonic::Status;

use crate::raft::network::SECRET_METADATA;

/// Compares a presented secret with the expected one without an early exit on the first difference.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Checks a peer call's cluster secret; `None` means the cluster runs without one.
pub fn check_secret(expected: Option<&str>, given: Option<&[u8]>) -> Result<(), Status> {
    let Some(expected) = expected else { return Ok(()) };
    match given {
        None => Err(Status::unauthenticated(format!("peer RPCs need the cluster secret in {SECRET_METADATA}"))),
        Some(g) if same_secret(g, expected.as_bytes()) => Ok(()),
        Some(_) => Err(Status::unauthenticated("peer RPCs need the cluster secret; the one given is wrong")),
    }
}

/// Checks an `authorization: Bearer <token>` value against the client token; `None` means clients
/// need no token. The message is what the caller reads, so it says how to fix the call.
fn check_bearer(expected: Option<&str>, given: Option<&[u8]>) -> Result<(), String> {
    let Some(expected) = expected else { return Ok(()) };
    let Some(given) = given else {
        return Err("missing authorization: this node requires `authorization: Bearer <client token>`".into());
    };
    let Some(token) = given.strip_prefix(b"Bearer ") else {
        return Err("authorization is not `Bearer <client token>`".into());
    };
    if same_secret(token, expected.as_bytes()) {
        Ok(())
    } else {
        Err("the bearer token in authorization is not this node's client token".into())
    }
}

/// The interceptor on every client-port service except health.
pub fn require_token(
    token: Option<Arc<str>>,
) -> impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, Status> + Clone {
    move |request: tonic::Request<()>| {
        let given = request.metadata().get("authorization").map(|v| v.as_bytes());
        check_bearer(token.as_deref(), given).map_err(Status::unauthenticated)?;
        Ok(request)
    }
}

/// The HTTP counterpart of [`require_token`], for every route but `/ping` and `/metrics`.
pub async fn require_http_token(State(token): State<Option<Arc<str>>>, request: Request, next: Next) -> Response {
    let given = request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match check_bearer(token.as_deref(), given) {
        Ok(()) => next.run(request).await,
        Err(reason) => {
            (StatusCode::UNAUTHORIZED, Json(json!({ "error": reason, "code": "Unauthenticated" }))).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked_and_explained() {
        assert!(check_bearer(None, None).is_ok());
        assert!(check_bearer(Some("t0k"), Some(b"Bearer t0k")).is_ok());
        assert!(check_bearer(Some("t0k"), None).unwrap_err().contains("missing authorization"));
        assert!(check_bearer(Some("t0k"), Some(b"t0k")).unwrap_err().contains("not `Bearer"));
        assert!(check_bearer(Some("t0k"), Some(b"Bearer t0K")).unwrap_err().contains("not this node's"));
        assert!(check_bearer(Some("t0k"), Some(b"Bearer t0k2")).is_err());
    }

    #[test]
    fn secrets_are_checked() {
        assert!(check_secret(None, None).is_ok());
        assert!(check_secret(Some("s"), Some(b"s")).is_ok());
        assert_eq!(check_secret(Some("s"), None).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(check_secret(Some("s"), Some(b"t")).unwrap_err().code(), tonic::Code::Unauthenticated);
    }
}
