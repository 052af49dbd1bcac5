//! Natter's protocol: the JSON shapes that cross the wire between `natter-server`
//! and its clients, over REST (`api`) and over the realtime socket (`socket`).
//!
//! Both sides depend on this crate so that a change to the protocol is a
//! compile error on the side that forgot it, not a silent mismatch.

pub mod api;
pub mod limits;
pub mod socket;
pub mod tagged;

pub use api::{Chat, ErrorBody, Message, User};
pub use socket::{ClientFrame, ServerFrame};
