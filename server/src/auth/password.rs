use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{self, Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::domain::Password;

/// Hashes and checks passwords with argon2id at the crate's recommended cost
/// (19 MiB, 2 passes, 1 lane: OWASP's baseline). Both are slow on purpose, so
/// they run on the blocking pool, never on the async workers, and only as
/// many at once as there are cores: more would not finish sooner, and each
/// holds 19 MiB while it runs (a burst of sign-ups once left the allocator
/// holding gigabytes).
///
/// The line of those waiting for a core is bounded too: each is a request
/// held open, a sign-up with its picture of up to 5 MiB, and at ~50 hashes
/// per second per core a flood of them would hold gigabytes for minutes.
/// Past it, a hash is refused at once (`HashError::Busy`, a 503).
#[derive(Clone)]
pub struct Passwords {
    /// A hash of a random password, checked against when the email is unknown
    /// so that "no such user" takes as long as "wrong password".
    decoy: String,
    running: Arc<Semaphore>,
    /// Places for hashes running or waiting to: `running`'s turns plus the
    /// line's length. Taken before a turn is waited for.
    places: Arc<Semaphore>,
}

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// As many are waiting for a core as may: try again in a moment.
    #[error("too many sign-ups and logins at once: try again in a moment")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl Passwords {
    /// `waiting` is how many hashes may wait for a core, beyond one running
    /// on each (`NATTER_PASSWORD_QUEUE`).
    pub fn new(waiting: usize) -> anyhow::Result<Self> {
        let decoy = hash_blocking(&uuid::Uuid::now_v7().to_string())?;
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(Passwords {
            decoy,
            running: Arc::new(Semaphore::new(cores)),
            places: Arc::new(Semaphore::new(cores + waiting)),
        })
    }

    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let password = password.expose().to_owned();
        Ok(self.on_a_core(move || hash_blocking(&password)).await??)
    }

    /// A place in the line for a core, or `HashError::Busy` at once when
    /// the line is full; its `verify` checks a password. Taken apart from
    /// the check for a caller that has more to decide before it hashes (a login's tries are counted only once it has a place, so
    /// that a flood refused for want of one leaves nothing behind).
    pub fn place(&self) -> Result<Place<'_>, HashError> {
        match self.places.clone().try_acquire_owned() {
            Ok(permit) => Ok(Place {
                permit,
                passwords: self,
            }),
            Err(TryAcquireError::NoPermits) => Err(HashError::Busy),
            Err(closed) => Err(anyhow::Error::from(closed).into()),
        }
    }

    /// Runs `work` on the blocking pool once a core is free, or refuses it
    /// at once when the line for one is full.
    async fn on_a_core<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        self.place()?.run(work).await
    }
}

/// A place in the line for a core (`Passwords::place`), given back when
/// its hash has run or when it is dropped unused.
pub struct Place<'a> {
    permit: OwnedSemaphorePermit,
    passwords: &'a Passwords,
}

impl Place<'_> {
    /// Checks `password` against `hash`, or against the decoy when there is
    /// no user, returning false in that case whatever the password.
    pub async fn verify(self, password: &str, hash: Option<&str>) -> Result<bool, HashError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.passwords.decoy).to_owned();
        let password = password.to_owned();
        let matches = self
            .run(move || verify_blocking(&password, &hash))
            .await??;
        Ok(known && matches)
    }

    /// Runs `work` on the blocking pool once a core is free. The turn goes
    /// with the work, not with the caller: a request dropped while its hash
    /// runs (its client gone, as a flood of logins that hang up at once
    /// would do) must not free the turn for another hash beside it. One
    /// dropped while it waits leaves the line.
    async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let place = self.permit;
        let turn = self
            .passwords
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(anyhow::Error::from)?;
        let joined = tokio::task::spawn_blocking(move || {
            let _held = (place, turn);
            work()
        })
        .await;
        Ok(joined.map_err(anyhow::Error::from)?)
    }
}

fn argon2() -> Argon2<'static> {
    Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        Params::default(),
    )
}

/// argon2's working memory (19 MiB at our cost), kept between hashes. Each
/// hash allocating and freeing its own left the allocator holding hundreds
/// of megabytes after a burst of sign-ups; with a pool, at most one buffer
/// per core (`Passwords::running`) exists, for the life of the process.
static SCRATCH: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Runs `work` with `count` blocks of working memory from the pool. A
/// buffer is found and taken under one lock: between two, another hash
/// could take it first, and the index would name another buffer, or none.
fn with_scratch<T>(count: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
    let pool = || crate::sync::lock(&SCRATCH);
    let taken = {
        let mut pool = pool();
        let index = pool.iter().position(|blocks| blocks.len() == count);
        index.map(|index| pool.swap_remove(index))
    };
    let mut blocks = taken.unwrap_or_else(|| vec![Block::default(); count]);
    let result = work(&mut blocks);
    pool().push(blocks);
    result
}

