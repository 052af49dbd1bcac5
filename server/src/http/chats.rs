use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use natter_shared::Chat;
use natter_shared::api::{
    CreateGroupRequest, GroupMemberRequest, OpenChatRequest, RenameGroupRequest,
};

use super::extract::{JsonBody, PathParam};
use crate::auth::AuthUser;
use crate::chats;
use crate::domain::ChatName;
use crate::error::ApiError;
use crate::state::AppState;

/// `POST /api/chat`: the one-to-one chat with `userId` (201 when just created).
pub async fn open_direct(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    JsonBody(body): JsonBody<OpenChatRequest>,
) -> Result<(StatusCode, Json<Chat>), ApiError> {
    let (chat, created) = chats::open_direct(&state, &me, &body.user_id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(chat)))
}

/// `GET /api/chat`: the caller's chats, most recent activity first, each
/// with its latest message as far as any was delivered before the request
/// (`Pipeline::settle_all`): an app catching up skips a chat whose listed
/// latest message it holds. When that cannot be waited for (the broker
/// away, a node whose link to it is not up yet, a commit that does not
/// come in time) the list still answers, from what is stored: refused, it
/// would keep apps from starting at all (a history read is refused then,
/// and the app asks again).
pub async fn list(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> Result<Json<Vec<Chat>>, ApiError> {
    if let Err(err) = state.pipeline.settle_all().await {
        tracing::warn!(error = %err, "a chat list answered without waiting for what is being stored");
    }
    Ok(Json(state.store.chats_of(&me).await?))
}

/// `GET /api/chat/{chatId}`: one chat the caller is in.
pub async fn get_chat(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    PathParam(chat_id): PathParam<String>,
) -> Result<Json<Chat>, ApiError> {
    Ok(Json(chats::chat_for_member(&state, &me, &chat_id).await?))
}

/// `POST /api/chat/group`: a new group with the caller as admin; past the
/// caller's groups for the hour (`NATTER_GROUPS_PER_HOUR`), 429.
pub async fn create_group(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    JsonBody(body): JsonBody<CreateGroupRequest>,
) -> Result<(StatusCode, Json<Chat>), ApiError> {
    let name = ChatName::parse(&body.name)?;
    let chat = chats::create_group(&state, &me, name, body.users).await?;
    Ok((StatusCode::CREATED, Json(chat)))
}

/// `PUT /api/chat/rename`: admin only.
pub async fn rename(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    JsonBody(body): JsonBody<RenameGroupRequest>,
) -> Result<Json<Chat>, ApiError> {
    let name = ChatName::parse(&body.chat_name)?;
    Ok(Json(chats::rename(&state, &me, &body.chat_id, name).await?))
}

/// `PUT /api/chat/groupadd`: admin only.
pub async fn add_member(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    JsonBody(body): JsonBody<GroupMemberRequest>,
) -> Result<Json<Chat>, ApiError> {
    Ok(Json(
        chats::add_member(&state, &me, &body.chat_id, &body.user_id).await?,
    ))
}

/// `PUT /api/chat/groupremove`: admin only, or a member removing themself.
pub async fn remove_member(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    JsonBody(body): JsonBody<GroupMemberRequest>,
) -> Result<Json<Chat>, ApiError> {
    Ok(Json(
        chats::remove_member(&state, &me, &body.chat_id, &body.user_id).await?,
    ))
}
