//! `natter-load`: puts a crowd on natter-server through its real protocol and
//! reports what it saw. Users sign up (or are reused from a state file),
//! chats are made (groups and one-to-one), every user opens a socket, and
//! messages go out at a fixed rate from seeded random senders for a fixed
//! time. Every recipient measures send-to-receive latency; at the end the
//! tool counts what was lost or duplicated, and with `--verify-stored`
//! reads every chat back to check what was stored.
//!
//! It only talks to the servers given with `--server`.

mod cpu;
mod inbox;
mod memory;
mod setup;
mod sockets;
mod tally;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use futures_util::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use natter_shared::ClientFrame;
use natter_shared::limits::PAGE_MAX;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::{Semaphore, watch};

use crate::setup::{Crowd, Setup};
use crate::sockets::{Login, Outgoing, Route, Shared, Writer};
use crate::tally::{Tally, content, histogram, number_in};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Via {
    /// `send` frames on each sender's socket, acked by `ack` frames.
    Socket,
    /// `POST /api/message`, acked by 201.
    Http,
}

/// Load natter-server with real users, sockets and messages.
#[derive(Debug, Parser)]
#[command(name = "natter-load", version, about)]
struct Args {
    /// Base URL of a server node; repeat for several (sockets are spread over them).
    #[arg(long = "server", default_value = "http://127.0.0.1:8080")]
    servers: Vec<String>,
    /// Users.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// The server's invitation code, for one that asks for it
    /// (`NATTER_INVITATION_CODE`) when the users sign up.
    #[arg(long, env = "NATTER_INVITATION_CODE", hide_env_values = true)]
    invitation_code: Option<String>,
    /// Sockets, spread over the users in turn (default: one per user), as a
    /// user with several devices would have.
    #[arg(long)]
    sockets: Option<usize>,
    /// Members per group chat (less than 3: no groups).
    #[arg(long, default_value_t = 10)]
    group_size: usize,
    /// Also give each user a one-to-one chat with the next user.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    direct: bool,
    /// The one-to-one partner is this many users further on. With `--users
    /// 2N --sockets N --group-size 0 --direct-step N`, each online user's
    /// only chat is with a user who never connects: the pipeline without
    /// fan-out (each message goes to its sender's socket alone).
    #[arg(long, default_value_t = 1)]
    direct_step: usize,
    /// Messages per second over all senders; 0 only holds the sockets open.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Seconds to send (or hold the sockets open).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seed for the users' names and who sends where.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Connect from 127.0.0.1 to 127.0.0.N (about 28,000 sockets per
    /// address); a server off loopback is reached from the usual address.
    #[arg(long, default_value_t = 1)]
    sources: u8,
    /// How messages are sent.
    #[arg(long, value_enum, default_value = "socket")]
    via: Via,
    /// Send without `firstTry`, as a client that does not mark first sends
    /// would: the server then looks each one up in the database.
    #[arg(long)]
    no_first_try: bool,
    /// PID of a server process, to report its memory per socket (repeat per node).
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Also report the processor time of every process of this command name
    /// (`postgres`, `beam.smp`), summed; repeat for several. The server
    /// PIDs and this tool are always reported.
    #[arg(long = "cpu-of")]
    cpu_of: Vec<String>,
    /// Where users and chats are kept between runs (default: in the temp folder).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Seconds to wait for outstanding deliveries after the last send.
    #[arg(long, default_value_t = 10)]
    drain: u64,
    /// Sockets opened at once.
    #[arg(long, default_value_t = 64)]
    connect_parallel: usize,
    /// Read every chat back and check each acked message is stored once.
    #[arg(long)]
    verify_stored: bool,
    /// Exit with an error if anything was lost, duplicated or refused.
    #[arg(long)]
    check: bool,
    /// Also write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let summary = run(&args).await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)?;
    }
    if args.check {
        let failed = [
            "lost",
            "duplicated",
            "errors",
            "doubleAcks",
            "unacked",
            "storedMissing",
            "storedTwice",
            "misrouted",
            "redeliveredWithoutCause",
        ]
        .iter()
        .filter(|key| summary[**key].as_u64().unwrap_or(0) > 0)
        .copied()
        .collect::<Vec<_>>();
        if !failed.is_empty() {
            bail!("check failed: {failed:?} not zero");
        }
    }
    Ok(())
}

