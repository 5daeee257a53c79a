//! The OpenAPI 3.1 document of the API (SPEC §11) and the routes that serve it: `GET
//! /openapi.json`, and `GET /docs`, a page that renders it with Swagger UI, whose assets are
//! the `swagger-ui-dist` crate's, served from the binary (nothing is fetched from elsewhere).
//!
//! The document is not written beside the code: every route is registered through
//! `utoipa_axum::routes!` from its handler's `#[utoipa::path]` (the router takes the path and
//! the method from there), and what layers add to every route is added to the document where
//! the layer is applied: [`authenticated`] beside the token check, [`refusals`] beside the
//! input bounds. A test compares the router's routes with the document's.

use std::sync::{Arc, LazyLock};

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use utoipa::ToSchema;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};
use utoipa_axum::router::OpenApiRouter;

use super::rules::{self, constrained};
use super::{ApiError, ErrorBody, Reason};
use crate::domain::connect::ConnectBody;
use crate::domain::external_media::ExternalMediaBody;
use crate::domain::flow::{ActionBody, ExternalMediaStopOption};
use crate::domain::{Encapsulation, Format};

/// What the document says before the routes add themselves.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "ari-mediastream",
        description = "A service beside Asterisk 22 that lets API clients stream call and \
conference audio over WebSocket, both ways, without SIP, and send a call's audio to a host \
of their choosing (external media).\n\n\
Every `/v1.0` route needs a token: an API key or an HS256 JWT (with `exp`, and an optional \
`resource` claim `call:<id>`, `conference:<id>` or `*` that binds it to one resource), as \
`Authorization: Bearer` or `?token=`. Errors are `{\"error\": {\"status\", \"reason\", \
\"message\"}}` (the `Error` schema lists every reason). A path no route has answers 404 \
`NOT_FOUND`, a method a route does not take 405 `METHOD_NOT_ALLOWED`.\n\n\
The media stream routes are WebSockets: the document gives their query, the 101 and every \
refusal; the messages on the socket are described in the project's README."
    ),
    tags(
        (name = "calls", description = "Asterisk channels in the service's Stasis application"),
        (name = "conferences", description = "Asterisk mixing bridges"),
        (name = "media streams", description = "Call and conference audio over WebSocket, opened by a client or by the service"),
        (name = "external media", description = "A call's or conference's audio sent by Asterisk to a host"),
        (name = "flow actions", description = "One action on a call, as the configured flows run them"),
        (name = "twilio", description = "Twilio's call-update endpoint, for frameworks written for Twilio"),
        (name = "operations", description = "Liveness, readiness, metrics"),
        (name = "documentation", description = "This document and the page that renders it"),
    ),
    // Schemas only parameters or hand-written schemas name (the routes add the others).
    components(schemas(ErrorBody, Reason, ExternalMediaStopOption, DocsAsset, Encapsulation, Format)),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

/// Security scheme names, as operations name them.
const BEARER: &str = "bearer";
const QUERY_TOKEN: &str = "token";
pub const TWILIO_BASIC: &str = "twilio_basic";

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key, or an HS256 JWT"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            QUERY_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                QUERY_TOKEN,
                "The same token as a query parameter (WebSocket clients in browsers cannot set \
                 headers)",
            ))),
        );
        components.add_security_scheme(
            TWILIO_BASIC,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The account SID (`twilio.account_sid`) as user, a token of the service \
                         as password",
                    ))
                    .build(),
            ),
        );
    }
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

fn every_operation(openapi: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    openapi.paths.paths.values_mut().flat_map(operations_mut)
}

/// Adds an error answer to `operation`; one it has already gets `description` appended.
fn add_error(operation: &mut Operation, status: StatusCode, description: &str) {
    let responses = &mut operation.responses.responses;
    match responses.get_mut(status.as_str()) {
        Some(RefOr::T(response)) => {
            response.description = format!("{}; or {description}", response.description);
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Error")))
                        .build(),
                )
                .build();
            responses.insert(status.as_str().to_owned(), RefOr::T(response));
        }
    }
}

