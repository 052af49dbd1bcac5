//! The server's REST API as plain async functions over reqwest. Every answer
//! that is not a success becomes `CoreError::Server` with the server's own
//! `{"error"}` text, so the UI can show it as is.

use std::sync::Arc;
use std::time::Duration;

use natter_shared::api::{
    AuthResponse, Chat, CreateGroupRequest, GroupMemberRequest, LoginRequest, Message,
    OpenChatRequest, RenameGroupRequest, User,
};
use natter_shared::limits::PIC_MAX_BYTES;
use reqwest::{Method, RequestBuilder, Response};
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use tokio_tungstenite::Connector;

use crate::error::{CoreError, CoreResult};
use crate::server_url::ServerUrl;
use crate::tls::Trust;

/// Requests give up after this long; the socket has its own keep-alive.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What sign-up needs. `pic` is a file the user picked; the server checks it.
#[derive(Debug, Clone)]
pub struct SignUp {
    pub name: String,
    pub email: String,
    pub password: String,
    /// The picture file's bytes; the server decides what it is by content.
    pub pic: Option<Vec<u8>>,
    /// The server's invitation code, for one that asks for it (blank: none).
    pub invitation_code: Option<String>,
}

/// Where to page from in a chat's history.
#[derive(Debug, Clone, Copy)]
pub enum Page {
    Newest,
    After(i64),
    Before(i64),
}

#[derive(Clone)]
pub struct ServerApi {
    http: reqwest::Client,
    base: ServerUrl,
    /// The session's token; renewed in place (`set_token`), shared by the
    /// clones of this client.
    token: Arc<std::sync::Mutex<Option<String>>>,
    trust: Trust,
}

impl ServerApi {
    pub fn new(base: ServerUrl, token: Option<String>, trust: &Trust) -> CoreResult<Self> {
        // Redirects are not followed but reported (`check`): a server that
        // moved (an http address sent on to https, most often) is one the
        // user should enter anew, and a followed POST would lose its body.
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        builder = if base.is_tls() {
            let config: ClientConfig = trust.client_config()?.as_ref().clone();
            builder.tls_backend_preconfigured(config)
        } else {
            // A plain http server: no roots, so the system's certificate
            // store is not read for nothing (reqwest would, at every build).
            builder.tls_certs_only([])
        };
        let http = builder
            .build()
            .map_err(|err| CoreError::Invalid(format!("cannot make an HTTP client: {err}")))?;
        Ok(ServerApi {
            http,
            base,
            token: Arc::new(std::sync::Mutex::new(token)),
            trust: trust.clone(),
        })
    }

    pub fn base(&self) -> &ServerUrl {
        &self.base
    }

    /// How the socket reaches the server: over TLS with the same trust as
    /// the API (`None`: plain TCP).
    pub fn socket_connector(&self) -> CoreResult<Option<Connector>> {
        if !self.base.is_tls() {
            return Ok(None);
        }
        Ok(Some(Connector::Rustls(self.trust.client_config()?)))
    }

    pub async fn sign_up(&self, form: &SignUp) -> CoreResult<AuthResponse> {
        let mut multipart = reqwest::multipart::Form::new()
            .text("name", form.name.clone())
            .text("email", form.email.clone())
            .text("password", form.password.clone());
        if let Some(bytes) = &form.pic {
            multipart = multipart.part("pic", picture_part(bytes.clone())?);
        }
        let code = form.invitation_code.as_deref().map(str::trim);
        if let Some(code) = code.filter(|code| !code.is_empty()) {
            multipart = multipart.text("invitationCode", code.to_owned());
        }
        let request = self.request(Method::POST, "/api/user").multipart(multipart);
        self.json(request).await
    }

