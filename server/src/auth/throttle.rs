//! How often an account may be logged in to. Each login checks a password,
//! so without a limit anyone could try ~50 guesses a second per core
//! against one account for as long as they liked; and each login makes a
//! session that a logout keeps in every node's memory until the session's
//! longest end, so a login/logout loop would grow it without bound.
//!
//! Tries are counted per email address, whether the password was right or
//! not and whether the account exists or not (a limit only for accounts
//! that exist would tell which do), and past them a login is refused
//! without its password being checked, saying when to try again. They come
//! back one at a time over the hour. Two counts:
//! - per client machine and address, `NATTER_LOGINS_PER_HOUR`: what one
//!   machine may try. Someone guessing from one machine cannot keep the
//!   account's owner from logging in from another (IPv6 clients are
//!   counted by their /64, which one machine can fill with addresses);
//! - per address from anywhere, `FROM_ANYWHERE` times that: what many
//!   machines together may guess.
//!
//! Behind a load balancer every client has the balancer's address, so the
//! first count is per address too. And each node counts its own: `n`
//! nodes allow up to `n` times as many.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::domain::Email;

/// How many times one client's tries an address has from all clients.
pub const FROM_ANYWHERE: NonZeroU32 = NonZeroU32::new(10).expect("not zero");

/// How many logins between two sweeps of the counts whose tries are all
/// back (and so need no entry). Entries are made only by logins that have
/// a place to hash (`Passwords::place`), at most ~50 a second per core, and
/// each is let go at the first sweep after its tries are all back (with
/// the default 30 an hour, from four minutes after one try to an hour after
/// thirty).
const SWEEP_EVERY: u64 = 1024;

pub struct LoginThrottle {
    per_client: DefaultKeyedRateLimiter<(IpAddr, String)>,
    per_address: DefaultKeyedRateLimiter<String>,
    logins: AtomicU64,
}

impl LoginThrottle {
    pub fn new(per_hour: NonZeroU32) -> Self {
        let from_anywhere = per_hour.saturating_mul(FROM_ANYWHERE);
        LoginThrottle {
            per_client: DefaultKeyedRateLimiter::keyed(Quota::per_hour(per_hour)),
            per_address: DefaultKeyedRateLimiter::keyed(Quota::per_hour(from_anywhere)),
            logins: AtomicU64::new(0),
        }
    }

    /// Takes one of `email`'s tries from `client`, or says how long until
    /// the next.
    pub fn take(&self, client: IpAddr, email: &Email) -> Result<(), Duration> {
        if self.logins.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        let email = email.as_str().to_owned();
        let now = self.per_client.clock().now();
        self.per_client
            .check_key(&(machine(client), email.clone()))
            .map_err(|not_until| not_until.wait_time_from(now))?;
        self.per_address
            .check_key(&email)
            .map_err(|not_until| not_until.wait_time_from(now))
    }

    /// Lets go of the counts whose tries are all back.
    fn sweep(&self) {
        self.per_client.retain_recent();
        self.per_client.shrink_to_fit();
        self.per_address.retain_recent();
        self.per_address.shrink_to_fit();
    }

    #[cfg(test)]
    fn counts_kept(&self) -> usize {
        self.per_client.len() + self.per_address.len()
    }
}

/// The machine an address stands for: an IPv4 address (one mapped into
/// IPv6 too), or an IPv6 address's /64, the least a network hands out.
fn machine(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((v6.to_bits() & !(u128::MAX >> 64)).into()),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn email(raw: &str) -> Email {
        Email::parse(raw).expect("valid")
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn each_client_has_its_tries_at_an_address_and_is_told_when_the_next_comes() {
        let throttle = LoginThrottle::new(NonZeroU32::new(3).expect("not zero"));
        for _ in 0..3 {
            assert!(throttle.take(v4(1), &email("ann@example.org")).is_ok());
        }
        let wait = throttle
            .take(v4(1), &email("ANN@example.org"))
            .expect_err("a fourth try within the hour");
        assert!(
            wait > Duration::from_secs(1150) && wait <= Duration::from_secs(1200),
            "one try comes back every 20 minutes: {wait:?}"
        );
        assert!(
            throttle.take(v4(2), &email("ann@example.org")).is_ok(),
            "another machine may still log in to Ann's account"
        );
        assert!(throttle.take(v4(1), &email("bob@example.org")).is_ok());
    }

    #[test]
    fn many_clients_together_have_ten_times_one_clients_tries() {
        let throttle = LoginThrottle::new(NonZeroU32::new(3).expect("not zero"));
        for client in 0..10 {
            for _ in 0..3 {
                assert!(throttle.take(v4(client), &email("ann@example.org")).is_ok());
            }
        }
        let wait = throttle
            .take(v4(10), &email("ann@example.org"))
            .expect_err("past the address's tries from anywhere");
        assert!(
            wait <= Duration::from_secs(120),
            "one back every 2 minutes: {wait:?}"
        );
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_client_its_ipv4_address() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().expect("v6");
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().expect("v6");
        let other: Ipv6Addr = "2001:db8:1:3::1".parse().expect("v6");
        assert_eq!(machine(IpAddr::V6(a)), machine(IpAddr::V6(b)));
        assert_ne!(machine(IpAddr::V6(a)), machine(IpAddr::V6(other)));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(machine(mapped), v4(7));
        assert_eq!(machine(v4(7)), v4(7));
    }

    #[test]
    fn counts_whose_tries_are_back_are_let_go() {
        // 3,600,000 an hour: a try is back a millisecond after it is taken,
        // and its count indistinguishable from none a millisecond later.
        let throttle = LoginThrottle::new(NonZeroU32::new(3_600_000).expect("not zero"));
        for index in 0..SWEEP_EVERY - 1 {
            let address = email(&format!("u{index}@example.org"));
            assert!(throttle.take(v4(1), &address).is_ok());
        }
        assert_eq!(throttle.counts_kept(), 2 * (SWEEP_EVERY as usize - 1));
        // At least 3 ms on from the last of them (a sleep is never shorter).
        std::thread::sleep(Duration::from_millis(3));
        assert!(throttle.take(v4(1), &email("last@example.org")).is_ok());
        assert_eq!(throttle.counts_kept(), 2, "only the last login's counts");
    }
}