/// Marks every operation of `router` as needing a token (header or query), with the 401 its
/// absence or refusal gets. Applied where the token check is layered on the same routes.
pub fn authenticated<S: Send + Sync + Clone + 'static>(
    mut router: OpenApiRouter<S>,
) -> OpenApiRouter<S> {
    let openapi = router.get_openapi_mut();
    for operation in every_operation(openapi) {
        operation.security = Some(vec![
            SecurityRequirement::new(BEARER, Vec::<String>::new()),
            SecurityRequirement::new(QUERY_TOKEN, Vec::<String>::new()),
        ]);
        add_error(
            operation,
            StatusCode::UNAUTHORIZED,
            "`AUTHENTICATION_REQUIRED`: no token; `INVALID_CREDENTIALS`: not an API key nor a \
             valid, unexpired JWT (the message says why)",
        );
    }
    router
}

/// Adds to every operation the answers any request may get before a handler sees it: the
/// server's bounds on a connection's first request (408, 429, 431) and the input bounds
/// (413, 414). Operations without a security requirement of their own are public.
pub fn refusals(openapi: &mut OpenApi) {
    for operation in every_operation(openapi) {
        add_error(
            operation,
            StatusCode::REQUEST_TIMEOUT,
            "`REQUEST_TIMEOUT`: the request head was not sent within `http.request_timeout_ms`",
        );
        add_error(
            operation,
            StatusCode::PAYLOAD_TOO_LARGE,
            "`BODY_TOO_LARGE`: the body is over `http.max_body_bytes`",
        );
        add_error(
            operation,
            StatusCode::URI_TOO_LONG,
            "`QUERY_TOO_LONG`: the query string is over `http.max_query_bytes`",
        );
        add_error(
            operation,
            StatusCode::TOO_MANY_REQUESTS,
            "`LIMIT_EXCEEDED`: `http.max_pending_upgrades` connections are still sending their \
             first request",
        );
        add_error(
            operation,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "`HEADERS_TOO_LARGE`: the request line and headers are over `http.max_header_bytes`",
        );
        if operation.security.is_none() {
            operation.security = Some(vec![SecurityRequirement::default()]);
        }
    }
}

/// Adds to the request schemas what validation checks across their fields (which transport
/// and formats go with an encapsulation, which option with a flow action's type), from the
/// tables validation reads.
pub fn cross_field_rules(openapi: &mut OpenApi) {
    let schemas = &mut openapi
        .components
        .get_or_insert_with(Default::default)
        .schemas;
    for (name, rules) in [
        (ExternalMediaBody::name(), rules::external_media()),
        (ConnectBody::name(), rules::connect()),
        (ActionBody::name(), rules::flow_action()),
    ] {
        let name = name.into_owned();
        let fields = schemas
            .remove(&name)
            .unwrap_or_else(|| panic!("the routes name the schema {name}"));
        schemas.insert(name, RefOr::T(constrained(fields, rules)));
    }
}

/// The document as served, made once when the router is.
#[derive(Debug, Clone)]
pub struct Document(pub Arc<str>);

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "documentation",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object, content_type = "application/json"))
)]
pub async fn document(Extension(Document(json)): Extension<Document>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        json.to_string(),
    )
        .into_response()
}

/// The page: Swagger UI, every asset served from here. Relative URLs, so that the page works
/// behind a proxy that moves the service under a prefix.
const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ari-mediastream API</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/init.js"></script>
</body>
</html>
"#;

const INIT: &str = r##"window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
  });
});
"##;

/// Only this origin's scripts and styles (Swagger UI sets inline styles), images from here or
/// inline: the page cannot load anything from elsewhere.
const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' \
                           'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
                           frame-ancestors 'none'";

/// The page that renders this document (Swagger UI).
#[utoipa::path(
    get,
    path = "/docs",
    tag = "documentation",
    responses((status = 200, description = "The page", body = String, content_type = "text/html"))
)]
pub async fn docs_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
        ],
        PAGE,
    )
        .into_response()
}