/// `http://host:port` → the socket address to connect to.
fn server_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// servers"))?;
    let host_port = rest.trim_end_matches('/');
    host_port
        .to_socket_addrs()?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("{url}: no IPv4 address"))
}

async fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    let addrs = args
        .servers
        .iter()
        .map(|url| server_addr(url))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let first = args.servers[0].trim_end_matches('/').to_owned();
    // Straight to the servers named: never through a proxy the
    // environment names (`HTTP_PROXY`), never after a redirect elsewhere.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let state = args.state.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "natter-load-{}-{}-{}-{}-{}-{}.json",
            first.replace([':', '/', '.'], "_"),
            args.seed,
            args.users,
            args.group_size,
            args.direct,
            args.direct_step
        ))
    });
    let crowd = Setup {
        http: &http,
        server: &first,
        users: args.users,
        group_size: args.group_size,
        direct: args.direct,
        direct_step: args.direct_step,
        seed: args.seed,
        invitation_code: args.invitation_code.as_deref(),
    }
    .crowd(&state)
    .await?;

    let run_tag = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    // Every send of the schedule, numbered (`send` sends them all).
    let capacity = usize::try_from(args.rate.saturating_mul(args.duration))?;
    let tally = Arc::new(Tally::new(capacity));
    let (stop, stopped) = watch::channel(false);

    let rss_before: Vec<Option<u64>> = args
        .server_pids
        .iter()
        .map(|&pid| memory::rss_kib(pid))
        .collect();
    let socket_count = args.sockets.unwrap_or(crowd.users.len());
    let chats_of = crowd.chats_of();
    let logins: Vec<Login> = (0..socket_count)
        .map(|index| (index, index % crowd.users.len()))
        .map(|(index, user)| {
            let source = Ipv4Addr::new(
                127,
                0,
                0,
                1 + (index % usize::from(args.sources.max(1))) as u8,
            );
            let route = Route {
                server: addrs[index % addrs.len()],
                source: IpAddr::V4(source),
            };
            Login {
                route,
                token: crowd.users[user].token.clone(),
                chats: chats_of[user]
                    .iter()
                    .map(|&chat| crowd.chats[chat].id.clone())
                    .collect(),
            }
        })
        .collect();
    let shared = Shared {
        run: run_tag,
        tally: tally.clone(),
        http: http.clone(),
        stop: stopped.clone(),
    };
    let (sockets, connect_time) =
        sockets::open_all(logins, args.connect_parallel.max(1), shared).await?;
    let rss_after: Vec<Option<u64>> = args
        .server_pids
        .iter()
        .map(|&pid| memory::rss_kib(pid))
        .collect();
    eprintln!(
        "{} sockets open in {:.2} s ({:.0}/s)",
        sockets.len(),
        connect_time.as_secs_f64(),
        sockets.len() as f64 / connect_time.as_secs_f64()
    );
    let (writers, readers): (Vec<Writer>, Vec<_>) = sockets.into_iter().unzip();

    let send_started = Instant::now();
    let watched = watched(args);
    let warm_up = Duration::from_secs(args.duration).mul_f64(CPU_WARM_UP);
    let cpu_start = {
        let watched = watched.clone();
        tokio::spawn(async move {
            tokio::time::sleep(warm_up).await;
            cpu::sample(&watched)
        })
    };
    if args.rate > 0 {
        send(args, &crowd, &chats_of, &writers, &http, run_tag, &tally).await;
    } else {
        hold(args, &tally).await;
    }
    let send_time = send_started.elapsed();
    let cpu = match cpu_start.await {
        Ok(start) => cpu::cores_between(&watched, &start, &cpu::sample(&watched)),
        Err(_) => serde_json::Value::Null,
    };
    let deadline = Instant::now() + Duration::from_secs(args.drain);
    let answered = until(deadline, || tally.all_answered()).await;
    // From the last answer on, the commits and the deliveries are waited
    // for side by side: a delivery a socket missed is no commit's time, and
    // the reads that find the commits no delivery's.
    let committing = async {
        match args.verify_stored && answered {
            true => until_committed(&http, &first, &crowd, send_started)
                .await
                .map(Some),
            false => Ok(None),
        }
    };
    let delivering = async { answered && until(deadline, || tally.missing() == 0).await };
    let (persisted_after, settled) = tokio::join!(committing, delivering);
    let persisted_after = persisted_after?;
    // Deliveries per second over the time until the last one came: a
    // delivery waited for in vain is no delivery's time.
    let delivery_time = tally
        .last_delivery()
        .map_or(send_time, |last| {
            last.saturating_sub(send_started.saturating_duration_since(tally.start))
        })
        .max(Duration::from_millis(1));
    // With the crowd still connected.
    let pss_at_end: Vec<Option<u64>> = args
        .server_pids
        .iter()
        .map(|&pid| memory::pss_kib(pid))
        .collect();
    eprintln!();
    stop.send_replace(true);
    let mut latencies = histogram();
    for reader in readers {
        if let Ok(measured) = reader.await {
            for micros in measured {
                // Past the histogram's top (60 s) counted as its top.
                latencies.saturating_record(u64::from(micros));
            }
        }
    }

    let stored = if args.verify_stored {
        let persisted_after = match persisted_after {
            Some(after) => after,
            // Not all answered: whatever was stored, stored by now.
            None => until_committed(&http, &first, &crowd, send_started).await?,
        };
        Some(verify_stored(&http, &first, &crowd, run_tag, &tally, persisted_after).await?)
    } else {
        None
    };
    Ok(summary(SummaryInput {
        args,
        crowd: &crowd,
        tally: &tally,
        latencies: &latencies,
        connect_time,
        send_time,
        delivery_time,
        settled,
        rss_before: &rss_before,
        rss_after: &rss_after,
        pss_at_end: &pss_at_end,
        stored,
        cpu,
    }))
}

