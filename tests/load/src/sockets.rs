//! One authenticated socket per user, opened from several loopback source
//! addresses when asked (one address has about 28,000 ephemeral ports), each
//! read by its own task that counts what arrives.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use natter_shared::ServerFrame;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::tally::{Tally, histogram, number_in};

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

/// Connects, waits for `ready`, and starts the reader and the writer.
pub async fn open(
    route: Route,
    token: &str,
    run: u64,
    tally: Arc<Tally>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(Writer, tokio::task::JoinHandle<Histogram<u64>>)> {
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
async fn serve(
    ws: WebSocketStream<TcpStream>,
    mut frames: mpsc::Receiver<String>,
    run: u64,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) -> Histogram<u64> {
    let mut latencies = histogram();
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => record(&text, run, &tally, &mut latencies),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            },
            Some(frame) = frames.recv() => {
                if sink.send(WsMessage::text(frame)).await.is_err() {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            _ = stop.changed() => break,
        }
    }
    let _ = sink.close().await;
    latencies
}

fn record(text: &str, run: u64, tally: &Tally, latencies: &mut Histogram<u64>) {
    match serde_json::from_str::<ServerFrame>(text) {
        Ok(ServerFrame::Message { message }) => match number_in(&message.content, run) {
            Some(k) => {
                if let Some(micros) = tally.delivered(k) {
                    let _ = latencies.record(micros);
                }
            }
            None => {
                tally.other_frames.fetch_add(1, Ordering::Relaxed);
            }
        },
        Ok(ServerFrame::Ack { client_id, .. }) => {
            if let Ok(k) = client_id.trim_start_matches(&format!("{run}-")).parse() {
                tally.acked(k);
            }
        }
        Ok(ServerFrame::Error { .. }) | Err(_) => {
            tally.errors.fetch_add(1, Ordering::Relaxed);
        }
        Ok(_) => {
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
) -> anyhow::Result<(
    Vec<(Writer, tokio::task::JoinHandle<Histogram<u64>>)>,
    Duration,
)> {
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
