use std::time::Duration;

use axum::Json;
use axum::extract::multipart::Multipart;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use natter_shared::User;
use natter_shared::api::{AuthResponse, LoginRequest, SignUpRequest};
use natter_shared::limits::SEARCH_MAX_RESULTS;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use super::client::ClientAddr;
use super::extract::{JsonBody, PathParam, QueryParams};
use crate::auth::{AuthSession, AuthUser};
use crate::blobs::{self, ImageError};
use crate::domain::{Email, Password, SearchQuery, UserName};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{NewUser, StoreError};

/// A sign-up as received, before validation.
struct SignUpForm {
    fields: SignUpRequest,
    pic: Option<Vec<u8>>,
}

/// How long a sign-up's form may take to arrive: a 5 MiB picture at 100
/// kbit/s (as long as a picture may take to be read out, `blobs`), and no
/// longer, so that uploads which never finish give their places for
/// sign-ups (`NATTER_SIGN_UP_FORMS`) back.
const SIGN_UP_FORM_PATIENCE: Duration = Duration::from_secs(7 * 60);

/// `POST /api/user`: multipart/form-data (with an optional `pic` file) or JSON.
pub async fn sign_up(
    State(state): State<AppState>,
    request: Request,
) -> Result<(StatusCode, Json<AuthResponse>), ApiError> {
    // Held while the form, its picture with it, is in memory: until it is
    // answered, or stored (`store_account`) should its client go first.
    let Ok(place) = state.sign_up_forms.clone().try_acquire_owned() else {
        return Err(ApiError::Unavailable(
            "too many sign-ups at once: try again in a moment".into(),
        ));
    };
    let form = tokio::time::timeout(SIGN_UP_FORM_PATIENCE, read_form(&state, request))
        .await
        .map_err(|_| {
            ApiError::Rejected(
                StatusCode::REQUEST_TIMEOUT,
                "the sign-up form did not arrive within 7 minutes".into(),
            )
        })??;

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
    let taken = async || -> Result<(), ApiError> {
        if state.store.user_by_email(email.as_str()).await?.is_some() {
            return Err(ApiError::Conflict(
                "an account with this email already exists".into(),
            ));
        }
        Ok(())
    };
    let invited = state.settings.invitation_code.is_some();
    if !invited {
        taken().await?;
    }
    let password_hash = state.passwords.hash(&password).await?;
    if invited {
        // After the hash, not before: a guess at the code costs a core's
        // turn, so guessing is held to what the cores can hash. And before
        // saying whether the email is taken: that is for those invited to
        // learn.
        check_invitation(&state, form.fields.invitation_code.as_deref())?;
        taken().await?;
    }

    let new_user = NewUser {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.into_inner(),
        email: email.as_str().to_owned(),
        password_hash,
        pic: None,
    };
    let user = store_account(&state, new_user, pic, place).await?;
    tracing::info!(user = %user.id, "new account");
    let token = state.tokens.issue(&user.id)?;
    Ok((StatusCode::CREATED, Json(AuthResponse { user, token })))
}

/// Refuses a sign-up without the server's invitation code, when it asks
/// for one.
fn check_invitation(state: &AppState, given: Option<&str>) -> Result<(), ApiError> {
    let Some(code) = &state.settings.invitation_code else {
        return Ok(());
    };
    match given.map(str::trim).filter(|given| !given.is_empty()) {
        None => Err(ApiError::forbidden(
            "this server asks for an invitation code to sign up: ask whoever runs it for one",
        )),
        Some(given) if !code.is(given) => Err(ApiError::forbidden(
            "that invitation code is not this server's: check it with whoever gave it to you",
        )),
        Some(_) => Ok(()),
    }
}

/// Reads a sign-up's form, multipart or JSON.
async fn read_form(state: &AppState, request: Request) -> Result<SignUpForm, ApiError> {
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
    if is_multipart {
        let multipart = Multipart::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::Rejected(rejection.status(), rejection.body_text()))?;
        read_multipart(multipart).await
    } else {
        let JsonBody(fields) = JsonBody::<SignUpRequest>::from_request(request, state).await?;
        Ok(SignUpForm { fields, pic: None })
    }
}

