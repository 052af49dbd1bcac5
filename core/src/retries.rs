//! What the server failed or refused for now, tried again on the same link
//! after a wait that doubles each time, so that a server catching up is not
//! flooded. Two kinds, each its own schedule keyed by id:
//! - chats with a send whose error frame said `retry` (the database or the
//!   broker is down or behind, nothing was wrong with the message), by
//!   chat id (`Resends`): its messages stay in the outbox meanwhile;
//! - chats whose history the server failed to give at catch-up or for a
//!   gap (an internal error on that chat alone), by chat id: the chat is
//!   *behind* until it is read, and the others go on meanwhile.
//!
//! A new link catches up and sends the whole outbox again anyway, so a
//! schedule lives and dies with one link.

use std::collections::HashMap;

use rand::Rng;
use tokio::time::{Duration, Instant};

use crate::backoff::Backoff;

pub(crate) struct Retries {
    backoff: Backoff,
    /// Per id failed for now: how often so far (the next wait doubles),
    /// and when it is tried again unless that is under way.
    failed: HashMap<String, Failed>,
}

struct Failed {
    times: u32,
    due: Option<Instant>,
}

impl Retries {
    pub fn new(backoff: Backoff) -> Self {
        Retries {
            backoff,
            failed: HashMap::new(),
        }
    }

    /// `id` failed for now at `now`: it is tried again after the returned
    /// wait.
    pub fn failed(&mut self, id: &str, now: Instant, rng: &mut impl Rng) -> Duration {
        let failed = self.failed.entry(id.to_owned()).or_insert(Failed {
            times: 0,
            due: None,
        });
        let wait = self.backoff.delay(failed.times, rng);
        failed.times = failed.times.saturating_add(1);
        failed.due = Some(now + wait);
        wait
    }

    /// Whether `id` failed and is not done yet (waiting, or being tried).
    pub fn contains(&self, id: &str) -> bool {
        self.failed.contains_key(id)
    }

    /// When the next try is due, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.failed.values().filter_map(|failed| failed.due).min()
    }

    /// The ids due at `now`, in the order they fell due; they wait no more
    /// (but count as failed until `done`).
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut due: Vec<(Instant, String)> = self
            .failed
            .iter_mut()
            .filter_map(|(id, failed)| {
                let at = failed.due.filter(|at| *at <= now)?;
                failed.due = None;
                Some((at, id.clone()))
            })
            .collect();
        due.sort();
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// `id` is answered for good (a send stored or refused, a chat read):
    /// it is neither waited for nor counted any more.
    pub fn done(&mut self, id: &str) {
        self.failed.remove(id);
    }

    /// Every id failed and not done yet.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.failed.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn retries() -> Retries {
        Retries::new(Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
        })
    }

    #[test]
    fn a_failure_falls_due_after_its_wait_once_and_counts_until_done() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut retries = retries();
        let now = Instant::now();
        assert_eq!(retries.next_due(), None);
        let wait = retries.failed("a", now, &mut rng);
        assert!(wait >= Duration::from_millis(50) && wait <= Duration::from_millis(100));
        assert_eq!(retries.next_due(), Some(now + wait));
        assert!(retries.take_due(now).is_empty(), "not due yet");
        assert_eq!(retries.take_due(now + wait), ["a"]);
        assert!(retries.take_due(now + wait).is_empty(), "taken once");
        assert_eq!(retries.next_due(), None);
        assert!(retries.contains("a"), "being tried: still failed");
        retries.done("a");
        assert!(!retries.contains("a"));
    }

    #[test]
    fn each_failure_of_one_id_waits_longer_up_to_the_ceiling() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut retries = retries();
        let now = Instant::now();
        let waits: Vec<Duration> = (0..6).map(|_| retries.failed("a", now, &mut rng)).collect();
        // Each wait is between half its ceiling and the ceiling, which doubles.
        for (n, wait) in waits.iter().enumerate() {
            let ceiling =
                Duration::from_millis(100 * 2u64.pow(n as u32)).min(Duration::from_secs(1));
            assert!(*wait >= ceiling / 2 && *wait <= ceiling, "{n}: {wait:?}");
        }
        // One id waits once, for its latest failure.
        assert_eq!(retries.next_due(), Some(now + waits[5]));
    }

    #[test]
    fn due_ids_come_in_the_order_they_fell_due_and_done_forgets_one() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut retries = retries();
        let now = Instant::now();
        // "late" waits longer: failed twice before, so its wait is 200-400 ms.
        retries.failed("late", now, &mut rng);
        retries.failed("late", now, &mut rng);
        let late = retries.failed("late", now, &mut rng);
        let soon = retries.failed("soon", now, &mut rng);
        let gone = retries.failed("gone", now, &mut rng);
        retries.done("gone");
        assert!(soon < late && gone < late);
        assert_eq!(retries.take_due(now + late), ["soon", "late"]);
        // Tried again and failed again, it waits longer still; done,
        // it starts again from the shortest wait.
        let again = retries.failed("late", now, &mut rng);
        assert!(again >= Duration::from_millis(400), "{again:?}");
        retries.done("late");
        let fresh = retries.failed("late", now, &mut rng);
        assert!(fresh <= Duration::from_millis(100), "{fresh:?}");
    }
}
