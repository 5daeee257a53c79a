//! Who is calling: static API keys (full access) or HS256 JWTs with a required `exp` and an
//! optional `resource` claim that binds the token to one call or conference.
//!
//! API keys are compared in constant time; tokens and keys are never logged.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::config::AuthSettings;
use crate::domain::{CallId, ConferenceId, Resource};
use crate::secret::Secret;

/// What an authenticated caller may open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Only(Resource),
}

/// The authenticated caller, put in the request's extensions by [`require_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub scope: Scope,
    /// When the token stops being valid (seconds since the epoch); `None` for API keys.
    pub expires_at: Option<u64>,
}

impl Principal {
    /// Allows `resource` unless the token is bound to another one.
    pub fn authorize(&self, resource: &Resource) -> Result<(), ApiError> {
        match &self.scope {
            Scope::All => Ok(()),
            Scope::Only(own) if own == resource => Ok(()),
            Scope::Only(_) => Err(ApiError::permission_denied(format!(
                "this token does not open {resource}"
            ))),
        }
    }

    /// Allows what concerns no single resource (lists, creation): only unbound tokens.
    pub fn authorize_any(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::All => Ok(()),
            Scope::Only(_) => Err(ApiError::permission_denied(
                "this token is bound to one resource",
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    /// Optional here so that a token without it is refused by the validation, which says so.
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    resource: Option<String>,
}

/// Checks tokens against the configured keys and secret.
#[derive(Clone)]
pub struct Authenticator {
    api_keys: Vec<Secret>,
    jwt: Option<(DecodingKey, Validation)>,
    disabled: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("api_keys", &self.api_keys.len())
            .field("jwt", &self.jwt.is_some())
            .field("disabled", &self.disabled)
            .finish()
    }
}

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> Authenticator {
        let jwt = settings.jwt_secret.as_ref().map(|secret| {
            let mut validation = Validation::new(Algorithm::HS256);
            validation.set_required_spec_claims(&["exp"]);
            // A little room for clock skew between the token issuer and this host.
            validation.leeway = 5;
            (
                DecodingKey::from_secret(secret.expose().as_bytes()),
                validation,
            )
        });
        Authenticator {
            api_keys: settings.api_keys.clone(),
            jwt,
            disabled: settings.disabled,
        }
    }

    pub fn authenticate(&self, token: Option<&str>) -> Result<Principal, ApiError> {
        if self.disabled {
            return Ok(Principal {
                scope: Scope::All,
                expires_at: None,
            });
        }
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::authentication_required)?;
        // Every key is compared, whichever matches: the time taken does not say which did.
        let is_key = self
            .api_keys
            .iter()
            .fold(false, |found, key| key.matches(token.as_bytes()) | found);
        if is_key {
            return Ok(Principal {
                scope: Scope::All,
                expires_at: None,
            });
        }
        let Some((key, validation)) = &self.jwt else {
            return Err(ApiError::invalid_credentials("the token is not valid"));
        };
        // The library refuses these too (an `alg` it does not know, `none` included, as an
        // unreadable header); looking first only makes the refusal say why.
        if header_alg(token).is_some_and(|alg| alg != "HS256") {
            return Err(ApiError::invalid_credentials(
                "the token is not signed with HS256",
            ));
        }
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| ApiError::invalid_credentials(refusal(e.kind())))?
            .claims;
        let exp = claims
            .exp
            .ok_or_else(|| ApiError::invalid_credentials("the token has no `exp` claim"))?;
        let scope = match claims.resource.as_deref() {
            None | Some("*") => Scope::All,
            Some(resource) => Scope::Only(parse_resource(resource).ok_or_else(|| {
                ApiError::invalid_credentials("the token's resource claim is not valid")
            })?),
        };
        Ok(Principal {
            scope,
            expires_at: Some(exp),
        })
    }
}

/// The `alg` a token's header names, when the header can be read at all.
fn header_alg(token: &str) -> Option<String> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    let header = token.split('.').next()?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    serde_json::from_slice::<Header>(&json).ok().map(|h| h.alg)
}

