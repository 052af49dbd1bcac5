//! Measurements of the real app, not tests: each is `#[ignore]`d and prints
//! its figures (docs/desktop.md). Run them one at a time with
//! `cargo build -p natter-desktop --example empty_window &&
//! cargo test -p natter-desktop --test desktop_bench -- --ignored --nocapture --test-threads 1`
//! (add `--release` to both for release builds; for the app as shipped,
//! `cargo build --profile app -p natter-desktop --bin natter-desktop --example empty_window`
//! and `NATTER_E2E_APP=$CARGO_TARGET_DIR/app/natter-desktop cargo test --release ...`).
#![cfg(target_os = "linux")]

mod common;

use std::time::{Duration, Instant};

use common::driver::*;
use common::{alive, poll_until};
use natter_shared::{Chat, Message};
use serde_json::json;

/// Not a test but a measurement (docs/desktop.md "Scrolling"): a chat of
/// 10,000 messages, all loaded page by page by scrolling up, then scrolled
/// from top to bottom one animation frame at a time. Prints frame times
/// and how many rows the page holds. Run it with
/// `cargo test -p natter-desktop --test desktop_bench scrolling -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run on demand"]
async fn scrolling_ten_thousand_messages() {
    let messages: usize = std::env::var("NATTER_SCROLL_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let AnnWithBob {
        app: started,
        bob,
        direct,
        server,
        ..
    } = &ann_with_bob().await;
    let app = &started.client;
    write_many(server, &bob.auth.token, &direct.id, messages).await;
    let loading = Instant::now();
    open_and_load_all(app, &direct.id).await;
    println!("all pages loaded in {:?}", loading.elapsed());
    let viewport = "document.querySelector('.messages > div')";
    let figures = app
        .execute_async(
            &format!(
                "const done = arguments[arguments.length - 1];
                 const v = {viewport};
                 const frames = [];
                 let rows = 0;
                 let last = performance.now();
                 v.scrollTop = 0;
                 function step(now) {{
                   frames.push(now - last); last = now;
                   rows = Math.max(rows, document.querySelectorAll('.msg').length);
                   if (v.scrollTop + v.clientHeight >= v.scrollHeight - 1 || frames.length > 2000) {{
                     frames.shift();
                     frames.sort((a, b) => a - b);
                     const at = (p) => frames[Math.min(frames.length - 1, Math.floor(p * frames.length))];
                     done({{ frames: frames.length, p50: at(0.5), p95: at(0.95), p99: at(0.99), max: frames[frames.length - 1],
                            mostRowsInPage: rows, scrollHeight: v.scrollHeight }});
                     return;
                   }}
                   v.scrollTop += 600;
                   requestAnimationFrame(step);
                 }}
                 requestAnimationFrame(step);"
            ),
            vec![],
        )
        .await
        .expect("measured");
    println!("scrolling {messages} messages, 600 px per frame: {figures}");
    let _ = app.clone().close().await;
}

