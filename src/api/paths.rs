//! The path parameters of the API's routes, as the handlers extract them (by name, so a route's
//! `{id}` and the field agree) and as the OpenAPI document describes them.
//!
//! The pattern of an id is the shape [`crate::domain::CallId::parse`] accepts; `.` and `..`
//! match it but are refused (400): they are path steps, not ids.

use serde::Deserialize;
use utoipa::IntoParams;

/// `/v1.0/calls/{id}...`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CallPath {
    /// The call: its ARI channel id (1 to 128 letters, digits, `.`, `_`, `-`, `;`).
    #[param(pattern = r"^[A-Za-z0-9._;-]{1,128}$", example = "1732590000.42")]
    pub id: String,
}

/// `/v1.0/conferences/{id}...`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ConferencePath {
    /// The conference: its ARI mixing bridge id (1 to 128 letters, digits, `.`, `_`, `-`, `;`).
    #[param(pattern = r"^[A-Za-z0-9._;-]{1,128}$")]
    pub id: String,
}

/// `/v1.0/conferences/{id}/calls/{call_id}`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ConferenceCallPath {
    /// The conference: its ARI mixing bridge id.
    #[param(pattern = r"^[A-Za-z0-9._;-]{1,128}$")]
    pub id: String,
    /// The call: its ARI channel id.
    #[param(pattern = r"^[A-Za-z0-9._;-]{1,128}$")]
    pub call_id: String,
}

/// `/v1.0/external_medias/{id}`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ExternalMediaPath {
    /// The external media's id.
    #[param(value_type = uuid::Uuid)]
    pub id: String,
}

/// `/v1.0/media_streams/{id}`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MediaStreamPath {
    /// The media stream's id.
    #[param(value_type = uuid::Uuid)]
    pub id: String,
}