/// Why a JWT was refused, in words that help its issuer and say nothing of the secret.
fn refusal(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token is not signed with HS256".into()
        }
        ErrorKind::InvalidSignature => "the token's signature does not match".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's `{claim}` claim is not valid"),
        _ => "the token is not valid".into(),
    }
}

fn parse_resource(claim: &str) -> Option<Resource> {
    let (kind, id) = claim.split_once(':')?;
    match kind {
        "call" => CallId::parse(id).ok().map(Resource::Call),
        "conference" => ConferenceId::parse(id).ok().map(Resource::Conference),
        _ => None,
    }
}

/// The token of a request: `Authorization: Bearer …`, else `?token=…`.
fn token_of(req: &Request) -> Option<String> {
    if let Some(value) = req.headers().get(AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    let query = req.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find_map(|(k, v)| (k == "token").then(|| v.into_owned()))
}

/// Middleware for every `/v1.0` route: authenticates, or answers 401 before any handler runs.
pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = state.auth.authenticate(token_of(&req).as_deref())?;
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Reason;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const KEY: &str = "key-0123456789abcdef";

    fn auth() -> Authenticator {
        Authenticator::new(&AuthSettings {
            api_keys: vec![KEY.into()],
            jwt_secret: Some(SECRET.into()),
            disabled: false,
        })
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    fn jwt(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode")
    }

    fn call(id: &str) -> Resource {
        Resource::Call(CallId::parse(id).expect("id"))
    }

    #[test]
    fn api_keys_open_everything() {
        let p = auth().authenticate(Some(KEY)).expect("ok");
        assert_eq!(p.scope, Scope::All);
        assert!(p.authorize_any().is_ok());
    }

    #[test]
    fn missing_and_wrong_tokens_are_401_with_their_reason() {
        let a = auth();
        assert_eq!(
            a.authenticate(None).expect_err("none").reason,
            Reason::AuthenticationRequired
        );
        assert_eq!(
            a.authenticate(Some("")).expect_err("empty").reason,
            Reason::AuthenticationRequired
        );
        for bad in ["nope", "key-0123456789abcdeX", "a.b.c"] {
            let e = a.authenticate(Some(bad)).expect_err("bad");
            assert_eq!(
                (e.status().as_u16(), e.reason),
                (401, Reason::InvalidCredentials)
            );
        }
    }

    #[test]
    fn jwts_need_the_secret_and_an_unexpired_exp() {
        let a = auth();
        let ok = jwt(serde_json::json!({"exp": now() + 60}), SECRET);
        let p = a.authenticate(Some(&ok)).expect("valid");
        assert_eq!(p.scope, Scope::All);
        assert_eq!(p.expires_at, Some(now() + 60));

        let wrong_secret = jwt(
            serde_json::json!({"exp": now() + 60}),
            "another-secret-of-32-characters!!",
        );
        assert!(a.authenticate(Some(&wrong_secret)).is_err());

        let expired = jwt(serde_json::json!({"exp": now() - 120}), SECRET);
        let e = a.authenticate(Some(&expired)).expect_err("expired");
        assert_eq!(e.message, "the token has expired");

        let no_exp = jwt(serde_json::json!({"resource": "*"}), SECRET);
        assert!(a.authenticate(Some(&no_exp)).is_err());
    }

    /// `message.signature`, signed with HS256 and the right secret whatever `message` holds.
    fn signed_raw(message: &str) -> String {
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .expect("sign");
        format!("{message}.{signature}")
    }

    /// `header.claims.signature`, the signature made with HS256 whatever the header says.
    fn forged(header: serde_json::Value, claims: &[u8]) -> String {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        signed_raw(&format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims)
        ))
    }

    #[test]
    fn each_refusal_says_why() {
        let a = auth();
        let claims = serde_json::json!({"exp": now() + 60});
        let signed = |alg: Algorithm| {
            jsonwebtoken::encode(
                &Header::new(alg),
                &claims,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .expect("encode")
        };
        let body = claims.to_string();
        let none = {
            let token = forged(serde_json::json!({"alg": "none"}), body.as_bytes());
            format!("{}.", token.rsplit_once('.').expect("dot").0)
        };
        let good = signed(Algorithm::HS256);
        let (head, rest) = good.split_once('.').expect("dot");
        let signature = rest.split_once('.').expect("dot").1;
        let cases = [
            (
                signed(Algorithm::HS384),
                "the token is not signed with HS256",
            ),
            (
                signed(Algorithm::HS512),
                "the token is not signed with HS256",
            ),
            (
                forged(
                    serde_json::json!({"alg": "RS256", "typ": "JWT"}),
                    body.as_bytes(),
                ),
                "the token is not signed with HS256",
            ),
            (none, "the token is not signed with HS256"),
            (
                jwt(serde_json::json!({"resource": "*"}), SECRET),
                "the token has no `exp` claim",
            ),
            (
                jwt(serde_json::json!({"exp": now() - 60}), SECRET),
                "the token has expired",
            ),
            (
                jwt(claims.clone(), "another-secret-of-32-characters!!"),
                "the token's signature does not match",
            ),
            (
                format!("{head}.{}.{signature}", {
                    use base64::Engine;
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(serde_json::json!({"exp": now() + 3600}).to_string())
                }),
                "the token's signature does not match",
            ),
            (format!("{head}.{signature}"), "the token is not valid"),
            (signed_raw(&format!("{head}.!!!")), "the token is not valid"),
            (
                forged(serde_json::json!({"alg": "HS256"}), b"not json"),
                "the token is not valid",
            ),
            (
                jwt(
                    serde_json::json!({"exp": now() + 60, "resource": "channel:x"}),
                    SECRET,
                ),
                "the token's resource claim is not valid",
            ),
        ];
        for (token, why) in cases {
            let e = a.authenticate(Some(&token)).expect_err(why);
            assert_eq!(
                (e.status().as_u16(), e.reason, e.message.as_str()),
                (401, Reason::InvalidCredentials, why),
                "{token}"
            );
        }
        assert!(a.authenticate(Some(&good)).is_ok());
    }

    #[test]
    fn a_bound_token_opens_only_its_resource() {
        let a = auth();
        let token = jwt(
            serde_json::json!({"exp": now() + 60, "resource": "call:c1"}),
            SECRET,
        );
        let p = a.authenticate(Some(&token)).expect("valid");
        assert!(p.authorize(&call("c1")).is_ok());
        assert_eq!(
            p.authorize(&call("c2")).expect_err("other").reason,
            Reason::PermissionDenied
        );
        let conf = Resource::Conference(ConferenceId::parse("c1").expect("id"));
        assert!(p.authorize(&conf).is_err());
        assert!(p.authorize_any().is_err());
    }

    #[test]
    fn a_malformed_resource_claim_is_refused() {
        let token = jwt(
            serde_json::json!({"exp": now() + 60, "resource": "channel:x"}),
            SECRET,
        );
        assert!(auth().authenticate(Some(&token)).is_err());
    }

    #[test]
    fn disabled_auth_lets_everyone_in() {
        let a = Authenticator::new(&AuthSettings {
            disabled: true,
            ..AuthSettings::default()
        });
        assert_eq!(a.authenticate(None).expect("open").scope, Scope::All);
    }

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        let req = |uri: &str, header: Option<&str>| {
            let mut b = axum::http::Request::builder().uri(uri);
            if let Some(h) = header {
                b = b.header(AUTHORIZATION, h);
            }
            b.body(axum::body::Body::empty()).expect("request")
        };
        assert_eq!(
            token_of(&req("/x?token=a%2Bb", None)).as_deref(),
            Some("a+b")
        );
        assert_eq!(
            token_of(&req("/x?a=1&token=t&b=2", None)).as_deref(),
            Some("t")
        );
        assert_eq!(
            token_of(&req("/x", Some("Bearer abc"))).as_deref(),
            Some("abc")
        );
        assert_eq!(token_of(&req("/x", Some("Basic abc"))), None);
        assert_eq!(token_of(&req("/x", None)), None);
    }
}
