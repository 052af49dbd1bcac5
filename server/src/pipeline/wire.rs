//! Commands and replies read off RabbitMQ tag first (`natter_shared::tagged`):
//! every message crosses the queues as a `Command::Send` and comes back as
//! a `Reply::Sent`, and serde's derived reading of these internally tagged
//! enums copied each into a buffer of its own first. The wire format is
//! unchanged (serde writes them), so nodes of earlier releases read what
//! these nodes write and the other way round.

use std::sync::Arc;

use natter_shared::Message;
use natter_shared::tagged::{self, TagFirst};
use serde::de::MapAccess;
use serde::{Deserialize, Deserializer};

use super::{Command, Draft, Refusal, Reply};

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}

#[derive(Deserialize)]
struct SendFields {
    draft: Draft,
}

#[derive(Deserialize)]
struct ChangedFields {
    #[serde(rename = "chatId")]
    chat_id: String,
}

impl TagFirst for Command {
    const VARIANTS: &'static [&'static str] = &["send", "settle", "changed"];

    fn variant<'de, A: MapAccess<'de>>(tag: &str, rest: A) -> Result<Self, A::Error> {
        match tag {
            "send" => {
                tagged::fields::<SendFields, _>(rest).map(|f| Command::Send { draft: f.draft })
            }
            "settle" => tagged::no_fields(rest).map(|()| Command::Settle),
            "changed" => tagged::fields::<ChangedFields, _>(rest)
                .map(|f| Command::Changed { chat_id: f.chat_id }),
            other => Err(tagged::unknown::<Self, _>(other)),
        }
    }
}

impl<'de> Deserialize<'de> for Reply {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}

#[derive(Deserialize)]
struct SentFields {
    message: Message,
    duplicate: bool,
}

#[derive(Deserialize)]
struct RefusedFields {
    refusal: Refusal,
}

#[derive(Deserialize)]
struct FailedFields {
    error: String,
}

impl TagFirst for Reply {
    const VARIANTS: &'static [&'static str] = &["sent", "refused", "done", "failed"];

    fn variant<'de, A: MapAccess<'de>>(tag: &str, rest: A) -> Result<Self, A::Error> {
        match tag {
            "sent" => tagged::fields::<SentFields, _>(rest).map(|f| Reply::Sent {
                message: Arc::new(f.message),
                duplicate: f.duplicate,
            }),
            "refused" => tagged::fields::<RefusedFields, _>(rest)
                .map(|f| Reply::Refused { refusal: f.refusal }),
            "done" => tagged::no_fields(rest).map(|()| Reply::Done),
            "failed" => {
                tagged::fields::<FailedFields, _>(rest).map(|f| Reply::Failed { error: f.error })
            }
            other => Err(tagged::unknown::<Self, _>(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use natter_shared::User;

    use super::*;

    fn draft() -> Draft {
        Draft {
            id: "m1".into(),
            chat_id: "c1".into(),
            sender_id: "u1".into(),
            content: "a \"quoted\" line\nand another".into(),
            client_id: Some("k1".into()),
            first_try: true,
            created_at: Utc::now(),
        }
    }

    fn message() -> Message {
        Message {
            id: "m1".into(),
            chat_id: "c1".into(),
            seq: 7,
            sender: User {
                id: "u1".into(),
                name: "Ann".into(),
                email: "ann@example.org".into(),
                pic: None,
            },
            content: "hi".into(),
            client_id: None,
            created_at: Utc::now(),
        }
    }

    /// Writes `value` as serde does, and with its keys sorted (the tag no
    /// longer first); both must read back to what was written.
    fn read_back<T>(value: &T) -> [T; 2]
    where
        T: serde::Serialize + for<'de> Deserialize<'de>,
    {
        let written = serde_json::to_string(value).expect("serializes");
        assert!(written.starts_with(r#"{"type":"#), "{written}");
        let sorted: std::collections::BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&written).expect("an object");
        let reordered = serde_json::to_string(&sorted).expect("serializes");
        [written, reordered].map(|text| serde_json::from_str(&text).expect("reads back"))
    }

    #[test]
    fn commands_read_back_as_written() {
        for read in read_back(&Command::Send { draft: draft() }) {
            let Command::Send { draft: read } = read else {
                panic!("not a send: {read:?}")
            };
            let wanted = draft();
            assert_eq!(
                (read.id, read.content, read.client_id, read.first_try),
                (
                    wanted.id,
                    wanted.content,
                    wanted.client_id,
                    wanted.first_try
                )
            );
        }
        for read in read_back(&Command::Settle) {
            assert!(matches!(read, Command::Settle), "{read:?}");
        }
        for read in read_back(&Command::Changed {
            chat_id: "c9".into(),
        }) {
            assert!(
                matches!(read, Command::Changed { ref chat_id } if chat_id == "c9"),
                "{read:?}"
            );
        }
    }

    #[test]
    fn replies_read_back_as_written() {
        for read in read_back(&Reply::Sent {
            message: Arc::new(message()),
            duplicate: true,
        }) {
            assert!(
                matches!(read, Reply::Sent { ref message, duplicate: true } if message.seq == 7),
                "{read:?}"
            );
        }
        for read in read_back(&Reply::Refused {
            refusal: Refusal::NotMember,
        }) {
            assert!(
                matches!(
                    read,
                    Reply::Refused {
                        refusal: Refusal::NotMember
                    }
                ),
                "{read:?}"
            );
        }
        for read in read_back(&Reply::Done) {
            assert!(matches!(read, Reply::Done), "{read:?}");
        }
        for read in read_back(&Reply::Failed {
            error: "disk full".into(),
        }) {
            assert!(
                matches!(read, Reply::Failed { ref error } if error == "disk full"),
                "{read:?}"
            );
        }
    }

    #[test]
    fn an_unknown_command_is_refused_by_name() {
        let error = serde_json::from_str::<Command>(r#"{"type":"shout","chatId":"c1"}"#)
            .expect_err("no such command");
        assert!(error.to_string().contains("shout"), "{error}");
    }
}
