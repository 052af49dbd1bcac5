//! What an operator relies on: health, the API description, `--help`, and a
//! clean stop on SIGTERM of the real binary.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::{PATIENCE, spawn_app};

#[tokio::test]
async fn health_reports_ok_and_open_sockets() {
    let app = spawn_app().await;
    let health = app.health().await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["connections"], 0);
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let expected = [
        ("/api/user", &["post", "get"][..]),
        ("/api/user/login", &["post"]),
        ("/api/user/token", &["post"]),
        ("/api/user/logout", &["post"]),
        ("/api/user/{id}", &["get"]),
        ("/api/pic/{key}", &["get"]),
        ("/api/chat", &["post", "get"]),
        ("/api/chat/{chatId}", &["get"]),
        ("/api/chat/group", &["post"]),
        ("/api/chat/rename", &["put"]),
        ("/api/chat/groupadd", &["put"]),
        ("/api/chat/groupremove", &["put"]),
        ("/api/message", &["post"]),
        ("/api/message/{chatId}", &["get"]),
        ("/ws", &["get"]),
        ("/health", &["get"]),
    ];
    // What answers without a token; everything else says it needs one (the
    // socket takes it as a bearer token or in `?token=`).
    let public = [
        ("/api/user", "post"),
        ("/api/user/login", "post"),
        ("/api/pic/{key}", "get"),
        ("/health", "get"),
    ];
    for (path, methods) in expected {
        for method in methods {
            let operation = &doc["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} is described");
            assert_eq!(
                operation["security"].is_array(),
                !public.contains(&(path, method)),
                "{method} {path}: whether it needs a token"
            );
        }
    }
}

#[tokio::test]
async fn help_lists_every_setting_with_its_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_natter-server"))
        .arg("--help")
        .output()
        .await
        .expect("runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "NATTER_ADDR",
        "NATTER_DATA_DIR",
        "NATTER_JWT_SECRET",
        "NATTER_TOKEN_TTL_SECS",
        "NATTER_LOG",
    ] {
        assert!(help.contains(variable), "--help mentions {variable}");
    }
}

#[tokio::test]
async fn the_binary_serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = crate::helpers::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_natter-server"))
        .env("NATTER_DATA_DIR", dir.path())
        .env("NATTER_ADDR", format!("127.0.0.1:{port}"))
        .env("NATTER_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.expect("log line") {
            if line.contains("listening") {
                return;
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .expect("listening in time");

    let health = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .expect("request");
    assert!(health.status().is_success());
    assert!(
        dir.path().join("natter.db").exists(),
        "the embedded database is in the data folder"
    );
    assert!(
        dir.path().join("jwt-secret").exists(),
        "a secret was generated"
    );

    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("stops in time")
        .expect("exit status");
    assert!(status.success(), "exit status {status}");
}
