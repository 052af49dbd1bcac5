//! The REST API: routes, and one small module of handlers per resource.
//! Handlers parse input into domain types, call `chats` or the store, and
//! answer JSON; every error goes through `ApiError`.

mod chats;
pub mod client;
mod extract;
mod health;
mod messages;
mod openapi;
mod pics;
mod users;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use natter_shared::limits::{JSON_BODY_MAX_BYTES, PIC_MAX_BYTES};
use tokio::sync::watch;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::realtime;
use crate::state::AppState;

pub use openapi::OPENAPI_JSON;

/// A multipart sign-up carries the picture plus a few small text fields.
const SIGN_UP_BODY_MAX_BYTES: usize = PIC_MAX_BYTES + 64 * 1024;

/// Every route; a request still running when `cut` turns true answers 503
/// at once (`cut_off`).
pub fn router(state: AppState, cut: watch::Receiver<bool>) -> Router {
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
        .layer(middleware::from_fn_with_state(cut, cut_off))
        .layer(
            // Log the path only: the query can hold a session token (`/ws?token=`).
            TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
            }),
        )
        .with_state(state)
}

/// Runs a request until it answers, or until a stopping server's grace for
/// requests is over (`Application::run_until`): then it answers 503 and is
/// dropped, letting go of what it holds (a database connection, a query)
/// rather than wait on a database that never answers for as long as the
/// process lives. A change it handed to a task of its own
/// (`sync::Unfinished`) may still be made: the answer says so.
async fn cut_off(
    State(mut cut): State<watch::Receiver<bool>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let cut_off = async {
        // A sender gone without cutting off: nothing will.
        if cut.wait_for(|cut| *cut).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        response = next.run(request) => response,
        () = cut_off => ApiError::Unavailable(
            "the server stopped before it answered: a change asked for may still have been made".into(),
        )
        .into_response(),
    }
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
