//! What a run counts: every message sent has a number `k`; its send time
//! and expected recipients are kept by number, and every recipient that
//! receives it counts it and records the latency. Lost and duplicated
//! deliveries fall out of the counts at the end.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;

pub struct Tally {
    pub start: Instant,
    /// Send time of message k, in µs since `start` (0: not sent).
    sent_at: Vec<AtomicU64>,
    expected: Vec<AtomicU32>,
    delivered: Vec<AtomicU32>,
    acked: Vec<AtomicU32>,
    pub sent: AtomicU64,
    pub acks: AtomicU64,
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
            acked: zeros32(),
            sent: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            refused_for_now: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            other_frames: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            caught_up: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
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
        if let Some(slot) = self.acked.get(k) {
            slot.fetch_add(1, Ordering::Relaxed);
            self.acks.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn is_acked(&self, k: usize) -> bool {
        self.acked
            .get(k)
            .is_some_and(|acks| acks.load(Ordering::Relaxed) > 0)
    }

    /// A recipient received message `k`: its latency in µs, if it is ours.
    pub fn delivered(&self, k: usize) -> Option<u64> {
        self.delivered_at(k, Instant::now())
    }

    fn delivered_at(&self, k: usize, now: Instant) -> Option<u64> {
        let sent_at = self.sent_at.get(k)?.load(Ordering::Acquire);
        if sent_at == 0 {
            return None;
        }
        self.delivered[k].fetch_add(1, Ordering::Relaxed);
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(now.saturating_duration_since(self.start).as_micros())
            .unwrap_or(u64::MAX);
        Some(now.saturating_sub(sent_at).max(1))
    }

    /// Whether every message sent was answered (acked, or refused).
    pub fn all_answered(&self) -> bool {
        let sent = self.sent.load(Ordering::Relaxed);
        self.acks.load(Ordering::Relaxed) + self.errors.load(Ordering::Relaxed) >= sent
    }

    /// Deliveries still missing for acked messages.
    pub fn missing(&self) -> u64 {
        self.each_acked()
            .map(|(expected, delivered)| u64::from(expected.saturating_sub(delivered)))
            .sum()
    }

    /// Deliveries beyond one per recipient.
    pub fn duplicated(&self) -> u64 {
        self.each_acked()
            .map(|(expected, delivered)| u64::from(delivered.saturating_sub(expected)))
            .sum()
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
        assert!(tally.delivered(0).is_some());
        assert!(tally.delivered(0).is_some());
        assert!(tally.delivered(0).is_some());
        assert!(tally.delivered(1).is_some());
        assert!(tally.delivered(2).is_none(), "never sent");
        assert_eq!(tally.missing(), 1);
        assert_eq!(tally.duplicated(), 1);
        assert_eq!(tally.double_acks(), 0);
    }

    /// A send the loop got to late (here: 40 ms after it was due) counts
    /// that wait in its latency.
    #[test]
    fn latency_counts_from_when_the_send_was_due() {
        let tally = Tally::new(1);
        let due = tally.start + std::time::Duration::from_millis(10);
        tally.sending(0, 1, due);
        let received = due + std::time::Duration::from_millis(50);
        assert_eq!(tally.delivered_at(0, received), Some(50_000));
    }
}