/// The page's assets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
pub enum DocsAsset {
    #[serde(rename = "swagger-ui.css")]
    Css,
    #[serde(rename = "swagger-ui-bundle.js")]
    Bundle,
    #[serde(rename = "init.js")]
    Init,
    #[serde(rename = "swagger-ui.css.map")]
    CssMap,
    #[serde(rename = "swagger-ui-bundle.js.map")]
    BundleMap,
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DocsAssetPath {
    /// One of the page's assets.
    file: DocsAsset,
}

/// Swagger UI's own routes, from the crate that bundles it: the assets are answered from there.
static SWAGGER_UI: LazyLock<axum::Router> = LazyLock::new(|| {
    swagger_ui_dist::generate_routes(swagger_ui_dist::ApiDefinition {
        uri_prefix: "/docs",
        api_definition: swagger_ui_dist::OpenApiSource::Uri("/openapi.json"),
        title: None,
    })
});

/// An asset of the page (Swagger UI's script and style sheet, their source maps, and the
/// script that starts it).
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "documentation",
    params(DocsAssetPath),
    responses(
        (status = 200, description = "The asset", content(
            (String = "text/css"),
            (String = "text/javascript"),
            (Object = "application/json"),
        )),
        (status = 404, description = "`NOT_FOUND`: not an asset of the page", body = ErrorBody),
    )
)]
pub async fn docs_asset(path: Result<Path<DocsAssetPath>, PathRejection>) -> Response {
    let Ok(Path(DocsAssetPath { file })) = path else {
        return ApiError::route_not_found().into_response();
    };
    let name = match file {
        DocsAsset::Init => {
            return ([(header::CONTENT_TYPE, "text/javascript")], INIT).into_response();
        }
        DocsAsset::Css => "swagger-ui.css",
        DocsAsset::Bundle => "swagger-ui-bundle.js",
        DocsAsset::CssMap => "swagger-ui.css.map",
        DocsAsset::BundleMap => "swagger-ui-bundle.js.map",
    };
    let request = Request::get(format!("/docs/{name}"))
        .body(Body::empty())
        .expect("a static request");
    match SWAGGER_UI.clone().oneshot(request).await {
        Ok(response) if response.status() == StatusCode::OK => response,
        _ => ApiError::new(Reason::NotFound, "the page's asset is missing").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;
    use tower::ServiceExt;

    use crate::api::{AppState, Authenticator, InputLimits};
    use crate::config::Settings;
    use crate::session::{Flows, Registry, Streams};
    use crate::telemetry::Metrics;

    /// A state whose Asterisk is nowhere: the routes answer without one (401 before any
    /// handler, or the handler's own answer).
    async fn state(cancel: &CancellationToken) -> AppState {
        let mut settings = Settings::defaults_without_auth("unused");
        settings.ari.url = "http://127.0.0.1:9".parse().expect("url");
        settings.auth.disabled = false;
        settings.auth.api_keys = vec!["openapi-test-key-0123456789".into()];
        let metrics = Arc::new(Metrics::new());
        let ari = crate::ari::AriClient::new(&settings.ari);
        let registry = Arc::new(Registry::new(
            settings.ari.app.clone(),
            ari,
            metrics.clone(),
        ));
        let hub = crate::relay::audiosocket_leg::AudioSocketHub::bind(
            "127.0.0.1:0".parse().expect("addr"),
            &TaskTracker::new(),
            cancel.clone(),
        )
        .await
        .expect("a loopback port");
        let workers = crate::relay::worker::Workers::start(
            1,
            "127.0.0.1".parse().expect("ip"),
            settings.media.rtp_ports.clone(),
            cancel.clone(),
            metrics.clone(),
        )
        .expect("a media worker");
        let streams = Arc::new(Streams::new(
            registry.clone(),
            &settings,
            hub,
            workers,
            crate::tls::client_config(None).expect("roots"),
            metrics.clone(),
            cancel.clone(),
        ));
        AppState {
            registry,
            flows: Arc::new(Flows::new(BTreeMap::new(), streams.clone())),
            streams,
            auth: Authenticator::new(&settings.auth),
            metrics,
            ari_connected: watch::channel(false).1,
            twilio: settings.twilio.clone(),
            input: InputLimits {
                max_query_bytes: 4096,
                max_body_bytes: 65536,
            },
        }
    }

    fn document() -> serde_json::Value {
        // The document does not depend on the state; any router makes the same one.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let cancel = CancellationToken::new();
            let (_, document) = super::super::routes(state(&cancel).await);
            cancel.cancel();
            serde_json::to_value(&document).expect("json")
        })
    }

    const METHODS: [Method; 5] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];

    /// `path` with a plausible value in each parameter.
    fn concrete(path: &str) -> String {
        path.split('/')
            .map(|segment| match segment {
                "{file}" => "init.js",
                s if s.starts_with('{') => "x1",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The paths the router routes, from its `Debug` (axum has no other way to list them). If
    /// axum changes that output, this finds none and the test fails: it never passes blind.
    fn router_paths(router: &axum::Router) -> BTreeSet<String> {
        let debug = format!("{router:?}");
        // The routes, not those of the fallback router that follows them.
        let (routes, _) = debug
            .split_once("fallback_router")
            .expect("a Router's Debug names its fallback router");
        routes
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| s.starts_with('/') && !s.contains("__private__"))
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn the_router_and_the_document_have_the_same_routes() {
        let cancel = CancellationToken::new();
        let state = state(&cancel).await;
        let (routes, document) = super::super::routes(state.clone());
        let documented: BTreeSet<(String, Method)> = document
            .paths
            .paths
            .iter()
            .flat_map(|(path, item)| {
                let item = serde_json::to_value(item).expect("json");
                METHODS
                    .iter()
                    .filter(move |m| item.get(m.as_str().to_lowercase()).is_some())
                    .map(|m| (path.clone(), m.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let paths = router_paths(&routes.with_state::<()>(state.clone()));
        assert!(
            paths.len() > 10,
            "the router's paths could not be read: {paths:?}"
        );
        let documented_paths: BTreeSet<String> =
            documented.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(
            paths, documented_paths,
            "every routed path is documented and every documented path routed"
        );
        let router = super::super::router(state);
        let mut routed = BTreeSet::new();
        for path in &paths {
            for method in METHODS {
                let request = Request::builder()
                    .method(method.clone())
                    .uri(concrete(path))
                    .body(Body::empty())
                    .expect("request");
                let response = router.clone().oneshot(request).await.expect("answer");
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("body");
                let reason = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"]["reason"].as_str().map(str::to_owned));
                assert_ne!(
                    reason.as_deref(),
                    Some("NOT_FOUND"),
                    "{method} {path}: the router does not route it"
                );
                if status != StatusCode::METHOD_NOT_ALLOWED {
                    routed.insert((path.clone(), method));
                }
            }
        }
        cancel.cancel();
        assert_eq!(
            routed, documented,
            "the methods routed are those documented"
        );
    }

    /// Every `$ref` names a schema of the document.
    #[test]
    fn every_reference_resolves() {
        let document = document();
        let schemas = document["components"]["schemas"]
            .as_object()
            .expect("schemas");
        fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (key, value) in map {
                        match (key.as_str(), value) {
                            ("$ref", serde_json::Value::String(r)) => out.push(r.clone()),
                            _ => refs(value, out),
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        refs(&document, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} is not a schema reference"));
            assert!(schemas.contains_key(name), "{r} names no schema");
        }
    }

    #[test]
    fn it_is_openapi_3_1_with_every_reason() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        let reasons: Vec<&str> = document["components"]["schemas"]["Reason"]["enum"]
            .as_array()
            .expect("enum")
            .iter()
            .map(|r| r.as_str().expect("str"))
            .collect();
        let all: Vec<&str> = crate::api::Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(reasons, all);
        let metrics = &document["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
        assert!(
            metrics
                .get(crate::api::health::METRICS_CONTENT_TYPE)
                .is_some(),
            "/metrics is documented with the content type it answers: {metrics}"
        );
    }

    /// What the page loads is served here, with the types the document gives.
    #[tokio::test]
    async fn the_page_and_its_assets_are_served_from_here() {
        let page = super::docs_page().await;
        assert_eq!(page.status(), StatusCode::OK);
        let body = axum::body::to_bytes(page.into_body(), 1 << 20)
            .await
            .expect("body");
        let html = String::from_utf8_lossy(&body);
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{html}"
        );
        for (file, content_type) in [
            ("swagger-ui.css", "text/css"),
            ("swagger-ui-bundle.js", "text/javascript"),
            ("init.js", "text/javascript"),
            ("swagger-ui-bundle.js.map", "application/json"),
        ] {
            let file = serde_json::from_value(serde_json::json!(file)).expect("asset");
            let response =
                super::docs_asset(Ok(axum::extract::Path(super::DocsAssetPath { file }))).await;
            assert_eq!(response.status(), StatusCode::OK, "{file:?}");
            assert_eq!(
                response.headers()[axum::http::header::CONTENT_TYPE],
                content_type
            );
        }
    }
}
