use natter_shared::{Chat, ServerFrame};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, retry_after, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_pair_has_exactly_one_direct_chat_from_either_side() {
    let app = spawn_app().await;
    let ann = app.sign_up("Ann").await;
    let bob = app.sign_up("Bob").await;

    let first = app.post(&ann, "/api/chat", json!({"userId": bob.id})).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Chat = first.json().await.expect("chat");
    assert!(!first.is_group_chat);
    assert_eq!(first.users.len(), 2);
    assert!(first.group_admin.is_none());

    let again = app.post(&ann, "/api/chat", json!({"userId": bob.id})).await;
    assert_eq!(again.status(), StatusCode::OK);
    let from_bob = app.open_direct(&bob, &ann).await;
    assert_eq!(again.json::<Chat>().await.expect("chat").id, first.id);
    assert_eq!(from_bob.id, first.id);

    let listed = app.chats(&bob).await;
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn direct_chats_need_another_existing_user() {
    let app = spawn_app().await;
    let ann = app.sign_up("Ann").await;
    let myself = app.post(&ann, "/api/chat", json!({"userId": ann.id})).await;
    assert_eq!(myself.status(), StatusCode::BAD_REQUEST);
    let nobody = app
        .post(&ann, "/api/chat", json!({"userId": "nobody"}))
        .await;
    assert_eq!(
        assert_error(nobody, StatusCode::NOT_FOUND).await,
        "no user with id 'nobody'"
    );
}

/// A group names only users who exist: the first unknown one is named in
/// the refusal, and no group is made.
#[tokio::test]
async fn groups_need_existing_members() {
    let app = spawn_app().await;
    let ann = app.sign_up("Ann").await;
    let bob = app.sign_up("Bob").await;
    let refused = app
        .post(
            &ann,
            "/api/chat/group",
            json!({"name": "Team", "users": [bob.id, "ghost-1", "ghost-2"]}),
        )
        .await;
    assert_eq!(
        assert_error(refused, StatusCode::NOT_FOUND).await,
        "no user with id 'ghost-1'"
    );
    let chats = app.chats(&ann).await;
    assert!(chats.is_empty(), "no group made: {chats:?}");
}

/// Past `NATTER_GROUPS_PER_HOUR` groups (two here), a user is told when
/// they may make the next, and no group is made; another user is not held
/// back.
#[tokio::test]
async fn past_a_users_groups_for_the_hour_one_is_told_when_to_make_the_next() {
    let app = spawn_app_with(|config| {
        config.groups_per_hour = std::num::NonZeroU32::new(2).expect("not zero");
    })
    .await;
    let ann = app.sign_up("Ann").await;
    let bob = app.sign_up("Bob").await;
    let cid = app.sign_up("Cid").await;
    for name in ["One", "Two"] {
        app.create_group(&ann, name, &[&bob, &cid]).await;
    }
    let refused = app
        .post(
            &ann,
            "/api/chat/group",
            json!({"name": "Three", "users": [bob.id, cid.id]}),
        )
        .await;
    let retry_after = retry_after(&refused);
    assert!(
        (1750..=1800).contains(&retry_after),
        "one back every 30 minutes: {retry_after}"
    );
    let error = assert_error(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(error.contains("try again in 30 minutes"), "{error}");
    assert_eq!(app.chats(&ann).await.len(), 2, "no third group");
    app.create_group(&bob, "Bob's", &[&ann]).await;
}

#[tokio::test]
async fn the_admin_renames_adds_and_removes_others_cannot() {
    let app = spawn_app().await;
    let admin = app.sign_up("Admin").await;
    let bob = app.sign_up("Bob").await;
    let carol = app.sign_up("Carol").await;
    let dave = app.sign_up("Dave").await;

    let group = app.create_group(&admin, "Team", &[&bob, &carol]).await;
    assert!(group.is_group_chat);
    assert_eq!(group.chat_name, "Team");
    assert_eq!(
        group.group_admin.as_ref().map(|u| u.id.as_str()),
        Some(admin.id.as_str())
    );
    assert_eq!(group.users.len(), 3, "the admin is a member");

    // Non-admins are refused, and nothing changes.
    let rename = json!({"chatId": group.id, "chatName": "Bob's team"});
    assert_eq!(
        app.put(&bob, "/api/chat/rename", rename.clone())
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let add_dave = json!({"chatId": group.id, "userId": dave.id});
    assert_eq!(
        app.put(&bob, "/api/chat/groupadd", add_dave.clone())
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let remove_carol = json!({"chatId": group.id, "userId": carol.id});
    assert_eq!(
        app.put(&bob, "/api/chat/groupremove", remove_carol.clone())
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let outsider = app.put(&dave, "/api/chat/rename", rename.clone()).await;
    assert_eq!(outsider.status(), StatusCode::FORBIDDEN);

    // The admin may.
    let renamed: Chat = app
        .put(&admin, "/api/chat/rename", rename)
        .await
        .json()
        .await
        .expect("chat");
    assert_eq!(renamed.chat_name, "Bob's team");
    let added: Chat = app
        .put(&admin, "/api/chat/groupadd", add_dave.clone())
        .await
        .json()
        .await
        .expect("chat");
    assert_eq!(added.users.len(), 4);
    assert_eq!(
        app.put(&admin, "/api/chat/groupadd", add_dave)
            .await
            .status(),
        StatusCode::CONFLICT
    );
    let removed: Chat = app
        .put(&admin, "/api/chat/groupremove", remove_carol.clone())
        .await
        .json()
        .await
        .expect("chat");
    assert!(removed.users.iter().all(|user| user.id != carol.id));
    assert_eq!(
        app.put(&admin, "/api/chat/groupremove", remove_carol)
            .await
            .status(),
        StatusCode::NOT_FOUND,
        "carol is no longer a member"
    );

    // Carol no longer sees it; Dave does.
    let carols = app.chats(&carol).await;
    assert!(carols.iter().all(|chat| chat.id != group.id));
    let daves = app.chats(&dave).await;
    assert!(daves.iter().any(|chat| chat.id == group.id));
}

/// What docs/protocol.md promises for the chat endpoints beyond the admin
/// rules: a chat is read by its members only (403), and group changes are
/// refused on a direct chat (400) or for an unknown user (404), each with
/// a reason, changing nothing.
#[tokio::test]
async fn chat_reads_and_group_changes_are_refused_with_a_reason() {
    let app = spawn_app().await;
    let (ann, bob, direct) = app.ann_and_bob().await;
    let eve = app.sign_up("Eve").await;
    let group = app.create_group(&ann, "Team", &[&bob]).await;

    for chat in [&direct.id, &group.id] {
        let read = app.get(&eve, &format!("/api/chat/{chat}")).await;
        assert_error(read, StatusCode::FORBIDDEN).await;
    }
    let unknown = app.get(&ann, "/api/chat/no-such-chat").await;
    assert_error(unknown, StatusCode::NOT_FOUND).await;

    let on_direct = [
        (
            "/api/chat/rename",
            json!({"chatId": direct.id, "chatName": "Ours"}),
        ),
        (
            "/api/chat/groupadd",
            json!({"chatId": direct.id, "userId": eve.id}),
        ),
        (
            "/api/chat/groupremove",
            json!({"chatId": direct.id, "userId": bob.id}),
        ),
        (
            "/api/chat/groupremove",
            json!({"chatId": direct.id, "userId": ann.id}),
        ),
    ];
    for (path, body) in on_direct {
        let refused = app.put(&ann, path, body.clone()).await;
        let error = assert_error(refused, StatusCode::BAD_REQUEST).await;
        assert!(error.contains("group"), "{path} {body}: {error}");
    }
    let ghost = json!({"chatId": group.id, "userId": "ghost-1"});
    let refused = app.put(&ann, "/api/chat/groupadd", ghost).await;
    assert_error(refused, StatusCode::NOT_FOUND).await;

    let chats = app.chats(&ann).await;
    let listed: Vec<_> = chats
        .iter()
        .map(|chat| (chat.id.as_str(), chat.users.len()))
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&(direct.id.as_str(), 2)) && listed.contains(&(group.id.as_str(), 2)));
}

#[tokio::test]
async fn a_member_may_leave_and_an_admin_who_leaves_hands_over() {
    let app = spawn_app().await;
    let admin = app.sign_up("Admin").await;
    let bob = app.sign_up("Bob").await;
    let carol = app.sign_up("Carol").await;
    let group = app.create_group(&admin, "Club", &[&bob, &carol]).await;

    let left: Chat = app
        .put(
            &carol,
            "/api/chat/groupremove",
            json!({"chatId": group.id, "userId": carol.id}),
        )
        .await
        .json()
        .await
        .expect("chat");
    assert_eq!(left.users.len(), 2);

    let handed: Chat = app
        .put(
            &admin,
            "/api/chat/groupremove",
            json!({"chatId": group.id, "userId": admin.id}),
        )
        .await
        .json()
        .await
        .expect("chat");
    assert_eq!(
        handed.group_admin.map(|u| u.id),
        Some(bob.id.clone()),
        "the longest-standing member takes over"
    );
}

#[tokio::test]
async fn groups_need_valid_names_and_members() {
    let app = spawn_app().await;
    let ann = app.sign_up("Ann").await;
    let bob = app.sign_up("Bob").await;
    let cases = [
        (
            json!({"name": "  ", "users": [bob.id]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "x".repeat(101), "users": [bob.id]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "Alone", "users": []}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "Alone", "users": [ann.id]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "Ghosts", "users": [bob.id, "ghost"]}),
            StatusCode::NOT_FOUND,
        ),
        (json!({"name": "No users"}), StatusCode::BAD_REQUEST),
        // Too many is said before anyone is looked up.
        (
            json!({"name": "Crowd", "users": (0..2_000).map(|n| format!("u{n}")).collect::<Vec<_>>()}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (body, status) in cases {
        assert_eq!(
            app.post(&ann, "/api/chat/group", body.clone())
                .await
                .status(),
            status,
            "{body}"
        );
    }
    let direct = app.open_direct(&ann, &bob).await;
    let rename = app
        .put(
            &ann,
            "/api/chat/rename",
            json!({"chatId": direct.id, "chatName": "x"}),
        )
        .await;
    assert_eq!(
        rename.status(),
        StatusCode::BAD_REQUEST,
        "direct chats have no name to change"
    );
    let unknown = app
        .put(
            &ann,
            "/api/chat/rename",
            json!({"chatId": "nope", "chatName": "x"}),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn chats_are_listed_by_latest_activity_with_their_last_message() {
    let app = spawn_app().await;
    let ann = app.sign_up("Ann").await;
    let bob = app.sign_up("Bob").await;
    let carol = app.sign_up("Carol").await;
    let with_bob = app.open_direct(&ann, &bob).await;
    let with_carol = app.open_direct(&ann, &carol).await;
    app.send(&bob, &with_bob, "first").await;
    app.send(&carol, &with_carol, "second").await;
    app.send(&bob, &with_bob, "third").await;

    let chats = app.chats(&ann).await;
    let order: Vec<&str> = chats.iter().map(|chat| chat.id.as_str()).collect();
    assert_eq!(order, [with_bob.id.as_str(), with_carol.id.as_str()]);
    let latest = chats[0].latest_message.as_ref().expect("a latest message");
    assert_eq!(latest.content, "third");
    assert_eq!(latest.seq, 2);
}

#[tokio::test]
async fn chat_changes_reach_every_member_and_the_removed_one() {
    let app = spawn_app().await;
    let admin = app.sign_up("Admin").await;
    let bob = app.sign_up("Bob").await;
    let carol = app.sign_up("Carol").await;
    let mut bob_socket = app.socket(&bob).await;
    let mut carol_socket = app.socket(&carol).await;
    app.wait_for_connections(2).await;

    let group = app.create_group(&admin, "News", &[&bob, &carol]).await;
    for socket in [&mut bob_socket, &mut carol_socket] {
        let ServerFrame::Chat { chat } = socket.next_frame().await else {
            panic!("expected a chat frame")
        };
        assert_eq!(chat.id, group.id);
    }
    app.put(
        &admin,
        "/api/chat/groupremove",
        json!({"chatId": group.id, "userId": carol.id}),
    )
    .await;
    for socket in [&mut bob_socket, &mut carol_socket] {
        let ServerFrame::Chat { chat } = socket.next_frame().await else {
            panic!("expected a chat frame")
        };
        assert!(chat.users.iter().all(|user| user.id != carol.id));
    }
}

/// Two members leaving at once, the admin one of them: the one who stays
/// becomes admin, never one of those who left (on PostgreSQL, each removal
/// could pick the other leaver from a view taken before it left).
#[tokio::test]
async fn when_the_admin_and_another_leave_at_once_the_one_who_stays_is_admin() {
    let app = spawn_app().await;
    let ann = app.sign_up("Ann").await;
    let bob = app.sign_up("Bob").await;
    let cid = app.sign_up("Cid").await;
    for _ in 0..20 {
        let group = app.create_group(&ann, "Team", &[&bob, &cid]).await;
        let leave = |who: &crate::helpers::TestUser| {
            let who = who.clone();
            let body = json!({"chatId": group.id, "userId": who.id});
            let app = &app;
            async move { app.put(&who, "/api/chat/groupremove", body).await }
        };
        let (left_ann, left_bob) = tokio::join!(leave(&ann), leave(&bob));
        assert_eq!(left_ann.status(), StatusCode::OK);
        assert_eq!(left_bob.status(), StatusCode::OK);
        let now: Chat = app
            .get(&cid, &format!("/api/chat/{}", group.id))
            .await
            .json()
            .await
            .expect("chat");
        assert_eq!(now.group_admin.map(|admin| admin.id), Some(cid.id.clone()));
    }
}
