use natter_shared::{Message, ServerFrame};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn a_message_reaches_every_open_socket_of_every_member_at_once() {
    let app = spawn_app().await;
    let ann = app.sign_up("Ann").await;
    let bob = app.sign_up("Bob").await;
    let carol = app.sign_up("Carol").await;
    let outsider = app.sign_up("Outsider").await;
    let group = app.create_group(&ann, "Trio", &[&bob, &carol]).await;

    let mut bob_laptop = app.socket(&bob).await;
    let mut bob_desktop = app.socket(&bob).await;
    let mut carol_socket = app.socket(&carol).await;
    let mut ann_socket = app.socket(&ann).await;
    let mut outsider_socket = app.socket(&outsider).await;
    app.wait_for_connections(5).await;

    let sent = app.send(&ann, &group, "hello team 👋").await;
    assert_eq!(sent.seq, 1);
    for socket in [
        &mut bob_laptop,
        &mut bob_desktop,
        &mut carol_socket,
        &mut ann_socket,
    ] {
        let received = socket.next_message().await;
        assert_eq!(received, sent);
        assert_eq!(received.sender.name, "Ann");
    }

    // The outsider's next frame is about their own chat, not the group's message.
    let direct = app.open_direct(&ann, &outsider).await;
    let ServerFrame::Chat { chat } = outsider_socket.next_frame().await else {
        panic!("expected the new direct chat")
    };
    assert_eq!(chat.id, direct.id);
}

#[tokio::test]
async fn messages_sent_on_the_socket_are_acked_and_delivered() {
    let app = spawn_app().await;
    let (ann, bob, chat) = app.ann_and_bob().await;
    let mut ann_socket = app.socket(&ann).await;
    let mut bob_socket = app.socket(&bob).await;
    app.wait_for_connections(2).await;

    ann_socket
        .send_json(json!({"type": "send", "chatId": chat.id, "content": "over the socket", "clientId": "c-1"}))
        .await;
    let ack = ann_socket
        .next_where(|frame| matches!(frame, ServerFrame::Ack { .. }))
        .await;
    let ServerFrame::Ack { client_id, message } = ack else {
        unreachable!()
    };
    assert_eq!(client_id, "c-1");
    assert_eq!(message.content, "over the socket");
    assert_eq!(message.client_id.as_deref(), Some("c-1"));
    assert_eq!(bob_socket.next_message().await, message);
}

#[tokio::test]
async fn typing_reaches_the_other_members_only() {
    let app = spawn_app().await;
    let ann = app.sign_up("Ann").await;
    let bob = app.sign_up("Bob").await;
    let carol = app.sign_up("Carol").await;
    let group = app.create_group(&ann, "Typists", &[&bob, &carol]).await;
    let mut ann_socket = app.socket(&ann).await;
    let mut bob_socket = app.socket(&bob).await;
    let mut carol_socket = app.socket(&carol).await;
    app.wait_for_connections(3).await;

    ann_socket
        .send_json(json!({"type": "typing", "chatId": group.id, "isTyping": true}))
        .await;
    for socket in [&mut bob_socket, &mut carol_socket] {
        assert_eq!(
            socket.next_frame().await,
            ServerFrame::Typing {
                chat_id: group.id.clone(),
                user_id: ann.id.clone(),
                is_typing: true
            }
        );
    }
    ann_socket
        .send_json(json!({"type": "typing", "chatId": group.id, "isTyping": false}))
        .await;
    let stopped = bob_socket.next_frame().await;
    assert!(matches!(
        stopped,
        ServerFrame::Typing {
            is_typing: false,
            ..
        }
    ));

    // Ann's own socket got no typing echo: its next frame is her message.
    let sent = app.send(&ann, &group, "done typing").await;
    assert_eq!(ann_socket.next_message().await, sent);
}

/// A client sending typing signals in a loop gets a burst of them through
/// (10), then one per half second: each costs every member a frame, and
/// their sockets would fill and be dropped as too slow.
#[tokio::test]
async fn typing_signals_sent_in_a_loop_are_held_to_a_few() {
    let app = spawn_app().await;
    let (ann, bob, chat) = app.ann_and_bob().await;
    let mut ann_socket = app.socket(&ann).await;
    let mut bob_socket = app.socket(&bob).await;
    app.wait_for_connections(2).await;

    let began = std::time::Instant::now();
    for n in 0..200 {
        ann_socket
            .send_json(json!({"type": "typing", "chatId": chat.id, "isTyping": n % 2 == 0}))
            .await;
    }
    // Read after them on her socket: when it reaches Bob, so has every
    // typing signal that went through.
    ann_socket
        .send_json(
            json!({"type": "send", "chatId": chat.id, "content": "done", "clientId": "c-done"}),
        )
        .await;
    let mut through: u128 = 0;
    loop {
        match bob_socket.next_frame().await {
            ServerFrame::Typing { .. } => through += 1,
            ServerFrame::Message { message } if message.content == "done" => break,
            _ => {}
        }
    }
    let allowed = 10 + began.elapsed().as_millis() / 500 + 1;
    assert!(
        (1..=allowed).contains(&through),
        "{through} of 200 through, {allowed} allowed"
    );
}

