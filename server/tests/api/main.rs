//! Integration tests: the real server on a free port, driven over HTTP and
//! WebSocket the way several users would. One binary, one module per area.

mod helpers;

mod accounts;
mod chats;
mod cluster;
mod errors;
mod messages;
mod operations;
mod pipeline;
mod relay;
mod s3;
mod socket;
mod store;
