//! One authenticated socket per user, opened from several loopback source
//! addresses when asked (one address has about 28,000 ephemeral ports), each
//! served by its own task that writes its sends and counts what arrives.
//! A socket the server drops (too slow a reader, a node restarting) is
//! opened again, as the app would, and catches up (`inbox`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::inbox::{Inbox, Latencies};
use crate::tally::Tally;

/// Frames a socket's writer may have queued before sends count as errors.
const WRITE_QUEUE: usize = 1024;

/// Waits between attempts to open a dropped socket again: from the first,
/// doubling up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_LAST: Duration = Duration::from_secs(2);

/// Where a socket connects: host and port of a server, and the source
/// address to connect from.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub server: SocketAddr,
    pub source: IpAddr,
}

/// A socket to open: where, as whom, and the user's chats (to catch up on
/// after a drop).
#[derive(Clone, Debug)]
pub struct Login {
    pub route: Route,
    pub token: String,
    pub chats: Vec<String>,
}

/// What every socket shares: the run's number, its tally, an HTTP client
/// for catching up, and the signal to stop.
#[derive(Clone)]
pub struct Shared {
    pub run: u64,
    pub tally: Arc<Tally>,
    pub http: reqwest::Client,
    pub stop: watch::Receiver<bool>,
}

/// A `send` frame for message `k`.
pub struct Outgoing {
    pub k: usize,
    pub frame: Utf8Bytes,
}

/// An open socket: frames to write go here.
pub type Writer = mpsc::Sender<Outgoing>;

type Socket = WebSocketStream<TcpStream>;

/// Connects, waits for `ready`, and starts the socket's task.
pub async fn open(
    login: Login,
    shared: Shared,
) -> anyhow::Result<(Writer, tokio::task::JoinHandle<Latencies>)> {
    let ws = connect(&login).await?;
    let (writer, frames) = mpsc::channel(WRITE_QUEUE);
    let inbox = Inbox::new(shared.run, shared.tally.clone(), &login.chats);
    let task = tokio::spawn(serve(ws, frames, login, shared, inbox));
    Ok((writer, task))
}

/// How long opening a socket (connection, handshake, `ready`) may take: a
/// server that accepts and never answers must fail the run, not hang it.
const OPEN_PATIENCE: Duration = Duration::from_secs(30);

/// Opens an authenticated socket and waits for its `ready` frame.
async fn connect(login: &Login) -> anyhow::Result<Socket> {
    tokio::time::timeout(OPEN_PATIENCE, connect_now(login))
        .await
        .with_context(|| {
            format!(
                "no ready socket from {} within {} s",
                login.route.server,
                OPEN_PATIENCE.as_secs()
            )
        })?
}

async fn connect_now(login: &Login) -> anyhow::Result<Socket> {
    let route = login.route;
    let socket = TcpSocket::new_v4()?;
    // The loopback source addresses only reach a loopback server (Linux
    // refuses to route from 127/8 to anywhere else).
    if route.server.ip().is_loopback() {
        socket.bind(SocketAddr::new(route.source, 0))?;
    }
    let stream: TcpStream = socket
        .connect(route.server)
        .await
        .with_context(|| format!("connecting to {} from {}", route.server, route.source))?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{}/ws?token={}", route.server, login.token);
    // Small buffers, as the server uses: tens of thousands of sockets in one
    // process would otherwise take 256 KiB each.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096);
    let (mut ws, _) = client_async_with_config(url, stream, Some(config))
        .await
        .context("WebSocket handshake")?;
    match ws.next().await {
        Some(Ok(WsMessage::Text(text))) if text.contains(r#""type":"ready""#) => Ok(ws),
        other => bail!("expected a ready frame, got {other:?}"),
    }
}

/// Writes and reads until told to stop, opening the socket again whenever
/// it drops; returns the latencies it measured. One task owns the socket
/// whole (no split halves behind a lock), and latencies go into a plain
/// list, merged into one histogram at the end: a histogram per socket took
/// ~140 KiB, 1.4 GB for 10,000 sockets.
async fn serve(
    mut ws: Socket,
    mut frames: mpsc::Receiver<Outgoing>,
    login: Login,
    mut shared: Shared,
    mut inbox: Inbox,
) -> Latencies {
    loop {
        let dropped = tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    inbox.record(&text);
                    false
                }
                Some(Ok(WsMessage::Close(_)) | Err(_)) | None => true,
                Some(Ok(_)) => false,
            },
            Some(Outgoing { k, frame }) = frames.recv() => {
                inbox.writing(k, frame.clone());
                ws.send(WsMessage::Text(frame)).await.is_err()
            }
            () = sleep_until_some(inbox.next_retry()) => {
                retry_due(&mut ws, &mut inbox, &shared.tally).await.is_err()
            }
            _ = shared.stop.changed() => break,
        };
        if dropped {
            shared.tally.drops.fetch_add(1, Ordering::Relaxed);
            match come_back(&login, &mut shared, &mut inbox).await {
                Some(again) => ws = again,
                None => return inbox.latencies,
            }
        }
    }
    let _ = ws.close(None).await;
    inbox.latencies
}

/// Writes again the sends refused for now whose wait is over.
async fn retry_due(
    ws: &mut Socket,
    inbox: &mut Inbox,
    tally: &Tally,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for frame in inbox.due_retries(Instant::now()) {
        ws.feed(WsMessage::Text(frame)).await?;
        tally.resent.fetch_add(1, Ordering::Relaxed);
    }
    ws.flush().await
}

/// Sleeps until `at`, or for ever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Opens the socket again (waiting longer after each failure), catches up
/// and writes the unanswered sends again; `None` once told to stop first.
async fn come_back(login: &Login, shared: &mut Shared, inbox: &mut Inbox) -> Option<Socket> {
    let mut pause = RETRY_FIRST;
    loop {
        let attempt = async {
            let mut ws = connect(login).await?;
            let server = format!("http://{}", login.route.server);
            inbox.catch_up(&shared.http, &server, &login.token).await?;
            for frame in inbox.resends() {
                ws.send(WsMessage::Text(frame)).await?;
                shared.tally.resent.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(ws)
        };
        let mut stop = shared.stop.clone();
        tokio::select! {
            result = attempt => if let Ok(ws) = result {
                shared.tally.reconnects.fetch_add(1, Ordering::Relaxed);
                return Some(ws);
            },
            _ = stop.changed() => return None,
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = shared.stop.changed() => return None,
        }
        pause = (pause * 2).min(RETRY_LAST);
    }
}

/// Opens every socket, `parallel` handshakes at a time; returns them in
/// user order with how long it took.
pub async fn open_all(
    logins: Vec<Login>,
    parallel: usize,
    shared: Shared,
) -> anyhow::Result<(Vec<(Writer, tokio::task::JoinHandle<Latencies>)>, Duration)> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<_>> = futures_util::stream::iter(logins)
        .map(|login| open(login, shared.clone()))
        .buffered(parallel)
        .collect()
        .await;
    let sockets = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((sockets, started.elapsed()))
}