#[tokio::test]
async fn a_removed_member_hears_nothing_more_and_cannot_send() {
    let app = spawn_app().await;
    let admin = app.sign_up("Admin").await;
    let bob = app.sign_up("Bob").await;
    let eve = app.sign_up("Eve").await;
    let group = app.create_group(&admin, "Private", &[&bob, &eve]).await;
    let side_chat = app.open_direct(&admin, &eve).await;
    let mut eve_socket = app.socket(&eve).await;
    app.wait_for_connections(1).await;

    app.put(
        &admin,
        "/api/chat/groupremove",
        json!({"chatId": group.id, "userId": eve.id}),
    )
    .await;
    let ServerFrame::Chat { chat } = eve_socket.next_frame().await else {
        panic!("eve is told she was removed")
    };
    assert!(chat.users.iter().all(|user| user.id != eve.id));

    // Group traffic after the removal, then a message in another chat: frames
    // arrive in order, so if the next one Eve gets is the side chat's, she got
    // nothing from the group in between.
    app.send(&admin, &group, "eve cannot read this").await;
    eve_socket
        .send_json(json!({"type": "typing", "chatId": group.id, "isTyping": true}))
        .await;
    let refused = eve_socket.next_frame().await;
    assert!(matches!(refused, ServerFrame::Error { .. }), "{refused:?}");
    let marker = app.send(&admin, &side_chat, "only this").await;
    assert_eq!(
        eve_socket.next_frame().await,
        ServerFrame::Message { message: marker }
    );

    let post = app
        .post(
            &eve,
            "/api/message",
            json!({"chatId": group.id, "content": "let me back"}),
        )
        .await;
    assert_eq!(post.status(), StatusCode::FORBIDDEN);
    eve_socket
        .send_json(
            json!({"type": "send", "chatId": group.id, "content": "hello?", "clientId": "e1"}),
        )
        .await;
    let ServerFrame::Error {
        client_id, retry, ..
    } = eve_socket.next_frame().await
    else {
        panic!("the send is refused")
    };
    assert_eq!(client_id.as_deref(), Some("e1"));
    assert!(!retry, "refused for good: sending it again cannot help");
    let history = app.get(&eve, &format!("/api/message/{}", group.id)).await;
    assert_eq!(history.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn after_a_reconnect_the_client_catches_up_from_its_last_seq() {
    let app = spawn_app().await;
    let (ann, bob, chat) = app.ann_and_bob().await;
    let mut bob_socket = app.socket(&bob).await;
    app.wait_for_connections(1).await;

    app.send(&ann, &chat, "one").await;
    let last_seen = bob_socket.next_message().await.seq;
    drop(bob_socket);
    app.wait_for_connections(0).await;

    for text in ["two", "three", "four"] {
        app.send(&ann, &chat, text).await;
    }
    let mut bob_socket = app.socket(&bob).await;
    app.wait_for_connections(1).await;
    let missed = app
        .history(&bob, &chat, &format!("?after={last_seen}"))
        .await;
    let texts: Vec<&str> = missed.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["two", "three", "four"]);
    let seqs: Vec<i64> = missed.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [2, 3, 4]);

    let live = app.send(&ann, &chat, "five").await;
    assert_eq!(bob_socket.next_message().await, live);
}

