use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use natter_shared::Message;
use natter_shared::api::SendMessageRequest;
use natter_shared::limits::{PAGE_DEFAULT, PAGE_MAX};
use serde::Deserialize;

use super::extract::{JsonBody, PathParam, QueryParams};
use crate::auth::AuthUser;
use crate::chats::{self, ClientTag};
use crate::domain::{ClientId, Content};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Page, Stored};

/// `POST /api/message`: 201 with the new message, or 200 with the stored one
/// when this sender already sent this `clientId`.
pub async fn send(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    JsonBody(body): JsonBody<SendMessageRequest>,
) -> Result<(StatusCode, Json<Message>), ApiError> {
    let content = Content::parse(&body.content)?;
    let client = body
        .client_id
        .as_deref()
        .map(ClientId::parse)
        .transpose()?
        .map(|id| ClientTag {
            id,
            first_try: body.first_try,
        });
    let stored = chats::send_message(&state, &me, &body.chat_id, content, client).await?;
    Ok(match stored {
        Stored::New(message) => (StatusCode::CREATED, Json(message)),
        Stored::Duplicate(message) => (StatusCode::OK, Json(message)),
    })
}

#[derive(Deserialize)]
pub struct HistoryParams {
    after: Option<i64>,
    before: Option<i64>,
    limit: Option<u32>,
}

impl HistoryParams {
    fn page(&self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(PAGE_DEFAULT);
        if !(1..=PAGE_MAX).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and {PAGE_MAX}"
            )));
        }
        match (self.after, self.before) {
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "give either after or before, not both",
            )),
            (Some(seq), None) if seq < 0 => {
                Err(ApiError::bad_request("after must not be negative"))
            }
            (Some(seq), None) => Ok(Page::After { seq, limit }),
            (None, Some(seq)) => Ok(Page::Before { seq, limit }),
            (None, None) => Ok(Page::Latest { limit }),
        }
    }
}

/// `GET /api/message/{chatId}?after=&before=&limit=`: a page of history in seq order.
pub async fn history(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    PathParam(chat_id): PathParam<String>,
    QueryParams(params): QueryParams<HistoryParams>,
) -> Result<Json<Vec<Message>>, ApiError> {
    let page = params.page()?;
    Ok(Json(chats::history(&state, &me, &chat_id, page).await?))
}