/// Stores the picture, then the account; a picture whose account was
/// refused goes again.
///
/// To its end (`Unfinished::to_the_end`): a request dropped between the two would leave
/// a picture no account points at. So a client that hangs up once its
/// password is hashed may still get its account; signing up again then
/// says the email is taken, and logging in works.
///
/// `place` is the sign-up's (`NATTER_SIGN_UP_FORMS`), given back once the
/// picture is no longer held.
async fn store_account(
    state: &AppState,
    new_user: NewUser,
    pic: Option<(String, Vec<u8>)>,
    place: OwnedSemaphorePermit,
) -> Result<User, ApiError> {
    let storing = store(state.clone(), new_user, pic);
    state
        .unfinished
        .to_the_end(async move {
            let _place = place;
            storing.await
        })
        .await
}

async fn store(
    state: AppState,
    mut new_user: NewUser,
    pic: Option<(String, Vec<u8>)>,
) -> Result<User, ApiError> {
    if let Some((key, bytes)) = pic {
        state.blobs.put(&key, bytes).await?;
        new_user.pic = Some(key);
    }
    let pic_key = new_user.pic.clone();
    match state.store.create_user(new_user).await {
        Ok(user) => Ok(user),
        Err(err) => {
            // The account was refused (an email taken in a race, say): drop
            // its picture. Not after a database failure, which may have
            // come after the commit: a picture left over costs a file, one
            // taken from an account is gone for good.
            let refused = matches!(err, StoreError::Conflict(_) | StoreError::Invalid(_));
            if refused
                && let Some(key) = pic_key
                && let Err(cleanup) = state.blobs.delete(&key).await
            {
                tracing::warn!(error = %cleanup, "could not remove the picture of a failed sign-up");
            }
            Err(err.into())
        }
    }
}

