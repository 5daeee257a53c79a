//! Twilio's call-update endpoint, as voice-bot frameworks written for Twilio call it to hang a
//! call up (SPEC §9.2): `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with the
//! form `Status=completed` (or `canceled`), HTTP Basic auth with the account SID as user and a
//! token of the service (§3) as password. Answers and errors in Twilio's shapes, not ours.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::AppState;
use crate::domain::{CallId, Resource};
use crate::secret::Secret;
use crate::session::SessionError;

/// The path as Twilio's clients write it; `call` is the call SID followed by `.json`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CallPath {
    /// The account SID: `twilio.account_sid`, the same as the Basic auth user.
    #[param(example = "AC00000000000000000000000000000000")]
    account: String,
    /// `<CallSid>.json`, the call SID being the call's id.
    #[param(
        pattern = r"^[A-Za-z0-9._;-]{1,128}\.json$",
        example = "1732590000.42.json"
    )]
    call: String,
}

/// The form body.
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = TwilioCallUpdate)]
#[allow(dead_code)]
struct UpdateForm {
    /// `completed` or `canceled`: both hang the call up.
    #[schema(rename = "Status", pattern = "^(completed|canceled)$")]
    status: String,
}

/// The answer to a call update.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = TwilioCall)]
struct Updated {
    /// The call SID.
    sid: String,
    account_sid: String,
    /// `completed` or `canceled`, as asked.
    status: String,
}

/// A Twilio-shaped error.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = TwilioError)]
struct TwilioError {
    /// Twilio's error number: 20003 (authenticate), 20403 (forbidden), 20404 (not found),
    /// 21218 (bad status), 20500 (Asterisk unavailable).
    code: u32,
    message: String,
    status: u16,
}

/// A Twilio-shaped error: `code` is Twilio's error number.
fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = TwilioError {
        code,
        message: message.to_owned(),
        status: status.as_u16(),
    };
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

/// Hangs a call up, as Twilio's call update
///
/// As voice-bot frameworks written for Twilio call it: the form `Status=completed` (or
/// `canceled`) hangs the call up. HTTP Basic auth: the account SID as user and a token of the
/// service as password. Answers and errors are Twilio's shapes.
#[utoipa::path(
    post,
    path = "/2010-04-01/Accounts/{account}/Calls/{call}",
    tag = "twilio",
    params(CallPath),
    request_body(content = UpdateForm, content_type = "application/x-www-form-urlencoded"),
    security(("twilio_basic" = [])),
    responses(
        (status = 200, description = "The call is hung up", body = Updated),
        (status = 400, description = "21218: `Status` is not `completed` or `canceled`", body = TwilioError),
        (status = 401, description = "20003: no Basic auth, a wrong account SID or token", body = TwilioError,
            headers(("WWW-Authenticate" = String, description = "`Basic realm=\"ari-mediastream\"`"))),
        (status = 403, description = "20403: the token is bound to another call", body = TwilioError),
        (status = 404, description = "20404: no such call, or a path that does not end in `.json` or does not decode", body = TwilioError),
        (status = 503, description = "20500: Asterisk is unavailable", body = TwilioError),
    )
)]
pub async fn update_call(
    State(state): State<AppState>,
    path: Result<Path<CallPath>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((user, token)) = basic_auth(&headers) else {
        return unauthorized();
    };
    // A path that does not decode names no call Twilio's way either.
    let Ok(Path(CallPath { account, call })) = path else {
        return error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        );
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
        state.registry.hangup(&id).await
    };
    match hung_up.await {
        Ok(()) => {}
        Err(SessionError::CallNotFound(_)) => return call_not_found(&id),
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                20500,
                "Asterisk is unavailable",
            );
        }
    }
    tracing::info!(call_id = %id, %status, "call hung up through the call-update endpoint");
    let body = Updated {
        sid: id.as_str().to_owned(),
        account_sid: account,
        status,
    };
    (StatusCode::OK, Json(body)).into_response()
}
