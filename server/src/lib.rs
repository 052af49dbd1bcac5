//! `natter-server`: Natter's self-hosted server.
//!
//! - `config`: settings from flags and environment.
//! - `data_lock`: one embedded server per data folder.
//! - `domain`: input parsed once into types that are valid by construction.
//! - `auth`: passwords, session tokens, the authenticated-caller extractor.
//! - `store`: persistence behind the `Store` trait (SQLite by default).
//! - `blobs`: profile pictures behind the `BlobStore` trait (a folder by default).
//! - `chats`: the rules of chats and messages, shared by REST and the socket.
//! - `realtime`: the WebSocket gateway and the hub that delivers events.
//! - `pipeline`: how a message gets its seq, reaches members and is stored.
//! - `broker`: what the two RabbitMQ links share (reconnecting).
//! - `http`: routes and handlers.
//! - `sync`: locks that outlive a panic elsewhere.

pub mod allowance;
pub mod auth;
pub mod blobs;
pub mod broker;
pub mod chats;
pub mod config;
pub mod data_lock;
pub mod domain;
pub mod error;
pub mod health;
pub mod http;
pub mod id_map;
pub mod pipeline;
pub mod realtime;
pub mod state;
pub mod store;
mod sync;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::allowance::HourlyAllowance;
use crate::auth::{
    EndedSessions, LoginThrottle, Passwords, Tokens, load_or_create_secret, sessions,
};
use crate::blobs::{BlobStore, LocalBlobs, S3Blobs, S3Settings};
use crate::chats::ChatTurns;
use crate::config::Config;
use crate::data_lock::{DataLock, LOCK_PATIENCE};
use crate::health::Health;
use crate::pipeline::{AmqpPipeline, AmqpSettings, Pipeline, agree_partitions};
use crate::realtime::{AmqpFanout, Events, FanoutOptions, Hub};
use crate::state::{AppState, Settings};
use crate::store::{PgStore, Sequencing, SqliteStore, Store};
use crate::sync::Unfinished;

/// A server that is bound to its address and ready to serve.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Other nodes may share the database (PostgreSQL): their logouts are
    /// read from it (`sessions::follow`). On the embedded default this node
    /// is the only one, and knows its own at once.
    shared_store: bool,
    /// How long a stop waits for requests still running.
    shutdown_grace: std::time::Duration,
}

impl Application {
    /// For unit tests: a server on the embedded default in `dir`, bound to
    /// a free loopback port, not yet running.
    #[cfg(test)]
    pub(crate) async fn in_folder(dir: &std::path::Path) -> Self {
        let config = Config {
            addr: "127.0.0.1:0".parse().expect("address"),
            ..Config::with_data_dir(dir.to_path_buf())
        };
        Self::build(&config).await.expect("built")
    }

