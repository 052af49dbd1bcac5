//! What users do with chats and messages, and who hears of it. The rules live
//! here (who may rename, who may remove whom, membership on every event), so
//! that the REST API and the socket share them; storage is `Store`'s and
//! delivery the hub's.

use chrono::{DateTime, Utc};
use natter_shared::limits::GROUP_MAX_MEMBERS;
use natter_shared::{Chat, Message, ServerFrame, User};

use crate::domain::{ChatName, ClientId, Content};
use crate::error::ApiError;
use crate::pipeline::{Draft, Outcome};
use crate::state::AppState;
use crate::store::{Page, StoreError, Stored};

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn member_ids(chat: &Chat) -> impl Iterator<Item = &str> {
    chat.users.iter().map(|user| user.id.as_str())
}

/// Tells every member of `chat` (and `also`, e.g. a user just removed) that
/// it changed, after telling its sequencer, so that no message sent from now
/// on goes to a member who left.
///
/// In a task of its own: the change is committed, and a request dropped
/// now (its client gone, a proxy's timeout) must not leave the sequencer
/// with the old members, or the members unaware. The caller waits for it
/// all the same, so that its answer comes after.
async fn announce(state: &AppState, chat: &Chat, also: Option<&str>) {
    let users: Vec<String> = member_ids(chat).chain(also).map(str::to_owned).collect();
    let (state, chat) = (state.clone(), chat.clone());
    let telling = tokio::spawn(async move {
        state.pipeline.chat_changed(&chat.id).await;
        state.events.publish(&users, &ServerFrame::Chat { chat });
    });
    if let Err(err) = telling.await {
        tracing::error!(error = %err, "telling of a chat's change failed");
    }
}