    pub async fn login(&self, email: &str, password: &str) -> CoreResult<AuthResponse> {
        let body = LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        };
        self.json(self.request(Method::POST, "/api/user/login").json(&body))
            .await
    }

    pub async fn search_users(&self, query: &str) -> CoreResult<Vec<User>> {
        let request = self
            .request(Method::GET, "/api/user")
            .query(&[("search", query)]);
        self.json(request).await
    }

    pub async fn user(&self, id: &str) -> CoreResult<User> {
        self.json(self.request(Method::GET, &format!("/api/user/{}", segment(id))))
            .await
    }

    pub async fn chats(&self) -> CoreResult<Vec<Chat>> {
        self.json(self.request(Method::GET, "/api/chat")).await
    }

    pub async fn chat(&self, id: &str) -> CoreResult<Chat> {
        self.json(self.request(Method::GET, &format!("/api/chat/{}", segment(id))))
            .await
    }

    /// A picture by the server path a `User.pic` holds: its bytes, at most
    /// `PIC_MAX_BYTES` (what the server takes).
    pub async fn picture(&self, path: &str) -> CoreResult<Vec<u8>> {
        let key = path
            .strip_prefix("/api/pic/")
            .ok_or_else(|| CoreError::Invalid(format!("not a picture of this server: {path}")))?;
        let request = self.request(Method::GET, &format!("/api/pic/{}", segment(key)));
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        let mut response = check(response).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| self.unreachable(&err))?
        {
            if bytes.len() + chunk.len() > PIC_MAX_BYTES {
                return Err(CoreError::Protocol(format!(
                    "the picture {path} is larger than a picture can be"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    pub async fn open_direct(&self, user_id: &str) -> CoreResult<Chat> {
        let body = OpenChatRequest {
            user_id: user_id.to_owned(),
        };
        self.json(self.request(Method::POST, "/api/chat").json(&body))
            .await
    }

    pub async fn create_group(&self, name: &str, users: &[String]) -> CoreResult<Chat> {
        let body = CreateGroupRequest {
            name: name.to_owned(),
            users: users.to_vec(),
        };
        self.json(self.request(Method::POST, "/api/chat/group").json(&body))
            .await
    }

    pub async fn rename_group(&self, chat_id: &str, name: &str) -> CoreResult<Chat> {
        let body = RenameGroupRequest {
            chat_id: chat_id.to_owned(),
            chat_name: name.to_owned(),
        };
        self.json(self.request(Method::PUT, "/api/chat/rename").json(&body))
            .await
    }

    pub async fn add_member(&self, chat_id: &str, user_id: &str) -> CoreResult<Chat> {
        self.member_change("/api/chat/groupadd", chat_id, user_id)
            .await
    }

    pub async fn remove_member(&self, chat_id: &str, user_id: &str) -> CoreResult<Chat> {
        self.member_change("/api/chat/groupremove", chat_id, user_id)
            .await
    }

    async fn member_change(&self, path: &str, chat_id: &str, user_id: &str) -> CoreResult<Chat> {
        let body = GroupMemberRequest {
            chat_id: chat_id.to_owned(),
            user_id: user_id.to_owned(),
        };
        self.json(self.request(Method::PUT, path).json(&body)).await
    }

    pub async fn messages(
        &self,
        chat_id: &str,
        page: Page,
        limit: u32,
    ) -> CoreResult<Vec<Message>> {
        let mut query = vec![("limit", limit.to_string())];
        match page {
            Page::Newest => {}
            Page::After(seq) => query.push(("after", seq.to_string())),
            Page::Before(seq) => query.push(("before", seq.to_string())),
        }
        let request = self
            .request(Method::GET, &format!("/api/message/{}", segment(chat_id)))
            .query(&query);
        self.json(request).await
    }

    /// The session's token, as it is now.
    pub fn token(&self) -> Option<String> {
        crate::context::lock(&self.token).clone()
    }

    /// Takes a renewed token for every request from now on.
    pub fn set_token(&self, token: String) {
        *crate::context::lock(&self.token) = Some(token);
    }

    /// A new token for this session's (`POST /api/user/token`), while the
    /// one it has is good.
    pub async fn renew_token(&self) -> CoreResult<AuthResponse> {
        self.json(self.request(Method::POST, "/api/user/token"))
            .await
    }

    /// Ends this session on the server (`POST /api/user/logout`): its
    /// tokens are refused from then on, on every node. Waits at most
    /// `patience`.
    pub async fn logout(&self, patience: Duration) -> CoreResult<()> {
        let request = self
            .request(Method::POST, "/api/user/logout")
            .timeout(patience);
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        check(response).await?;
        Ok(())
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, self.base.join(path));
        match self.token() {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> CoreResult<T> {
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        let response = check(response).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|err| self.unreachable(&err))?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    fn unreachable(&self, err: &reqwest::Error) -> CoreError {
        CoreError::Unreachable {
            url: self.base.to_string(),
            reason: root_cause(err),
        }
    }
}

/// Turns an error answer into `CoreError::Server` with the server's reason.
async fn check(response: Response) -> CoreResult<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status.is_redirection() {
        return Err(CoreError::Server {
            status: status.as_u16(),
            message: moved(&response),
        });
    }
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<natter_shared::ErrorBody>(&text)
        .map(|body| body.error)
        .unwrap_or_else(|_| {
            status
                .canonical_reason()
                .unwrap_or("the server refused the request")
                .to_owned()
        });
    Err(CoreError::Server {
        status: status.as_u16(),
        message,
    })
}

/// Where a redirect points, as the server address to enter instead.
fn moved(response: &Response) -> String {
    let target = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|location| location.to_str().ok())
        .and_then(|location| response.url().join(location).ok());
    match target {
        Some(target) => format!(
            "the server sends this address on to {}: enter that as the server's address",
            new_address(response.url(), &target)
        ),
        None => "the server answered with a redirect, which Natter does not follow".into(),
    }
}

/// The server address a redirect from `requested` to `target` implies: the
/// target less the API path asked for, so that a server under a sub-path
/// (`https://example.org/natter`) keeps it; its origin when the target is
/// not that path somewhere else.
fn new_address(requested: &reqwest::Url, target: &reqwest::Url) -> String {
    let asked = requested.path();
    let api_path = asked.find("/api/").map(|at| &asked[at..]);
    match api_path.and_then(|api| target.path().strip_suffix(api)) {
        Some(base_path) => format!(
            "{}{}",
            target.origin().ascii_serialization(),
            base_path.trim_end_matches('/')
        ),
        None => target.origin().ascii_serialization(),
    }
}

fn picture_part(bytes: Vec<u8>) -> CoreResult<reqwest::multipart::Part> {
    // The server decides what the file is by its content, not by its name.
    reqwest::multipart::Part::bytes(bytes)
        .file_name("picture")
        .mime_str("application/octet-stream")
        .map_err(|err| CoreError::Invalid(err.to_string()))
}

/// Ids are opaque strings: keep them from changing the path.
fn segment(id: &str) -> String {
    id.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~') {
                vec![c]
            } else {
                let mut buf = [0u8; 4];
                c.encode_utf8(&mut buf)
                    .bytes()
                    .flat_map(|b| format!("%{b:02X}").chars().collect::<Vec<_>>())
                    .collect()
            }
        })
        .collect()
}

/// reqwest's top-level message says little ("error sending request"); the
/// innermost cause says why (connection refused, timed out).
fn root_cause(err: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if err.is_timeout() {
        "the request timed out".into()
    } else {
        cause.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::{new_address, segment};

    #[test]
    fn a_redirect_names_the_address_with_its_sub_path() {
        let url = |text: &str| reqwest::Url::parse(text).expect("a URL");
        let asked = url("http://example.org/natter/api/user/login");
        assert_eq!(
            new_address(&asked, &url("https://example.org/natter/api/user/login")),
            "https://example.org/natter"
        );
        assert_eq!(
            new_address(
                &url("http://example.org/api/user/login"),
                &url("https://chat.example.org:8443/api/user/login")
            ),
            "https://chat.example.org:8443"
        );
        // Somewhere else altogether: where it leads.
        assert_eq!(
            new_address(&asked, &url("https://example.org/login?next=x")),
            "https://example.org"
        );
    }

    #[test]
    fn ids_are_escaped_in_paths() {
        assert_eq!(segment("abc-123"), "abc-123");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
        assert_eq!(segment("é"), "%C3%A9");
    }
}
