//! What every request handler and socket shares.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::allowance::HourlyAllowance;
use crate::auth::{LoginThrottle, Passwords, Tokens};
use crate::blobs::BlobStore;
use crate::chats::ChatTurns;
use crate::domain::InvitationCode;
use crate::health::Health;
use crate::pipeline::Pipeline;
use crate::realtime::{Events, Hub};
use crate::store::Store;
use crate::sync::Unfinished;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub hub: Arc<Hub>,
    pub events: Arc<Events>,
    pub pipeline: Arc<Pipeline>,
    pub tokens: Arc<Tokens>,
    pub passwords: Arc<Passwords>,
    /// Each email address's logins left this hour (`NATTER_LOGINS_PER_HOUR`).
    pub logins: Arc<LoginThrottle>,
    /// Each user's groups left to make this hour (`NATTER_GROUPS_PER_HOUR`).
    pub groups_made: Arc<HourlyAllowance<String>>,
    /// A place for each sign-up being read or answered
    /// (`NATTER_SIGN_UP_FORMS`): each may hold a picture of up to 5 MiB.
    pub sign_up_forms: Arc<Semaphore>,
    pub settings: Arc<Settings>,
    /// One change of a chat at a time (`chats::ChatTurns`).
    pub chat_turns: Arc<ChatTurns>,
    /// The database's and the picture store's last answers (`health`).
    pub health: Arc<Health>,
    /// Changes that run to their end whatever becomes of their request
    /// (`sync::Unfinished`).
    pub unfinished: Unfinished,
}

/// Run-time settings the handlers need, taken from `Config` at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ws_ping_interval: Duration,
    pub ws_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` names the client (`http::client`).
    pub trusted_proxies: Vec<IpAddr>,
    /// How many sockets one user may hold open on this node.
    pub sockets_per_user: usize,
    /// What a sign-up must give, when the server asks for one.
    pub invitation_code: Option<InvitationCode>,
}