    /// Opens the storage, loads the signing secret and binds the listener.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        config.check()?;
        // First: a second server started by mistake (its port taken) stops
        // here, before it touches the database the first one is using.
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("listening on {}", config.addr))?;
        let data_dir = config.data_dir()?;
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating the data folder {}", data_dir.display()))?;
        // Then: one on another port waits for the embedded database here,
        // before it writes anything to the folder.
        let store = open_store(config, &data_dir).await?;
        let secret = load_or_create_secret(config.jwt_secret.as_deref(), &data_dir)?;
        let partitions = partitions(config, store.as_ref()).await?;
        let blobs = open_blobs(config, &data_dir)?;
        let waiting = config.password_queue;
        let passwords = tokio::task::spawn_blocking(move || Passwords::new(waiting)).await??;
        let ended = Arc::new(EndedSessions::new());
        sessions::load(store.as_ref(), &ended)
            .await
            .context("reading the sessions logged out")?;
        let hub = Arc::new(Hub::new());
        let node_id = node_id(config);
        let events = open_events(config, &node_id, hub.clone()).await?;
        let pipeline = open_pipeline(
            config,
            &node_id,
            config.persist,
            partitions,
            store.clone(),
            events.clone(),
        )
        .await?;
        let state = AppState {
            store,
            blobs,
            hub,
            events,
            pipeline,
            tokens: Arc::new(Tokens::new(
                &secret,
                config.token_ttl(),
                config.longest_session(),
                ended,
            )),
            passwords: Arc::new(passwords),
            logins: Arc::new(LoginThrottle::new(config.logins_per_hour)),
            groups_made: Arc::new(HourlyAllowance::new(config.groups_per_hour)),
            sign_up_forms: Arc::new(tokio::sync::Semaphore::new(config.sign_up_forms)),
            settings: Arc::new(Settings {
                ws_ping_interval: config.ws_ping_interval(),
                ws_timeout: config.ws_timeout(),
                trusted_proxies: config
                    .trusted_proxies
                    .iter()
                    .map(IpAddr::to_canonical)
                    .collect(),
                sockets_per_user: config.sockets_per_user,
                invitation_code: config.invitation()?,
            }),
            chat_turns: Arc::new(ChatTurns::new()),
            unfinished: Unfinished::default(),
            health: Arc::new(Health::new()),
        };
        Ok(Application {
            listener,
            state,
            shared_store: config.database_url.is_some(),
            shutdown_grace: config.shutdown_grace(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then closes every socket, waits
    /// (at most the configured grace) for requests still running and the
    /// changes they began, and stores what was sequenced.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let hub = self.state.hub.clone();
        let events = self.state.events.clone();
        let pipeline = self.state.pipeline.clone();
        tracing::info!(addr = %self.listener.local_addr()?, "natter-server listening");
        let following = self.shared_store.then(|| {
            tokio::spawn(sessions::follow(
                self.state.store.clone(),
                self.state.tokens.ended().clone(),
            ))
        });
        let watching = tokio::spawn(
            self.state
                .health
                .clone()
                .watch(self.state.store.clone(), self.state.blobs.clone()),
        );
        let unfinished = self.state.unfinished.clone();
        let (cutting, cut) = tokio::sync::watch::channel(false);
        let router = http::router(self.state, cut);
        let (stopping, stop_began) = tokio::sync::watch::channel(None);
        // The client's address with each request: logins are counted per
        // client (`auth::throttle`).
        let router = router.into_make_service_with_connect_info::<SocketAddr>();
        let serving = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: closing sockets");
                hub.close_all();
                stopping.send_replace(Some(tokio::time::Instant::now()));
            })
            .into_future();
        let served = tokio::select! {
            served = serving => served,
            () = grace_after(stop_began.clone(), self.shutdown_grace) => {
                tracing::warn!(
                    grace = ?self.shutdown_grace,
                    "requests still running at shutdown: cut off (503)"
                );
                cutting.send_replace(true);
                Ok(())
            }
        };
        if let Some(following) = following {
            following.abort();
        }
        watching.abort();
        served?;
        // Serving ends once the stop began; the changes requests began have
        // what is left of the grace.
        let began = stop_began
            .borrow()
            .unwrap_or_else(tokio::time::Instant::now);
        let left = unfinished.finish(began + self.shutdown_grace).await;
        if left > 0 {
            tracing::warn!(
                left,
                "changes still running at shutdown: they end unfinished"
            );
        }
        stop_pipeline_then_events(&pipeline, &events).await;
        Ok(())
    }
}

/// Completes `grace` after the stop began (never, if it never does).
async fn grace_after(
    mut stop_began: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
    grace: std::time::Duration,
) {
    let began = match stop_began.wait_for(Option::is_some).await {
        Ok(began) => *began,
        Err(_) => None,
    };
    match began {
        Some(began) => tokio::time::sleep_until(began + grace).await,
        None => std::future::pending().await,
    }
}

