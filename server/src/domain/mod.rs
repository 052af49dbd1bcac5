//! Domain types that parse user input once, at the edge. A handler that holds an
//! `Email` knows it is well-formed and normalised; nothing deeper re-checks it.

mod email;
mod invitation;
mod text;

pub use email::Email;
pub use invitation::InvitationCode;
pub use text::{ChatName, ClientId, Content, Password, SearchQuery, UserName};

/// Input that does not fit a domain type. The message is shown to users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);
