//! Twilio's call-update endpoint, as voice-bot frameworks written for Twilio call it to hang a
//! call up (SPEC §9.2): `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with the
//! form `Status=completed` (or `canceled`), HTTP Basic auth with the account SID as user and a
//! token of the service (§3) as password. Answers and errors in Twilio's shapes, not ours.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;

use super::{ApiPath, AppState};
use crate::domain::{CallId, Resource};
use crate::secret::Secret;
use crate::session::SessionError;

/// A Twilio-shaped error: `code` is Twilio's error number.
fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({"code": code, "message": message, "status": status.as_u16()});
    (status, Json(body)).into_response()
}

fn call_not_found(id: &CallId) -> Response {
    error(
        StatusCode::NOT_FOUND,
        20404,
        &format!("Call {id} not found"),
    )
}

fn unauthorized() -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        20003,
        "Authenticate: the account SID and a token of the service, as HTTP Basic auth",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"ari-mediastream\""),
    );
    response
}

/// The user and password (a token of the service) of an HTTP Basic `Authorization` header.
fn basic_auth(headers: &HeaderMap) -> Option<(String, Secret)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), Secret::new(password)))
}

pub async fn update_call(
    State(state): State<AppState>,
    ApiPath((account, call)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((user, token)) = basic_auth(&headers) else {
        return unauthorized();
    };
    let principal = match state.auth.authenticate(Some(token.expose())) {
        Ok(principal) if user == state.twilio.account_sid && account == user => principal,
        _ => return unauthorized(),
    };
    let Some(id) = call
        .strip_suffix(".json")
        .and_then(|id| CallId::parse(id).ok())
    else {
        return error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        );
    };
    if principal.authorize(&Resource::Call(id.clone())).is_err() {
        return error(
            StatusCode::FORBIDDEN,
            20403,
            "This token does not open this call",
        );
    }
    let status = form_urlencoded::parse(&body)
        .find(|(key, _)| key == "Status")
        .map(|(_, value)| value.into_owned());
    let status = match status.as_deref() {
        Some(status @ ("completed" | "canceled")) => status.to_owned(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                21218,
                "Only Status=completed or Status=canceled is supported",
            );
        }
    };
    let hung_up = async {
        state.registry.find_call(&id).await?;
        state.registry.ari().hangup(id.as_str()).await?;
        Ok::<(), SessionError>(())
    };
    match hung_up.await {
        Ok(()) => {}
        Err(SessionError::CallNotFound(_)) => return call_not_found(&id),
        Err(SessionError::Asterisk(e)) if e.is_not_found() => return call_not_found(&id),
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                20500,
                "Asterisk is unavailable",
            );
        }
    }
    tracing::info!(call_id = %id, %status, "call hung up through the call-update endpoint");
    let body = json!({"sid": id.as_str(), "account_sid": account, "status": status});
    (StatusCode::OK, Json(body)).into_response()
}
