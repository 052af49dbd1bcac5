//! Frames on the realtime socket (`GET /ws`): JSON text, each tagged by `type`.

use serde::{Deserialize, Serialize};

use crate::api::{Chat, Message};

/// What a client may send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ClientFrame {
    /// The user started or stopped typing in a chat.
    Typing { chat_id: String, is_typing: bool },
    /// Send a message; answered by `ack` (or `error`) carrying the same `client_id`.
    Send {
        chat_id: String,
        content: String,
        client_id: String,
        /// True only when this `client_id` never left the client before:
        /// the server then skips looking for an earlier copy. Leave it
        /// false (the default) for a resend or when unsure; a client that
        /// sets it wrongly gets its message stored twice.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        first_try: bool,
    },
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ServerFrame {
    /// The socket is subscribed: every event from now on reaches it. Sent once,
    /// first thing after connecting; catch up (`?after=`) once it arrives.
    Ready { user_id: String },
    /// A new message in one of the user's chats (their own ones included).
    Message { message: Message },
    /// A chat the user is (or just stopped being) in was created or changed.
    Chat { chat: Chat },
    /// Another member started or stopped typing.
    Typing {
        chat_id: String,
        user_id: String,
        is_typing: bool,
    },
    /// The message sent with `client_id` on this socket is stored.
    Ack { client_id: String, message: Message },
    /// A frame from this socket was refused.
    Error {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_use_the_documented_field_names() {
        let frame: ClientFrame =
            serde_json::from_str(r#"{"type":"send","chatId":"c1","content":"hi","clientId":"k"}"#)
                .expect("a send frame parses");
        assert_eq!(
            frame,
            ClientFrame::Send {
                chat_id: "c1".into(),
                content: "hi".into(),
                client_id: "k".into(),
                first_try: false,
            }
        );
        let first: ClientFrame = serde_json::from_str(
            r#"{"type":"send","chatId":"c1","content":"hi","clientId":"k","firstTry":true}"#,
        )
        .expect("a first try parses");
        assert!(matches!(
            first,
            ClientFrame::Send {
                first_try: true,
                ..
            }
        ));
        let typing = serde_json::to_value(ClientFrame::Typing {
            chat_id: "c1".into(),
            is_typing: true,
        })
        .expect("serializes");
        assert_eq!(
            typing,
            serde_json::json!({"type":"typing","chatId":"c1","isTyping":true})
        );
    }

    #[test]
    fn error_frames_omit_a_missing_client_id() {
        let text = serde_json::to_string(&ServerFrame::Error {
            error: "nope".into(),
            client_id: None,
        })
        .expect("serializes");
        assert_eq!(text, r#"{"type":"error","error":"nope"}"#);
    }
}
