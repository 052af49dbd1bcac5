//! Typed configuration. Every setting is a `--flag` and a `NATTER_*` environment
//! variable (flags win); `natter-server --help` lists them with their defaults.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::domain::InvitationCode;

/// Natter's self-hosted server: REST API and realtime WebSocket gateway.
#[derive(Debug, Clone, Parser)]
#[command(name = "natter-server", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the API and the socket (what runs when no command is given).
    Serve,
    /// Only sequence and store messages from RabbitMQ's partition queues,
    /// to scale that apart from the nodes that serve (needs NATTER_AMQP_URL
    /// and NATTER_DATABASE_URL).
    Persist,
}

/// Everything the server needs to start.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address and port to listen on.
    #[arg(long, env = "NATTER_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Folder for the embedded database, profile pictures and the generated JWT
    /// secret. Defaults to the platform's per-user data folder.
    #[arg(long, env = "NATTER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// PostgreSQL URL (`postgres://user:pass@host/db`) to keep data in
    /// PostgreSQL instead of the embedded SQLite file. Needed for several nodes.
    #[arg(long, env = "NATTER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Most connections this node opens to PostgreSQL.
    #[arg(long, env = "NATTER_DATABASE_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub database_max_connections: u32,

    /// Where profile pictures go: unset for the `pics` folder in the data
    /// folder, or `s3://bucket[/prefix]` for an S3-compatible store.
    #[arg(long, env = "NATTER_BLOB_URL")]
    pub blob_url: Option<String>,

    /// S3 endpoint, e.g. `http://127.0.0.1:9000` for MinIO or Garage; unset for AWS.
    #[arg(long, env = "NATTER_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 region (AWS_DEFAULT_REGION when unset).
    #[arg(long, env = "NATTER_S3_REGION")]
    pub s3_region: Option<String>,

    /// S3 access key id (AWS_ACCESS_KEY_ID when unset).
    #[arg(long, env = "NATTER_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,

    /// S3 secret access key (AWS_SECRET_ACCESS_KEY when unset).
    #[arg(long, env = "NATTER_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,

    /// RabbitMQ URL (`amqp://user:pass@host:5672/%2f`). With it, several nodes
    /// sharing one PostgreSQL database act as one server: events reach users
    /// whichever node their socket is on.
    #[arg(long, env = "NATTER_AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,

    /// The name a deployment's RabbitMQ objects start with: the fanout
    /// exchange that carries events between its nodes (`<name>.nodes`) and
    /// its partition queues (`<name>.messages.<n>`).
    #[arg(long, env = "NATTER_AMQP_EXCHANGE", default_value = "natter.events")]
    pub amqp_exchange: String,

    /// Whether this node also sequences and stores messages from RabbitMQ's
    /// partition queues (`false` leaves that to `natter-server persist`).
    #[arg(long, env = "NATTER_PERSIST", default_value_t = true, action = clap::ArgAction::Set)]
    pub persist: bool,

    /// How many partition queues (`<name>.messages.<n>`) the deployment
    /// spreads its chats over, each sequenced by one node at a time. Decided
    /// by the first node to start (8 when unset) and recorded in the
    /// database; a node set to another count refuses to start. Fewer suit a
    /// deployment on few cores (bigger batches per commit), more let more
    /// nodes share the sequencing.
    #[arg(long, env = "NATTER_PARTITIONS", value_parser = clap::value_parser!(u16).range(1..=i64::from(crate::pipeline::MOST_PARTITIONS)))]
    pub partitions: Option<u16>,

    /// Most messages a node holds for one partition queue while RabbitMQ is
    /// slow to confirm them (a memory or disk alarm blocks publishers): past
    /// it, senders get 503 "try again" at once rather than the node's memory
    /// growing without end. Each held message is about its text plus 200
    /// bytes.
    #[arg(long, env = "NATTER_PUBLISH_BACKLOG", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub publish_backlog: u32,

    /// Most messages one partition's sequencer holds delivered and not yet
    /// stored: past it, while the database is away or behind, the sequencer
    /// takes no more from its queue until a commit goes through. Those
    /// messages wait in RabbitMQ; their senders are told to try again after
    /// 10 s, and their retries are recognised. Without RabbitMQ (at most
    /// 100,000 there: a crash skips that many seqs), a send past it is
    /// refused at once, to be tried again; there the count includes the
    /// batch being committed (up to 1,000), so a limit below that refuses
    /// sends while the database is well. Each held message is about its
    /// text plus 300 bytes.
    #[arg(long, env = "NATTER_UNSTORED_LIMIT", default_value_t = crate::pipeline::MOST_UNSTORED, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub unstored_limit: u32,

    /// Delete this deployment's partition queues after they have been unused
    /// for this many milliseconds. Only for throwaway deployments (tests):
    /// unset, queues live until deleted by hand.
    #[arg(long, env = "NATTER_AMQP_QUEUE_EXPIRY_MS", hide = true)]
    pub amqp_queue_expiry_ms: Option<u64>,

    /// The first wait before reconnecting the event link to the other nodes,
    /// in milliseconds (it doubles up to 5 s). For tests that need the link
    /// to stay away a while.
    #[arg(
        long,
        env = "NATTER_FANOUT_RETRY_MS",
        default_value_t = 100,
        hide = true
    )]
    pub fanout_retry_ms: u64,

    /// How many KiB of events for the other nodes may wait while the link to
    /// them is away; past it they are dropped and the other nodes close
    /// their sockets when the link is back, so that apps catch up.
    /// At least 1; below 1024 a short outage already costs every other
    /// node's sockets a reconnect (the node warns at start).
    #[arg(
        long,
        env = "NATTER_FANOUT_BUFFER_KIB",
        default_value_t = 65_536,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub fanout_buffer_kib: usize,

    /// This node's name in logs and between nodes (default: random per start).
    #[arg(long, env = "NATTER_NODE_ID")]
    pub node_id: Option<String>,

    /// Secret that signs session tokens (at least 32 characters). Every node of
    /// one deployment needs the same one. When unset, a random secret is
    /// generated once and kept in the data folder.
    #[arg(long, env = "NATTER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// A code everyone who signs up must give (at least 16 characters),
    /// for a server meant only for the people it is given to; unset, anyone
    /// who can reach the server may sign up. Accounts already made are not
    /// touched when it is set or changed.
    #[arg(long, env = "NATTER_INVITATION_CODE", hide_env_values = true)]
    pub invitation_code: Option<String>,

    /// How long a session token stays valid, in seconds (default 7 days).
    #[arg(long, env = "NATTER_TOKEN_TTL_SECS", default_value_t = 7 * 24 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub token_ttl_secs: u64,

    /// The longest a session lives, in seconds since its login (default 90
    /// days): the app renews its token while in use, up to this; then the
    /// user logs in again. Bounds what a stolen token is worth.
    #[arg(long, env = "NATTER_SESSION_MAX_SECS", default_value_t = 90 * 24 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_max_secs: u64,

    /// How often the server pings each socket, in milliseconds (less than
    /// `NATTER_WS_TIMEOUT_MS`: a socket's last pong would otherwise be older
    /// than the timeout at every other ping). At least 10.
    #[arg(long, env = "NATTER_WS_PING_MS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub ws_ping_ms: u64,

    /// A socket that has sent nothing (not even a pong) for this long, in
    /// milliseconds, is considered dead and dropped. At least 20.
    #[arg(long, env = "NATTER_WS_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(20..))]
    pub ws_timeout_ms: u64,

    /// How many password hashes (sign-ups, logins) may wait for a core,
    /// beyond one running on each. Past it, one is answered 503 at once: a
    /// line of sign-ups holds their pictures (up to 5 MiB each), and moves
    /// at ~50 a second per core.
    #[arg(
        long,
        env = "NATTER_PASSWORD_QUEUE",
        default_value_t = 64,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=100_000)
    )]
    pub password_queue: usize,

    /// How many logins one email address may try in an hour on this node,
    /// right password or wrong; they come back one at a time over the
    /// hour. Past them a login is answered 429 without its password being
    /// checked (`auth::throttle`): guessing a password is held to this
    /// rate, not to what the cores can hash.
    #[arg(
        long,
        env = "NATTER_LOGINS_PER_HOUR",
        default_value_t = NonZeroU32::new(30).expect("not zero"),
        value_parser = clap::value_parser!(NonZeroU32)
    )]
    pub logins_per_hour: NonZeroU32,

    /// Addresses of the reverse proxies in front of this node, comma
    /// separated (e.g. `127.0.0.1` for a TLS proxy on the same machine):
    /// a request from one of them is taken to come from the client that
    /// `X-Forwarded-For` names (the last address in it that is not one of
    /// these). Logins are counted per client; unset, every request behind
    /// a proxy counts as the proxy's.
    #[arg(
        long,
        env = "NATTER_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = |address: &str| address.trim().parse::<IpAddr>()
    )]
    pub trusted_proxies: Vec<IpAddr>,

    /// How many groups one user may make in an hour on this node, coming
    /// back one at a time over the hour; past them 429. Each group is a
    /// chat in every member's list, which the app reads whole at every
    /// start: one user making them without end would swell everyone's.
    #[arg(
        long,
        env = "NATTER_GROUPS_PER_HOUR",
        default_value_t = NonZeroU32::new(60).expect("not zero"),
        value_parser = clap::value_parser!(NonZeroU32)
    )]
    pub groups_per_hour: NonZeroU32,

    /// How many sockets one user may hold open on this node (1 to 10000):
    /// one per app running, so a few; past it an upgrade is answered 429.
    /// Each socket is a task, a queue and a share of every frame for its
    /// user (a typing signal, a message), so one account's many sockets
    /// would cost every member of its chats.
    #[arg(
        long,
        env = "NATTER_SOCKETS_PER_USER",
        default_value_t = 20,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000)
    )]
    pub sockets_per_user: usize,

    /// How many sign-ups may be read and answered at once: each holds its
    /// form, a picture of up to 5 MiB, until it is answered. Past it, one
    /// is answered 503 at once, rather than the server's memory growing
    /// with every upload that is slow to arrive (each is also given at
    /// most 7 minutes to arrive).
    #[arg(
        long,
        env = "NATTER_SIGN_UP_FORMS",
        default_value_t = 32,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000)
    )]
    pub sign_up_forms: usize,

    /// How long a stopping server waits, in milliseconds, for HTTP requests
    /// still running before it stops without their answers: a query the
    /// database never answers would otherwise keep it from stopping (and
    /// from storing what it sequenced) until TCP gives up.
    #[arg(long, env = "NATTER_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// Log filter in `tracing` syntax, e.g. `info` or `natter_server=debug`.
    #[arg(long, env = "NATTER_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    /// The data folder: the configured one, or the platform's default.
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        directories::ProjectDirs::from("org", "Natter", "natter-server")
            .map(|dirs| dirs.data_dir().to_path_buf())
            .ok_or_else(|| anyhow::anyhow!("no home folder found: set NATTER_DATA_DIR"))
    }

    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.token_ttl_secs)
    }

    pub fn longest_session(&self) -> Duration {
        Duration::from_secs(self.session_max_secs)
    }

    pub fn ws_ping_interval(&self) -> Duration {
        Duration::from_millis(self.ws_ping_ms)
    }

    pub fn ws_timeout(&self) -> Duration {
        Duration::from_millis(self.ws_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The invitation code, when one is set and long enough. Checked here
    /// rather than by clap, whose refusal would print the value given (a
    /// code one character short is nearly the code).
    pub fn invitation(&self) -> anyhow::Result<Option<InvitationCode>> {
        let code = self.invitation_code.as_deref().map(InvitationCode::parse);
        code.transpose()
            .map_err(|err| anyhow::anyhow!("NATTER_INVITATION_CODE: {err}"))
    }

    /// Refuses settings that each pass on their own but not together, and
    /// warns of a cluster whose nodes cannot stand in for one another.
    pub fn check(&self) -> anyhow::Result<()> {
        self.invitation()?;
        anyhow::ensure!(
            self.ws_ping_interval() < self.ws_timeout(),
            "NATTER_WS_PING_MS ({} ms) must be less than NATTER_WS_TIMEOUT_MS ({} ms): \
             every idle socket would be dropped",
            self.ws_ping_interval().as_millis(),
            self.ws_timeout().as_millis()
        );
        anyhow::ensure!(
            self.blob_url.is_some()
                || (self.s3_endpoint.is_none()
                    && self.s3_region.is_none()
                    && self.s3_access_key_id.is_none()
                    && self.s3_secret_access_key.is_none()),
            "NATTER_S3_* settings without NATTER_BLOB_URL: pictures would go to the local \
             folder; set NATTER_BLOB_URL=s3://bucket[/prefix] to use S3"
        );
        if self.amqp_url.is_some() {
            if self.jwt_secret.is_none() {
                tracing::warn!(
                    "NATTER_AMQP_URL without NATTER_JWT_SECRET: this node signs tokens with a \
                     secret of its own, which the other nodes of the deployment refuse"
                );
            }
            if self.blob_url.is_none() {
                tracing::warn!(
                    "NATTER_AMQP_URL without NATTER_BLOB_URL: pictures are kept in this node's \
                     folder, out of the other nodes' reach"
                );
            }
        }
        Ok(())
    }

    /// A configuration with every default and the given data folder, for tests
    /// and embedding.
    pub fn with_data_dir(data_dir: PathBuf) -> Self {
        let cli = Cli::parse_from(["natter-server"]);
        Config {
            data_dir: Some(data_dir),
            ..cli.config
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    #[test]
    fn settings_out_of_range_are_refused_at_start() {
        for [flag, value] in [
            ["--fanout-buffer-kib", "0"],
            ["--partitions", "0"],
            ["--partitions", "65"],
            ["--publish-backlog", "0"],
            ["--token-ttl-secs", "0"],
            ["--session-max-secs", "0"],
            ["--database-max-connections", "0"],
            ["--ws-ping-ms", "0"],
            ["--ws-timeout-ms", "10"],
            ["--password-queue", "100001"],
            ["--logins-per-hour", "0"],
            ["--sockets-per-user", "0"],
            ["--groups-per-hour", "0"],
        ] {
            let parsed = Cli::try_parse_from(["natter-server", flag, value]);
            assert!(parsed.is_err(), "{flag} {value} was accepted");
        }
        let cli = Cli::try_parse_from(["natter-server", "--partitions", "2"]);
        assert_eq!(cli.map(|cli| cli.config.partitions).ok(), Some(Some(2)));
    }

    #[test]
    fn an_invitation_code_too_short_is_refused_without_being_shown() {
        let parse = |code: &str| {
            Cli::try_parse_from(["natter-server", "--invitation-code", code])
                .expect("parsed")
                .config
        };
        let err = parse("fifteen-chars-x").check().expect_err("refused");
        let err = format!("{err:#}");
        assert!(err.contains("at least 16 characters"), "{err}");
        assert!(!err.contains("fifteen"), "the code shown: {err}");
        let config = parse("sixteen-chars-xy");
        assert!(config.check().is_ok());
        assert!(
            config
                .invitation()
                .expect("good")
                .is_some_and(|code| code.is("sixteen-chars-xy"))
        );
    }

    /// Every setting an operator may use (all but the hidden, test-only
    /// ones) has its row in the README's table.
    #[test]
    fn the_readme_lists_every_setting() {
        let readme = include_str!("../../README.md");
        let command = <Cli as clap::CommandFactory>::command();
        let settings: Vec<String> = command
            .get_arguments()
            .filter(|arg| !arg.is_hide_set())
            .filter_map(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .collect();
        assert!(settings.len() > 30, "{settings:?}");
        for env in settings {
            assert!(
                readme.contains(&format!("| `{env}` |")),
                "{env} has no row in README.md"
            );
        }
    }

    #[test]
    fn trusted_proxies_are_a_list_of_addresses_spaces_aside() {
        let cli = Cli::try_parse_from(["natter-server", "--trusted-proxies", "127.0.0.1, ::1"])
            .expect("parsed");
        let expected: Vec<std::net::IpAddr> =
            vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
        assert_eq!(cli.config.trusted_proxies, expected);
        assert!(Cli::try_parse_from(["natter-server", "--trusted-proxies", "proxy.lan"]).is_err());
    }

    #[test]
    fn a_ping_no_more_often_than_the_timeout_is_refused() {
        let parse = |ping: &str, timeout: &str| {
            Cli::try_parse_from([
                "natter-server",
                "--ws-ping-ms",
                ping,
                "--ws-timeout-ms",
                timeout,
            ])
            .expect("each in range")
            .config
        };
        let err = parse("60000", "30000").check().expect_err("refused");
        assert!(err.to_string().contains("NATTER_WS_PING_MS"), "{err}");
        assert!(parse("20000", "60000").check().is_ok());
    }

    #[test]
    fn s3_settings_without_an_s3_blob_url_are_refused() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from([&["natter-server"], args].concat())
                .expect("each in range")
                .config
        };
        let err = parse(&["--s3-endpoint", "http://127.0.0.1:9000"])
            .check()
            .expect_err("refused");
        assert!(err.to_string().contains("NATTER_BLOB_URL"), "{err}");
        let with_url = [
            "--s3-endpoint",
            "http://127.0.0.1:9000",
            "--blob-url",
            "s3://pics",
        ];
        assert!(parse(&with_url).check().is_ok());
    }
}