/// The part of the sending time left out of the processor figures, for
/// connections and caches to warm up.
const CPU_WARM_UP: f64 = 0.25;

/// Whose processor time a run reports: this tool, the servers, and the
/// processes named with `--cpu-of`.
fn watched(args: &Args) -> Vec<cpu::Watched> {
    let this = cpu::Watched::Pid {
        pid: std::process::id(),
        label: "natter-load".into(),
    };
    let servers = args.server_pids.iter().map(|&pid| cpu::Watched::Pid {
        pid,
        label: format!("natter-server {pid}"),
    });
    std::iter::once(this)
        .chain(servers)
        .chain(args.cpu_of.iter().cloned().map(cpu::Watched::Name))
        .collect()
}

/// Sends at `args.rate` for `args.duration` from seeded random senders.
async fn send(
    args: &Args,
    crowd: &Crowd,
    chats_of: &[Vec<usize>],
    writers: &[Writer],
    http: &reqwest::Client,
    run: u64,
    tally: &Arc<Tally>,
) {
    if crowd.chats.is_empty() {
        eprintln!("no chats: nothing to send");
        return;
    }
    let mut rng = StdRng::seed_from_u64(args.seed);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let requests = Arc::new(Semaphore::new(256));
    let mut next = 0usize;
    let mut last_report = Instant::now();
    // Every send of the schedule goes, late if the server held the loop up
    // (its latency counts from when it was due): a loop that stopped at
    // `--duration` left out the sends still behind then, the slowest.
    let total = tally.capacity();
    while next < total {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * args.rate as f64) as usize;
        while next < due.min(total) {
            let user = rng.random_range(0..crowd.users.len().min(writers.len()));
            let chats = &chats_of[user];
            if chats.is_empty() {
                continue;
            }
            let chat = &crowd.chats[chats[rng.random_range(0..chats.len())]];
            let k = next;
            next += 1;
            let recipients: usize = chat
                .members
                .iter()
                .map(|&member| sockets_of(member, writers.len(), crowd.users.len()))
                .sum();
            // Due once `rate` x elapsed passes k + 1 (how `due` counts).
            let due_at = started + Duration::from_secs_f64((k + 1) as f64 / args.rate as f64);
            tally.sending(k, recipients as u32, due_at);
            match args.via {
                Via::Socket => {
                    let frame = ClientFrame::Send {
                        chat_id: chat.id.clone(),
                        content: content(run, k),
                        client_id: format!("{run}-{k}"),
                        // Never resent: the server need not look for a copy.
                        first_try: !args.no_first_try,
                    };
                    let frame = serde_json::to_string(&frame).unwrap_or_default().into();
                    if writers[user].try_send(Outgoing { k, frame }).is_err() {
                        tally.failed();
                    }
                }
                Via::Http => {
                    let Ok(permit) = requests.clone().acquire_owned().await else {
                        break;
                    };
                    let request = http
                        .post(format!("{}/api/message", crowd.server))
                        .bearer_auth(&crowd.users[user].token)
                        .json(&json!({"chatId": chat.id, "content": content(run, k), "clientId": format!("{run}-{k}"), "firstTry": !args.no_first_try}));
                    let tally = tally.clone();
                    tokio::spawn(async move {
                        match request.send().await {
                            Ok(response) if response.status().is_success() => tally.acked(k),
                            _ => tally.failed(),
                        }
                        drop(permit);
                    });
                }
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            progress(tally, started);
        }
    }
}

