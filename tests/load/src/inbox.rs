//! What one socket has seen, and how it comes back after the server drops
//! it: frames counted into the tally, the last seq per chat, and the sends
//! written but not answered yet. After a reconnect the socket reads each
//! chat's history past the last seq it saw (as the app catches up) and
//! writes its unanswered sends again with the same client id, so a run
//! near the server's limits still counts every message once. A send the
//! server refused for now (`retry`: it could not keep up) is written again
//! after `RETRY_AFTER` on the same socket (the app waits longer each time,
//! with jitter; the tool a fixed time).

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use natter_shared::{ClientFrame, Message};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::setup;
use crate::tally::{Tally, number_in};

/// What a socket's reader measured: send-to-receive latencies in µs.
pub type Latencies = Vec<u32>;

/// Messages read per history page while catching up.
const PAGE: usize = 100;

/// How long a send the server refused for now waits before it goes again.
/// One wait for all (the app doubles its wait per message): a run past
/// capacity should show what the server keeps up with, not how patient the
/// tool is.
pub const RETRY_AFTER: Duration = Duration::from_millis(500);

/// A chat of the socket's user and the last seq the socket saw in it. A
/// chat's messages reach a socket in seq order, so one at or below it was
/// seen already: read by a catch-up, or delivered again by the server (it
/// does so when a resend finds the message stored, in case the first
/// delivery never happened). Clients show each seq once; the tool counts
/// such frames apart (`redelivered`), and a message stored twice still
/// shows as duplicated (two seqs, one number).
struct Seen {
    chat_id: String,
    last: i64,
    /// The seqs the socket's last catch-up read, after `last` as it was
    /// then: live frames for them may still come on the new socket (sent
    /// between its `ready` and the read), which is a cause to see them again.
    caught_up: Option<std::ops::RangeInclusive<i64>>,
}

pub struct Inbox {
    run: u64,
    ack_prefix: String,
    tally: Arc<Tally>,
    chats: Vec<Seen>,
    /// Sends written, oldest first, from the oldest not answered yet on.
    /// Answered ones leave from the front as sends are written: a hash map
    /// with an insert and a remove per message cost the tool a quarter
    /// more processor time at 28,000 msg/s.
    written: VecDeque<(usize, Utf8Bytes)>,
    /// Sends the server refused for good (never acked), so they leave
    /// `written`.
    refused: HashSet<usize>,
    /// Sends the server refused for now, and when each goes again: in the
    /// order they are due, since all wait the same.
    retries: VecDeque<(Instant, usize)>,
    pub latencies: Latencies,
}

/// The fields of a server frame (`natter_shared::ServerFrame`) that the
/// tally needs, borrowed from the text. The whole frame, an internally
/// tagged enum that serde buffers before it picks the variant, with its
/// sender and dates, was a fifth of the load tool's time, on the cores the
/// server under test needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Peek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message: Option<PeekMessage<'a>>,
    #[serde(borrow)]
    client_id: Option<Cow<'a, str>>,
    #[serde(default)]
    retry: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PeekMessage<'a> {
    #[serde(borrow)]
    chat_id: Cow<'a, str>,
    seq: i64,
    #[serde(borrow)]
    content: Cow<'a, str>,
}

impl Inbox {
    pub fn new(run: u64, tally: Arc<Tally>, chats: &[String]) -> Self {
        Inbox {
            run,
            ack_prefix: format!("{run}-"),
            tally,
            chats: chats
                .iter()
                .map(|chat_id| Seen {
                    chat_id: chat_id.clone(),
                    last: 0,
                    caught_up: None,
                })
                .collect(),
            written: VecDeque::new(),
            refused: HashSet::new(),
            retries: VecDeque::new(),
            latencies: Latencies::new(),
        }
    }

    /// Send `k` is about to be written.
    pub fn writing(&mut self, k: usize, frame: Utf8Bytes) {
        while let Some(&(oldest, _)) = self.written.front() {
            if !self.is_answered(oldest) {
                break;
            }
            self.written.pop_front();
            self.refused.remove(&oldest);
        }
        self.written.push_back((k, frame));
    }

    fn is_answered(&self, k: usize) -> bool {
        self.tally.is_acked(k) || self.refused.contains(&k)
    }

