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
//! Behind a proxy every client has the proxy's address unless the proxy
//! is named in `NATTER_TRUSTED_PROXIES` (`http::client`); otherwise the
//! first count is per address too. And each node counts its own: `n` nodes allow
//! up to `n` times as many. Someone guessing from ten machines (or ten
//! IPv6 /64s) can still keep an address's owner from logging in anew for
//! the hour; the owner's devices already logged in carry on.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::allowance::{Rate, Used};
use crate::domain::Email;
use crate::sync::lock;

/// How many times one client's tries an address has from all clients.
pub const FROM_ANYWHERE: NonZeroU32 = NonZeroU32::new(10).expect("not zero");

pub struct LoginThrottle {
    per_client: Rate,
    per_address: Rate,
    /// Both counts under one lock: a login is checked against both before
    /// either records it, so that one refused records nothing. Counts are
    /// then made only by logins that are let through to a hash (they have
    /// a place, `Passwords::place`: at most ~50 a second per core), however
    /// fast refused ones come, from however many addresses.
    used: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    per_client: Used<(IpAddr, String)>,
    per_address: Used<String>,
}

impl LoginThrottle {
    pub fn new(per_hour: NonZeroU32) -> Self {
        LoginThrottle {
            per_client: Rate::per_hour(per_hour),
            per_address: Rate::per_hour(per_hour.saturating_mul(FROM_ANYWHERE)),
            used: Mutex::new(Counts::default()),
        }
    }

    /// Takes one of `email`'s tries from `client`, or says how long until
    /// the next.
    pub fn take(&self, client: IpAddr, email: &Email) -> Result<(), Duration> {
        let now = Instant::now();
        let client = (machine(client), email.as_str().to_owned());
        let mut used = lock(&self.used);
        let by_client = used.per_client.of(&client);
        let by_anyone = used.per_address.of(&client.1);
        let wait = self
            .per_client
            .wait(by_client, now)
            .max(self.per_address.wait(by_anyone, now));
        if let Some(wait) = wait {
            return Err(wait);
        }
        let address = client.1.clone();
        used.per_client
            .record(client, self.per_client.after_one(by_client, now), now);
        used.per_address
            .record(address, self.per_address.after_one(by_anyone, now), now);
        Ok(())
    }

    #[cfg(test)]
    fn counts_kept(&self) -> usize {
        let used = lock(&self.used);
        used.per_client.kept() + used.per_address.kept()
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
    fn a_login_refused_records_nothing_and_costs_no_try() {
        let throttle = LoginThrottle::new(NonZeroU32::new(1).expect("not zero"));
        for client in 0..10 {
            assert!(throttle.take(v4(client), &email("ann@example.org")).is_ok());
        }
        let kept = throttle.counts_kept();
        for client in 10..200 {
            assert!(
                throttle
                    .take(v4(client), &email("ann@example.org"))
                    .is_err()
            );
        }
        assert_eq!(
            throttle.counts_kept(),
            kept,
            "no count for each machine refused"
        );
        // Ann's own machine, its one try used, is refused by its own count:
        // that costs the address none of its tries from anywhere.
        let ann = LoginThrottle::new(NonZeroU32::new(1).expect("not zero"));
        assert!(ann.take(v4(1), &email("ann@example.org")).is_ok());
        for _ in 0..50 {
            assert!(ann.take(v4(1), &email("ann@example.org")).is_err());
        }
        for client in 2..11 {
            assert!(
                ann.take(v4(client), &email("ann@example.org")).is_ok(),
                "the address still has its tries from other machines"
            );
        }
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
}
