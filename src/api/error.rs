//! The one error type of the HTTP API, rendered as
//! `{"error": {"status": 404, "reason": "CALL_NOT_FOUND", "message": "..."}}`.
//!
//! Messages say what the client can act on; Asterisk's and other internal causes are logged
//! here and never sent.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::ari::AriError;
use crate::domain::InvalidId;
use crate::session::SessionError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            reason,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }

    pub fn authentication_required() -> ApiError {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "AUTHENTICATION_REQUIRED",
            "a token is required: ?token= or Authorization: Bearer",
        )
    }

    pub fn invalid_credentials(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", message)
    }

    pub fn permission_denied(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message)
    }

    pub fn state_invalid(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, "STATE_INVALID", message)
    }

    pub fn asterisk_unavailable() -> ApiError {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ASTERISK_UNAVAILABLE",
            "Asterisk did not complete the request; try again later",
        )
    }

    pub fn route_not_found() -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
    }

    pub fn method_not_allowed() -> ApiError {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "this route does not take that method",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {
                "status": self.status.as_u16(),
                "reason": self.reason,
                "message": self.message,
            }
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<InvalidId> for ApiError {
    fn from(e: InvalidId) -> ApiError {
        ApiError::invalid_argument(e.to_string())
    }
}

impl From<AriError> for ApiError {
    fn from(e: AriError) -> ApiError {
        if let AriError::InvalidId(id) = e {
            // Never sent to Asterisk: the id, not Asterisk, is at fault.
            return ApiError::invalid_argument(format!("`{id}` is not a valid id"));
        }
        tracing::warn!(error = %e, "Asterisk request failed");
        ApiError::asterisk_unavailable()
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> ApiError {
        match e {
            SessionError::CallNotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "CALL_NOT_FOUND",
                format!("call {id} not found"),
            ),
            SessionError::ConferenceNotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "CONFERENCE_NOT_FOUND",
                format!("conference {id} not found"),
            ),
            SessionError::StateInvalid(message) => ApiError::state_invalid(message),
            SessionError::InvalidArgument(message) => ApiError::invalid_argument(message),
            SessionError::PermissionDenied(message) => ApiError::permission_denied(message),
            SessionError::ExternalMediaNotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "EXTERNAL_MEDIA_NOT_FOUND",
                format!("external media {id} not found"),
            ),
            SessionError::MediaStreamNotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "MEDIA_STREAM_NOT_FOUND",
                format!("media stream {id} not found"),
            ),
            SessionError::NotReady(message) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ASTERISK_UNAVAILABLE",
                message,
            ),
            SessionError::LimitExceeded(message) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "LIMIT_EXCEEDED", message)
            }
            SessionError::Asterisk(e) => e.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        ApiError::invalid_argument(format!("body: {}", e.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> ApiError {
        ApiError::invalid_argument(format!("path: {}", e.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::invalid_argument(format!("query: {}", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_the_contract_shape() {
        let resp = ApiError::from(SessionError::CallNotFound(
            crate::domain::CallId::parse("c1").expect("id"),
        ))
        .into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(resp.into_body(), 4096)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["status"], 404);
        assert_eq!(v["error"]["reason"], "CALL_NOT_FOUND");
        assert_eq!(v["error"]["message"], "call c1 not found");
    }

    #[test]
    fn asterisk_failures_do_not_leak_their_cause() {
        let e = ApiError::from(AriError::Status {
            status: reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            message: "secret internal detail".into(),
        });
        assert_eq!(e.reason, "ASTERISK_UNAVAILABLE");
        assert!(!e.message.contains("secret"));
    }
}
