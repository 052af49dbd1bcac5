//! The commands the UI invokes: one per user action, each a thin call into
//! the engine. Arguments arrive camelCase from JavaScript; errors go back as
//! `{ "error": "..." }`. docs/desktop.md lists them.

use std::collections::HashMap;

use natter_core::{ChatList, ChatSummary, ConnectionState, CoreError, Engine, MessageView, SignUp};
use natter_shared::User;
use serde::Serialize;
use tauri::State;

type Answer<T> = Result<T, CoreError>;

/// What the UI needs to draw its first screen.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Startup {
    pub server_url: String,
    pub me: Option<User>,
    /// Why the server ended the last session, when nobody has logged in
    /// since (its event may have gone out before the page listened).
    pub ended: Option<String>,
    pub connection: ConnectionState,
    pub limits: Limits,
}

/// The server's limits, so the UI refuses what the server would.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub content_max_chars: usize,
    pub name_max_chars: usize,
    pub password_min_chars: usize,
    pub chat_name_max_chars: usize,
}

#[tauri::command]
pub async fn startup(engine: State<'_, Engine>) -> Answer<Startup> {
    use natter_shared::limits::*;
    Ok(Startup {
        server_url: engine.server_url().to_string(),
        me: engine.me().await,
        ended: engine.session_ended(),
        connection: engine.connection_state().await,
        limits: Limits {
            content_max_chars: CONTENT_MAX_CHARS,
            name_max_chars: NAME_MAX_CHARS,
            password_min_chars: PASSWORD_MIN_CHARS,
            chat_name_max_chars: CHAT_NAME_MAX_CHARS,
        },
    })
}

#[tauri::command]
pub async fn set_server_url(engine: State<'_, Engine>, url: String) -> Answer<String> {
    Ok(engine.set_server_url(&url)?.to_string())
}

#[tauri::command]
pub async fn sign_up(
    engine: State<'_, Engine>,
    name: String,
    email: String,
    password: String,
    pic: Option<Vec<u8>>,
    invitation_code: Option<String>,
) -> Answer<User> {
    let form = SignUp {
        name,
        email,
        password,
        pic,
        invitation_code,
    };
    engine.sign_up(form).await
}

#[tauri::command]
pub async fn login(engine: State<'_, Engine>, email: String, password: String) -> Answer<User> {
    engine.login(&email, &password).await
}

#[tauri::command]
pub async fn logout(engine: State<'_, Engine>) -> Answer<()> {
    engine.logout().await
}

/// How many messages have not reached the server yet (a logout deletes them).
#[tauri::command]
pub async fn unsent(engine: State<'_, Engine>) -> Answer<usize> {
    engine.unsent().await
}

#[tauri::command]
pub async fn chats(engine: State<'_, Engine>) -> Answer<ChatList> {
    engine.chats().await
}

#[tauri::command]
pub async fn history(
    engine: State<'_, Engine>,
    chat_id: String,
    before: Option<i64>,
) -> Answer<Vec<MessageView>> {
    engine.history(&chat_id, before).await
}

#[tauri::command]
pub async fn send(
    engine: State<'_, Engine>,
    chat_id: String,
    content: String,
) -> Answer<MessageView> {
    engine.send(&chat_id, &content).await
}

#[tauri::command]
pub async fn discard(engine: State<'_, Engine>, client_id: String) -> Answer<()> {
    engine.discard(&client_id).await
}

/// Not async: Tauri runs a plain command on the main thread, in the order
/// the UI invoked it (async ones run as tasks, in any order), so the chat
/// opened last is the one on screen. Marking it read runs on its own.
#[tauri::command]
pub fn set_active_chat(engine: State<'_, Engine>, chat_id: Option<String>) {
    let reading = engine.set_active_chat(chat_id);
    tauri::async_runtime::spawn(async move {
        if let Err(err) = reading.await {
            tracing::warn!(error = %err, "marking the open chat read");
        }
    });
}

/// Every chat's draft, by chat id: what the user was writing and has not sent.
#[tauri::command]
pub async fn drafts(engine: State<'_, Engine>) -> Answer<HashMap<String, String>> {
    engine.drafts().await
}

/// Not async, for the same reason: the last keystroke's draft must be the
/// one kept.
#[tauri::command]
pub fn set_draft(engine: State<'_, Engine>, chat_id: String, text: String) {
    let writing = engine.set_draft(chat_id, text);
    tauri::async_runtime::spawn(async move {
        if let Err(err) = writing.await {
            tracing::warn!(error = %err, "keeping a draft");
        }
    });
}

#[tauri::command]
pub async fn typing(engine: State<'_, Engine>, chat_id: String, is_typing: bool) -> Answer<()> {
    engine.typing(&chat_id, is_typing).await
}

/// Who is typing now, by chat id: for the UI to read again after missing events.
#[tauri::command]
pub async fn typists(engine: State<'_, Engine>) -> Answer<HashMap<String, Vec<String>>> {
    engine.typists().await
}

#[tauri::command]
pub async fn search_users(engine: State<'_, Engine>, query: String) -> Answer<Vec<User>> {
    engine.search_users(&query).await
}

#[tauri::command]
pub async fn user(engine: State<'_, Engine>, user_id: String) -> Answer<User> {
    engine.user(&user_id).await
}

#[tauri::command]
pub async fn open_direct(engine: State<'_, Engine>, user_id: String) -> Answer<ChatSummary> {
    engine.open_direct(&user_id).await
}

#[tauri::command]
pub async fn create_group(
    engine: State<'_, Engine>,
    name: String,
    members: Vec<String>,
) -> Answer<ChatSummary> {
    engine.create_group(&name, &members).await
}

#[tauri::command]
pub async fn rename_group(
    engine: State<'_, Engine>,
    chat_id: String,
    name: String,
) -> Answer<ChatSummary> {
    engine.rename_group(&chat_id, &name).await
}

#[tauri::command]
pub async fn add_member(
    engine: State<'_, Engine>,
    chat_id: String,
    user_id: String,
) -> Answer<ChatSummary> {
    engine.add_member(&chat_id, &user_id).await
}

#[tauri::command]
pub async fn remove_member(
    engine: State<'_, Engine>,
    chat_id: String,
    user_id: String,
) -> Answer<ChatSummary> {
    engine.remove_member(&chat_id, &user_id).await
}

#[tauri::command]
pub async fn leave_group(engine: State<'_, Engine>, chat_id: String) -> Answer<()> {
    engine.leave_group(&chat_id).await
}

#[tauri::command]
pub async fn delete_chat(engine: State<'_, Engine>, chat_id: String) -> Answer<()> {
    engine.delete_chat(&chat_id).await
}