    /// Counts one frame from the server.
    pub fn record(&mut self, text: &str) {
        let Ok(frame) = serde_json::from_str::<Peek>(text) else {
            self.tally.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match (frame.kind.as_ref(), frame.message, frame.client_id) {
            ("message", Some(message), _) => match self.is_new(&message.chat_id, message.seq) {
                Some(true) => self.deliver(&message.content, message.seq),
                Some(false) => self.seen_again(&message.chat_id, message.seq, &message.content),
                None if number_in(&message.content, self.run).is_some() => {
                    self.tally.misrouted.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.tally.other_frames.fetch_add(1, Ordering::Relaxed);
                }
            },
            ("ack", _, Some(client_id)) => {
                if let Some(k) = self.number_of(&client_id) {
                    self.tally.acked(k);
                }
            }
            ("error", _, client_id) => match client_id.and_then(|id| self.number_of(&id)) {
                Some(k) if frame.retry => {
                    self.tally.refused_for_now.fetch_add(1, Ordering::Relaxed);
                    self.retries.push_back((Instant::now() + RETRY_AFTER, k));
                }
                Some(k) => {
                    self.refused.insert(k);
                    self.tally.failed();
                }
                None => {
                    self.tally.errors.fetch_add(1, Ordering::Relaxed);
                }
            },
            ("message" | "ack", _, _) => {
                self.tally.errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.tally.other_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn number_of(&self, client_id: &str) -> Option<usize> {
        client_id.strip_prefix(&self.ack_prefix)?.parse().ok()
    }

    /// Notes `seq` as seen in the chat; false when it was seen already,
    /// `None` for a chat the user is not in.
    fn is_new(&mut self, chat_id: &str, seq: i64) -> Option<bool> {
        let seen = self.chats.iter_mut().find(|seen| seen.chat_id == chat_id)?;
        if seq <= seen.last {
            return Some(false);
        }
        seen.last = seq;
        Some(true)
    }

    /// A frame for a seq this socket saw already: redelivered, and without
    /// cause unless the socket's last catch-up read it (a live copy sent
    /// before the read) or its message was written again (a resend that
    /// finds it stored delivers it again).
    fn seen_again(&self, chat_id: &str, seq: i64, content: &str) {
        self.tally.redelivered.fetch_add(1, Ordering::Relaxed);
        let caught_up = self
            .chats
            .iter()
            .filter(|seen| seen.chat_id == chat_id)
            .any(|seen| {
                seen.caught_up
                    .as_ref()
                    .is_some_and(|read| read.contains(&seq))
            });
        let resent = number_in(content, self.run).is_some_and(|k| self.tally.was_resent(k));
        if !caught_up && !resent {
            self.tally
                .redelivered_without_cause
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn deliver(&mut self, content: &str, seq: i64) {
        match number_in(content, self.run) {
            Some(k) => {
                if let Some(micros) = self.tally.delivered(k, seq) {
                    self.latencies
                        .push(u32::try_from(micros).unwrap_or(u32::MAX));
                }
            }
            None => {
                self.tally.other_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Reads every chat's history past the last seq this socket saw, and
    /// counts what it missed. Call once the new socket is ready, so that
    /// nothing falls between the history and the live frames.
    pub async fn catch_up(
        &mut self,
        http: &reqwest::Client,
        server: &str,
        token: &str,
    ) -> anyhow::Result<()> {
        for index in 0..self.chats.len() {
            let before = self.chats[index].last;
            self.chats[index].caught_up = None;
            loop {
                let seen = &self.chats[index];
                let response = http
                    .get(format!(
                        "{server}/api/message/{}?after={}&limit={PAGE}",
                        seen.chat_id, seen.last
                    ))
                    .bearer_auth(token)
                    .send()
                    .await?;
                let page: Vec<Message> = setup::json_answer(response, "catching up").await?;
                let Some(last) = page.last().map(|message| message.seq) else {
                    break;
                };
                for message in &page {
                    if number_in(&message.content, self.run).is_some() {
                        self.tally.caught_up.fetch_add(1, Ordering::Relaxed);
                    }
                    self.deliver(&message.content, message.seq);
                }
                self.chats[index].last = last;
                self.chats[index].caught_up = Some(before + 1..=last);
                if page.len() < PAGE {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The unanswered sends, to write again on a new socket: marked as
    /// resends, so the server looks for the copy it may have stored. Those
    /// refused for now are among them, and wait no more.
    pub fn resends(&mut self) -> Vec<Utf8Bytes> {
        self.retries.clear();
        self.written
            .iter()
            .filter(|(k, _)| !self.is_answered(*k))
            .filter_map(|(k, frame)| {
                self.tally.mark_resent(*k);
                resend(frame)
            })
            .collect()
    }

    /// When the next send refused for now is due to go again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.retries.front().map(|&(at, _)| at)
    }

    /// The sends refused for now whose wait is over at `now`, as resends;
    /// one answered meanwhile (a copy acked) is not sent again.
    pub fn due_retries(&mut self, now: Instant) -> Vec<Utf8Bytes> {
        let mut due = Vec::new();
        while let Some(&(at, k)) = self.retries.front() {
            if at > now {
                break;
            }
            self.retries.pop_front();
            if self.is_answered(k) {
                continue;
            }
            let written = self.written.iter().find(|(written, _)| *written == k);
            if let Some(frame) = written.and_then(|(_, frame)| resend(frame)) {
                self.tally.mark_resent(k);
                due.push(frame);
            }
        }
        due
    }
}

/// `frame` (a `send`) with `firstTry` cleared.
fn resend(frame: &Utf8Bytes) -> Option<Utf8Bytes> {
    match serde_json::from_str::<ClientFrame>(frame).ok()? {
        ClientFrame::Send {
            chat_id,
            content,
            client_id,
            ..
        } => serde_json::to_string(&ClientFrame::Send {
            chat_id,
            content,
            client_id,
            first_try: false,
        })
        .ok()
        .map(Utf8Bytes::from),
        ClientFrame::Typing { .. } | ClientFrame::Token { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally::content;

    fn message_frame(chat: &str, seq: i64, run: u64, k: usize) -> String {
        serde_json::json!({
            "type": "message",
            "message": {"id": "m", "chatId": chat, "seq": seq, "content": content(run, k),
                        "sender": {"id": "u", "name": "U"}, "createdAt": "2026-11-26T00:00:00Z"}
        })
        .to_string()
    }

    #[test]
    fn a_seq_seen_already_is_not_counted_again() {
        let tally = Arc::new(Tally::new(4));
        for k in 0..3 {
            tally.sending(k, 1, Instant::now());
            tally.acked(k);
        }
        let mut inbox = Inbox::new(9, tally.clone(), &["c".to_owned()]);
        inbox.record(&message_frame("c", 1, 9, 0));
        // A catch-up read seqs 2 and 3; a live copy of 2 arrives after it.
        inbox.chats[0].last = 3;
        inbox.record(&message_frame("c", 2, 9, 1));
        inbox.record(&message_frame("c", 4, 9, 2));
        inbox.record(&message_frame("c", 4, 9, 2));
        assert_eq!(tally.deliveries.load(Ordering::Relaxed), 2);
        assert_eq!(tally.redelivered.load(Ordering::Relaxed), 2);
        assert_eq!(tally.duplicated(), 0);
        assert_eq!(inbox.chats[0].last, 4);
        // This socket never came back and nothing was resent: neither copy
        // had a cause.
        assert_eq!(tally.redelivered_without_cause.load(Ordering::Relaxed), 2);
    }

    /// A seq seen again has a cause only on a socket that came back, or for
    /// a message written again: a drop or resend elsewhere in the run does
    /// not excuse it.
    #[test]
    fn a_seq_seen_again_has_a_cause_only_on_its_own_socket_or_message() {
        let tally = Arc::new(Tally::new(2));
        for k in 0..2 {
            tally.sending(k, 2, Instant::now());
            tally.acked(k);
        }
        let mut steady = Inbox::new(9, tally.clone(), &["c".to_owned()]);
        let mut back = Inbox::new(9, tally.clone(), &["c".to_owned()]);
        steady.record(&message_frame("c", 1, 9, 0));
        steady.record(&message_frame("c", 2, 9, 1));
        // `back` saw seq 1 live, then dropped; its catch-up read seq 2.
        back.record(&message_frame("c", 1, 9, 0));
        back.chats[0].last = 2;
        back.chats[0].caught_up = Some(2..=2);
        tally.mark_resent(1);
        for inbox in [&mut steady, &mut back] {
            inbox.record(&message_frame("c", 1, 9, 0));
            inbox.record(&message_frame("c", 2, 9, 1));
        }
        assert_eq!(tally.redelivered.load(Ordering::Relaxed), 4);
        assert_eq!(
            tally.redelivered_without_cause.load(Ordering::Relaxed),
            2,
            "message 0 again on both: neither a resend nor a catch-up read it"
        );
    }

    /// A message of the run delivered to a user not in its chat is not a
    /// delivery: it cannot make up for one a member missed.
    #[test]
    fn a_message_for_another_chat_is_misrouted_not_delivered() {
        let tally = Arc::new(Tally::new(2));
        tally.sending(0, 2, Instant::now());
        tally.acked(0);
        let mut member = Inbox::new(9, tally.clone(), &["c".to_owned()]);
        let mut outsider = Inbox::new(9, tally.clone(), &["d".to_owned()]);
        member.record(&message_frame("c", 1, 9, 0));
        outsider.record(&message_frame("c", 1, 9, 0));
        outsider.record(&message_frame("c", 1, 8, 0));
        assert_eq!(tally.missing(), 1, "the second member's delivery is lost");
        assert_eq!(tally.misrouted.load(Ordering::Relaxed), 1);
        assert_eq!(
            tally.other_frames.load(Ordering::Relaxed),
            1,
            "another run's"
        );
    }

    #[test]
    fn answered_sends_are_not_written_again_and_a_resend_is_marked() {
        let tally = Arc::new(Tally::new(4));
        let mut inbox = Inbox::new(9, tally.clone(), &[]);
        let write = |inbox: &mut Inbox, k: usize| {
            let frame = ClientFrame::Send {
                chat_id: "c".into(),
                content: content(9, k),
                client_id: format!("9-{k}"),
                first_try: true,
            };
            let text = serde_json::to_string(&frame).expect("a frame serializes");
            tally.sending(k, 1, Instant::now());
            inbox.writing(k, text.into());
        };
        for k in 0..3 {
            write(&mut inbox, k);
        }
        inbox.record(r#"{"type":"ack","clientId":"9-0","message":null}"#);
        inbox.record(r#"{"type":"error","error":"no","clientId":"9-2"}"#);
        assert_eq!(tally.refused_for_now.load(Ordering::Relaxed), 0);
        let resends = inbox.resends();
        assert_eq!(resends.len(), 1);
        let again: ClientFrame = serde_json::from_str(&resends[0]).expect("a frame");
        assert!(matches!(
            again,
            ClientFrame::Send { ref client_id, first_try: false, .. } if client_id == "9-1"
        ));
        // Once the oldest are answered, the next write lets them go.
        inbox.record(r#"{"type":"ack","clientId":"9-1","message":null}"#);
        write(&mut inbox, 3);
        assert_eq!(inbox.written.len(), 1);
        assert!(inbox.refused.is_empty());
        assert_eq!(tally.acks.load(Ordering::Relaxed), 2);
        // A refusal for now is counted apart, not as an error: the send
        // goes again once its wait is over, and not before.
        inbox.record(r#"{"type":"error","error":"busy","clientId":"9-3","retry":true}"#);
        assert_eq!(tally.errors.load(Ordering::Relaxed), 1);
        assert_eq!(tally.refused_for_now.load(Ordering::Relaxed), 1);
        let due = inbox.next_retry().expect("a retry is scheduled");
        assert!(inbox.due_retries(due - Duration::from_millis(1)).is_empty());
        let again = inbox.due_retries(due);
        assert_eq!(again.len(), 1);
        let again: ClientFrame = serde_json::from_str(&again[0]).expect("a frame");
        assert!(matches!(
            again,
            ClientFrame::Send { ref client_id, first_try: false, .. } if client_id == "9-3"
        ));
        assert_eq!(inbox.next_retry(), None);
        // Refused for now again, then acked before its wait is over: it
        // does not go again.
        inbox.record(r#"{"type":"error","error":"busy","clientId":"9-3","retry":true}"#);
        inbox.record(r#"{"type":"ack","clientId":"9-3","message":null}"#);
        assert!(inbox.next_retry().is_some());
        assert!(inbox.due_retries(Instant::now() + RETRY_AFTER).is_empty());
        assert_eq!(inbox.next_retry(), None);
    }
}
