//! One authenticated socket per user, opened from several loopback source
//! addresses when asked (one address has about 28,000 ephemeral ports), each
//! read by its own task that counts what arrives.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::borrow::Cow;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::tally::{Tally, number_in};

/// Frames a socket's writer may have queued before sends count as errors.
const WRITE_QUEUE: usize = 1024;

/// Where a socket connects: host and port of a server, and the source
/// address to connect from.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub server: SocketAddr,
    pub source: IpAddr,
}

/// An open socket: frames to write go here.
pub type Writer = mpsc::Sender<String>;

/// What a socket's reader measured: send-to-receive latencies in µs.
pub type Latencies = Vec<u32>;

/// Connects, waits for `ready`, and starts the reader and the writer.
pub async fn open(
    route: Route,
    token: &str,
    run: u64,
    tally: Arc<Tally>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(Writer, tokio::task::JoinHandle<Latencies>)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(route.source, 0))?;
    let stream: TcpStream = socket
        .connect(route.server)
        .await
        .with_context(|| format!("connecting to {} from {}", route.server, route.source))?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{}/ws?token={token}", route.server);
    // Small buffers, as the server uses: tens of thousands of sockets in one
    // process would otherwise take 256 KiB each.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096);
    let (mut ws, _) = client_async_with_config(url, stream, Some(config))
        .await
        .context("WebSocket handshake")?;
    match ws.next().await {
        Some(Ok(WsMessage::Text(text))) if text.contains(r#""type":"ready""#) => {}
        other => bail!("expected a ready frame, got {other:?}"),
    }
    let (writer, frames) = mpsc::channel(WRITE_QUEUE);
    let reader = tokio::spawn(serve(ws, frames, run, tally, stop));
    Ok((writer, reader))
}

/// Reads and writes until told to stop; returns the latencies it measured.
/// One task owns the socket whole (no split halves behind a lock), and
/// latencies go into a plain list, merged into one histogram at the end:
/// a histogram per socket took ~140 KiB, 1.4 GB for 10,000 sockets.
async fn serve(
    mut ws: WebSocketStream<TcpStream>,
    mut frames: mpsc::Receiver<String>,
    run: u64,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) -> Latencies {
    let mut latencies = Latencies::new();
    let ack_prefix = format!("{run}-");
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    record(&text, run, &ack_prefix, &tally, &mut latencies);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            },
            Some(frame) = frames.recv() => {
                if ws.send(WsMessage::text(frame)).await.is_err() {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            _ = stop.changed() => break,
        }
    }
    let _ = ws.close(None).await;
    latencies
}

/// The fields of a server frame (`natter_shared::ServerFrame`) that the
/// tally needs, borrowed from the text. The whole frame, an internally
/// tagged enum that serde buffers before it picks the variant, with its
/// sender and dates, was a fifth of the load tool's time, on the cores the
/// server under test needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Peek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message: Option<PeekMessage<'a>>,
    #[serde(borrow)]
    client_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PeekMessage<'a> {
    #[serde(borrow)]
    content: Cow<'a, str>,
}

fn record(text: &str, run: u64, ack_prefix: &str, tally: &Tally, latencies: &mut Latencies) {
    let Ok(frame) = serde_json::from_str::<Peek>(text) else {
        tally.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    match (frame.kind.as_ref(), frame.message, frame.client_id) {
        ("message", Some(message), _) => match number_in(&message.content, run) {
            Some(k) => {
                if let Some(micros) = tally.delivered(k) {
                    latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                }
            }
            None => {
                tally.other_frames.fetch_add(1, Ordering::Relaxed);
            }
        },
        ("ack", _, Some(client_id)) => {
            if let Some(Ok(k)) = client_id.strip_prefix(ack_prefix).map(str::parse) {
                tally.acked(k);
            }
        }
        ("message" | "ack" | "error", _, _) => {
            tally.errors.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            tally.other_frames.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Opens every socket, `parallel` handshakes at a time; returns them in
/// user order with how long it took.
pub async fn open_all(
    routes: Vec<(Route, String)>,
    parallel: usize,
    run: u64,
    tally: Arc<Tally>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(Vec<(Writer, tokio::task::JoinHandle<Latencies>)>, Duration)> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<_>> = futures_util::stream::iter(routes)
        .map(|(route, token)| {
            let tally = tally.clone();
            let stop = stop.clone();
            async move { open(route, &token, run, tally, stop).await }
        })
        .buffered(parallel)
        .collect()
        .await;
    let sockets = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((sockets, started.elapsed()))
}