/// A chat the caller is a member of: 404 when there is no such chat, 403 when
/// the caller is not in it.
pub async fn chat_for_member(state: &AppState, me: &str, chat_id: &str) -> Result<Chat, ApiError> {
    let chat = state
        .store
        .chat(chat_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no chat with that id"))?;
    if !member_ids(&chat).any(|id| id == me) {
        return Err(StoreError::NotMember.into());
    }
    Ok(chat)
}

/// The ids of a chat's members, for one of them: one query, where
/// `chat_for_member` reads the whole chat with its latest message, for what
/// is asked often (every history page an app reads, every typing signal).
/// Only a refusal reads the chat, to say which (no such chat, or not a member).
async fn members_for_member(
    state: &AppState,
    me: &str,
    chat_id: &str,
) -> Result<Vec<String>, ApiError> {
    let members = state.store.members(chat_id).await?;
    if members.iter().any(|id| id == me) {
        return Ok(members);
    }
    Err(chat_for_member(state, me, chat_id)
        .await
        .err()
        .unwrap_or(StoreError::NotMember.into()))
}

/// A group chat the caller administers.
async fn group_for_admin(state: &AppState, me: &str, chat_id: &str) -> Result<Chat, ApiError> {
    let chat = chat_for_member(state, me, chat_id).await?;
    if !chat.is_group_chat {
        return Err(ApiError::bad_request("this is not a group chat"));
    }
    if chat.group_admin.as_ref().map(|admin| admin.id.as_str()) != Some(me) {
        return Err(ApiError::forbidden("only the group's admin can do that"));
    }
    Ok(chat)
}

async fn require_user(state: &AppState, user_id: &str) -> Result<(), ApiError> {
    match state.store.user(user_id).await? {
        Some(_) => Ok(()),
        None => Err(no_such_user(user_id)),
    }
}

fn no_such_user(user_id: &str) -> ApiError {
    ApiError::not_found(format!("no user with id '{user_id}'"))
}

/// The caller's own account, before a chat names them as a member or a
/// token is renewed: a token outlives a database restored from before its
/// user signed up (or one shared by two servers), and would otherwise fail
/// as a 500, or be renewed for no one.
pub async fn caller_account(state: &AppState, me: &str) -> Result<User, ApiError> {
    state.store.user(me).await?.ok_or_else(caller_gone)
}

fn caller_gone() -> ApiError {
    ApiError::Unauthorized("this session's account does not exist here: log in again".into())
}

/// Checks, in one round trip, that each of `others` is a user (404 for the
/// first that is not) and that the caller's account exists (as
/// `caller_account`), before a chat names them all.
async fn require_accounts(state: &AppState, me: &str, others: &[&str]) -> Result<(), ApiError> {
    let mut ids = Vec::with_capacity(others.len() + 1);
    ids.extend_from_slice(others);
    ids.push(me);
    let found = state.store.users(&ids).await?;
    let exists = |id: &str| found.iter().any(|user| user.id == id);
    if let Some(missing) = others.iter().find(|id| !exists(id)) {
        return Err(no_such_user(missing));
    }
    if !exists(me) {
        return Err(caller_gone());
    }
    Ok(())
}

/// The one-to-one chat of `me` and `other`, created the first time.
pub async fn open_direct(
    state: &AppState,
    me: &str,
    other: &str,
) -> Result<(Chat, bool), ApiError> {
    if me == other {
        return Err(ApiError::bad_request(
            "you cannot open a chat with yourself",
        ));
    }
    require_accounts(state, me, &[other]).await?;
    let (chat, created) = state.store.open_direct_chat(&new_id(), me, other).await?;
    if created {
        announce(state, &chat, None).await;
    }
    Ok((chat, created))
}

pub async fn create_group(
    state: &AppState,
    me: &str,
    name: ChatName,
    users: Vec<String>,
) -> Result<Chat, ApiError> {
    // Counted first: a request naming thousands would otherwise cost a
    // comparison of each with every other before being refused.
    if users.len() > 2 * GROUP_MAX_MEMBERS {
        return Err(ApiError::bad_request(format!(
            "a group can have at most {GROUP_MAX_MEMBERS} members"
        )));
    }
    let mut members: Vec<String> = Vec::with_capacity(users.len());
    for user in users {
        if user != me && !members.contains(&user) {
            members.push(user);
        }
    }
    if members.is_empty() {
        return Err(ApiError::bad_request(
            "a group needs at least one other member",
        ));
    }
    if members.len() + 1 > GROUP_MAX_MEMBERS {
        return Err(ApiError::bad_request(format!(
            "a group can have at most {GROUP_MAX_MEMBERS} members"
        )));
    }
    let others: Vec<&str> = members.iter().map(String::as_str).collect();
    require_accounts(state, me, &others).await?;
    let chat = state
        .store
        .create_group(&new_id(), name.as_str(), me, &members)
        .await?;
    announce(state, &chat, None).await;
    Ok(chat)
}

pub async fn rename(
    state: &AppState,
    me: &str,
    chat_id: &str,
    name: ChatName,
) -> Result<Chat, ApiError> {
    group_for_admin(state, me, chat_id).await?;
    let chat = state.store.rename_chat(chat_id, name.as_str()).await?;
    announce(state, &chat, None).await;
    Ok(chat)
}

pub async fn add_member(
    state: &AppState,
    me: &str,
    chat_id: &str,
    user_id: &str,
) -> Result<Chat, ApiError> {
    let chat = group_for_admin(state, me, chat_id).await?;
    require_user(state, user_id).await?;
    if chat.users.len() >= GROUP_MAX_MEMBERS && !member_ids(&chat).any(|id| id == user_id) {
        return Err(ApiError::bad_request(format!(
            "a group can have at most {GROUP_MAX_MEMBERS} members"
        )));
    }
    state.pipeline.ready_for_member_changes(chat_id).await?;
    let chat = state.store.add_member(chat_id, user_id).await?;
    announce(state, &chat, None).await;
    Ok(chat)
}

/// Removes `user_id` from a group: the admin may remove anyone, any member
/// may remove themself (leave).
pub async fn remove_member(
    state: &AppState,
    me: &str,
    chat_id: &str,
    user_id: &str,
) -> Result<Chat, ApiError> {
    if user_id == me {
        let chat = chat_for_member(state, me, chat_id).await?;
        if !chat.is_group_chat {
            return Err(ApiError::bad_request("this is not a group chat"));
        }
    } else {
        group_for_admin(state, me, chat_id).await?;
    }
    state.pipeline.ready_for_member_changes(chat_id).await?;
    let chat = state.store.remove_member(chat_id, user_id).await?;
    announce(state, &chat, Some(user_id)).await;
    Ok(chat)
}

/// The sender's own name for a message (`clientId`), which makes resending
/// it safe.
pub struct ClientTag {
    pub id: ClientId,
    /// The sender says this id never left it before: there is no earlier
    /// copy to look for (a wrong claim stores the message twice).
    pub first_try: bool,
}

/// Hands a message to the pipeline, which gives it its seq, delivers it to
/// every member and stores it. A retry (same sender, same client id)
/// returns the message sent then and delivers it again: the first attempt
/// may have been sequenced by a node that died before it told anyone.
/// Clients drop a message they already have by its id.
pub async fn send_message(
    state: &AppState,
    me: &str,
    chat_id: &str,
    content: Content,
    client: Option<ClientTag>,
) -> Result<Stored, ApiError> {
    Ok(submit_message(state, me, chat_id, content, client)
        .await?
        .await?)
}

/// Like `send_message`, returning once the message is queued in its chat,
/// with what completes as `send_message` would (`Pipeline::submit`).
pub async fn submit_message(
    state: &AppState,
    me: &str,
    chat_id: &str,
    content: Content,
    client: Option<ClientTag>,
) -> Result<Outcome<Stored>, ApiError> {
    let now = Utc::now();
    let first_try = client.as_ref().is_some_and(|tag| tag.first_try);
    let draft = Draft {
        id: new_id(),
        chat_id: chat_id.to_owned(),
        sender_id: me.to_owned(),
        content: content.into_inner(),
        client_id: client.map(|tag| tag.id.into_inner()),
        first_try,
        // Stored to the millisecond: delivered the same as it will be read.
        created_at: DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now),
    };
    Ok(state.pipeline.submit(draft).await?)
}

