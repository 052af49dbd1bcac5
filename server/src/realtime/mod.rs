//! The realtime side: `hub` knows every open socket of every user on this node
//! and delivers frames to them; `socket` runs one WebSocket connection.

mod hub;
mod socket;

pub use hub::{Hub, Registration};
pub use socket::upgrade;
