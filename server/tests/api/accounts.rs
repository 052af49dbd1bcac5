use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{
    PATIENCE, assert_error, claims_of, renew, renewed, retry_after, signed_token, spawn_app,
    spawn_app_with, until_past, wait_until,
};

const AVATAR: &[u8] = include_bytes!("fixtures/avatar.png");

fn sign_up_form(name: &str, email: &str, pic: Option<(&'static [u8], &str)>) -> Form {
    let form = Form::new()
        .text("name", name.to_owned())
        .text("email", email.to_owned())
        .text("password", "a long enough password");
    match pic {
        Some((bytes, file_name)) => form.part(
            "pic",
            Part::bytes(bytes)
                .file_name(file_name.to_owned())
                .mime_str("image/png")
                .expect("mime"),
        ),
        None => form,
    }
}

#[tokio::test]
async fn sign_up_with_a_picture_then_fetch_it_back() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/api/user"))
        .multipart(sign_up_form(
            "Ann Lee",
            "Ann@Example.org",
            Some((AVATAR, "me.png")),
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["name"], "Ann Lee");
    assert_eq!(
        body["email"], "ann@example.org",
        "emails are stored lower-cased"
    );
    assert!(
        body["token"]
            .as_str()
            .is_some_and(|token| !token.is_empty())
    );
    assert!(body.get("password").is_none() && body.get("passwordHash").is_none());

    let pic = body["pic"].as_str().expect("a picture URL");
    let fetched = app.http.get(app.url(pic)).send().await.expect("request");
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.headers()["content-type"], "image/png");
    assert_eq!(fetched.bytes().await.expect("bytes").as_ref(), AVATAR);
}

