//! A TCP relay to PostgreSQL for tests of a database that stops answering.
//! Shared by the `api` and `faults` test binaries; each uses part of it.
#![allow(dead_code)]

/// A TCP relay to PostgreSQL that can stop answering without closing
/// anything, as a database machine that is gone does: every query on it
/// (or one query, on its connection) waits until TCP gives up (many
/// minutes).
pub struct FreezingRelay {
    pub addr: std::net::SocketAddr,
    hold: tokio::sync::watch::Sender<Hold>,
    /// Every byte a client sent that the database never got.
    held: tokio::sync::watch::Sender<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the relay holds back, with everything after it on its connection.
#[derive(Clone)]
enum Hold {
    Nothing,
    Everything,
    /// What a client sends holding these bytes (a bound value, say).
    Containing(Vec<u8>),
    /// The connection that leaves the relay from this port (the
    /// `client_port` PostgreSQL shows for its session).
    Connection(u16),
}

impl Hold {
    fn catches(&self, port: u16, bytes: &[u8]) -> bool {
        match self {
            Hold::Nothing => false,
            Hold::Everything => true,
            Hold::Containing(text) => contains(bytes, text),
            Hold::Connection(held) => *held == port,
        }
    }
}

fn contains(bytes: &[u8], text: &[u8]) -> bool {
    bytes.windows(text.len()).any(|window| window == text)
}

impl FreezingRelay {
    /// A relay to the database at `url`, and the URL that goes through it.
    pub async fn before(database: &str) -> (FreezingRelay, String) {
        let mut url = reqwest::Url::parse(database).expect("a database URL");
        let host = url.host_str().expect("a host").to_owned();
        let backend = tokio::net::lookup_host((host, url.port().unwrap_or(5432)))
            .await
            .expect("resolved")
            .next()
            .expect("an address");
        let relay = FreezingRelay::start(backend).await;
        url.set_host(Some(&relay.addr.ip().to_string()))
            .expect("a host");
        url.set_port(Some(relay.addr.port())).expect("a port");
        (relay, url.to_string())
    }

    async fn start(backend: std::net::SocketAddr) -> FreezingRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let addr = listener.local_addr().expect("address");
        let hold = tokio::sync::watch::Sender::new(Hold::Nothing);
        let held = tokio::sync::watch::Sender::new(Vec::new());
        let (watching, holding) = (hold.clone(), held.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(Self::relay(
                    client,
                    backend,
                    watching.subscribe(),
                    holding.clone(),
                ));
            }
        });
        FreezingRelay {
            addr,
            hold,
            held,
            task,
        }
    }

    /// The database stops answering anything.
    pub fn freeze(&self) {
        self.hold.send_replace(Hold::Everything);
    }

    /// The database stops answering the next query holding `text`, on the
    /// connection that sends it (a connection checked before it is used
    /// passes its check, as it would when the machine went away just then).
    pub fn freeze_at(&self, text: &str) {
        self.hold
            .send_replace(Hold::Containing(text.as_bytes().to_vec()));
    }

    /// The database stops answering the session whose `client_port` is
    /// `port`, and PostgreSQL keeps it: the relay holds its connection
    /// open, even once its client has closed its end (as a network that
    /// went silent leaves a session until keepalive gives up, which the
    /// relay's own kernel answers here).
    pub fn stall(&self, port: u16) {
        self.hold.send_replace(Hold::Connection(port));
    }

    /// Waits until a query holding `text` waits on the database.
    pub async fn until_held(&self, text: &str) {
        let mut held = self.held.subscribe();
        held.wait_for(|bytes| contains(bytes, text.as_bytes()))
            .await
            .expect("the relay runs");
    }

    /// Copies both ways until what it must hold comes by.
    async fn relay(
        client: tokio::net::TcpStream,
        backend: std::net::SocketAddr,
        hold: tokio::sync::watch::Receiver<Hold>,
        held: tokio::sync::watch::Sender<Vec<u8>>,
    ) {
        let Ok(server) = tokio::net::TcpStream::connect(backend).await else {
            return;
        };
        let port = server.local_addr().map_or(0, |addr| addr.port());
        let (from_client, to_client) = client.into_split();
        let (from_server, to_server) = server.into_split();
        tokio::select! {
            () = Self::copy(port, from_client, to_server, hold.clone(), Some(held)) => {}
            () = Self::copy(port, from_server, to_client, hold, None) => {}
        }
    }

    /// Copies until a read is to be held; then holds it, and everything
    /// after it, noting what a client sent in `held`.
    async fn copy(
        port: u16,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut hold: tokio::sync::watch::Receiver<Hold>,
        held: Option<tokio::sync::watch::Sender<Vec<u8>>>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let Ok(n) = from.read(&mut buf).await else {
                return;
            };
            if n == 0 {
                return;
            }
            if hold.borrow_and_update().catches(port, &buf[..n]) {
                if let Some(held) = &held {
                    held.send_modify(|bytes| bytes.extend_from_slice(&buf[..n]));
                }
                std::future::pending::<()>().await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for FreezingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
