//! The realtime side: `hub` knows every open socket of every user on this node
//! and delivers frames to them; `fanout` carries events between nodes through
//! RabbitMQ; `events` is what the rest of the server calls to tell users
//! something; `socket` runs one WebSocket connection.

mod events;
mod fanout;
mod hub;
mod socket;

pub use events::{Event, Events};
pub use fanout::{AmqpFanout, FanoutError, FanoutOptions};
pub use hub::{Hub, Registration, encode, encode_message};
pub use socket::upgrade;