/// PostgreSQL when a database URL is configured, else SQLite in the data
/// folder, once this server holds the folder's lock (`data_lock`), which
/// the store keeps for as long as anything (the pipeline's last commits
/// included) holds it.
async fn open_store(config: &Config, data_dir: &std::path::Path) -> anyhow::Result<Arc<dyn Store>> {
    match config.database_url.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let sequencing = match config.amqp_url {
                Some(_) => Sequencing::Broker,
                None => Sequencing::InProcess,
            };
            let connected = PgStore::connect_node(
                url,
                config.database_max_connections,
                sequencing,
                LOCK_PATIENCE,
            )
            .await
            .context("connecting to PostgreSQL (NATTER_DATABASE_URL)")?;
            let Some(store) = connected else {
                anyhow::bail!(match sequencing {
                    Sequencing::InProcess =>
                        "another natter-server uses this PostgreSQL database: nodes that share one need RabbitMQ (NATTER_AMQP_URL), every one of them",
                    Sequencing::Broker =>
                        "a natter-server without RabbitMQ uses this PostgreSQL database: give it NATTER_AMQP_URL too, or stop it",
                });
            };
            tracing::info!("storage: PostgreSQL");
            Ok(Arc::new(store))
        }
        Some(_) => anyhow::bail!("NATTER_DATABASE_URL must be a postgres:// URL"),
        None => {
            let lock = DataLock::acquire(data_dir, LOCK_PATIENCE).await?;
            let store = SqliteStore::open(data_dir)
                .await
                .with_context(|| format!("opening the database in {}", data_dir.display()))?
                .holding(lock);
            tracing::info!(data_dir = %data_dir.display(), "storage: embedded SQLite");
            Ok(Arc::new(store))
        }
    }
}

/// An S3-compatible store when a blob URL is configured, else the data folder.
fn open_blobs(config: &Config, data_dir: &std::path::Path) -> anyhow::Result<Arc<dyn BlobStore>> {
    match &config.blob_url {
        Some(url) => {
            let settings = S3Settings {
                url: url.clone(),
                endpoint: config.s3_endpoint.clone(),
                region: config.s3_region.clone(),
                access_key_id: config.s3_access_key_id.clone(),
                secret_access_key: config.s3_secret_access_key.clone(),
            };
            let blobs = S3Blobs::connect(&settings)?;
            tracing::info!(%url, "pictures: S3-compatible store");
            Ok(Arc::new(blobs))
        }
        None => {
            let dir = data_dir.join("pics");
            let blobs = LocalBlobs::open(dir.clone()).context("opening the picture folder")?;
            tracing::info!(dir = %dir.display(), "pictures: local folder");
            Ok(Arc::new(blobs))
        }
    }
}

/// `natter-server persist`: sequences and stores messages from the partition
/// queues until `shutdown` completes; serves nothing.
pub async fn persist_until(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if config.amqp_url.is_none() || config.database_url.is_none() {
        anyhow::bail!("`persist` needs NATTER_AMQP_URL and NATTER_DATABASE_URL");
    }
    let data_dir = config.data_dir()?;
    let store = open_store(config, &data_dir).await?;
    let partitions = partitions(config, store.as_ref()).await?;
    let node_id = node_id(config);
    let events = open_events(config, &node_id, Arc::new(Hub::new())).await?;
    let pipeline = open_pipeline(config, &node_id, true, partitions, store, events.clone()).await?;
    tracing::info!(node = %node_id, "natter-server persisting messages");
    shutdown.await;
    tracing::info!("shutting down: storing what was sequenced, then handing the partitions over");
    stop_pipeline_then_events(&pipeline, &events).await;
    Ok(())
}

/// The end of a clean shutdown: the sequencers store what they sequenced
/// and hand their partitions over, which publishes their last events; then
/// the events still waiting for RabbitMQ go out. In the other order, events
/// of messages sequenced after the wait would be lost with the process.
async fn stop_pipeline_then_events(pipeline: &Pipeline, events: &Events) {
    pipeline.stop(STOP_PATIENCE).await;
    events.settle(SETTLE_PATIENCE).await;
}

/// How long a stopping node's sequencers may take to store what they
/// sequenced (a commit waiting for PostgreSQL retries for up to 2 s apart).
const STOP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

