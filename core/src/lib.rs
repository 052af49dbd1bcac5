//! `natter-core`: the desktop app's engine, without any window or Tauri
//! type, so that all of it can be tested against a real server.
//!
//! - `engine`: the one handle the app holds; its methods are what the user does.
//! - `connection`: the socket task: connect, catch up, send the outbox, live, reconnect.
//! - `cache`: the local SQLite copy of users, chats, messages and the outbox.
//! - `api`: the server's REST API over reqwest.
//! - `tls`: which `https` servers are trusted, for the API and the socket.
//! - `session`: the files kept between runs (settings, session, caches).
//! - `renewal`: when the session's token is exchanged for a new one.
//! - `views`: what the UI is given: chat rows, messages, events.
//! - `retries`: when to try again what the server failed or refused for now
//!   (a chat's sends, a chat's history); `resends`: the chats whose sends
//!   were refused for now; `behind`: the chats whose history failed.
//! - `typing`, `notices`, `backoff`, `server_url`: small rules, each on its own.

pub mod api;
pub mod backoff;
mod behind;
pub mod cache;
mod connection;
mod context;
pub mod engine;
pub mod error;
pub mod notices;
mod renewal;
mod resends;
mod retries;
pub mod server_url;
pub mod session;
pub mod tls;
pub mod typing;
pub mod views;

pub use api::SignUp;
pub use backoff::Backoff;
pub use engine::{Engine, EngineOptions};
pub use error::{CoreError, CoreResult};
pub use server_url::ServerUrl;
pub use tls::Trust;
pub use views::{
    ChatList, ChatSummary, ConnectionState, Delivery, Event, MessageView, Notification,
};
