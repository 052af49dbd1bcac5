//! So many of something an hour for each key (an email address, a user),
//! given back one at a time over the hour: the limits on what one client
//! may make the server do for it however fast it asks (`auth::throttle`'s
//! logins, the groups a user makes). In memory, per node.
//!
//! Each key keeps one instant: when what it has used is all back (the
//! "theoretical arrival time" of the generic cell rate algorithm). One
//! more may be taken while that is less than the whole allowance ahead.
//! A key whose instant has passed is as good as none, and is let go.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// How many takes between two sweeps of the keys whose allowance is all
/// back: each is let go at the first sweep after that.
const SWEEP_EVERY: usize = 1024;

/// A rate: `burst` at once, then one every `every`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    every: Duration,
    burst: u32,
}

impl Rate {
    pub fn per_hour(count: NonZeroU32) -> Rate {
        Rate {
            every: Duration::from_secs(3600) / count.get(),
            burst: count.get(),
        }
    }

    /// How long until one more may be taken, for a key whose use is all
    /// back at `back`; `None`: now.
    pub fn wait(&self, back: Option<Instant>, now: Instant) -> Option<Duration> {
        let ahead = back?.checked_duration_since(now)?;
        let room = self.every * (self.burst - 1);
        ahead.checked_sub(room).filter(|wait| !wait.is_zero())
    }

    /// When a key's use is all back once one more is taken at `now`.
    pub fn after_one(&self, back: Option<Instant>, now: Instant) -> Instant {
        back.map_or(now, |back| back.max(now)) + self.every
    }
}

/// Keys and when each one's use is all back, swept now and then.
pub struct Used<K> {
    back: HashMap<K, Instant>,
    /// Records since the last sweep.
    records: usize,
}

impl<K: Hash + Eq> Default for Used<K> {
    fn default() -> Self {
        Used {
            back: HashMap::new(),
            records: 0,
        }
    }
}

impl<K: Hash + Eq> Used<K> {
    /// When `key`'s use is all back, if it has any.
    pub fn of(&self, key: &K) -> Option<Instant> {
        self.back.get(key).copied()
    }

    /// Records that `key`'s use is all back at `back`, and now and then
    /// lets go of the keys whose use is back by `now`. A sweep walks the
    /// whole map, so it comes after as many records as the map holds
    /// (`SWEEP_EVERY` at the least): its cost per record stays the same
    /// however big the map grows.
    pub fn record(&mut self, key: K, back: Instant, now: Instant) {
        self.records += 1;
        if self.records >= SWEEP_EVERY.max(self.back.len()) {
            self.records = 0;
            self.back.retain(|_, back| *back > now);
            if self.back.len() < self.back.capacity() / 4 {
                self.back.shrink_to_fit();
            }
        }
        self.back.insert(key, back);
    }

    /// How many keys are kept.
    pub fn kept(&self) -> usize {
        self.back.len()
    }
}

/// One rate for every key.
pub struct HourlyAllowance<K> {
    rate: Rate,
    used: Mutex<Used<K>>,
}

impl<K: Hash + Eq> HourlyAllowance<K> {
    pub fn new(per_hour: NonZeroU32) -> Self {
        HourlyAllowance {
            rate: Rate::per_hour(per_hour),
            used: Mutex::new(Used::default()),
        }
    }

    /// Takes one of `key`'s allowance, or says how long until the next (a
    /// refusal records nothing).
    pub fn take(&self, key: K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut used = lock(&self.used);
        let back = used.of(&key);
        if let Some(wait) = self.rate.wait(back, now) {
            return Err(wait);
        }
        used.record(key, self.rate.after_one(back, now), now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_allowance_and_is_told_when_the_next_comes() {
        let allowance = HourlyAllowance::new(NonZeroU32::new(3).expect("not zero"));
        for _ in 0..3 {
            assert!(allowance.take("ann").is_ok());
        }
        let wait = allowance.take("ann").expect_err("a fourth within the hour");
        assert!(
            wait > Duration::from_secs(1150) && wait <= Duration::from_secs(1200),
            "one comes back every 20 minutes: {wait:?}"
        );
        assert!(allowance.take("bob").is_ok());
    }

    #[test]
    fn one_comes_back_each_interval() {
        let rate = Rate::per_hour(NonZeroU32::new(3).expect("not zero"));
        let start = Instant::now();
        let mut back = None;
        for _ in 0..3 {
            assert_eq!(rate.wait(back, start), None);
            back = Some(rate.after_one(back, start));
        }
        let twenty = Duration::from_secs(1200);
        assert_eq!(rate.wait(back, start), Some(twenty));
        assert_eq!(rate.wait(back, start + twenty), None, "one back");
        back = Some(rate.after_one(back, start + twenty));
        assert_eq!(rate.wait(back, start + twenty), Some(twenty));
        assert_eq!(rate.wait(back, start + 3 * twenty), None);
    }

    #[test]
    fn keys_whose_use_is_all_back_are_let_go() {
        let mut used = Used::default();
        let now = Instant::now();
        used.record(0, now + Duration::from_secs(10), now);
        for key in 1..SWEEP_EVERY - 1 {
            used.record(key, now + Duration::from_secs(1), now);
        }
        assert_eq!(used.kept(), SWEEP_EVERY - 1);
        let later = now + Duration::from_secs(2);
        used.record(SWEEP_EVERY, now + Duration::from_secs(3), later);
        assert_eq!(used.kept(), 2, "the one not yet back, and the last one");
        assert!(used.of(&0).is_some());
    }
}
