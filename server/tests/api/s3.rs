//! Profile pictures in a real S3-compatible server: `s3s-fs`, started by the
//! test on a free port over a temporary folder (scripts/test installs it).

use std::path::PathBuf;
use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::process::{Child, Command};

use natter_server::health::PING_PATIENCE;

use crate::helpers::{PATIENCE, TestApp, free_port, spawn_app_with, wait_until};

const BUCKET: &str = "natter-pics";
const AVATAR: &[u8] = include_bytes!("fixtures/avatar.png");

struct S3Server {
    endpoint: String,
    root: tempfile::TempDir,
    _process: Child,
}

fn s3s_fs_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("s3s-fs"));
    let in_cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin").join("s3s-fs"));
    on_path
        .chain(in_cargo_home)
        .find(|path| path.is_file())
        .expect("s3s-fs is needed for the S3 tests: run scripts/test, or cargo install s3s-fs --version 0.14.1 --features binary")
}

async fn start_s3() -> S3Server {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(root.path().join(BUCKET)).expect("bucket folder");
    let port = free_port();
    let process = Command::new(s3s_fs_binary())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--access-key",
            "natter-test",
            "--secret-key",
            "natter-test-secret",
        ])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("s3s-fs starts");
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_until("s3s-fs listening", PATIENCE, async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    S3Server {
        endpoint,
        root,
        _process: process,
    }
}

async fn app_on(s3: &S3Server) -> TestApp {
    app_on_endpoint(&s3.endpoint).await
}

async fn app_on_endpoint(endpoint: &str) -> TestApp {
    spawn_app_with(|config| {
        config.blob_url = Some(format!("s3://{BUCKET}"));
        config.s3_endpoint = Some(endpoint.to_owned());
        config.s3_region = Some("us-east-1".into());
        config.s3_access_key_id = Some("natter-test".into());
        config.s3_secret_access_key = Some("natter-test-secret".into());
    })
    .await
}

/// `GET` of a picture with a well-formed key that was never stored.
async fn never_stored(app: &TestApp) -> reqwest::Response {
    app.http
        .get(app.url("/api/pic/0123456789abcdef0123456789abcdef.png"))
        .send()
        .await
        .expect("request")
}

fn objects(s3: &S3Server) -> Vec<String> {
    std::fs::read_dir(s3.root.path().join(BUCKET))
        .expect("bucket")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect()
}

#[tokio::test]
async fn pictures_are_stored_in_and_served_from_s3() {
    let s3 = start_s3().await;
    let app = app_on(&s3).await;

    let response = app.sign_up_with_pic("sam@example.org", AVATAR).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let user: Value = response.json().await.expect("json");
    let pic = user["pic"].as_str().expect("picture URL");
    let key = pic.rsplit('/').next().expect("key");
    assert_eq!(
        objects(&s3),
        [key.to_owned()],
        "the picture is an object in the bucket"
    );
    let stored = std::fs::read(s3.root.path().join(BUCKET).join(key)).expect("object file");
    assert_eq!(stored, AVATAR);

    let fetched = app.http.get(app.url(pic)).send().await.expect("request");
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.headers()["content-type"], "image/png");
    assert_eq!(fetched.bytes().await.expect("bytes").as_ref(), AVATAR);

    assert_eq!(app.health().await["pictures"], "ok");
}

#[tokio::test]
async fn refused_pictures_leave_nothing_in_the_bucket() {
    let s3 = start_s3().await;
    let app = app_on(&s3).await;
    let response = app
        .sign_up_with_pic("eve@example.org", b"GIF89a but not really")
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(objects(&s3).is_empty());
    assert_eq!(never_stored(&app).await.status(), StatusCode::NOT_FOUND);
}

/// A picture store that is away (its port refuses connections): a sign-up
/// with a picture, and a picture asked for, are told to try again (503)
/// within seconds, not failed (500) after minutes of the S3 client's
/// retries; and no account is made without its picture.
#[tokio::test]
async fn a_picture_store_that_is_away_answers_try_again() {
    let closed = free_port();
    let app = app_on_endpoint(&format!("http://127.0.0.1:{closed}")).await;
    let answered = tokio::time::timeout(
        PATIENCE * 2,
        app.sign_up_with_pic("sam@example.org", AVATAR),
    )
    .await
    .expect("answered within seconds");
    assert_eq!(answered.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = answered.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.contains("try again")),
        "{body}"
    );
    app.assert_no_account("sam@example.org").await;
    assert_eq!(
        never_stored(&app).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// A picture store that takes connections and never answers (as one behind
/// a firewall that drops packets would): the health check still answers,
/// pictures "unreachable", the node healthy. The S3 client alone would wait
/// and retry for minutes.
#[tokio::test]
async fn a_picture_store_that_never_answers_leaves_the_health_check_answering() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let endpoint = format!("http://{}", silent.local_addr().expect("address"));
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let app = app_on_endpoint(&endpoint).await;
    // Each check answers at once, from the last pings (a balancer gives it
    // 200 ms: a check that pinged would take the ping's whole patience);
    // the store shows unreachable once a ping has given up on it.
    let check = async || {
        let response = tokio::time::timeout(PING_PATIENCE, app.http.get(app.url("/health")).send())
            .await
            .expect("the health check answers before a ping gives up")
            .expect("health");
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.expect("json")
    };
    wait_until(
        "the picture store shown unreachable",
        PATIENCE,
        async || check().await["pictures"] == "unreachable",
    )
    .await;
    assert_eq!(check().await["status"], "ok");
    holding.abort();
}
