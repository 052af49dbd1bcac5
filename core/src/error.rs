//! The engine's one error type. The shell hands it to the UI as its
//! `Display` text, so every variant reads well on its own.

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The server answered with an error; `message` is its own explanation.
    #[error("{message}")]
    Server { status: u16, message: String },
    /// The server could not be reached.
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// Something needs a session and there is none.
    #[error("not logged in")]
    NotLoggedIn,
    /// Input refused before it was sent (an empty message, a bad address).
    #[error("{0}")]
    Invalid(String),
    /// The local cache failed.
    #[error("local cache: {0}")]
    Cache(#[from] sqlx::Error),
    #[error("local cache: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Reading or writing the app's files failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Another copy of the app holds the data folder.
    #[error("Natter is already running with its data in {0}")]
    AlreadyRunning(String),
    /// The server sent something we do not understand.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl CoreError {
    /// The server refused our credentials: the session is over.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, CoreError::Server { status: 401, .. })
    }

    /// The server says this is not ours to read (403: not a member). A
    /// proxy or firewall in front may answer so too: callers ask again
    /// elsewhere before they take it for the server's word.
    pub fn is_chat_refused(&self) -> bool {
        matches!(self, CoreError::Server { status: 403, .. })
    }

    /// The server failed on this request (500, its internal error): a
    /// damaged row or a bug in one chat, which another chat's request may
    /// well not meet. A server whose database is down answers 503, and a
    /// proxy 502-504, which hold for every chat alike.
    pub fn is_chat_failure(&self) -> bool {
        matches!(self, CoreError::Server { status: 500, .. })
    }
}

impl From<serde_json::Error> for CoreError {
    fn from(err: serde_json::Error) -> Self {
        CoreError::Protocol(err.to_string())
    }
}

/// Errors cross into the UI as `{ "error": "..." }`, like the server's.
impl Serialize for CoreError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut body = serializer.serialize_struct("CoreError", 1)?;
        body.serialize_field("error", &self.to_string())?;
        body.end()
    }
}

pub type CoreResult<T> = Result<T, CoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_of_the_chat_itself_counts_as_one() {
        let answered = |status| CoreError::Server {
            status,
            message: String::new(),
        };
        assert!(answered(403).is_chat_refused());
        // The session, "not now", or the server's or a proxy's failure,
        // which may pass: not a refusal of the chat.
        for status in [301, 400, 401, 404, 408, 410, 429, 500, 502, 503, 504, 520] {
            assert!(!answered(status).is_chat_refused(), "{status}");
        }
        let unreachable = CoreError::Unreachable {
            url: "http://natter.invalid".into(),
            reason: "gone".into(),
        };
        assert!(!unreachable.is_chat_refused());
    }

    #[test]
    fn only_the_servers_own_failure_counts_as_one_chats() {
        let answered = |status| CoreError::Server {
            status,
            message: String::new(),
        };
        assert!(answered(500).is_chat_failure());
        // The session, "not now", a proxy's failure, a refusal: each says
        // something of every chat, or is handled as a refusal.
        for status in [401, 403, 404, 408, 429, 502, 503, 504] {
            assert!(!answered(status).is_chat_failure(), "{status}");
        }
        let unreachable = CoreError::Unreachable {
            url: "http://natter.invalid".into(),
            reason: "gone".into(),
        };
        assert!(!unreachable.is_chat_failure());
    }
}
