use axum::Json;
use axum::extract::multipart::Multipart;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use natter_shared::User;
use natter_shared::api::{AuthResponse, LoginRequest, SignUpRequest};
use natter_shared::limits::SEARCH_MAX_RESULTS;
use serde::Deserialize;

use super::extract::{JsonBody, PathParam, QueryParams};
use crate::auth::{AuthSession, AuthUser};
use crate::blobs::{self, ImageError};
use crate::domain::{Email, Password, SearchQuery, UserName};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::NewUser;

/// A sign-up as received, before validation.
struct SignUpForm {
    fields: SignUpRequest,
    pic: Option<Vec<u8>>,
}

/// `POST /api/user`: multipart/form-data (with an optional `pic` file) or JSON.
pub async fn sign_up(
    State(state): State<AppState>,
    request: Request,
) -> Result<(StatusCode, Json<AuthResponse>), ApiError> {
    let is_multipart = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        // Media types ignore case (RFC 9110): `Multipart/Form-Data` too.
        .is_some_and(|value| {
            value
                .get(..19)
                .is_some_and(|kind| kind.eq_ignore_ascii_case("multipart/form-data"))
        });
    let form = if is_multipart {
        read_multipart(
            Multipart::from_request(request, &state)
                .await
                .map_err(|rejection| {
                    ApiError::Rejected(rejection.status(), rejection.body_text())
                })?,
        )
        .await?
    } else {
        let JsonBody(fields) = JsonBody::<SignUpRequest>::from_request(request, &state).await?;
        SignUpForm { fields, pic: None }
    };

    // Validate everything before storing anything.
    let name = UserName::parse(&form.fields.name)?;
    let email = Email::parse(&form.fields.email)?;
    let password = Password::parse(&form.fields.password)?;
    let pic = match form.pic {
        Some(bytes) => {
            let kind = blobs::inspect(&bytes).map_err(|err| match err {
                ImageError::TooLarge => ApiError::TooLarge(err.to_string()),
                _ => ApiError::bad_request(err.to_string()),
            })?;
            Some((blobs::new_key(kind), bytes))
        }
        None => None,
    };
    if state.store.user_by_email(email.as_str()).await?.is_some() {
        return Err(ApiError::Conflict(
            "an account with this email already exists".into(),
        ));
    }
    let password_hash = state.passwords.hash(&password).await?;

    let pic_key = match pic {
        Some((key, bytes)) => {
            state.blobs.put(&key, bytes).await?;
            Some(key)
        }
        None => None,
    };
    let new_user = NewUser {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.into_inner(),
        email: email.as_str().to_owned(),
        password_hash,
        pic: pic_key.clone(),
    };
    let user = match state.store.create_user(new_user).await {
        Ok(user) => user,
        Err(err) => {
            // The account was not created (an email taken in a race, say): drop its picture.
            if let Some(key) = pic_key
                && let Err(cleanup) = state.blobs.delete(&key).await
            {
                tracing::warn!(error = %cleanup, "could not remove the picture of a failed sign-up");
            }
            return Err(err.into());
        }
    };
    tracing::info!(user = %user.id, "new account");
    let token = state.tokens.issue(&user.id)?;
    Ok((StatusCode::CREATED, Json(AuthResponse { user, token })))
}

async fn read_multipart(mut multipart: Multipart) -> Result<SignUpForm, ApiError> {
    let mut fields = SignUpRequest {
        name: String::new(),
        email: String::new(),
        password: String::new(),
    };
    let mut pic = None;
    while let Some(field) = multipart.next_field().await? {
        match field.name().unwrap_or_default() {
            "name" => fields.name = field.text().await?,
            "email" => fields.email = field.text().await?,
            "password" => fields.password = field.text().await?,
            "pic" => {
                let bytes = field.bytes().await?;
                // A form with no file chosen sends an empty part: no picture.
                if !bytes.is_empty() {
                    pic = Some(bytes.to_vec());
                }
            }
            _ => {}
        }
    }
    Ok(SignUpForm { fields, pic })
}

/// `POST /api/user/login`. Unknown email and wrong password get the same
/// answer, in the same time.
pub async fn login(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<LoginRequest>,
) -> Result<Json<AuthResponse>, ApiError> {
    let wrong = || ApiError::Unauthorized("wrong email or password".into());
    let record = match Email::parse(&body.email) {
        Ok(email) => state.store.user_by_email(email.as_str()).await?,
        Err(_) => None,
    };
    let hash = record.as_ref().map(|record| record.password_hash.as_str());
    if !state.passwords.verify(&body.password, hash).await? {
        return Err(wrong());
    }
    let user = record.ok_or_else(wrong)?.user;
    let token = state.tokens.issue(&user.id)?;
    Ok(Json(AuthResponse { user, token }))
}

/// `POST /api/user/token`: a new token for the caller's session. An app
/// renews its token while it is good, so that a session in use does not end
/// when its first token does; one that has expired is refused (401), and so
/// is every token of a session past `NATTER_SESSION_MAX_SECS` since its
/// login: the user logs in again.
pub async fn renew_token(
    State(state): State<AppState>,
    AuthSession(claims): AuthSession,
) -> Result<Json<AuthResponse>, ApiError> {
    let user = crate::chats::caller_account(&state, &claims.sub).await?;
    let token = state.tokens.renew(&claims)?;
    Ok(Json(AuthResponse { user, token }))
}

/// `POST /api/user/logout`: ends the caller's session on every node at
/// once (its own, at once; the others within about a second): every token
/// of it, renewed ones too, is refused from then on, and its sockets close
/// at their next ping. The user's other sessions (another device) go on.
/// A token from before sessions had ids ends only when it expires.
pub async fn logout(
    State(state): State<AppState>,
    AuthSession(claims): AuthSession,
) -> Result<StatusCode, ApiError> {
    if let (Some(sid), Some(key)) = (claims.sid.as_deref(), claims.session()) {
        let until = state.tokens.session_ends_at(&claims);
        state
            .store
            .end_session(sid, chrono::Utc::now().timestamp(), until)
            .await?;
        state.tokens.ended().end(key, until);
        tracing::debug!(user = %claims.sub, "session logged out");
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct SearchParams {
    search: Option<String>,
}

/// `GET /api/user?search=q`: users whose name or email contains `q`; without
/// `q`, everyone (the caller never), at most 50.
pub async fn search(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    QueryParams(params): QueryParams<SearchParams>,
) -> Result<Json<Vec<User>>, ApiError> {
    let query = match params.search.as_deref().map(str::trim) {
        None | Some("") => String::new(),
        Some(raw) => SearchQuery::parse(raw)?.into_inner(),
    };
    let limit = u32::try_from(SEARCH_MAX_RESULTS).unwrap_or(50);
    Ok(Json(state.store.search_users(&query, &me, limit).await?))
}

/// `GET /api/user/{id}`.
pub async fn get_user(
    State(state): State<AppState>,
    AuthUser(_): AuthUser,
    PathParam(id): PathParam<String>,
) -> Result<Json<User>, ApiError> {
    state
        .store
        .user(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no user with that id"))
}
