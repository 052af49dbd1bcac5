use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use natter_shared::limits::PIC_MAX_BYTES;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, signed_token, spawn_app};

fn pics_stored(app: &TestApp) -> usize {
    std::fs::read_dir(app.data_dir.join("pics"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_picture_that_is_not_an_image_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let response = app
        .sign_up_with_pic("script@example.org", b"#!/bin/sh\necho pwned\n")
        .await;
    let error = assert_error(response, StatusCode::BAD_REQUEST).await;
    assert!(error.contains("PNG"), "{error}");
    assert_eq!(pics_stored(&app), 0);
    app.assert_no_account("script@example.org").await;
}

#[tokio::test]
async fn oversized_pictures_are_refused_with_413() {
    let app = spawn_app().await;
    // A real PNG signature and header, padded past the limit.
    let mut big = include_bytes!("fixtures/avatar.png").to_vec();
    big.resize(PIC_MAX_BYTES + 1, 0);
    let response = app.sign_up_with_pic("big@example.org", &big).await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    let mut huge = include_bytes!("fixtures/avatar.png").to_vec();
    huge.resize(3 * PIC_MAX_BYTES, 0);
    let response = app.sign_up_with_pic("huge@example.org", &huge).await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(pics_stored(&app), 0);
}

#[tokio::test]
async fn pictures_with_absurd_dimensions_are_refused() {
    let app = spawn_app().await;
    let mut wide = include_bytes!("fixtures/avatar.png").to_vec();
    // IHDR width lives at bytes 16..20.
    wide[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    let response = app.sign_up_with_pic("wide@example.org", &wide).await;
    assert_error(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(pics_stored(&app), 0);
}

#[tokio::test]
async fn invalid_sign_ups_are_refused_with_reasons() {
    let app = spawn_app().await;
    let cases = [
        json!({"name": "", "email": "a@example.org", "password": "long enough"}),
        json!({"name": "x".repeat(101), "email": "a@example.org", "password": "long enough"}),
        json!({"name": "Ann", "email": "not-an-email", "password": "long enough"}),
        json!({"name": "Ann", "email": format!("{}@example.org", "a".repeat(260)), "password": "long enough"}),
        json!({"name": "Ann", "email": "a@example.org", "password": "short"}),
        json!({"name": "Ann", "email": "a@example.org", "password": "p".repeat(257)}),
        json!({"name": "Ann", "email": "a@example.org"}),
        json!(["not", "an", "object"]),
    ];
    for body in cases {
        let response = app
            .http
            .post(app.url("/api/user"))
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_error(response, StatusCode::BAD_REQUEST).await;
    }
    let broken = app
        .http
        .post(app.url("/api/user"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .expect("request");
    assert_error(broken, StatusCode::BAD_REQUEST).await;
}

/// PostgreSQL refuses the NUL character in any text (SQLite stores it): a
/// NUL anywhere a client can put one is a 4xx on both, and what is sent
/// after it is stored as usual.
#[tokio::test]
async fn nul_characters_are_refused_wherever_a_client_can_put_one() {
    let app = spawn_app().await;
    let (ann, bob, chat) = app.ann_and_bob().await;
    let content = app
        .post(
            &ann,
            "/api/message",
            json!({"chatId": chat.id, "content": "a\u{0}b"}),
        )
        .await;
    let error = assert_error(content, StatusCode::BAD_REQUEST).await;
    assert!(error.contains("NUL"), "{error}");
    let unknown_chat = app
        .post(
            &ann,
            "/api/message",
            json!({"chatId": "x\u{0}", "content": "hi"}),
        )
        .await;
    assert_error(unknown_chat, StatusCode::NOT_FOUND).await;
    for path in [
        "/api/message/x%00",
        "/api/chat/x%00",
        "/api/user/x%00",
        "/api/user?search=a%00",
    ] {
        let status = app.get(&ann, path).await.status();
        assert!(status.is_client_error(), "{path}: {status}");
    }
    let bodies = [
        ("/api/chat", json!({"userId": "x\u{0}"})),
        (
            "/api/chat/group",
            json!({"name": "Team", "users": [bob.id, "x\u{0}"]}),
        ),
    ];
    for (path, body) in bodies {
        let status = app.post(&ann, path, body.clone()).await.status();
        assert!(status.is_client_error(), "{path} {body}: {status}");
    }
    // Each otherwise well formed, so that the NUL is what reaches the
    // store (a direct chat would be refused before, as not a group).
    let group = app.create_group(&ann, "Team", &[&bob]).await;
    let puts = [
        (
            "/api/chat/rename",
            json!({"chatId": "x\u{0}", "chatName": "Team"}),
        ),
        (
            "/api/chat/rename",
            json!({"chatId": group.id, "chatName": "a\u{0}b"}),
        ),
        (
            "/api/chat/groupadd",
            json!({"chatId": "x\u{0}", "userId": bob.id}),
        ),
        (
            "/api/chat/groupadd",
            json!({"chatId": group.id, "userId": "x\u{0}"}),
        ),
        (
            "/api/chat/groupremove",
            json!({"chatId": group.id, "userId": "x\u{0}"}),
        ),
    ];
    for (path, body) in puts {
        let status = app.put(&ann, path, body.clone()).await.status();
        assert!(status.is_client_error(), "{path} {body}: {status}");
    }

    let after = app.send(&ann, &chat, "after the refusals").await;
    let stored = app.history(&bob, &chat, "").await;
    assert_eq!(stored.last().map(|m| &m.id), Some(&after.id));
}

#[tokio::test]
async fn message_and_search_limits_are_enforced() {
    let app = spawn_app().await;
    let (ann, _, chat) = app.ann_and_bob().await;
    for content in [String::new(), "  \n ".into(), "x".repeat(4097)] {
        let response = app
            .post(
                &ann,
                "/api/message",
                json!({"chatId": chat.id, "content": content}),
            )
            .await;
        assert_error(response, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(
        app.post(
            &ann,
            "/api/message",
            json!({"chatId": chat.id, "content": "é".repeat(4096)})
        )
        .await
        .status(),
        StatusCode::CREATED,
        "the limit counts characters, not bytes"
    );
    let unknown_chat = app
        .post(
            &ann,
            "/api/message",
            json!({"chatId": "nope", "content": "hi"}),
        )
        .await;
    assert_error(unknown_chat, StatusCode::NOT_FOUND).await;
    let unknown_history = app.get(&ann, "/api/message/nope").await;
    assert_error(unknown_history, StatusCode::NOT_FOUND).await;

    let long_search = app
        .get(&ann, &format!("/api/user?search={}", "q".repeat(101)))
        .await;
    assert_error(long_search, StatusCode::BAD_REQUEST).await;

    let huge_body = app
        .post(
            &ann,
            "/api/message",
            json!({"chatId": chat.id, "content": "x".repeat(100_000)}),
        )
        .await;
    assert_error(huge_body, StatusCode::PAYLOAD_TOO_LARGE).await;
}

fn forge(header: Value, claims: Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        signature
    )
}

#[tokio::test]
async fn tampered_expired_and_unsigned_tokens_are_refused() {
    let app = spawn_app().await;
    let ann = app.sign_up("Ann").await;
    let bob = app.sign_up("Bob").await;
    let now = chrono::Utc::now().timestamp();

    // Ann's token with Bob's id swapped in, keeping Ann's signature.
    let parts: Vec<&str> = ann.token.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(json!({"sub": bob.id, "iat": now, "exp": now + 3600}).to_string()),
        parts[2]
    );
    let unsigned = forge(
        json!({"alg": "none", "typ": "JWT"}),
        json!({"sub": bob.id, "iat": now, "exp": now + 3600}),
        "",
    );
    let expired = signed_token(&json!({"sub": ann.id, "iat": now - 7200, "exp": now - 3600}));

    for token in [tampered, unsigned, expired.clone(), "not.a.token".into()] {
        let response = app
            .http
            .get(app.url("/api/chat"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_error(response, StatusCode::UNAUTHORIZED).await;
    }
    let response = app
        .http
        .get(app.url("/api/chat"))
        .bearer_auth(&expired)
        .send()
        .await
        .expect("request");
    assert!(
        assert_error(response, StatusCode::UNAUTHORIZED)
            .await
            .contains("expired")
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    let missing = app
        .http
        .get(app.url("/api/nothing-here"))
        .send()
        .await
        .expect("request");
    assert_error(missing, StatusCode::NOT_FOUND).await;
    let wrong_method = app
        .http
        .delete(app.url("/api/chat"))
        .send()
        .await
        .expect("request");
    assert_error(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
    let not_json = app
        .http
        .post(app.url("/api/user/login"))
        .header("content-type", "text/plain")
        .body(r#"{"email":"a@b.c","password":"whatever"}"#)
        .send()
        .await
        .expect("request");
    assert_error(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let bad_pic = app
        .http
        .get(app.url("/api/pic/..%2F..%2Fetc%2Fpasswd"))
        .send()
        .await
        .expect("request");
    assert_error(bad_pic, StatusCode::NOT_FOUND).await;
}

/// A database busy past the server's patience (SQLite's write lock, held
/// from outside for longer than its 10 s busy timeout) is a 503: try again,
/// not an internal error.
#[tokio::test]
async fn a_database_busy_for_too_long_answers_503() {
    let app = spawn_app().await;
    if app.database_url.is_some() {
        return; // SQLite's lock; PostgreSQL's outages are in tests/faults.rs.
    }
    let ann = app.sign_up("Ann").await;
    let bob = app.sign_up("Bob").await;
    let group = app.create_group(&ann, "Team", &[&bob]).await;
    let lock = crate::helpers::hold_write_lock(&app.data_dir.join("natter.db")).await;
    let rename = app
        .put(
            &ann,
            "/api/chat/rename",
            json!({"chatId": group.id, "chatName": "Renamed"}),
        )
        .await;
    drop(lock);
    assert_eq!(rename.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = rename.json().await.expect("json");
    assert_eq!(
        body["error"],
        "the database is unavailable for a moment: try again"
    );
}

/// A genuine token whose account this server does not have (a database
/// restored from before its sign-up, or another server with the same
/// secret) starts no chat: 401, log in again, not a 500.
#[tokio::test]
async fn a_token_for_an_account_not_here_starts_no_chat() {
    let app = spawn_app().await;
    let bob = app.sign_up("Bob").await;
    let now = chrono::Utc::now().timestamp();
    let ghost = signed_token(&json!({"sub": "no-such-account", "iat": now, "exp": now + 3600}));
    for (path, body) in [
        ("/api/chat", json!({"userId": bob.id})),
        (
            "/api/chat/group",
            json!({"name": "Team", "users": [bob.id]}),
        ),
    ] {
        let response = app
            .http
            .post(app.url(path))
            .bearer_auth(&ghost)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_error(response, StatusCode::UNAUTHORIZED).await;
    }
}
