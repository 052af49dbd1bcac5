//! Frames on the realtime socket (`GET /ws`): JSON text, each tagged by `type`.

use serde::de::MapAccess;
use serde::{Deserialize, Deserializer, Serialize};

use crate::api::{Chat, Message};
use crate::tagged::{self, TagFirst};

/// What a client may send. Read tag first (`tagged`): the server reads
/// one per message sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// The client renewed its session's token (`POST /api/user/token`):
    /// the socket, which would close when the token it was opened with
    /// expires, lives until the latest end of the tokens it was given. Answered only when
    /// refused (`error`: not a good token of this socket's user), and then
    /// the socket keeps the expiry it had.
    Token { token: String },
}

impl<'de> Deserialize<'de> for ClientFrame {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}

impl TagFirst for ClientFrame {
    const VARIANTS: &'static [&'static str] = &["typing", "send", "token"];

    fn variant<'de, A: MapAccess<'de>>(tag: &str, rest: A) -> Result<Self, A::Error> {
        match tag {
            "typing" => tagged::fields::<TypingFields, _>(rest).map(|f| ClientFrame::Typing {
                chat_id: f.chat_id,
                is_typing: f.is_typing,
            }),
            "send" => tagged::fields::<SendFields, _>(rest).map(|f| ClientFrame::Send {
                chat_id: f.chat_id,
                content: f.content,
                client_id: f.client_id,
                first_try: f.first_try,
            }),
            "token" => tagged::fields::<TokenFields, _>(rest)
                .map(|f| ClientFrame::Token { token: f.token }),
            other => Err(tagged::unknown::<Self, _>(other)),
        }
    }
}

/// `ClientFrame::Typing`'s fields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypingFields {
    chat_id: String,
    is_typing: bool,
}

/// `ClientFrame::Send`'s fields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendFields {
    chat_id: String,
    content: String,
    client_id: String,
    #[serde(default)]
    first_try: bool,
}

/// `ClientFrame::Token`'s fields.
#[derive(Deserialize)]
struct TokenFields {
    token: String,
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
        /// The refusal is for now, not for good (the database or the
        /// message broker is not keeping up, say): send the same frame
        /// again later, with the same `client_id`. False (and left out)
        /// when the frame itself was wrong, which a resend cannot mend.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        retry: bool,
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
    fn client_frames_read_back_whatever_the_key_order() {
        let frames = [
            ClientFrame::Typing {
                chat_id: "c1".into(),
                is_typing: true,
            },
            ClientFrame::Send {
                chat_id: "c1".into(),
                content: "h\u{e9}llo \"you\"".into(),
                client_id: "k".into(),
                first_try: true,
            },
            ClientFrame::Token {
                token: "a.b.c".into(),
            },
        ];
        for frame in frames {
            let written = serde_json::to_string(&frame).expect("serializes");
            assert!(written.starts_with(r#"{"type":"#), "{written}");
            let read: ClientFrame = serde_json::from_str(&written).expect("reads back");
            assert_eq!(read, frame);
            // A map sorts its keys: the tag comes after `chatId`.
            let sorted: std::collections::BTreeMap<String, serde_json::Value> =
                serde_json::from_str(&written).expect("an object");
            let reordered = serde_json::to_string(&sorted).expect("serializes");
            assert!(!reordered.starts_with(r#"{"type":"#), "{reordered}");
            let read: ClientFrame = serde_json::from_str(&reordered).expect("reads back");
            assert_eq!(read, frame);
        }
    }

    #[test]
    fn error_frames_omit_a_missing_client_id_and_a_final_refusal() {
        let text = serde_json::to_string(&ServerFrame::Error {
            error: "nope".into(),
            client_id: None,
            retry: false,
        })
        .expect("serializes");
        assert_eq!(text, r#"{"type":"error","error":"nope"}"#);
    }

    #[test]
    fn a_refusal_for_now_says_so_and_one_without_the_field_is_final() {
        let later = ServerFrame::Error {
            error: "busy".into(),
            client_id: Some("k".into()),
            retry: true,
        };
        let text = serde_json::to_string(&later).expect("serializes");
        assert_eq!(
            text,
            r#"{"type":"error","error":"busy","clientId":"k","retry":true}"#
        );
        assert_eq!(
            serde_json::from_str::<ServerFrame>(&text).expect("reads back"),
            later
        );
        // What a server from before the field sends: a refusal for good.
        let old: ServerFrame =
            serde_json::from_str(r#"{"type":"error","error":"no","clientId":"k"}"#).expect("reads");
        assert!(matches!(old, ServerFrame::Error { retry: false, .. }));
    }
}