/// The raw argon2 output for `password` and `salt` with `argon2`'s settings.
fn compute(
    argon2: &Argon2<'_>,
    password: &str,
    salt: &Salt<'_>,
    len: usize,
) -> anyhow::Result<Output> {
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|err| anyhow::anyhow!("salt: {err}"))?;
    let count = argon2.params().block_count();
    Output::init_with(len, |out| {
        with_scratch(count, |blocks| {
            argon2
                .hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, blocks)
                .map_err(|_| password_hash::Error::Crypto)
        })
    })
    .map_err(|err| anyhow::anyhow!("hashing a password: {err}"))
}

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let argon2 = argon2();
    let params = argon2.params().clone();
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = compute(&argon2, password, &salt.as_salt(), output_len)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|err| anyhow::anyhow!("{err}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Checks `password` against a PHC string, with the settings written in it.
fn verify_blocking(password: &str, hash: &str) -> anyhow::Result<bool> {
    let unreadable = |err: password_hash::Error| anyhow::anyhow!("stored hash unreadable: {err}");
    let parsed = PasswordHash::new(hash).map_err(unreadable)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Ok(false);
    };
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(unreadable)?;
    let version = match parsed.version {
        Some(version) => Version::try_from(version).map_err(|err| anyhow::anyhow!("{err}"))?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(unreadable)?;
    let argon2 = Argon2::new(algorithm, version, params);
    // Output's comparison takes the same time whatever differs.
    Ok(compute(&argon2, password, &salt, expected.len())? == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes at once on several cores each get a whole buffer of their
    /// own size from the pool, never one another took meanwhile.
    #[test]
    fn hashes_at_once_each_take_a_buffer_of_their_own() {
        std::thread::scope(|scope| {
            for thread in 0..4 {
                scope.spawn(move || {
                    let count = 1 + thread % 2;
                    for _ in 0..20_000 {
                        with_scratch(count, |blocks| assert_eq!(blocks.len(), count));
                    }
                });
            }
        });
    }

    #[test]
    fn hashes_made_by_the_argon2_crate_itself_still_verify() {
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::generate(&mut OsRng);
        let hash = argon2()
            .hash_password(b"correct horse", &salt)
            .expect("hash")
            .to_string();
        assert!(verify_blocking("correct horse", &hash).expect("verify"));
        assert!(!verify_blocking("wrong horse", &hash).expect("verify"));
        let ours = hash_blocking("correct horse").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("PHC string");
        use argon2::password_hash::PasswordVerifier;
        assert!(
            argon2().verify_password(b"correct horse", &parsed).is_ok(),
            "and the crate reads ours"
        );
    }

    /// A caller dropped while its work runs leaves the turn with the work:
    /// no more hashes run at once than there are turns, however many
    /// requests hang up.
    #[tokio::test]
    async fn a_turn_stays_with_running_work_when_its_caller_is_dropped() {
        let passwords = Passwords::new(0).expect("decoy");
        let turns = passwords.running.available_permits();
        let (started, running) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let caller = tokio::spawn({
            let passwords = passwords.clone();
            async move {
                passwords
                    .on_a_core(move || {
                        let _ = started.send(());
                        let _ = released.recv();
                    })
                    .await
            }
        });
        tokio::task::spawn_blocking(move || running.recv())
            .await
            .expect("joined")
            .expect("the work started");
        caller.abort();
        assert!(caller.await.is_err_and(|err| err.is_cancelled()));
        assert_eq!(
            passwords.running.available_permits(),
            turns - 1,
            "the work still holds its turn"
        );
        release.send(()).expect("released");
        let all = u32::try_from(turns).expect("a few turns");
        let back = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            passwords.running.acquire_many(all),
        );
        let _all = back.await.expect("the turn comes back when the work ends");
    }

    /// With every core busy and the line full, one more is refused at once;
    /// one dropped while it waits leaves the line, and its place is free.
    #[tokio::test]
    async fn past_a_full_line_a_hash_is_refused_at_once() {
        let passwords = Passwords::new(1).expect("decoy");
        let turns = passwords.running.available_permits();
        let all_turns = u32::try_from(turns).expect("a few turns");
        let cores_busy = passwords
            .running
            .clone()
            .acquire_many_owned(all_turns)
            .await;
        let places = |count: usize| {
            let passwords = passwords.clone();
            async move {
                tokio::time::timeout(std::time::Duration::from_secs(10), async {
                    while passwords.places.available_permits() != count {
                        tokio::task::yield_now().await;
                    }
                })
                .await
                .expect("places taken or given back");
            }
        };
        let waiting: Vec<_> = (0..=turns)
            .map(|_| {
                let passwords = passwords.clone();
                tokio::spawn(async move { passwords.on_a_core(|| ()).await })
            })
            .collect();
        places(0).await;
        assert!(matches!(
            passwords.on_a_core(|| ()).await,
            Err(HashError::Busy)
        ));

        waiting[0].abort();
        places(1).await;
        drop(cores_busy);
        for caller in waiting.into_iter().skip(1) {
            let done = caller.await.expect("joined");
            assert!(done.is_ok(), "a waiting hash runs once a core is free");
        }
        passwords.on_a_core(|| ()).await.expect("a place again");
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = Passwords::new(0).expect("decoy");
        let password = Password::parse("correct horse").expect("valid");
        let hash = passwords.hash(&password).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("correct horse"));
        let verify = async |password: &str, hash: Option<&str>| {
            let place = passwords.place().expect("a place");
            place.verify(password, hash).await.expect("verify")
        };
        assert!(verify("correct horse", Some(&hash)).await);
        assert!(!verify("wrong horse", Some(&hash)).await);
        assert!(!verify("correct horse", None).await);
    }
}
