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
/// on goes to a member who left. Called within `Unfinished::to_the_end`: once a change
/// is written, a request dropped (its client gone, a proxy's timeout) must
/// not leave the sequencer with the old members, or the members unaware.
async fn announce(state: &AppState, chat: Chat, also: Option<&str>) {
    let users: Vec<String> = member_ids(&chat).chain(also).map(str::to_owned).collect();
    state.pipeline.chat_changed(&chat.id).await;
    state.events.publish(&users, &ServerFrame::Chat { chat });
}

/// Runs `change` to its end (`Unfinished::to_the_end`) in the turn of `chat_id`: one
/// change of a chat at a time on this node.
async fn in_turn<T, F, Fut>(state: &AppState, chat_id: &str, change: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(AppState, String) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, ApiError>> + Send + 'static,
{
    let (state, chat_id) = (state.clone(), chat_id.to_owned());
    state
        .unfinished
        .clone()
        .to_the_end(async move {
            let turns = state.chat_turns.clone();
            let _turn = turns.take(&chat_id).await;
            change(state, chat_id).await
        })
        .await
}

/// Whose turn it is to change a chat, on this node. A change's checks (is
/// the caller the admin, a member), its write and the telling of it run in
/// turn with the chat's other changes, so that members hear of changes in
/// the order they were made (a removed member's last `chat` frame is the
/// one without them, not a leaver's older one told late) and a check still
/// holds when its change is made (an admin who just left cannot still
/// remove the next admin). Across nodes only the database orders changes.
///
/// Striped rather than a lock per chat: a fixed few locks and no map to
/// clean up; two chats on one stripe merely wait for each other's changes.
/// Those are rare, but not always quick: a change keeps its turn until its
/// sequencer has heard of it (on the embedded default, after the commit
/// under way; through RabbitMQ, once confirmed), up to 10 s each when the
/// broker or the database is slow.
pub struct ChatTurns {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl ChatTurns {
    const STRIPES: usize = 64;

    pub fn new() -> Self {
        ChatTurns {
            stripes: (0..Self::STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    async fn take(&self, chat_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.stripes[Self::stripe(chat_id)].lock().await
    }

    fn stripe(chat_id: &str) -> usize {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(chat_id, &mut hasher);
        (std::hash::Hasher::finish(&hasher) % Self::STRIPES as u64) as usize
    }
}

impl Default for ChatTurns {
    fn default() -> Self {
        Self::new()
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
        return Err(ApiError::forbidden(crate::error::NOT_ADMIN));
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
    let (state, me, other) = (state.clone(), me.to_owned(), other.to_owned());
    state
        .unfinished
        .clone()
        .to_the_end(async move {
            let (chat, created) = state.store.open_direct_chat(&new_id(), &me, &other).await?;
            if created {
                announce(&state, chat.clone(), None).await;
            }
            Ok((chat, created))
        })
        .await
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
    // Once the group is known to be good: a refused one costs none of the
    // caller's groups for the hour (a store failing for now still does).
    state.groups_made.take(me.to_owned()).map_err(|wait| {
        ApiError::too_many("you have made as many groups this hour as you may", wait)
    })?;
    let (state, me) = (state.clone(), me.to_owned());
    state
        .unfinished
        .clone()
        .to_the_end(async move {
            let chat = state
                .store
                .create_group(&new_id(), name.as_str(), &me, &members)
                .await?;
            announce(&state, chat.clone(), None).await;
            Ok(chat)
        })
        .await
}

pub async fn rename(
    state: &AppState,
    me: &str,
    chat_id: &str,
    name: ChatName,
) -> Result<Chat, ApiError> {
    let me = me.to_owned();
    in_turn(state, chat_id, |state, chat_id| async move {
        group_for_admin(&state, &me, &chat_id).await?;
        let chat = state
            .store
            .rename_chat(&chat_id, name.as_str(), Some(&me))
            .await?;
        announce(&state, chat.clone(), None).await;
        Ok(chat)
    })
    .await
}

pub async fn add_member(
    state: &AppState,
    me: &str,
    chat_id: &str,
    user_id: &str,
) -> Result<Chat, ApiError> {
    let (me, user_id) = (me.to_owned(), user_id.to_owned());
    in_turn(state, chat_id, |state, chat_id| async move {
        let chat = group_for_admin(&state, &me, &chat_id).await?;
        require_user(&state, &user_id).await?;
        if chat.users.len() >= GROUP_MAX_MEMBERS && !member_ids(&chat).any(|id| id == user_id) {
            return Err(ApiError::bad_request(format!(
                "a group can have at most {GROUP_MAX_MEMBERS} members"
            )));
        }
        state.pipeline.ready_for_member_changes(&chat_id).await?;
        let chat = state
            .store
            .add_member(&chat_id, &user_id, Some(&me))
            .await?;
        announce(&state, chat.clone(), None).await;
        Ok(chat)
    })
    .await
}

/// Removes `user_id` from a group: the admin may remove anyone, any member
/// may remove themself (leave).
pub async fn remove_member(
    state: &AppState,
    me: &str,
    chat_id: &str,
    user_id: &str,
) -> Result<Chat, ApiError> {
    let (me, user_id) = (me.to_owned(), user_id.to_owned());
    in_turn(state, chat_id, |state, chat_id| async move {
        let admin = if user_id == me {
            let chat = chat_for_member(&state, &me, &chat_id).await?;
            if !chat.is_group_chat {
                return Err(ApiError::bad_request("this is not a group chat"));
            }
            None
        } else {
            group_for_admin(&state, &me, &chat_id).await?;
            Some(me.as_str())
        };
        state.pipeline.ready_for_member_changes(&chat_id).await?;
        let chat = state.store.remove_member(&chat_id, &user_id, admin).await?;
        announce(&state, chat.clone(), Some(&user_id)).await;
        Ok(chat)
    })
    .await
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

    /// An app on the embedded default with users "ann" (admin), "bob" and
    /// "cid" in group "g1", and "dan" and "eve" in group "g2".
    async fn team(dir: &std::path::Path) -> (Application, AppState) {
        let app = Application::in_folder(dir).await;
        let state = app.state.clone();
        for name in ["ann", "bob", "cid", "dan", "eve"] {
            state
                .store
                .create_user(crate::store::NewUser {
                    id: name.into(),
                    name: name.into(),
                    email: format!("{name}@example.org"),
                    password_hash: "not used here".into(),
                    pic: None,
                })
                .await
                .expect("user");
        }
        let others = |names: &[&str]| {
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>()
        };
        state
            .store
            .create_group("g1", "Team", "ann", &others(&["bob", "cid"]))
            .await
            .expect("group");
        state
            .store
            .create_group("g2", "Other", "dan", &others(&["eve"]))
            .await
            .expect("group");
        (app, state)
    }

    async fn members(state: &AppState, chat_id: &str) -> Vec<String> {
        state.store.members(chat_id).await.expect("members")
    }

    /// A change's request dropped at once (its client gone) is still made
    /// and told: once written it must be told, so it runs to its end.
    #[tokio::test]
    async fn a_change_is_made_and_told_even_when_its_request_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_app, state) = team(dir.path()).await;
        let mut removed = state.hub.register("cid", None, usize::MAX).expect("room");
        {
            let mut request = pin!(remove_member(&state, "ann", "g1", "cid"));
            let first_step = futures_util::poll!(request.as_mut());
            assert!(first_step.is_pending(), "it waits for the database");
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
        assert_eq!(members(&state, "g1").await, ["ann", "bob"]);
    }

    /// A change of a chat holds the chat's turn from its checks until it
    /// has been told (here its write is held up by SQLite's write lock,
    /// taken from outside), so that another change of the chat waits for
    /// it; a change of another chat does not.
    #[tokio::test]
    async fn a_change_holds_its_chats_turn_until_it_is_told() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_app, state) = team(dir.path()).await;
        let (mine, other) = (ChatTurns::stripe("g1"), ChatTurns::stripe("g2"));
        assert_ne!(mine, other);
        let turn_taken = || state.chat_turns.stripes[mine].try_lock().is_err();
        let lock = natter_test_support::hold_write_lock(&dir.path().join("natter.db")).await;
        let leaving = {
            let state = state.clone();
            tokio::spawn(async move { remove_member(&state, "cid", "g1", "cid").await })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !turn_taken() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the change never took its turn"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(state.chat_turns.stripes[other].try_lock().is_ok());
        assert_eq!(members(&state, "g1").await, ["ann", "bob", "cid"]);
        assert!(turn_taken(), "held while its write waits");
        drop(lock);
        leaving.await.expect("ran").expect("made");
        assert_eq!(members(&state, "g1").await, ["ann", "bob"]);
        assert!(!turn_taken(), "given back");
    }
}