#[tokio::test]
async fn history_pages_forward_and_backward_in_seq_order() {
    let app = spawn_app().await;
    let (ann, bob, chat) = app.ann_and_bob().await;
    for i in 1..=7 {
        app.send(
            if i % 2 == 0 { &ann } else { &bob },
            &chat,
            &format!("m{i}"),
        )
        .await;
    }
    let seqs = |page: Vec<Message>| page.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(app.history(&ann, &chat, "?limit=3").await), [5, 6, 7]);
    assert_eq!(
        seqs(app.history(&ann, &chat, "?before=5&limit=3").await),
        [2, 3, 4]
    );
    assert_eq!(seqs(app.history(&ann, &chat, "?before=2").await), [1]);
    assert_eq!(seqs(app.history(&ann, &chat, "?after=5").await), [6, 7]);
    assert_eq!(
        seqs(app.history(&bob, &chat, "").await),
        [1, 2, 3, 4, 5, 6, 7]
    );
    for bad in [
        "?limit=0",
        "?limit=201",
        "?after=1&before=3",
        "?after=-1",
        "?after=x",
    ] {
        let response = app
            .get(&ann, &format!("/api/message/{}{bad}", chat.id))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn a_retried_client_id_is_stored_once() {
    let app = spawn_app().await;
    let (ann, bob, chat) = app.ann_and_bob().await;
    let body = json!({"chatId": chat.id, "content": "only once", "clientId": "retry-1"});

    let first = app.post(&ann, "/api/message", body.clone()).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Message = first.json().await.expect("message");
    let retry = app.post(&ann, "/api/message", body).await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.json::<Message>().await.expect("message"), first);

    // The same id again over the socket is the same message too, even
    // when wrongly marked as a first try (the server still remembers it).
    let mut socket = app.socket(&ann).await;
    socket
        .send_json(json!({"type": "send", "chatId": chat.id, "content": "only once", "clientId": "retry-1", "firstTry": true}))
        .await;
    // The retry is announced again (members drop it by id), then acked.
    assert_eq!(socket.next_message().await, first);
    let ServerFrame::Ack { message, .. } = socket.next_frame().await else {
        panic!("expected an ack")
    };
    assert_eq!(message, first);

    // Another sender may use the same client id.
    let bobs = app
        .post(
            &bob,
            "/api/message",
            json!({"chatId": chat.id, "content": "mine", "clientId": "retry-1"}),
        )
        .await;
    assert_eq!(bobs.status(), StatusCode::CREATED);

    let history = app.history(&ann, &chat, "").await;
    assert_eq!(history.len(), 2);
    assert_eq!(history.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
}

/// A removed member's retry of a message sent before the removal is
/// refused like any send, and does not reach the group again.
#[tokio::test]
async fn a_removed_member_cannot_replay_an_earlier_client_id() {
    let app = spawn_app().await;
    let admin = app.sign_up("Admin").await;
    let bob = app.sign_up("Bob").await;
    let carol = app.sign_up("Carol").await;
    let group = app.create_group(&admin, "Team", &[&bob, &carol]).await;
    let side_chat = app.open_direct(&admin, &carol).await;
    let body = json!({"chatId": group.id, "content": "before", "clientId": "b1"});
    let first = app.post(&bob, "/api/message", body.clone()).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let removed = app
        .put(
            &admin,
            "/api/chat/groupremove",
            json!({"chatId": group.id, "userId": bob.id}),
        )
        .await;
    assert_eq!(removed.status(), StatusCode::OK);
    let mut carol_socket = app.socket(&carol).await;
    app.wait_for_connections(1).await;

    let replay = app.post(&bob, "/api/message", body).await;
    assert_eq!(replay.status(), StatusCode::FORBIDDEN);
    // Frames arrive in order: the side chat's message is the next Carol
    // gets, so the replay did not reach her.
    let marker = app.send(&admin, &side_chat, "only this").await;
    assert_eq!(carol_socket.next_message().await, marker);
}

#[tokio::test]
async fn client_ids_retried_at_a_server_that_never_saw_them_are_found_in_the_database() {
    let mut first_server = spawn_app().await;
    let (ann, _, chat) = first_server.ann_and_bob().await;
    // Marked as first tries, as the app marks a message's first send: the
    // server does not look for earlier copies of these.
    let body = |n: usize, first_try: bool| json!({"chatId": chat.id, "content": format!("m{n}"), "clientId": format!("c{n}"), "firstTry": first_try});
    let mut sent = Vec::new();
    for n in 0..3 {
        let response = first_server.post(&ann, "/api/message", body(n, true)).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        sent.push(response.json::<Message>().await.expect("message"));
    }

    // Another server on the same database, whose sequencer has seen none of
    // them (a restart): three retries and a new one, all at once, so that
    // they may be sequenced as one batch.
    first_server.stop().await;
    let (data_dir, database_url) = (
        first_server.data_dir.clone(),
        first_server.database_url.clone(),
    );
    let second_server = spawn_app_with(|config| {
        config.data_dir = Some(data_dir);
        config.database_url = database_url;
    })
    .await;
    let answers = futures_util::future::join_all(
        (0..4).map(|n| second_server.post(&ann, "/api/message", body(n, n == 3))),
    )
    .await;
    let mut statuses = Vec::new();
    let mut messages = Vec::new();
    for answer in answers {
        statuses.push(answer.status());
        messages.push(answer.json::<Message>().await.expect("message"));
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::CREATED
        ]
    );
    assert_eq!(
        messages[..3],
        sent[..],
        "the retries are the messages sent before"
    );
    assert_eq!(messages[3].seq, 4);
    let history = second_server.history(&ann, &chat, "").await;
    assert_eq!(
        history.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
}

#[tokio::test]
async fn concurrent_senders_get_gap_free_seqs() {
    let app = spawn_app().await;
    let (ann, bob, chat) = app.ann_and_bob().await;
    let mut sends = Vec::new();
    for i in 0..40 {
        let sender = if i % 2 == 0 { ann.clone() } else { bob.clone() };
        let (http, url, chat_id) = (app.http.clone(), app.url("/api/message"), chat.id.clone());
        sends.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(sender.token)
                .json(&json!({"chatId": chat_id, "content": format!("m{i}")}))
                .send()
                .await
                .expect("request")
                .status()
        }));
    }
    for send in sends {
        assert_eq!(send.await.expect("task"), StatusCode::CREATED);
    }
    let history = app.history(&ann, &chat, "?limit=200").await;
    assert_eq!(
        history.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
}