/// Tells the other members that `me` started or stopped typing.
pub async fn typing(
    state: &AppState,
    me: &str,
    chat_id: &str,
    is_typing: bool,
) -> Result<(), ApiError> {
    let members = members_for_member(state, me, chat_id).await?;
    let frame = ServerFrame::Typing {
        chat_id: chat_id.to_owned(),
        user_id: me.to_owned(),
        is_typing,
    };
    let others: Vec<String> = members.into_iter().filter(|id| id != me).collect();
    state.events.publish_lossy(&others, &frame);
    Ok(())
}

/// A page of a chat's history, for a member.
pub async fn history(
    state: &AppState,
    me: &str,
    chat_id: &str,
    page: Page,
) -> Result<Vec<Message>, ApiError> {
    members_for_member(state, me, chat_id).await?;
    state.pipeline.settle(chat_id).await?;
    Ok(state.store.messages(chat_id, page).await?)
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::time::Duration;

    use super::*;
    use crate::Application;
    use crate::config::Config;

    /// A change's request dropped after its commit (its client gone) still
    /// has the change told: here dropped at its first wait, which is for
    /// the sequencer.
    #[tokio::test]
    async fn a_change_is_told_even_when_its_request_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config {
            addr: "127.0.0.1:0".parse().expect("address"),
            ..Config::with_data_dir(dir.path().to_path_buf())
        };
        let app = Application::build(&config).await.expect("built");
        let state = app.state.clone();
        let mut removed = state.hub.register("cid", None);
        let chat = Chat {
            id: "c1".into(),
            chat_name: "Team".into(),
            is_group_chat: true,
            users: Vec::new(),
            group_admin: None,
            latest_message: None,
            updated_at: Utc::now(),
        };
        {
            let mut telling = pin!(announce(&state, &chat, Some("cid")));
            let first_step = futures_util::poll!(telling.as_mut());
            assert!(first_step.is_pending(), "it waits for the sequencer");
        }
        let frame = tokio::time::timeout(Duration::from_secs(10), removed.frames.recv())
            .await
            .expect("told in time")
            .expect("a frame");
        assert!(
            frame.as_str().contains("\"type\":\"chat\""),
            "{}",
            frame.as_str()
        );
    }
}