#[tokio::test]
async fn sign_up_as_json_without_a_picture_then_log_in() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/api/user"))
        .json(&json!({"name": "Bob", "email": "bob@example.org", "password": "hunter2hunter2"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("json");
    assert_eq!(created["pic"], Value::Null);

    let response = app.try_log_in(" BOB@example.org", "hunter2hunter2").await;
    assert_eq!(response.status(), StatusCode::OK);
    let logged_in: Value = response.json().await.expect("json");
    assert_eq!(logged_in["id"], created["id"]);
    let token = logged_in["token"].as_str().expect("token");
    let me = app
        .http
        .get(app.url(&format!(
            "/api/user/{}",
            created["id"].as_str().expect("id")
        )))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(me.status(), StatusCode::OK, "the login token works");
}

/// Past the line for a core (`NATTER_PASSWORD_QUEUE`, none here), a login
/// is answered 503 at once with a reason, and once the line is gone one is
/// taken again.
#[tokio::test]
async fn past_a_full_line_for_hashing_a_login_is_told_to_try_again() {
    let app = spawn_app_with(|config| config.password_queue = 0).await;
    let user = app.sign_up("Dora").await;
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let mut refused = None;
    for round in 0..20 {
        // Each to an address of its own: one address's tries would run out
        // (`NATTER_LOGINS_PER_HOUR`) before the line is seen full.
        let emails: Vec<String> = (0..cores * 3 + 2)
            .map(|n| format!("nobody-{round}-{n}@example.org"))
            .collect();
        let burst = emails
            .iter()
            .map(|email| app.try_log_in(email, "a password"));
        for answer in futures_util::future::join_all(burst).await {
            if answer.status() != StatusCode::UNAUTHORIZED {
                refused = Some(answer);
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let refused = refused.expect("a login refused while every core hashed");
    let error = assert_error(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(error.contains("try again"), "{error}");

    let answer = app.try_log_in(&user.email, &user.password).await;
    assert_eq!(
        answer.status(),
        StatusCode::OK,
        "taken once the line is gone"
    );
}

/// Past `NATTER_LOGINS_PER_HOUR` tries with one address (three here),
/// right password or wrong, a login is refused with when to try again,
/// its password unchecked; an address without an account is counted the
/// same (else the refusal would tell which addresses have one), and other
/// addresses are not held back.
#[tokio::test]
async fn past_an_addresss_logins_for_the_hour_one_is_told_when_to_try_again() {
    let app = spawn_app_with(|config| {
        config.logins_per_hour = std::num::NonZeroU32::new(3).expect("not zero");
    })
    .await;
    let eve = app.sign_up("Eve").await;
    let login = async |email: &str, password: &str| app.try_log_in(email, password).await;
    assert_eq!(
        login(&eve.email, "a guess").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&eve.email, "another guess").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&eve.email, &eve.password).await.status(),
        StatusCode::OK
    );
    for password in ["a third guess", eve.password.as_str()] {
        let refused = login(&eve.email.to_uppercase(), password).await;
        let retry_after = retry_after(&refused);
        assert!(
            (1150..=1200).contains(&retry_after),
            "one try back every 20 minutes: {retry_after}"
        );
        let error = assert_error(refused, StatusCode::TOO_MANY_REQUESTS).await;
        assert!(error.contains("try again in 20 minutes"), "{error}");
    }

    for _ in 0..3 {
        assert_eq!(
            login("nobody@example.org", "a guess").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let unknown = login("nobody@example.org", "a guess").await;
    assert_eq!(unknown.status(), StatusCode::TOO_MANY_REQUESTS);

    let bob = app.sign_up("Bob").await;
    assert_eq!(
        login(&bob.email, &bob.password).await.status(),
        StatusCode::OK
    );
}

/// On a server that asks for an invitation code, a sign-up without it or
/// with another is refused, as JSON and as a form, before it is said
/// whether the email is taken (that is for those invited to learn); with
/// it, spaces around it aside, the account is made. Logins ask for none.
#[tokio::test]
async fn a_server_that_asks_for_an_invitation_code_takes_only_sign_ups_with_it() {
    const CODE: &str = "0123456789abcdef-team";
    let app = spawn_app_with(|config| {
        config.invitation_code = Some(CODE.into());
    })
    .await;
    let json_sign_up = async |email: &str, code: Option<&str>| {
        let mut body = json!({"name": "Fay", "email": email, "password": "a long enough password"});
        if let Some(code) = code {
            body["invitationCode"] = json!(code);
        }
        let request = app.http.post(app.url("/api/user")).json(&body);
        request.send().await.expect("request")
    };
    let refused = json_sign_up("fay@example.org", None).await;
    let error = assert_error(refused, StatusCode::FORBIDDEN).await;
    assert!(error.contains("asks for an invitation code"), "{error}");
    let refused = json_sign_up("fay@example.org", Some("0123456789abcdef-tean")).await;
    let error = assert_error(refused, StatusCode::FORBIDDEN).await;
    assert!(error.contains("not this server's"), "{error}");
    let form = |code: &str| {
        sign_up_form("Gil", "gil@example.org", Some((AVATAR, "me.png")))
            .text("invitationCode", code.to_owned())
    };
    let refused = app
        .http
        .post(app.url("/api/user"))
        .multipart(form(""))
        .send()
        .await
        .expect("request");
    assert_error(refused, StatusCode::FORBIDDEN).await;
    app.assert_no_account("fay@example.org").await;
    app.assert_no_account("gil@example.org").await;

    let made = json_sign_up("fay@example.org", Some(&format!(" {CODE} "))).await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let made = app
        .http
        .post(app.url("/api/user"))
        .multipart(form(CODE))
        .send()
        .await
        .expect("request");
    assert_eq!(made.status(), StatusCode::CREATED);
    let body: Value = made.json().await.expect("json");
    assert!(body["pic"].is_string(), "with its picture: {body}");

    let taken = json_sign_up("fay@example.org", None).await;
    assert_eq!(
        taken.status(),
        StatusCode::FORBIDDEN,
        "not told the email is taken"
    );
    let taken = json_sign_up("fay@example.org", Some(CODE)).await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    let login = app
        .try_log_in("fay@example.org", "a long enough password")
        .await;
    assert_eq!(login.status(), StatusCode::OK);
}

/// Behind a proxy the server trusts (`NATTER_TRUSTED_PROXIES`, here the
/// test itself at 127.0.0.1), logins are counted per client it names in
/// `X-Forwarded-For`: one client's tries used up leave another's.
#[tokio::test]
async fn behind_a_trusted_proxy_logins_are_counted_per_client() {
    let app = spawn_app_with(|config| {
        config.logins_per_hour = std::num::NonZeroU32::new(1).expect("not zero");
        config.trusted_proxies = vec![std::net::Ipv4Addr::LOCALHOST.into()];
    })
    .await;
    let eve = app.sign_up("Eve").await;
    let login = async |client: &str| {
        app.http
            .post(app.url("/api/user/login"))
            .header("x-forwarded-for", client)
            .json(&json!({"email": eve.email, "password": "a guess"}))
            .send()
            .await
            .expect("request")
            .status()
    };
    assert_eq!(login("192.0.2.1").await, StatusCode::UNAUTHORIZED);
    assert_eq!(login("192.0.2.1").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login("192.0.2.2").await, StatusCode::UNAUTHORIZED);
    // What a client writes itself, left of what the proxy appended, counts
    // for nothing.
    assert_eq!(
        login("192.0.2.3, 192.0.2.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// A sign-up whose form is slow to arrive holds a place while it is read
/// (`NATTER_SIGN_UP_FORMS`, one here): another is answered 503 at once
/// rather than read too; once the slow one's client hangs up, its place
/// is free again.
#[tokio::test]
async fn past_the_sign_ups_read_at_once_one_is_told_to_try_again() {
    use tokio::io::AsyncWriteExt;

    let app = spawn_app_with(|config| config.sign_up_forms = 1).await;
    let mut slow = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connected");
    let head = "POST /api/user HTTP/1.1\r\nHost: natter\r\n\
                Content-Type: multipart/form-data; boundary=b\r\n\
                Content-Length: 1000000\r\n\r\n--b\r\n";
    slow.write_all(head.as_bytes()).await.expect("sent");
    // Refused by its validation (400) once read: no account is made.
    let unnamed = async || {
        app.http
            .post(app.url("/api/user"))
            .json(&json!({"name": "", "email": "e@example.org", "password": "long enough"}))
            .send()
            .await
            .expect("request")
    };
    let mut refused = None;
    wait_until(
        "a sign-up refused while one is read",
        PATIENCE,
        async || {
            let answer = unnamed().await;
            if answer.status() == StatusCode::BAD_REQUEST {
                return false;
            }
            refused = Some(answer);
            true
        },
    )
    .await;
    let error = assert_error(refused.expect("refused"), StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(error.contains("try again"), "{error}");

    drop(slow);
    wait_until("the place given back", PATIENCE, async || {
        unnamed().await.status() == StatusCode::BAD_REQUEST
    })
    .await;
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    let user = app.sign_up("Carol").await;
    let mut answers = Vec::new();
    for (email, password) in [
        (user.email.as_str(), "not her password"),
        ("nobody@example.org", user.password.as_str()),
        ("not an email", "whatever-password"),
    ] {
        let response = app.try_log_in(email, password).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        answers.push(response.text().await.expect("body"));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[1], answers[2]);
    assert!(answers[0].contains("\"error\""));
}

#[tokio::test]
async fn an_email_can_only_be_taken_once() {
    let app = spawn_app().await;
    let user = app.sign_up("Dan").await;
    let response = app
        .http
        .post(app.url("/api/user"))
        .json(&json!({"name": "Other Dan", "email": user.email.to_uppercase(), "password": "another password"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.expect("json");
    assert!(body["error"].as_str().expect("error").contains("email"));
}

#[tokio::test]
async fn search_matches_name_or_email_ignoring_case_and_never_the_caller() {
    let app = spawn_app().await;
    let alice = app.sign_up("Alice").await;
    let alicia = app.sign_up("Alicia").await;
    let bob = app.sign_up("Bob").await;

    let found: Vec<Value> = app
        .get(&bob, "/api/user?search=ALI")
        .await
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = found
        .iter()
        .filter_map(|user| user["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [alice.id.as_str(), alicia.id.as_str()],
        "both, ordered by name"
    );

    let by_email: Vec<Value> = app
        .get(&alice, &format!("/api/user?search={}", bob.email))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(by_email.len(), 1);
    assert_eq!(by_email[0]["id"], bob.id.as_str());

    let not_me: Vec<Value> = app
        .get(&alice, "/api/user?search=alice")
        .await
        .json()
        .await
        .expect("json");
    assert!(not_me.iter().all(|user| user["id"] != alice.id.as_str()));

    let everyone: Vec<Value> = app
        .get(&alice, "/api/user")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(everyone.len(), 2, "no query lists everyone else");
}

#[tokio::test]
async fn search_returns_at_most_fifty_users() {
    let app = spawn_app().await;
    let searcher = app.sign_up("Searcher").await;
    for i in 0..55 {
        let response = app
            .http
            .post(app.url("/api/user"))
            .json(&json!({"name": format!("Member {i}"), "email": format!("member{i}@crowd.org"), "password": "crowd password"}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let found: Vec<Value> = app
        .get(&searcher, "/api/user?search=crowd")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(found.len(), 50);
}

#[tokio::test]
async fn user_info_is_protected_and_unknown_ids_are_404() {
    let app = spawn_app().await;
    let ann = app.sign_up("Ann").await;
    let bob = app.sign_up("Bob").await;
    let info = app.user_info(&ann, &bob.id).await;
    assert_eq!(info.name, "Bob");
    assert_eq!(info.email, bob.email);

    let unknown = app.get(&ann, "/api/user/does-not-exist").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let anonymous = app
        .http
        .get(app.url(&format!("/api/user/{}", bob.id)))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

/// Media types ignore case: a form sent as `Multipart/Form-Data` is a form.
#[tokio::test]
async fn a_multipart_sign_up_is_read_whatever_the_case_of_its_media_type() {
    let app = spawn_app().await;
    let body = [
        "--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nAnn\r\n",
        "--XyZ\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nann@example.org\r\n",
        "--XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\na long enough password\r\n",
        "--XyZ--\r\n",
    ]
    .concat();
    let response = app
        .http
        .post(app.url("/api/user"))
        .header("content-type", "Multipart/Form-Data; boundary=XyZ")
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
}

/// Search results come in the same order on both databases: by name
/// ignoring case, whatever the database's collation (SQLite put "Bob"
/// before "alice", PostgreSQL after; past a page they picked different
/// users).
#[tokio::test]
async fn search_results_are_ordered_by_name_ignoring_case() {
    let app = spawn_app().await;
    let zed = app.sign_up("Zed").await;
    app.sign_up("Bob").await;
    app.sign_up("alice").await;
    let found: Vec<Value> = app
        .get(&zed, "/api/user?search=example")
        .await
        .json()
        .await
        .expect("users");
    let names: Vec<&str> = found
        .iter()
        .filter_map(|user| user["name"].as_str())
        .collect();
    assert_eq!(names, ["alice", "Bob"]);
}

/// A session in use need not end with its first token: a good token is
/// renewed for one that expires later and works, for the same user. An
/// expired one, or one for an account this server lacks, is not.
#[tokio::test]
async fn a_good_token_is_renewed_and_an_expired_one_is_not() {
    let app = spawn_app().await;
    let ann = app.sign_up("Ann").await;
    let first = claims_of(&ann.token);
    // Tokens count in seconds: the renewal comes a second later.
    until_past(first["iat"].as_i64().expect("iat")).await;
    let response = renew(&app, &ann.token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let renewed: Value = response.json().await.expect("json");
    assert_eq!(renewed["id"], ann.id.as_str());
    let token = renewed["token"].as_str().expect("token");
    let second = claims_of(token);
    assert_eq!(second["sub"], ann.id.as_str());
    assert!(
        second["exp"].as_i64() > first["exp"].as_i64(),
        "expires later: {first} then {second}"
    );
    let chats = app.get_with(token, "/api/chat").await;
    assert_eq!(chats.status(), StatusCode::OK, "the new token works");

    let now = chrono::Utc::now().timestamp();
    let expired = signed_token(&json!({"sub": ann.id, "iat": now - 7200, "exp": now - 3600}));
    let error = assert_error(renew(&app, &expired).await, StatusCode::UNAUTHORIZED).await;
    assert!(error.contains("expired"), "says why: {error}");
    let stranger = signed_token(&json!({"sub": "no-such-user", "iat": now, "exp": now + 3600}));
    assert_eq!(
        renew(&app, &stranger).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// However often it is renewed, a session ends `NATTER_SESSION_MAX_SECS`
/// after its login: renewals keep its start and never reach past its end,
/// and then its tokens are refused, renewed or not. Logging in again starts
/// a new one.
#[tokio::test]
async fn a_session_ends_at_its_longest_however_often_renewed() {
    let app = spawn_app_with(|config| {
        config.token_ttl_secs = 3600;
        config.session_max_secs = 3;
    })
    .await;
    let ann = app.sign_up("Ann").await;
    let first = claims_of(&ann.token);
    let logged_in = first["auth_time"].as_i64().expect("auth_time");
    assert_eq!(first["exp"].as_i64(), Some(logged_in + 3), "{first}");

    until_past(logged_in).await;
    let renewed = renewed(&app, &ann.token).await;
    let second = claims_of(&renewed);
    assert_eq!(second["auth_time"].as_i64(), Some(logged_in), "{second}");
    assert_eq!(second["exp"].as_i64(), Some(logged_in + 3), "{second}");
    assert!(second["iat"].as_i64() > first["iat"].as_i64());

    until_past(logged_in + 3).await;
    let error = assert_error(renew(&app, &renewed).await, StatusCode::UNAUTHORIZED).await;
    assert!(
        error.contains("expired"),
        "the renewed token's own end: {error}"
    );
    // A token of that session that its own expiry would still allow (as
    // one signed before the setting was lowered) is refused too.
    let lasting = signed_token(&json!({
        "sub": ann.id, "iat": logged_in, "exp": logged_in + 3600, "auth_time": logged_in
    }));
    let chats = app.get_with(&lasting, "/api/chat").await;
    assert_eq!(
        assert_error(chats, StatusCode::UNAUTHORIZED).await,
        "the session has reached the longest this server allows: log in again"
    );

    let fresh = claims_of(&app.log_in(&ann).await);
    assert!(fresh["auth_time"].as_i64() > Some(logged_in), "{fresh}");
}

/// Logging out ends the session there and then: its token and the ones
/// renewed from it are refused, renewals too, with the reason; the user's
/// other session (another device) goes on, and a token with no session id
/// (from before them) is let out without harm.
#[tokio::test]
async fn a_logout_ends_its_session_at_once_and_no_other() {
    let app = spawn_app().await;
    let ann = app.sign_up("Ann").await;
    until_past(claims_of(&ann.token)["iat"].as_i64().expect("iat")).await;
    let renewed = renewed(&app, &ann.token).await;
    assert_eq!(claims_of(&renewed)["sid"], claims_of(&ann.token)["sid"]);
    let other_device = app.log_in(&ann).await;
    assert_ne!(
        claims_of(&other_device)["sid"],
        claims_of(&ann.token)["sid"]
    );

    assert_eq!(
        app.log_out(&ann.token).await.status(),
        StatusCode::NO_CONTENT
    );
    for token in [&ann.token, &renewed] {
        let chats = app.get_with(token, "/api/chat").await;
        assert_eq!(
            assert_error(chats, StatusCode::UNAUTHORIZED).await,
            "the session was logged out: log in again"
        );
        assert_eq!(renew(&app, token).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.log_out(token).await.status(), StatusCode::UNAUTHORIZED);
    }
    let chats = app.get_with(&other_device, "/api/chat").await;
    assert_eq!(chats.status(), StatusCode::OK, "the other session goes on");

    let now = chrono::Utc::now().timestamp();
    let older_kind = signed_token(&json!({"sub": ann.id, "iat": now, "exp": now + 60}));
    assert_eq!(
        app.log_out(&older_kind).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get_with(&other_device, "/api/chat").await.status(),
        StatusCode::OK
    );
}