async fn read_multipart(mut multipart: Multipart) -> Result<SignUpForm, ApiError> {
    let mut fields = SignUpRequest {
        name: String::new(),
        email: String::new(),
        password: String::new(),
        invitation_code: None,
    };
    let mut pic = None;
    while let Some(field) = multipart.next_field().await? {
        match field.name().unwrap_or_default() {
            "name" => fields.name = field.text().await?,
            "email" => fields.email = field.text().await?,
            "password" => fields.password = field.text().await?,
            "invitationCode" => fields.invitation_code = Some(field.text().await?),
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
/// answer, in the same time. Past an email address's tries for the hour
/// (`auth::throttle`), 429 with `Retry-After`, whatever the password.
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    JsonBody(body): JsonBody<LoginRequest>,
) -> Result<Json<AuthResponse>, ApiError> {
    let wrong = || ApiError::Unauthorized("wrong email or password".into());
    let email = Email::parse(&body.email).ok();
    let record = match &email {
        Some(email) => state.store.user_by_email(email.as_str()).await?,
        None => None,
    };
    // A place to hash before a try is counted: a login refused for want of
    // one (503) costs none of its address's tries and leaves nothing in
    // their count. After the lookup: a slow database must not hold places
    // meant for hashes.
    let place = state.passwords.place()?;
    if let Some(email) = &email {
        state
            .logins
            .take(client, email)
            .map_err(|wait| ApiError::too_many("too many logins with this email address", wait))?;
    }
    let hash = record.as_ref().map(|record| record.password_hash.as_str());
    if !place.verify(&body.password, hash).await? {
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
///
/// To its end (`Unfinished::to_the_end`): a request dropped once its
/// logout is written (the app gave up waiting, or quit) would leave this
/// node accepting the session's tokens, on the embedded default until it
/// restarts (nodes sharing a database read new logouts every second).
pub async fn logout(
    State(state): State<AppState>,
    AuthSession(claims): AuthSession,
) -> Result<StatusCode, ApiError> {
    let (Some(sid), Some(key)) = (claims.sid.clone(), claims.session()) else {
        return Ok(StatusCode::NO_CONTENT);
    };
    let until = state.tokens.session_ends_at(&claims);
    let user = claims.sub;
    let ending = state.clone();
    state
        .unfinished
        .to_the_end(async move {
            ending
                .store
                .end_session(&sid, chrono::Utc::now().timestamp(), until)
                .await?;
            ending.tokens.ended().end(key, until);
            tracing::debug!(%user, "session logged out");
            Ok(())
        })
        .await?;
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

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::Arc;

    use async_trait::async_trait;
    use tokio::sync::Notify;

    use super::*;
    use crate::Application;
    use crate::blobs::{Blob, BlobError, BlobStore};

    /// The real picture folder, whose `put` stores and then waits to be let go.
    struct HeldPuts {
        inner: Arc<dyn BlobStore>,
        stored: Notify,
        go_on: Notify,
    }

    #[async_trait]
    impl BlobStore for HeldPuts {
        async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
            self.inner.put(key, bytes).await?;
            self.stored.notify_one();
            self.go_on.notified().await;
            Ok(())
        }
        async fn get(&self, key: &str) -> Result<Option<Blob>, BlobError> {
            self.inner.get(key).await
        }
        async fn delete(&self, key: &str) -> Result<(), BlobError> {
            self.inner.delete(key).await
        }
        async fn ping(&self) -> Result<(), BlobError> {
            self.inner.ping().await
        }
    }

    /// A logout whose request is dropped while its write waits (SQLite's
    /// write lock, held from outside) still ends the session on this node
    /// once the write goes through: its tokens are refused from then on.
    #[tokio::test]
    async fn a_logout_dropped_while_it_waits_still_ends_the_session() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = Application::in_folder(dir.path()).await;
        let state = app.state.clone();
        let user = state
            .store
            .create_user(NewUser {
                id: "ann".into(),
                name: "Ann".into(),
                email: "ann@example.com".into(),
                password_hash: "not checked here".into(),
                pic: None,
            })
            .await
            .expect("account");
        let token = state.tokens.issue(&user.id).expect("token");
        let claims = state.tokens.claims(&token).expect("accepted");

        let lock = natter_test_support::hold_write_lock(&dir.path().join("natter.db")).await;
        {
            let mut request = pin!(logout(State(state.clone()), AuthSession(claims)));
            let first_step = futures_util::poll!(request.as_mut());
            assert!(first_step.is_pending(), "it waits for the database");
        }
        assert!(state.tokens.claims(&token).is_ok(), "not ended yet");
        drop(lock);
        let ended = async {
            while state.tokens.claims(&token).is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), ended)
            .await
            .expect("the session ends once its logout is written");
    }

    /// A sign-up whose request is dropped once its picture is stored (its
    /// client gone) still creates the account the picture belongs to.
    #[tokio::test]
    async fn a_sign_up_dropped_after_its_picture_is_stored_still_makes_the_account() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = Application::in_folder(dir.path()).await;
        let held = Arc::new(HeldPuts {
            inner: app.state.blobs.clone(),
            stored: Notify::new(),
            go_on: Notify::new(),
        });
        let mut state = app.state.clone();
        state.blobs = held.clone();
        let key = blobs::new_key(blobs::ImageKind::Png);
        let new_user = NewUser {
            id: uuid::Uuid::now_v7().to_string(),
            name: "Ann".into(),
            email: "ann@example.com".into(),
            password_hash: "not checked here".into(),
            pic: None,
        };
        {
            let place = state
                .sign_up_forms
                .clone()
                .try_acquire_owned()
                .expect("a place");
            let storing = pin!(store_account(
                &state,
                new_user,
                Some((key.clone(), vec![1])),
                place
            ));
            tokio::select! {
                _ = held.stored.notified() => {}
                answer = storing => panic!("answered before its picture was let go: {:?}", answer.map(|user| user.id)),
            }
        }
        held.go_on.notify_one();
        let made = async {
            loop {
                if let Some(user) = state
                    .store
                    .user_by_email("ann@example.com")
                    .await
                    .expect("read")
                {
                    return user;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let user = tokio::time::timeout(Duration::from_secs(10), made)
            .await
            .expect("the account is made");
        assert_eq!(user.user.pic, Some(blobs::pic_url(&key)));
        assert!(state.blobs.get(&key).await.expect("read").is_some());
    }
}
