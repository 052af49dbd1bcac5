//! What a run counts: every message sent has a number `k`; its send time
//! and expected recipients are kept by number, and every recipient that
//! receives it counts it and records the latency. Lost and duplicated
//! deliveries fall out of the counts at the end.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;

pub struct Tally {
    pub start: Instant,
    /// Send time of message k, in µs since `start` (0: not sent).
    sent_at: Vec<AtomicU64>,
    expected: Vec<AtomicU32>,
    /// Deliveries of message k, each under the seq it was first seen with
    /// (`seq_of`): a socket counts a seq once (`inbox`), so at most one per
    /// recipient socket, and lost ones are what falls short per message.
    delivered: Vec<AtomicU32>,
    /// The seq message k was first delivered under (0: none yet).
    seq_of: Vec<AtomicI64>,
    acked: Vec<AtomicU32>,
    /// Message k was written again (its socket came back, or the server
    /// refused it for now): the server then delivers its stored copy again.
    resent_k: Vec<AtomicBool>,
    pub sent: AtomicU64,
    /// Messages acked (once each, however many acks came: `double_acks`).
    pub acks: AtomicU64,
    /// Messages that failed for good (refused, or never written).
    pub failed: AtomicU64,
    pub errors: AtomicU64,
    /// Refusals of our socket sends the server said were for now (`retry`:
    /// it could not keep up, the send was not wrong); not errors, since
    /// each goes again (`inbox::RETRY_AFTER`) until acked.
    pub refused_for_now: AtomicU64,
    pub deliveries: AtomicU64,
    /// Frames that are not ours (other chats' traffic, chat events).
    pub other_frames: AtomicU64,
    /// Sockets the server dropped, and how many were opened again.
    pub drops: AtomicU64,
    pub reconnects: AtomicU64,
    /// Deliveries a socket read from history after it came back.
    pub caught_up: AtomicU64,
    /// Sends written again: after their socket dropped unanswered, or
    /// refused for now.
    pub resent: AtomicU64,
    /// Message frames for a seq the socket had seen already (`inbox`).
    pub redelivered: AtomicU64,
    /// Of those, the ones with no cause: their socket never came back and
    /// their message was never written again.
    pub redelivered_without_cause: AtomicU64,
    /// Deliveries of a message under another seq than its first: stored
    /// twice (or sequenced twice), whoever else missed it.
    pub under_another_seq: AtomicU64,
    /// When the last delivery came, in µs since `start`.
    last_delivery: AtomicU64,
    /// This run's messages that reached a socket of a user not in their
    /// chat: not counted as deliveries, so that one sent to the wrong user
    /// does not stand in for one lost.
    pub misrouted: AtomicU64,
}

/// Latencies in µs, from 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

