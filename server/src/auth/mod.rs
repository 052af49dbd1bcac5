//! Who is calling: argon2id password hashes, signed session tokens (JWT),
//! the sessions logged out before their tokens expire, how often an
//! account may be logged in to, and the extractor that turns a bearer token
//! into the caller's id.

mod extract;
mod password;
pub mod sessions;
mod throttle;
mod token;

pub use extract::{AuthSession, AuthUser, bearer_token};
pub use password::{HashError, Passwords};
pub use sessions::EndedSessions;
pub use throttle::LoginThrottle;
pub use token::{Claims, TokenError, Tokens, load_or_create_secret};
