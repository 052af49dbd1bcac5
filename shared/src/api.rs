//! REST resources and request bodies. Everything is camelCase JSON; ids are strings.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A registered user as others see them. Never carries the password or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub name: String,
    pub email: String,
    /// Path of the profile picture on the server (`/api/pic/...`), or null.
    pub pic: Option<String>,
}

/// A one-to-one or group conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chat {
    pub id: String,
    pub chat_name: String,
    pub is_group_chat: bool,
    pub users: Vec<User>,
    pub group_admin: Option<User>,
    pub latest_message: Option<Message>,
    pub updated_at: DateTime<Utc>,
}

impl Chat {
    /// Whether `user_id` is among its members.
    pub fn has_member(&self, user_id: &str) -> bool {
        self.users.iter().any(|user| user.id == user_id)
    }
}

/// One message. `seq` is its position in its chat: 1, 2, 3, ..., with a
/// jump after a server without RabbitMQ died (docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    pub chat_id: String,
    pub seq: i64,
    pub sender: User,
    pub content: String,
    pub client_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Answer to sign-up and login: the user and a bearer token for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthResponse {
    #[serde(flatten)]
    pub user: User,
    pub token: String,
}

/// `POST /api/user` as JSON (multipart takes the same fields plus `pic`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignUpRequest {
    pub name: String,
    pub email: String,
    pub password: String,
    /// The server's invitation code, on a server that asks for one
    /// (`NATTER_INVITATION_CODE`); ignored by one that does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation_code: Option<String>,
}

/// `POST /api/user/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// `POST /api/chat`: open (or create) the one-to-one chat with `user_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenChatRequest {
    pub user_id: String,
}

/// `POST /api/chat/group`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateGroupRequest {
    pub name: String,
    pub users: Vec<String>,
}

/// `PUT /api/chat/rename`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenameGroupRequest {
    pub chat_id: String,
    pub chat_name: String,
}

/// `PUT /api/chat/groupadd` and `PUT /api/chat/groupremove`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupMemberRequest {
    pub chat_id: String,
    pub user_id: String,
}

/// `POST /api/message`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessageRequest {
    pub chat_id: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// As on the socket's `send`: true only when `client_id` was never sent
    /// before (no earlier copy to look for).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_try: bool,
}
