use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::sync::Arc;

use argon2::{Argon2, Params};
use tokio::sync::Semaphore;

use crate::domain::Password;

/// Hashes and checks passwords with argon2id at the crate's recommended cost
/// (19 MiB, 2 passes, 1 lane: OWASP's baseline). Both are slow on purpose, so
/// they run on the blocking pool, never on the async workers, and only as
/// many at once as there are cores: more would not finish sooner, and each
/// holds 19 MiB while it runs (a burst of sign-ups once left the allocator
/// holding gigabytes).
#[derive(Clone)]
pub struct Passwords {
    /// A hash of a random password, checked against when the email is unknown
    /// so that "no such user" takes as long as "wrong password".
    decoy: String,
    running: Arc<Semaphore>,
}

impl Passwords {
    pub fn new() -> anyhow::Result<Self> {
        let decoy = hash_blocking(&uuid::Uuid::now_v7().to_string())?;
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(Passwords {
            decoy,
            running: Arc::new(Semaphore::new(cores)),
        })
    }

    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let password = password.expose().to_owned();
        let _turn = self.running.acquire().await?;
        tokio::task::spawn_blocking(move || hash_blocking(&password)).await?
    }

    /// Checks `password` against `hash`, or against the decoy when there is no
    /// user, returning false in that case whatever the password.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> anyhow::Result<bool> {
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.decoy).to_owned();
        let password = password.to_owned();
        let _turn = self.running.acquire().await?;
        let matches =
            tokio::task::spawn_blocking(move || verify_blocking(&password, &hash)).await??;
        Ok(known && matches)
    }
}

fn argon2() -> Argon2<'static> {
    Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        Params::default(),
    )
}

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let hash = argon2()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|err| anyhow::anyhow!("hashing a password: {err}"))?;
    Ok(hash.to_string())
}

fn verify_blocking(password: &str, hash: &str) -> anyhow::Result<bool> {
    let parsed =
        PasswordHash::new(hash).map_err(|err| anyhow::anyhow!("stored hash unreadable: {err}"))?;
    Ok(argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = Passwords::new().expect("decoy");
        let password = Password::parse("correct horse").expect("valid");
        let hash = passwords.hash(&password).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("correct horse"));
        assert!(
            passwords
                .verify("correct horse", Some(&hash))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("wrong horse", Some(&hash))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("correct horse", None)
                .await
                .expect("verify")
        );
    }
}
