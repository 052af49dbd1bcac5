use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::Claims;
use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller of a protected endpoint, from
/// `Authorization: Bearer <token>`. Stateless: the token alone decides.
#[derive(Debug, Clone)]
pub struct AuthUser(pub String);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let AuthSession(claims) = AuthSession::from_request_parts(parts, state).await?;
        Ok(AuthUser(claims.sub))
    }
}

/// The whole of the caller's good token, for what needs more than who
/// (renewing it keeps its session's start).
#[derive(Debug, Clone)]
pub struct AuthSession(pub Claims);

impl FromRequestParts<AppState> for AuthSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(|| {
            ApiError::Unauthorized("not logged in: send 'Authorization: Bearer <token>'".into())
        })?;
        Ok(AuthSession(state.tokens.claims(token)?))
    }
}

/// The token of an `Authorization: Bearer ...` header, if there is one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}