fn node_id(config: &Config) -> String {
    config
        .node_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// The deployment's partition count, agreed with the database before
/// anything connects to RabbitMQ (`agree_partitions`). Embedded, there is
/// one in-process partition and the setting does not count.
async fn partitions(config: &Config, store: &dyn Store) -> anyhow::Result<u16> {
    if config.amqp_url.is_none() {
        if config.partitions.is_some() {
            tracing::warn!("NATTER_PARTITIONS only counts with NATTER_AMQP_URL: ignored");
        }
        return Ok(1);
    }
    agree_partitions(store, config.partitions).await
}

/// Partitions through RabbitMQ when a broker is configured, else in-process.
async fn open_pipeline(
    config: &Config,
    node_id: &str,
    persist: bool,
    partitions: u16,
    store: Arc<dyn Store>,
    events: Arc<Events>,
) -> anyhow::Result<Arc<Pipeline>> {
    let unstored_limit = usize::try_from(config.unstored_limit).unwrap_or(usize::MAX);
    let Some(url) = &config.amqp_url else {
        let pipeline = Pipeline::local(store, events, unstored_limit)
            .await
            .context("starting the message pipeline")?;
        return Ok(Arc::new(pipeline));
    };
    let settings = AmqpSettings {
        url: url.clone(),
        prefix: config.amqp_exchange.clone(),
        node_id: node_id.to_owned(),
        partitions,
        persist,
        backlog: usize::try_from(config.publish_backlog).unwrap_or(usize::MAX),
        unstored_limit,
        queue_expiry: config
            .amqp_queue_expiry_ms
            .map(std::time::Duration::from_millis),
    };
    // A node without RabbitMQ that did not stop cleanly on this database (a
    // crash, or one that stopped because these nodes took its place) may
    // have delivered seqs it never stored: they are not given again here.
    let skip = crate::pipeline::SEQS_SKIPPED_AFTER_A_CRASH;
    if store
        .end_unfinished_local_run(skip)
        .await
        .context("reading how the last node without RabbitMQ stopped")?
    {
        tracing::warn!(
            skipped = skip,
            "a node without RabbitMQ did not stop cleanly on this database: every chat's seqs moved ahead"
        );
    }
    let pipeline = AmqpPipeline::start(settings, store, events, std::time::Duration::from_secs(15))
        .await
        .context("connecting the message pipeline to RabbitMQ (NATTER_AMQP_URL)")?;
    tracing::info!(
        persist,
        partitions,
        "messages: through RabbitMQ's partition queues"
    );
    Ok(Arc::new(Pipeline::Amqp(pipeline)))
}

/// How long a stopping node waits for RabbitMQ to take the events it still
/// holds for the other nodes (its event link may be reconnecting: up to 5 s
/// between tries).
const SETTLE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Events through RabbitMQ when a broker is configured, else this node alone.
async fn open_events(config: &Config, node_id: &str, hub: Arc<Hub>) -> anyhow::Result<Arc<Events>> {
    let Some(url) = &config.amqp_url else {
        return Ok(Arc::new(Events::local(hub)));
    };
    if config.database_url.is_none() {
        tracing::warn!(
            "NATTER_AMQP_URL without NATTER_DATABASE_URL: nodes will not share their data"
        );
    }
    if config.fanout_buffer_kib < 1024 {
        tracing::warn!(
            kib = config.fanout_buffer_kib,
            "NATTER_FANOUT_BUFFER_KIB is below 1 MiB: while RabbitMQ is away, this node's events \
             soon overflow it, and the other nodes then close their sockets"
        );
    }
    let fanout = AmqpFanout::start(
        url,
        &config.amqp_exchange,
        node_id,
        hub.clone(),
        FanoutOptions {
            patience: std::time::Duration::from_secs(15),
            first_retry: std::time::Duration::from_millis(config.fanout_retry_ms),
            buffer: config.fanout_buffer_kib.saturating_mul(1024),
        },
    )
    .await
    .context("connecting to RabbitMQ (NATTER_AMQP_URL)")?;
    tracing::info!(node = %node_id, exchange = %config.amqp_exchange, "events: shared with other nodes through RabbitMQ");
    Ok(Arc::new(Events::clustered(hub, fanout)))
}
