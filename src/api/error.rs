//! The one error type of the HTTP API, rendered as
//! `{"error": {"status": 404, "reason": "CALL_NOT_FOUND", "message": "..."}}`.
//!
//! Every reason the service can answer is a [`Reason`], and each has its one status: the
//! OpenAPI document lists them from the same table.
//!
//! Messages say what the client can act on; Asterisk's and other internal causes are logged
//! here and never sent.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::InvalidId;
use crate::session::SessionError;

macro_rules! reasons {
    ($($(#[doc = $doc:literal])+ $variant:ident = $name:literal, $status:ident;)*) => {
        /// Why a request was refused: the `reason` of an error body.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])+ $variant,)*
        }

        impl Reason {
            /// Every reason, in the order of their statuses.
            pub const ALL: &[Reason] = &[$(Reason::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $name,)* }
            }

            /// The one status this reason is answered with.
            pub fn status(self) -> StatusCode {
                match self { $(Reason::$variant => StatusCode::$status,)* }
            }

            /// When the service gives it, in a sentence.
            pub fn meaning(self) -> &'static str {
                match self { $(Reason::$variant => concat!($($doc),+).trim_ascii(),)* }
            }
        }
    };
}

reasons! {
    /// A path id, query parameter or body is not valid; the message names it.
    InvalidArgument = "INVALID_ARGUMENT", BAD_REQUEST;
    /// No token: `?token=` or `Authorization: Bearer`.
    AuthenticationRequired = "AUTHENTICATION_REQUIRED", UNAUTHORIZED;
    /// The token is not an API key or a valid, unexpired JWT; the message says why.
    InvalidCredentials = "INVALID_CREDENTIALS", UNAUTHORIZED;
    /// The token is bound to another call or conference, or the configuration forbids it (a
    /// host outside `external_media.allowed_hosts`).
    PermissionDenied = "PERMISSION_DENIED", FORBIDDEN;
    /// No route has this path.
    NotFound = "NOT_FOUND", NOT_FOUND;
    /// No such call, in the application or in Asterisk.
    CallNotFound = "CALL_NOT_FOUND", NOT_FOUND;
    /// No such mixing bridge.
    ConferenceNotFound = "CONFERENCE_NOT_FOUND", NOT_FOUND;
    /// No such external media (or one this token may not see).
    ExternalMediaNotFound = "EXTERNAL_MEDIA_NOT_FOUND", NOT_FOUND;
    /// No such media stream (or one this token may not see).
    MediaStreamNotFound = "MEDIA_STREAM_NOT_FOUND", NOT_FOUND;
    /// The route does not take this method.
    MethodNotAllowed = "METHOD_NOT_ALLOWED", METHOD_NOT_ALLOWED;
    /// The request head was not sent within `http.request_timeout_ms`.
    RequestTimeout = "REQUEST_TIMEOUT", REQUEST_TIMEOUT;
    /// Asterisk refused because of the object's state (a call not in Stasis, not in the
    /// conference).
    StateInvalid = "STATE_INVALID", CONFLICT;
    /// The body is over `http.max_body_bytes`.
    BodyTooLarge = "BODY_TOO_LARGE", PAYLOAD_TOO_LARGE;
    /// The query string is over `http.max_query_bytes`.
    QueryTooLong = "QUERY_TOO_LONG", URI_TOO_LONG;
    /// `limits.max_streams` or `limits.max_streams_per_resource` is reached, or
    /// `http.max_pending_upgrades` connections are still sending their request.
    LimitExceeded = "LIMIT_EXCEEDED", TOO_MANY_REQUESTS;
    /// The request line and headers are over `http.max_header_bytes`.
    HeadersTooLarge = "HEADERS_TOO_LARGE", REQUEST_HEADER_FIELDS_TOO_LARGE;
    /// Asterisk did not answer or did not complete a step, or the service is not ready
    /// (cleaning up after a previous run, or shutting down).
    AsteriskUnavailable = "ASTERISK_UNAVAILABLE", SERVICE_UNAVAILABLE;
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl utoipa::PartialSchema for Reason {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let described = Reason::ALL
            .iter()
            .map(|r| {
                format!(
                    "- `{}` ({}): {}",
                    r.as_str(),
                    r.status().as_u16(),
                    r.meaning()
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .enum_values(Some(Reason::ALL.iter().map(|r| r.as_str())))
            .description(Some(format!(
                "Why the request was refused; each reason has one status.\n\n{described}"
            )))
            .into()
    }
}

impl utoipa::ToSchema for Reason {}

/// The body of every error answer of the service's own routes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    pub reason: Reason,
    /// What the client can act on, in words.
    pub message: String,
}

impl ErrorBody {
    pub fn new(reason: Reason, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                status: reason.status().as_u16(),
                reason,
                message: message.into(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub reason: Reason,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> ApiError {
        ApiError {
            reason,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.reason.status()
    }

    pub fn invalid_argument(message: impl Into<String>) -> ApiError {
        Self::new(Reason::InvalidArgument, message)
    }

    pub fn authentication_required() -> ApiError {
        Self::new(
            Reason::AuthenticationRequired,
            "a token is required: ?token= or Authorization: Bearer",
        )
    }

    pub fn invalid_credentials(message: impl Into<String>) -> ApiError {
        Self::new(Reason::InvalidCredentials, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> ApiError {
        Self::new(Reason::PermissionDenied, message)
    }

    pub fn state_invalid(message: impl Into<String>) -> ApiError {
        Self::new(Reason::StateInvalid, message)
    }

    pub fn asterisk_unavailable() -> ApiError {
        Self::new(
            Reason::AsteriskUnavailable,
            "Asterisk did not complete the request; try again later",
        )
    }

    pub fn route_not_found() -> ApiError {
        Self::new(Reason::NotFound, "no such route")
    }

    pub fn method_not_allowed() -> ApiError {
        Self::new(
            Reason::MethodNotAllowed,
            "this route does not take that method",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        (status, Json(ErrorBody::new(self.reason, self.message))).into_response()
    }
}

impl From<InvalidId> for ApiError {
    fn from(e: InvalidId) -> ApiError {
        ApiError::invalid_argument(e.to_string())
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> ApiError {
        match e {
            SessionError::CallNotFound(id) => {
                ApiError::new(Reason::CallNotFound, format!("call {id} not found"))
            }
            SessionError::ConferenceNotFound(id) => ApiError::new(
                Reason::ConferenceNotFound,
                format!("conference {id} not found"),
            ),
            SessionError::StateInvalid(message) => ApiError::state_invalid(message),
            SessionError::InvalidArgument(message) => ApiError::invalid_argument(message),
            SessionError::PermissionDenied(message) => ApiError::permission_denied(message),
            SessionError::ExternalMediaNotFound(id) => ApiError::new(
                Reason::ExternalMediaNotFound,
                format!("external media {id} not found"),
            ),
            SessionError::MediaStreamNotFound(id) => ApiError::new(
                Reason::MediaStreamNotFound,
                format!("media stream {id} not found"),
            ),
            SessionError::NotReady(message) => ApiError::new(Reason::AsteriskUnavailable, message),
            SessionError::LimitExceeded(message) => ApiError::new(Reason::LimitExceeded, message),
            SessionError::Asterisk(e) => {
                tracing::warn!(error = %e, "Asterisk request failed");
                ApiError::asterisk_unavailable()
            }
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
    fn every_reason_has_its_own_name_and_an_error_status() {
        let mut names = std::collections::HashSet::new();
        for reason in Reason::ALL {
            assert!(names.insert(reason.as_str()), "{reason:?} twice");
            let status = reason.status();
            assert!(status.is_client_error() || status.is_server_error());
            assert_eq!(serde_json::to_value(reason).expect("json"), reason.as_str());
            assert!(!reason.meaning().is_empty());
        }
    }

    #[test]
    fn asterisk_failures_do_not_leak_their_cause() {
        let e = ApiError::from(SessionError::from(crate::ari::AriError::Status {
            status: reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            message: "secret internal detail".into(),
        }));
        assert_eq!(e.reason, Reason::AsteriskUnavailable);
        assert!(!e.message.contains("secret"));
    }
}
