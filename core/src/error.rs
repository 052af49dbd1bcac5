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

    /// The server refused this one request, and asking again soon would
    /// not change its answer: a refusal (403, 404) or its own failure (500).
    /// Not an expired session (401), nor a "not now" from it or a proxy in
    /// front (408, 429, 502, 503, 504), nor a network error.
    pub fn is_lasting_refusal(&self) -> bool {
        matches!(self, CoreError::Server { status, .. }
            if *status != 401 && !matches!(status, 408 | 429 | 502..=504))
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
    fn only_an_answer_that_would_not_change_soon_is_a_lasting_refusal() {
        let answered = |status| CoreError::Server {
            status,
            message: String::new(),
        };
        for status in [400, 403, 404, 409, 500, 501] {
            assert!(answered(status).is_lasting_refusal(), "{status}");
        }
        for status in [401, 408, 429, 502, 503, 504] {
            assert!(!answered(status).is_lasting_refusal(), "{status}");
        }
        let unreachable = CoreError::Unreachable {
            url: "http://natter.invalid".into(),
            reason: "gone".into(),
        };
        assert!(!unreachable.is_lasting_refusal());
    }
}
