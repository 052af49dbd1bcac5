//! The REST API: routes, and one small module of handlers per resource.
//! Handlers parse input into domain types, call `chats` or the store, and
//! answer JSON; every error goes through `ApiError`.

mod chats;
mod extract;
mod health;
mod messages;
mod openapi;
mod pics;
mod users;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::routing::{get, post, put};
use natter_shared::limits::{JSON_BODY_MAX_BYTES, PIC_MAX_BYTES};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::realtime;
use crate::state::AppState;

pub use openapi::OPENAPI_JSON;

/// A multipart sign-up carries the picture plus a few small text fields.
const SIGN_UP_BODY_MAX_BYTES: usize = PIC_MAX_BYTES + 64 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/user",
            post(users::sign_up)
                .layer(DefaultBodyLimit::max(SIGN_UP_BODY_MAX_BYTES))
                .get(users::search),
        )
        .route("/api/user/login", post(users::login))
        .route("/api/user/token", post(users::renew_token))
        .route("/api/user/logout", post(users::logout))
        .route("/api/user/{id}", get(users::get_user))
        .route("/api/pic/{key}", get(pics::get_pic))
        .route("/api/chat", post(chats::open_direct).get(chats::list))
        .route("/api/chat/group", post(chats::create_group))
        .route("/api/chat/rename", put(chats::rename))
        .route("/api/chat/groupadd", put(chats::add_member))
        .route("/api/chat/groupremove", put(chats::remove_member))
        .route("/api/chat/{chat_id}", get(chats::get_chat))
        .route("/api/message", post(messages::send))
        .route("/api/message/{chat_id}", get(messages::history))
        .route("/api/openapi.json", get(openapi::document))
        .route("/health", get(health::health))
        .route("/ws", get(realtime::upgrade))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(JSON_BODY_MAX_BYTES))
        .layer(
            // Log the path only: the query can hold a session token (`/ws?token=`).
            TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
            }),
        )
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::Rejected(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method".into(),
    )
}
