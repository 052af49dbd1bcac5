use natter_shared::limits::EMAIL_MAX_CHARS;

use super::ValidationError;

/// A plausible email address, trimmed and lower-cased so that `Ann@X.org` and
/// `ann@x.org` are one account. We do not send mail, so "plausible" is enough:
/// one `@`, a non-empty local part, a dotted domain, no spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let email = raw.trim().to_lowercase();
        let invalid = || ValidationError(format!("'{}' is not a valid email address", raw.trim()));
        if email.is_empty() {
            return Err(ValidationError("email is required".into()));
        }
        if email.chars().count() > EMAIL_MAX_CHARS {
            return Err(ValidationError(format!(
                "email is longer than {EMAIL_MAX_CHARS} characters"
            )));
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..");
        if local.is_empty()
            || !domain_ok
            || domain.contains('@')
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid());
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_spaces() {
        let email = Email::parse("  Ann@Example.ORG ").expect("valid");
        assert_eq!(email.as_str(), "ann@example.org");
    }

    #[test]
    fn refuses_malformed_addresses() {
        for raw in [
            "",
            "ann",
            "@example.org",
            "ann@",
            "ann@example",
            "ann@.org",
            "ann@example.",
            "ann@@example.org",
            "a nn@example.org",
            "ann@exa..mple.org",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} should be refused");
        }
    }

    #[test]
    fn refuses_overlong_addresses() {
        let raw = format!("{}@example.org", "a".repeat(EMAIL_MAX_CHARS));
        assert!(Email::parse(&raw).is_err());
    }
}