/// How many of `sockets` (dealt out in turn) user `user` of `users` has.
fn sockets_of(user: usize, sockets: usize, users: usize) -> usize {
    sockets / users + usize::from(user < sockets % users)
}

/// Holds the sockets open for `args.duration`, reporting as it goes.
async fn hold(args: &Args, tally: &Tally) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < Duration::from_secs(args.duration) {
        tick.tick().await;
        progress(tally, started);
    }
}

/// Waits until `done`, or until `deadline`; true when it got there.
async fn until(deadline: Instant, done: impl Fn() -> bool) -> bool {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

fn progress(tally: &Tally, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    eprint!(
        "\rt={seconds:>5.1}s sent={} acked={} deliveries={} ({:.0}/s) errors={}   ",
        tally.sent.load(Ordering::Relaxed),
        tally.acks.load(Ordering::Relaxed),
        tally.deliveries.load(Ordering::Relaxed),
        tally.deliveries.load(Ordering::Relaxed) as f64 / seconds,
        tally.errors.load(Ordering::Relaxed),
    );
}

struct Stored {
    found: u64,
    missing: u64,
    twice: u64,
    /// From the first send until every chat's history held all its acked
    /// messages: the time the run took to persist what it stored.
    persisted_after: f64,
    /// Reading it all back.
    check_seconds: f64,
}

/// History reads in flight at once while waiting for the commits.
const SETTLING_AT_ONCE: usize = 64;

/// Chats read back at once, each a full page at a time. One chat and 100
/// messages at a time, every page waiting for its round trip, took minutes
/// for the pipeline's 1.7 million messages.
const READING_AT_ONCE: usize = 8;

/// A stored message as the read-back needs it: the history page's other
/// fields (sender, dates) are skipped unread.
#[derive(serde::Deserialize)]
struct StoredMessage {
    seq: i64,
    content: String,
}

/// Waits until every chat's acked messages are in the database (a history
/// read answers only after the commits before it); returns the seconds
/// from `send_started` until then.
async fn until_committed(
    http: &reqwest::Client,
    server: &str,
    crowd: &Crowd,
    send_started: Instant,
) -> anyhow::Result<f64> {
    futures_util::stream::iter(&crowd.chats)
        .map(|chat| async move {
            let token = &crowd.users[chat.members[0]].token;
            let response = http
                .get(format!("{server}/api/message/{}?limit=1", chat.id))
                .bearer_auth(token)
                .send()
                .await?;
            setup::json_answer::<Vec<StoredMessage>>(response, "waiting for the commits").await
        })
        .buffer_unordered(SETTLING_AT_ONCE)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(send_started.elapsed().as_secs_f64())
}

/// Reads every chat's history and counts this run's messages in it, the
/// acked ones having been stored `persisted_after` seconds into the run
/// (`until_committed`).
async fn verify_stored(
    http: &reqwest::Client,
    server: &str,
    crowd: &Crowd,
    run: u64,
    tally: &Tally,
    persisted_after: f64,
) -> anyhow::Result<Stored> {
    let started = Instant::now();
    let mut seen = vec![0u8; tally.capacity()];
    let mut read = futures_util::stream::iter(&crowd.chats)
        .map(|chat| {
            numbers_stored(
                http,
                server,
                &crowd.users[chat.members[0]].token,
                &chat.id,
                run,
            )
        })
        .buffer_unordered(READING_AT_ONCE);
    while let Some(numbers) = read.try_next().await? {
        for k in numbers {
            seen[k] = seen[k].saturating_add(1);
        }
    }
    let acked = tally.acked_numbers();
    let found = acked.iter().filter(|&&k| seen[k] > 0).count() as u64;
    let twice = seen.iter().filter(|&&count| count > 1).count() as u64;
    Ok(Stored {
        found,
        missing: acked.len() as u64 - found,
        twice,
        persisted_after,
        check_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The numbers of this run's messages stored in chat `chat_id`, read as its
/// member with `token`, a full page at a time; a number stored twice is in
/// it twice.
async fn numbers_stored(
    http: &reqwest::Client,
    server: &str,
    token: &str,
    chat_id: &str,
    run: u64,
) -> anyhow::Result<Vec<usize>> {
    let mut numbers = Vec::new();
    let mut after = 0;
    loop {
        let response = http
            .get(format!(
                "{server}/api/message/{chat_id}?after={after}&limit={PAGE_MAX}"
            ))
            .bearer_auth(token)
            .send()
            .await?;
        let page: Vec<StoredMessage> = setup::json_answer(response, "reading history").await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        numbers.extend(page.iter().filter_map(|m| number_in(&m.content, run)));
        if page.len() < PAGE_MAX as usize {
            break;
        }
    }
    Ok(numbers)
}

struct SummaryInput<'a> {
    args: &'a Args,
    crowd: &'a Crowd,
    tally: &'a Tally,
    latencies: &'a Histogram<u64>,
    connect_time: Duration,
    send_time: Duration,
    delivery_time: Duration,
    settled: bool,
    rss_before: &'a [Option<u64>],
    rss_after: &'a [Option<u64>],
    /// Each server's PSS once the last delivery came, before the sockets close.
    pss_at_end: &'a [Option<u64>],
    stored: Option<Stored>,
    /// Cores used while sending, after the warm-up (`cpu::cores_between`).
    cpu: serde_json::Value,
}

fn millis(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn summary(input: SummaryInput<'_>) -> serde_json::Value {
    let SummaryInput {
        args,
        crowd,
        tally,
        latencies,
        ..
    } = input;
    let sockets = args.sockets.unwrap_or(crowd.users.len());
    let nodes = args.servers.len().max(1);
    let memory: Vec<serde_json::Value> = args
        .server_pids
        .iter()
        .enumerate()
        .map(|(index, pid)| {
            let before = input.rss_before.get(index).copied().flatten();
            let after = input.rss_after.get(index).copied().flatten();
            let on_node = sockets / nodes + usize::from(index < sockets % nodes);
            let per_socket = match (before, after) {
                (Some(before), Some(after)) if on_node > 0 => {
                    Some(after.saturating_sub(before) as f64 * 1024.0 / on_node as f64)
                }
                _ => None,
            };
            json!({
                "pid": pid,
                "rssBeforeKiB": before,
                "rssAfterKiB": after,
                "pssAtEndKiB": input.pss_at_end.get(index).copied().flatten(),
                "socketsOnNode": on_node,
                "bytesPerSocket": per_socket,
            })
        })
        .collect();
    let sent = tally.sent.load(Ordering::Relaxed);
    let acks = tally.acks.load(Ordering::Relaxed);
    let deliveries = tally.deliveries.load(Ordering::Relaxed);
    let drops = tally.drops.load(Ordering::Relaxed);
    let resent = tally.resent.load(Ordering::Relaxed);
    let mut value = json!({
        "servers": args.servers,
        "users": crowd.users.len(),
        "chats": crowd.chats.len(),
        "groupSize": args.group_size,
        "via": format!("{:?}", args.via).to_lowercase(),
        "seed": args.seed,
        "socketsOpen": sockets,
        "connectSeconds": input.connect_time.as_secs_f64(),
        "socketsPerSecond": sockets as f64 / input.connect_time.as_secs_f64(),
        "targetRate": args.rate,
        "sent": sent,
        "sendSeconds": input.send_time.as_secs_f64(),
        "sentPerSecond": sent as f64 / input.send_time.as_secs_f64(),
        "acked": acks,
        "unacked": sent.saturating_sub(acks),
        "doubleAcks": tally.double_acks(),
        "errors": tally.errors.load(Ordering::Relaxed),
        "refusedForNow": tally.refused_for_now.load(Ordering::Relaxed),
        "deliveries": deliveries,
        "deliveriesPerSecond": deliveries as f64 / input.delivery_time.as_secs_f64(),
        "allDelivered": input.settled,
        "socketDrops": drops,
        "reconnects": tally.reconnects.load(Ordering::Relaxed),
        "caughtUp": tally.caught_up.load(Ordering::Relaxed),
        "resent": resent,
        "redelivered": tally.redelivered.load(Ordering::Relaxed),
        // A socket sees a seq again only after it came back (its catch-up)
        // or for a message written again (the server delivers the stored
        // copy again): any other is a delivery made twice.
        "redeliveredWithoutCause": tally.redelivered_without_cause.load(Ordering::Relaxed),
        "misrouted": tally.misrouted.load(Ordering::Relaxed),
        "lost": tally.missing(),
        "duplicated": tally.duplicated(),
        "latencyMs": {
            "p50": millis(latencies, 0.5),
            "p99": millis(latencies, 0.99),
            "p999": millis(latencies, 0.999),
            "max": latencies.max() as f64 / 1000.0,
        },
        "serverMemory": memory,
        "cpuWhileSending": input.cpu,
    });
    if let Some(stored) = input.stored {
        value["storedFound"] = json!(stored.found);
        value["storedMissing"] = json!(stored.missing);
        value["storedTwice"] = json!(stored.twice);
        value["storedWithinSeconds"] = json!(stored.persisted_after);
        value["storedPerSecond"] = json!(stored.found as f64 / stored.persisted_after);
        value["storedCheckSeconds"] = json!(stored.check_seconds);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::sockets_of;

    #[test]
    fn sockets_are_dealt_out_in_turn() {
        assert_eq!(
            (0..3)
                .map(|user| sockets_of(user, 7, 3))
                .collect::<Vec<_>>(),
            [3, 2, 2]
        );
        assert_eq!(
            (0..3)
                .map(|user| sockets_of(user, 2, 3))
                .collect::<Vec<_>>(),
            [1, 1, 0]
        );
    }
}
