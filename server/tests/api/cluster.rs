//! Several nodes as one: two `natter-server`s sharing PostgreSQL and
//! RabbitMQ, with users connected to different nodes.

use natter_shared::ServerFrame;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Deployment, PATIENCE, assert_error, spawn_cluster, wait_until};

#[tokio::test]
async fn users_on_different_nodes_chat_in_real_time() {
    let nodes = spawn_cluster(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let ann = a.sign_up("Ann").await;
    let bob = b.sign_up("Bob").await;
    let mut ann_socket = a.socket(&ann).await;
    let mut bob_socket = b.socket(&bob).await;

    // A chat opened on node A reaches Bob on node B.
    let chat = a.open_direct(&ann, &bob).await;
    let ServerFrame::Chat { chat: seen } = bob_socket.next_frame().await else {
        panic!("bob hears of the new chat")
    };
    assert_eq!(seen.id, chat.id);

    // A message sent through node A, live on node B, and the other way round.
    let sent = a.send(&ann, &chat, "hello from node A").await;
    assert_eq!(bob_socket.next_message().await, sent);
    let reply = b.send(&bob, &chat, "hello from node B").await;
    assert_eq!(reply.seq, 2, "seqs stay consecutive across nodes");
    let ann_sees: Vec<_> = [
        ann_socket.next_message().await,
        ann_socket.next_message().await,
    ]
    .into();
    assert_eq!(
        ann_sees[1], reply,
        "ann also gets her own message, then bob's"
    );

    // Typing on node B shows on node A.
    bob_socket
        .send_json(json!({"type": "typing", "chatId": chat.id, "isTyping": true}))
        .await;
    assert_eq!(
        ann_socket.next_frame().await,
        ServerFrame::Typing {
            chat_id: chat.id.clone(),
            user_id: bob.id.clone(),
            is_typing: true
        }
    );
}

#[tokio::test]
async fn a_member_removed_on_one_node_stops_receiving_on_the_other_at_once() {
    let nodes = spawn_cluster(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let admin = a.sign_up("Admin").await;
    let bob = a.sign_up("Bob").await;
    let carol = a.sign_up("Carol").await;
    let group = a.create_group(&admin, "Ops", &[&bob, &carol]).await;
    let side_chat = a.open_direct(&admin, &carol).await;
    let mut bob_socket = b.socket(&bob).await;
    let mut carol_socket = b.socket(&carol).await;

    a.put(
        &admin,
        "/api/chat/groupremove",
        json!({"chatId": group.id, "userId": carol.id}),
    )
    .await;
    // Both hear of the removal. The frames of the group's and the side
    // chat's creation may reach node B after the sockets opened (events
    // travel between nodes asynchronously), and come first.
    for socket in [&mut bob_socket, &mut carol_socket] {
        socket
            .next_where(|frame| {
                matches!(frame, ServerFrame::Chat { chat }
                    if chat.id == group.id && chat.users.iter().all(|user| user.id != carol.id))
            })
            .await;
    }

    let after = a.send(&admin, &group, "carol is gone").await;
    assert_eq!(bob_socket.next_message().await, after);
    // Events reach a node in the order they were published: if Carol's next
    // frame is the side chat's message, the group's never reached her.
    let marker = a.send(&admin, &side_chat, "just for carol").await;
    assert_eq!(
        carol_socket.next_frame().await,
        ServerFrame::Message { message: marker }
    );
}

#[tokio::test]
async fn a_user_with_sockets_on_both_nodes_gets_each_event_once_on_each() {
    let nodes = spawn_cluster(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (ann, bob, chat) = a.ann_and_bob().await;
    let mut on_a = a.socket(&bob).await;
    let mut on_b = b.socket(&bob).await;

    let first = a.send(&ann, &chat, "one").await;
    let second = b.send(&ann, &chat, "two").await;
    for socket in [&mut on_a, &mut on_b] {
        let mut got = vec![socket.next_message().await, socket.next_message().await];
        got.sort_by_key(|message| message.seq);
        assert_eq!(got, [first.clone(), second.clone()]);
    }
    // Nothing was doubled: the next frame on each is the next message.
    let third = a.send(&ann, &chat, "three").await;
    assert_eq!(on_a.next_message().await, third);
    assert_eq!(on_b.next_message().await, third);
}

/// A logout on one node ends the session on every node: one running learns
/// of it within about a second (`auth::sessions`), one started after it
/// knows at once; the user's other session goes on everywhere.
#[tokio::test]
async fn a_logout_on_one_node_ends_the_session_on_every_node() {
    let deployment = Deployment::new().await;
    let a = deployment.spawn_node(0, |_| {}).await;
    let b = deployment.spawn_node(1, |_| {}).await;
    let ann = a.sign_up("Ann").await;
    let other_device = a.log_in(&ann).await;
    assert_eq!(b.get(&ann, "/api/chat").await.status(), StatusCode::OK);

    assert_eq!(a.log_out(&ann.token).await.status(), StatusCode::NO_CONTENT);
    // Each node reads the logouts every second (`FOLLOW_EVERY`); how soon
    // is not timed here, where a busy machine would fail it.
    wait_until(
        "node B to refuse the logged-out token",
        PATIENCE,
        async || b.get(&ann, "/api/chat").await.status() == StatusCode::UNAUTHORIZED,
    )
    .await;
    let c = deployment.spawn_node(2, |_| {}).await;
    let refused = c.get(&ann, "/api/chat").await;
    assert_eq!(
        assert_error(refused, StatusCode::UNAUTHORIZED).await,
        "the session was logged out: log in again"
    );
    for node in [&a, &b, &c] {
        let chats = node.get_with(&other_device, "/api/chat").await;
        assert_eq!(chats.status(), StatusCode::OK);
    }
}

/// A node without RabbitMQ that did not stop cleanly on a database (its
/// mark left there) may have delivered seqs it never stored: nodes on
/// RabbitMQ started after it do not give them to other messages, and move
/// past them once.
#[tokio::test]
async fn nodes_on_rabbitmq_move_past_the_seqs_of_an_unfinished_run_without_it() {
    use natter_server::pipeline::SEQS_SKIPPED_AFTER_A_CRASH as SKIP;
    use natter_server::store::{PgStore, Store};

    let deployment = Deployment::new().await;
    let mut first = deployment.spawn_node(0, |_| {}).await;
    let ann = first.sign_up("Ann").await;
    let bob = first.sign_up("Bob").await;
    let chat = first.open_direct(&ann, &bob).await;
    assert_eq!(first.send(&ann, &chat, "one").await.seq, 1);
    first.stop().await;

    // What a node without RabbitMQ leaves behind when it dies.
    let store = PgStore::connect(&deployment.database, 2)
        .await
        .expect("PostgreSQL");
    store.begin_local_run(0).await.expect("marked");

    let mut second = deployment.spawn_node(1, |_| {}).await;
    let after = sent_once_linked(&second, &ann, &chat, "two").await;
    assert_eq!(after.seq, 1 + SKIP + 1, "past what it may have delivered");
    second.stop().await;
    let third = deployment.spawn_node(2, |_| {}).await;
    let again = sent_once_linked(&third, &ann, &chat, "three").await;
    assert_eq!(again.seq, after.seq + 1, "once");
}

/// Sends through a node just started, again (under one clientId) while it
/// says RabbitMQ is not linked yet.
async fn sent_once_linked(
    node: &crate::helpers::TestApp,
    user: &crate::helpers::TestUser,
    chat: &natter_shared::Chat,
    content: &str,
) -> natter_shared::Message {
    let body = json!({"chatId": chat.id, "content": content, "clientId": content});
    let mut message = None;
    wait_until("the node takes a message", PATIENCE, async || {
        let response = node.post(user, "/api/message", body.clone()).await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            return false;
        }
        assert_eq!(response.status(), StatusCode::CREATED);
        message = Some(response.json().await.expect("message"));
        true
    })
    .await;
    message.expect("sent")
}