impl Tally {
    pub fn new(capacity: usize) -> Self {
        let zeros64 = || (0..capacity).map(|_| AtomicU64::new(0)).collect();
        let zeros32 = || (0..capacity).map(|_| AtomicU32::new(0)).collect::<Vec<_>>();
        Tally {
            start: Instant::now(),
            sent_at: zeros64(),
            expected: zeros32(),
            delivered: zeros32(),
            seq_of: (0..capacity).map(|_| AtomicI64::new(0)).collect(),
            acked: zeros32(),
            resent_k: (0..capacity).map(|_| AtomicBool::new(false)).collect(),
            sent: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            refused_for_now: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            other_frames: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            caught_up: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            redelivered_without_cause: AtomicU64::new(0),
            under_another_seq: AtomicU64::new(0),
            last_delivery: AtomicU64::new(0),
            misrouted: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.sent_at.len()
    }

    /// Message `k`, due at `due` in the run's fixed-rate schedule, leaves
    /// for `recipients` sockets. Its latencies count from `due`, not from
    /// when the send loop got to it: a tool that falls behind (its own
    /// runtime busy, or a server too slow to take the requests) must not
    /// leave the wait out of the figures.
    pub fn sending(&self, k: usize, recipients: u32, due: Instant) {
        let since_start = due.saturating_duration_since(self.start).as_micros();
        let due = u64::try_from(since_start).unwrap_or(u64::MAX).max(1);
        self.expected[k].store(recipients, Ordering::Relaxed);
        self.sent_at[k].store(due, Ordering::Release);
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn acked(&self, k: usize) {
        if let Some(slot) = self.acked.get(k)
            && slot.fetch_add(1, Ordering::Relaxed) == 0
        {
            self.acks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A send failed for good: refused, or never written (each is told
    /// once). An error, and an answer: nothing more is waited for it.
    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Send `k` is about to be written again (counted in `resent` once it is).
    pub fn mark_resent(&self, k: usize) {
        if let Some(flag) = self.resent_k.get(k) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    pub fn was_resent(&self, k: usize) -> bool {
        self.resent_k
            .get(k)
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }

    pub fn is_acked(&self, k: usize) -> bool {
        self.acked
            .get(k)
            .is_some_and(|acks| acks.load(Ordering::Relaxed) > 0)
    }

    /// A recipient received message `k` under `seq`: its latency in µs, if
    /// it is ours and a delivery (not a copy under another seq).
    pub fn delivered(&self, k: usize, seq: i64) -> Option<u64> {
        self.delivered_at(k, seq, Instant::now())
    }

    fn delivered_at(&self, k: usize, seq: i64, now: Instant) -> Option<u64> {
        let sent_at = self.sent_at.get(k)?.load(Ordering::Acquire);
        if sent_at == 0 {
            return None;
        }
        match self.seq_of[k].compare_exchange(0, seq, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {}
            Err(first) if first == seq => {}
            Err(_) => {
                self.under_another_seq.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        self.delivered[k].fetch_add(1, Ordering::Relaxed);
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(now.saturating_duration_since(self.start).as_micros())
            .unwrap_or(u64::MAX);
        self.last_delivery.fetch_max(now, Ordering::Relaxed);
        Some(now.saturating_sub(sent_at).max(1))
    }

    /// When the last delivery came, since `start` (`None`: none came).
    pub fn last_delivery(&self) -> Option<std::time::Duration> {
        let micros = self.last_delivery.load(Ordering::Relaxed);
        (micros > 0).then(|| std::time::Duration::from_micros(micros))
    }

    /// Whether every message sent was answered: acked, or failed for good.
    /// Not by counting errors: a frame the tool cannot read, or an error
    /// frame for no send of ours, answers none.
    pub fn all_answered(&self) -> bool {
        let sent = self.sent.load(Ordering::Relaxed);
        self.acks.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed) >= sent
    }

    /// Deliveries still missing for acked messages, message by message: a
    /// copy under another seq is no delivery, so it cannot stand in for one
    /// a recipient missed.
    pub fn missing(&self) -> u64 {
        self.each_acked()
            .map(|(expected, delivered)| u64::from(expected.saturating_sub(delivered)))
            .sum()
    }

    /// Deliveries under a second seq, and any beyond one per recipient.
    pub fn duplicated(&self) -> u64 {
        let beyond: u64 = self
            .each_acked()
            .map(|(expected, delivered)| u64::from(delivered.saturating_sub(expected)))
            .sum();
        beyond + self.under_another_seq.load(Ordering::Relaxed)
    }

    /// Messages acked more than once.
    pub fn double_acks(&self) -> u64 {
        let sent = self.sent.load(Ordering::Relaxed) as usize;
        self.acked[..sent.min(self.capacity())]
            .iter()
            .filter(|acks| acks.load(Ordering::Relaxed) > 1)
            .count() as u64
    }

    /// The numbers of the messages that were acked.
    pub fn acked_numbers(&self) -> Vec<usize> {
        let sent = (self.sent.load(Ordering::Relaxed) as usize).min(self.capacity());
        (0..sent)
            .filter(|&k| self.acked[k].load(Ordering::Relaxed) > 0)
            .collect()
    }

    fn each_acked(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let sent = (self.sent.load(Ordering::Relaxed) as usize).min(self.capacity());
        (0..sent)
            .filter(|&k| self.acked[k].load(Ordering::Relaxed) > 0)
            .map(|k| {
                (
                    self.expected[k].load(Ordering::Relaxed),
                    self.delivered[k].load(Ordering::Relaxed),
                )
            })
    }
}

/// `natter-load <run> #<k>`: what a load message says, and how a recipient
/// finds `k` again.
pub fn content(run: u64, k: usize) -> String {
    format!("natter-load {run} #{k}")
}

pub fn number_in(content: &str, run: u64) -> Option<usize> {
    let rest = content.strip_prefix("natter-load ")?;
    let (tag, k) = rest.split_once(" #")?;
    (tag.parse::<u64>().ok()? == run).then_some(())?;
    k.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_number_survives_the_round_trip() {
        assert_eq!(number_in(&content(7, 42), 7), Some(42));
        assert_eq!(number_in(&content(7, 42), 8), None, "another run's message");
        assert_eq!(number_in("hello", 7), None);
    }

    #[test]
    fn counts_show_lost_and_duplicated_deliveries() {
        let tally = Tally::new(3);
        tally.sending(0, 2, Instant::now());
        tally.sending(1, 2, Instant::now());
        tally.acked(0);
        tally.acked(1);
        assert!(tally.delivered(0, 1).is_some());
        assert!(tally.delivered(0, 1).is_some());
        assert!(tally.delivered(0, 1).is_some());
        assert!(tally.delivered(1, 2).is_some());
        assert!(tally.delivered(2, 3).is_none(), "never sent");
        assert_eq!(tally.missing(), 1);
        assert_eq!(tally.duplicated(), 1);
        assert_eq!(tally.double_acks(), 0);
    }

    /// One recipient gets a message twice, under two seqs, and the other
    /// never: one lost and one duplicated, not two deliveries that add up.
    #[test]
    fn a_copy_under_another_seq_does_not_make_up_for_a_lost_delivery() {
        let tally = Tally::new(1);
        tally.sending(0, 2, Instant::now());
        tally.acked(0);
        assert!(tally.delivered(0, 5).is_some());
        assert!(tally.delivered(0, 6).is_none(), "a copy, not a delivery");
        assert_eq!(tally.missing(), 1);
        assert_eq!(tally.duplicated(), 1);
        assert_eq!(tally.deliveries.load(Ordering::Relaxed), 1);
    }

    /// Answers count once per send: a second ack, or an error frame for no
    /// send of ours, does not make the run look answered before it is.
    #[test]
    fn a_run_is_answered_when_each_send_is_acked_or_failed() {
        let tally = Tally::new(3);
        for k in 0..3 {
            tally.sending(k, 1, Instant::now());
        }
        tally.acked(0);
        tally.acked(0);
        tally.errors.fetch_add(1, Ordering::Relaxed);
        assert!(!tally.all_answered());
        assert_eq!(tally.acks.load(Ordering::Relaxed), 1);
        assert_eq!(tally.double_acks(), 1);
        tally.failed();
        assert!(!tally.all_answered());
        tally.acked(2);
        assert!(tally.all_answered());
        assert_eq!(tally.errors.load(Ordering::Relaxed), 2);
    }

    /// A send the loop got to late (here: 40 ms after it was due) counts
    /// that wait in its latency.
    #[test]
    fn latency_counts_from_when_the_send_was_due() {
        let tally = Tally::new(1);
        let due = tally.start + std::time::Duration::from_millis(10);
        tally.sending(0, 1, due);
        let received = due + std::time::Duration::from_millis(50);
        assert_eq!(tally.delivered_at(0, 1, received), Some(50_000));
        assert_eq!(
            tally.last_delivery(),
            Some(std::time::Duration::from_millis(60))
        );
    }
}
