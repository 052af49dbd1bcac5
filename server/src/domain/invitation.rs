use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ValidationError;

/// How long an invitation code must be at least: it is the only thing
/// between anyone who can reach the server and an account on it.
pub const INVITATION_MIN_CHARS: usize = 16;

/// The code a server asks of everyone who signs up
/// (`NATTER_INVITATION_CODE`), for an operator who wants only the people
/// they gave it to. Never shown: not in logs, not in `Debug`.
#[derive(Clone)]
pub struct InvitationCode {
    /// The code's SHA-256 digest: what every sign-up's code is compared
    /// with, made once.
    digest: [u8; 32],
}

impl InvitationCode {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.trim().chars().count() < INVITATION_MIN_CHARS {
            return Err(ValidationError(format!(
                "an invitation code needs at least {INVITATION_MIN_CHARS} characters: \
                 make one with `openssl rand -hex 16`"
            )));
        }
        Ok(InvitationCode {
            digest: Sha256::digest(raw.trim().as_bytes()).into(),
        })
    }

    /// Whether `given` is this code (spaces around it aside, as it may be
    /// pasted). Their digests are compared, in the same time whatever they
    /// hold: timing tells nothing of how much of a guess was right, nor of
    /// how long the code is.
    pub fn is(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        self.digest.ct_eq(&given).into()
    }
}

impl std::fmt::Debug for InvitationCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InvitationCode(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_long_enough_and_matched_whole() {
        assert!(InvitationCode::parse("short").is_err());
        let code = InvitationCode::parse(" 0123456789abcdef ").expect("long enough");
        assert!(code.is("0123456789abcdef") && code.is(" 0123456789abcdef\n"));
        assert!(!code.is("0123456789abcde") && !code.is("0123456789abcdeF"));
        assert!(!code.is(""));
        assert_eq!(format!("{code:?}"), "InvitationCode(…)");
    }
}
