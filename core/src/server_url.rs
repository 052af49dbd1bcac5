//! The server's address, parsed once: the login screen's field becomes a
//! `ServerUrl` or a clear error, and everything after can trust it.

use std::fmt;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::error::{CoreError, CoreResult};

/// Where a fresh install looks for its server: a local `natter-server`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// An `http` or `https` base address without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServerUrl(String);

impl ServerUrl {
    /// Accepts `host:port` too (http is assumed), as people type it.
    pub fn parse(input: &str) -> CoreResult<Self> {
        let input = input.trim();
        if input.is_empty() {
            return Err(CoreError::Invalid("the server address is empty".into()));
        }
        let with_scheme = if input.contains("://") {
            input.to_owned()
        } else {
            format!("http://{input}")
        };
        let url = Url::parse(&with_scheme)
            .map_err(|err| CoreError::Invalid(format!("not a server address ({input}): {err}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(CoreError::Invalid(format!(
                "the server address must start with http:// or https:// ({input})"
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(CoreError::Invalid(format!(
                "the server address has no host ({input})"
            )));
        }
        // A name and password in it would go to the server as a Basic
        // authorization ahead of the session's own (which it would then
        // not read), and show in every message that names the address.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CoreError::Invalid(format!(
                "the server address cannot hold a name or password ({})",
                url.host_str().unwrap_or_default()
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(CoreError::Invalid(format!(
                "the server address cannot have a query or fragment ({input})"
            )));
        }
        Ok(ServerUrl(url.as_str().trim_end_matches('/').to_owned()))
    }

    /// Whether it is reached over TLS (`https`, and `wss` for the socket).
    pub fn is_tls(&self) -> bool {
        self.0.starts_with("https://")
    }

    /// `path` starts with `/`.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    /// The socket's address: same host, `ws` or `wss`.
    pub fn socket(&self) -> String {
        let rest = self
            .0
            .strip_prefix("https://")
            .map(|rest| format!("wss://{rest}"))
            .or_else(|| {
                self.0
                    .strip_prefix("http://")
                    .map(|rest| format!("ws://{rest}"))
            })
            .unwrap_or_else(|| self.0.clone());
        format!("{rest}/ws")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ServerUrl {
    fn default() -> Self {
        ServerUrl(DEFAULT_SERVER.into())
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ServerUrl {
    type Error = CoreError;
    fn try_from(value: String) -> CoreResult<Self> {
        ServerUrl::parse(&value)
    }
}

impl From<ServerUrl> for String {
    fn from(url: ServerUrl) -> String {
        url.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_people_type() {
        assert_eq!(
            ServerUrl::parse("localhost:8080").unwrap().as_str(),
            "http://localhost:8080"
        );
        assert_eq!(
            ServerUrl::parse(" https://chat.example.org/ ")
                .unwrap()
                .as_str(),
            "https://chat.example.org"
        );
        assert_eq!(
            ServerUrl::parse("http://10.0.0.2:8080/natter")
                .unwrap()
                .join("/api/chat"),
            "http://10.0.0.2:8080/natter/api/chat"
        );
    }

    #[test]
    fn socket_address_follows_the_scheme() {
        assert_eq!(
            ServerUrl::parse("http://a:1").unwrap().socket(),
            "ws://a:1/ws"
        );
        assert_eq!(
            ServerUrl::parse("https://a").unwrap().socket(),
            "wss://a/ws"
        );
    }

    #[test]
    fn refuses_what_is_not_a_server() {
        for bad in ["", "ftp://a", "http://", "http://a/?x=1", "http://a/#f"] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad:?} should be refused");
        }
        for with_credentials in ["https://ann:secret@a", "http://ann@a:8080"] {
            let err = ServerUrl::parse(with_credentials).expect_err("refused");
            assert!(!err.to_string().contains("secret"), "{err}");
            assert!(err.to_string().contains("name or password"), "{err}");
        }
    }
}
