//! Sends the server refused for now: its error frame said `retry` (the
//! database or the message broker is down or behind, nothing was wrong with
//! the message). Each is made again on the same link after a wait that
//! doubles with every refusal, so a server that is catching up is not
//! flooded, and the message stays in the outbox meanwhile. A new link sends
//! the whole outbox again anyway, so the schedule lives and dies with one.

use std::collections::HashMap;

use rand::Rng;
use tokio::time::{Duration, Instant};

use crate::backoff::Backoff;

pub(crate) struct Resends {
    backoff: Backoff,
    /// Per client id refused for now: how often so far (the next wait
    /// doubles), and when it goes again unless it has gone already.
    refused: HashMap<String, Refused>,
}

struct Refused {
    times: u32,
    due: Option<Instant>,
}

impl Resends {
    pub fn new(backoff: Backoff) -> Self {
        Resends {
            backoff,
            refused: HashMap::new(),
        }
    }

    /// The server refused `client_id` for now at `now`: it is made again
    /// after the returned wait.
    pub fn refused(&mut self, client_id: &str, now: Instant, rng: &mut impl Rng) -> Duration {
        let refused = self.refused.entry(client_id.to_owned()).or_insert(Refused {
            times: 0,
            due: None,
        });
        let wait = self.backoff.delay(refused.times, rng);
        refused.times = refused.times.saturating_add(1);
        refused.due = Some(now + wait);
        wait
    }

    /// When the next send is due, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.refused
            .values()
            .filter_map(|refused| refused.due)
            .min()
    }

    /// The sends due at `now`, in the order they fell due; they wait no more.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut due: Vec<(Instant, String)> = self
            .refused
            .iter_mut()
            .filter_map(|(client_id, refused)| {
                let at = refused.due.filter(|at| *at <= now)?;
                refused.due = None;
                Some((at, client_id.clone()))
            })
            .collect();
        due.sort();
        due.into_iter().map(|(_, client_id)| client_id).collect()
    }

    /// The server answered `client_id` for good (stored, or refused): it
    /// is neither waited for nor counted any more.
    pub fn answered(&mut self, client_id: &str) {
        self.refused.remove(client_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn resends() -> Resends {
        Resends::new(Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
        })
    }

    #[test]
    fn a_refused_send_falls_due_after_its_wait_and_once() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut resends = resends();
        let now = Instant::now();
        assert_eq!(resends.next_due(), None);
        let wait = resends.refused("a", now, &mut rng);
        assert!(wait >= Duration::from_millis(50) && wait <= Duration::from_millis(100));
        assert_eq!(resends.next_due(), Some(now + wait));
        assert!(resends.take_due(now).is_empty(), "not due yet");
        assert_eq!(resends.take_due(now + wait), ["a"]);
        assert!(resends.take_due(now + wait).is_empty(), "taken once");
        assert_eq!(resends.next_due(), None);
    }

    #[test]
    fn each_refusal_of_one_send_waits_longer_up_to_the_ceiling() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut resends = resends();
        let now = Instant::now();
        let waits: Vec<Duration> = (0..6)
            .map(|_| resends.refused("a", now, &mut rng))
            .collect();
        // Each wait is between half its ceiling and the ceiling, which doubles.
        for (n, wait) in waits.iter().enumerate() {
            let ceiling =
                Duration::from_millis(100 * 2u64.pow(n as u32)).min(Duration::from_secs(1));
            assert!(*wait >= ceiling / 2 && *wait <= ceiling, "{n}: {wait:?}");
        }
        // One send waits once, for its latest refusal.
        assert_eq!(resends.next_due(), Some(now + waits[5]));
    }

    #[test]
    fn due_sends_come_in_the_order_they_fell_due_and_an_answer_forgets_one() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut resends = resends();
        let now = Instant::now();
        // "late" waits longer: refused twice before, so its wait is 200-400 ms.
        resends.refused("late", now, &mut rng);
        resends.refused("late", now, &mut rng);
        let late = resends.refused("late", now, &mut rng);
        let soon = resends.refused("soon", now, &mut rng);
        let gone = resends.refused("gone", now, &mut rng);
        resends.answered("gone");
        assert!(soon < late && gone < late);
        assert_eq!(resends.take_due(now + late), ["soon", "late"]);
        // Made again and refused again, it waits longer still; answered,
        // it starts again from the shortest wait.
        let again = resends.refused("late", now, &mut rng);
        assert!(again >= Duration::from_millis(400), "{again:?}");
        resends.answered("late");
        let fresh = resends.refused("late", now, &mut rng);
        assert!(fresh <= Duration::from_millis(100), "{fresh:?}");
    }
}