/// "message 42 ..." -> 42.
fn seq_of(text: &str) -> Option<usize> {
    text.strip_prefix("message ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// Cold start and memory beside an empty Tauri window (docs/desktop.md
/// "Start and memory"). Ann's data folder is prepared once (signed up in
/// the app, a 1,000-message chat with Bob and ten more chats, all in the
/// cache); then, five times (`NATTER_BENCH_RUNS`), a fresh empty window
/// (examples/empty_window) and a fresh Natter on that folder: from the process's start to the chat
/// list's paint (the UI's "chat-list-painted" mark), then the 1,000-message
/// chat opened, then scrolled to its first message, and the PSS of each app's
/// whole process tree (the app, WebKit's web and network processes) once it
/// has settled (and again after `NATTER_BENCH_IDLE_SECS` idle, if set).
/// Prints the medians.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run on demand"]
async fn start_and_memory_beside_an_empty_window() {
    const MESSAGES: usize = 1_000;
    // For quick experiments: fewer runs, and a second reading of the
    // scrolled-through chat after this many seconds idle.
    let runs: usize = env_number("NATTER_BENCH_RUNS").unwrap_or(5);
    let idle = env_number("NATTER_BENCH_IDLE_SECS").map(Duration::from_secs);
    let (server, _server_data, _stop) = start_server().await;
    let bob = Person::sign_up(&server, "Bob").await;
    let data = tempfile::tempdir().expect("temp dir");
    let host = Host::start("Adwaita", data.path());
    let natter = app_binary();
    let empty = example("empty_window");

    // Prepare: Ann signs up in the app; her chats reach its cache.
    let app = host.launch(&natter).await;
    sign_up_in_app(&app, &server, "Ann").await;
    let (ann, direct) = bob.direct_chat_with("ann").await;
    write_many(&server, &bob.auth.token, &direct.id, MESSAGES).await;
    for n in 0..10 {
        let other = Person::sign_up(&server, &format!("Friend{n}")).await;
        let chat: Chat = other.post("/api/chat", json!({"userId": ann.id})).await;
        other
            .write(&chat.id, &format!("hello from friend {n}"))
            .await;
    }
    wait_for_count(&app, "ul.chats li", 11).await;
    open_and_load_all(&app, &direct.id).await;
    let _ = app.close().await;

    let mut starts = Vec::new();
    let mut natter_pss = Vec::new();
    let mut opened_pss = Vec::new();
    let mut empty_pss = Vec::new();
    let mut idle_pss = Vec::new();
    for run in 0..runs {
        let window = host.launch(&empty).await;
        let pid = process_of(&empty);
        empty_pss.push(settled_pss(pid).await);
        println!("empty window: {:?}", tree_parts(pid));
        if run == 0 {
            print_maps("empty", pid);
        }
        let _ = window.close().await;
        wait_until("the empty window to end", async || !alive(pid)).await;

        let app = host.launch(&natter).await;
        let pid = process_of(&natter);
        let started = process_start_ms(pid);
        let mut painted = None;
        wait_until("the chat list's paint mark", async || {
            painted = app
                .execute(
                    "const m = performance.getEntriesByName('chat-list-painted')[0];
                     return m ? performance.timeOrigin + m.startTime : null",
                    vec![],
                )
                .await
                .ok()
                .and_then(|value| value.as_f64());
            painted.is_some()
        })
        .await;
        starts.push(painted.expect("painted") - started);
        // Opened: its newest page on screen.
        open_chat(&app, &direct.id).await;
        wait_for_text(&app, ".msg.theirs p", "message ").await;
        opened_pss.push(settled_pss(pid).await);
        if run == 0 {
            print_maps("opened", pid);
        }
        // Then scrolled up through all of it.
        open_and_load_all(&app, &direct.id).await;
        natter_pss.push(settled_pss(pid).await);
        println!("Natter: {:?}", tree_parts(pid));
        if run == 0 {
            print_maps("scrolled", pid);
        }
        if let Some(idle) = idle {
            tokio::time::sleep(idle).await;
            idle_pss.push(settled_pss(pid).await);
            println!("Natter after {idle:?} idle: {:?}", tree_parts(pid));
        }
        let _ = app.close().await;
        wait_until("Natter to end", async || !alive(pid)).await;
        println!(
            "run {run}: start {:.0} ms, Natter {} KiB opened, {} KiB scrolled through, empty window {} KiB",
            starts[run], opened_pss[run], natter_pss[run], empty_pss[run]
        );
    }
    // The UI's own floor: Natter at its login screen, with no data.
    let blank = tempfile::tempdir().expect("temp dir");
    let login_host = Host::start("Adwaita", blank.path());
    let app = login_host.launch(&natter).await;
    wait_for_text(&app, "#submit", "Log in").await;
    let pid = process_of(&natter);
    let login_pss = settled_pss(pid).await;
    println!("Natter at login: {:?}", tree_parts(pid));
    print_maps("login", pid);
    let _ = app.close().await;

    let opened = median(opened_pss);
    let after_idle = (!idle_pss.is_empty()).then(|| median(idle_pss));
    let (start, natter, empty) = (median(starts), median(natter_pss), median(empty_pss));
    println!(
        "{}",
        json!({
            "runs": runs,
            "coldStartToPaintedListMs": start.round(),
            "natterPssKiB": natter,
            "emptyWindowPssKiB": empty,
            "natterAtLoginPssKiB": login_pss,
            "ratio": ((natter / empty) * 100.0).round() / 100.0,
            "natterChatOpenedPssKiB": opened,
            "ratioChatOpened": ((opened / empty) * 100.0).round() / 100.0,
            "natterAfterIdlePssKiB": after_idle,
        })
    );
}

/// Bob's `count` messages in `chat`, written by eight clients at once.
async fn write_many(server: &str, token: &str, chat: &str, count: usize) {
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let (server, token, chat) = (server.to_owned(), token.to_owned(), chat.to_owned());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for n in (writer..count).step_by(8) {
                    let long = if n % 7 == 0 {
                        " and a longer line that wraps onto a second one in the bubble"
                    } else {
                        ""
                    };
                    answer::<Message>(
                        http.post(format!("{server}/api/message"))
                            .bearer_auth(&token)
                            .json(
                                &json!({"chatId": chat, "content": format!("message {n}{long}")}),
                            ),
                    )
                    .await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
}

/// Opens the chat and scrolls up until "message 0" is shown: every page loaded.
async fn open_and_load_all(app: &fantoccini::Client, chat: &str) {
    click(app, &format!("[data-chat='{chat}']")).await;
    wait_for_text(app, ".msg.theirs p", "message ").await;
    tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            let _ = app
                .execute(
                    "document.querySelector('.messages > div').scrollTop = 0",
                    vec![],
                )
                .await;
            let shown = texts(app, ".msg p").await;
            if shown.iter().any(|text| seq_of(text) == Some(0)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every page loads");
}

/// An example of this package, built with the app under test: beside
/// `NATTER_E2E_APP` (`target/app/examples/` for the shipped profile), else
/// beside this test.
fn example(name: &str) -> std::path::PathBuf {
    let profile = match std::env::var_os("NATTER_E2E_APP") {
        Some(app) => std::path::PathBuf::from(app)
            .parent()
            .expect("the app's folder")
            .to_path_buf(),
        None => {
            let exe = std::env::current_exe().expect("the test's path");
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("target/<profile>/deps")
                .to_path_buf()
        }
    };
    let path = profile.join("examples").join(name);
    assert!(
        path.exists(),
        "{path:?} is missing: cargo build -p natter-desktop --example {name} (same profile as the app)"
    );
    path
}

/// The one running process of `binary` (the benchmark runs one at a time).
fn process_of(binary: &std::path::Path) -> u32 {
    let wanted = binary.canonicalize().expect("the binary");
    let what = format!("{wanted:?} to run");
    // Looked for often: the cold start is timed from the process's start.
    poll_until(
        &what,
        Duration::from_secs(60),
        Duration::from_millis(10),
        || {
            std::fs::read_dir("/proc")
                .expect("/proc")
                .flatten()
                .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
                .find(|pid| {
                    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == wanted)
                })
        },
    )
}

/// When the process started, in ms since the epoch (10 ms resolution).
fn process_start_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Field 22, counted after the ")" that closes the command name.
    let ticks: f64 = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(19))
        .and_then(|ticks| ticks.parse().ok())
        .expect("starttime");
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .expect("/proc/stat")
        .lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
        .expect("btime");
    let hz = 100.0; // USER_HZ on Linux
    (boot + ticks / hz) * 1000.0
}

/// The PSS of `pid` and all its descendants, in KiB.
fn tree_pss(pid: u32) -> u64 {
    tree_parts(pid).iter().map(|(_, pss)| pss).sum()
}

/// Each process of `pid`'s tree by name, with its PSS in KiB.
fn tree_parts(pid: u32) -> Vec<(String, u64)> {
    tree_pids(pid)
        .into_iter()
        .filter_map(|(name, pid)| {
            let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
            let pss = rollup.lines().find_map(pss_kib)?;
            Some((name, pss))
        })
        .collect()
}

/// `pid` and all its descendants, each with its name.
fn tree_pids(pid: u32) -> Vec<(String, u32)> {
    let mut tree = vec![pid];
    let mut at = 0;
    while at < tree.len() {
        tree.extend(common::children(tree[at]));
        at += 1;
    }
    tree.into_iter()
        .filter_map(|pid| {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            Some((name.trim().to_owned(), pid))
        })
        .collect()
}

/// The tree's PSS once it stops moving: two readings half a second apart
/// within 1% of each other, after at least six seconds (Natter's web
/// process extension gives freed memory back every five, src/webkit.rs).
async fn settled_pss(pid: u32) -> f64 {
    let mut last = tree_pss(pid);
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = tree_pss(pid);
        let moved = (now as f64 - last as f64).abs() / last.max(1) as f64;
        if started.elapsed() >= Duration::from_secs(6) && moved < 0.01 {
            return now as f64;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "memory never settled"
        );
        last = now;
    }
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The KiB of a `Pss:` line of smaps or smaps_rollup.
fn pss_kib(line: &str) -> Option<u64> {
    line.strip_prefix("Pss:")?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// With `NATTER_BENCH_MAPS` set: where each process of `pid`'s tree keeps
/// its memory (smaps_rollup's PSS split, then the largest mappings by PSS),
/// to see what grows (docs/desktop.md "Start and memory").
fn print_maps(label: &str, pid: u32) {
    if std::env::var_os("NATTER_BENCH_MAPS").is_none() {
        return;
    }
    for (name, pid) in tree_pids(pid) {
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let split: Vec<&str> = rollup
            .lines()
            .filter(|line| line.starts_with("Pss_"))
            .collect();
        println!("[{label}] {name}: {split:?}");
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        let mut by_mapping: std::collections::HashMap<String, u64> = Default::default();
        let mut mapping = String::new();
        for line in smaps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // A mapping's header: "start-end perms offset dev inode [path]".
            if fields
                .first()
                .is_some_and(|first| first.contains('-') && !first.ends_with(':'))
            {
                mapping = match fields.get(5) {
                    Some(path) => (*path).to_owned(),
                    None => format!("[anon {}]", fields.get(1).unwrap_or(&"")),
                };
            } else if let Some(kib) = pss_kib(line) {
                *by_mapping.entry(mapping.clone()).or_default() += kib;
            }
        }
        let mut largest: Vec<_> = by_mapping.into_iter().collect();
        largest.sort_by_key(|(_, kib)| std::cmp::Reverse(*kib));
        for (mapping, kib) in largest.iter().take(8) {
            println!("[{label}]   {kib:>8} KiB {mapping}");
        }
    }
}
