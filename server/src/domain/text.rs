//! Bounded pieces of text. Each type states its limits once, from
//! `natter_shared::limits`, so the app can show the same numbers.

use natter_shared::limits::{
    CHAT_NAME_MAX_CHARS, CLIENT_ID_MAX_CHARS, CONTENT_MAX_CHARS, NAME_MAX_CHARS,
    PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS, SEARCH_MAX_CHARS,
};

use super::ValidationError;

/// Checks `text` has between `min` and `max` characters; `what` names it in the error.
fn bounded(text: &str, what: &str, min: usize, max: usize) -> Result<(), ValidationError> {
    let len = text.chars().count();
    if len < min {
        return Err(ValidationError(if min <= 1 {
            format!("{what} must not be empty")
        } else {
            format!("{what} must be at least {min} characters")
        }));
    }
    if len > max {
        return Err(ValidationError(format!(
            "{what} must be at most {max} characters"
        )));
    }
    Ok(())
}

fn no_control_chars(text: &str, what: &str) -> Result<(), ValidationError> {
    if text.chars().any(char::is_control) {
        return Err(ValidationError(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// A name is shown inside other text ("Ann is typing…", a chat list's
/// preview): none of Unicode's direction embeddings, overrides or
/// isolates, which would reverse or reorder the text shown after it.
fn no_direction_controls(text: &str, what: &str) -> Result<(), ValidationError> {
    if text
        .chars()
        .any(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
    {
        return Err(ValidationError(format!(
            "{what} must not contain text direction controls"
        )));
    }
    Ok(())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }
    };
}

text_type!(
    /// A person's display name: trimmed, 1 to 100 characters, one line.
    UserName
);
text_type!(
    /// A group's name: trimmed, 1 to 100 characters, one line.
    ChatName
);
text_type!(
    /// A message's text: 1 to 4096 characters, not only white space. Kept as
    /// written (new lines and leading spaces are the author's).
    Content
);
text_type!(
    /// A client-chosen id that makes a retried send store one message.
    ClientId
);
text_type!(
    /// A user search: trimmed, 1 to 100 characters.
    SearchQuery
);

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let name = raw.trim();
        bounded(name, "name", 1, NAME_MAX_CHARS)?;
        no_control_chars(name, "name")?;
        no_direction_controls(name, "name")?;
        Ok(UserName(name.to_owned()))
    }
}

impl ChatName {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let name = raw.trim();
        bounded(name, "chat name", 1, CHAT_NAME_MAX_CHARS)?;
        no_control_chars(name, "chat name")?;
        no_direction_controls(name, "chat name")?;
        Ok(ChatName(name.to_owned()))
    }
}

impl Content {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.trim().is_empty() {
            return Err(ValidationError("message must not be empty".into()));
        }
        bounded(raw, "message", 1, CONTENT_MAX_CHARS)?;
        // Any other character is the author's; PostgreSQL cannot store NUL.
        if raw.contains('\0') {
            return Err(ValidationError(
                "message must not contain the NUL character (\\u0000)".into(),
            ));
        }
        Ok(Content(raw.to_owned()))
    }
}

impl ClientId {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        bounded(raw, "clientId", 1, CLIENT_ID_MAX_CHARS)?;
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        {
            return Err(ValidationError(
                "clientId may only contain letters, digits, '-', '_', '.' and ':'".into(),
            ));
        }
        Ok(ClientId(raw.to_owned()))
    }
}

impl SearchQuery {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let query = raw.trim();
        bounded(query, "search", 1, SEARCH_MAX_CHARS)?;
        no_control_chars(query, "search")?;
        Ok(SearchQuery(query.to_owned()))
    }
}

/// A password. Kept out of `Debug` output so it cannot end up in a log line.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        bounded(raw, "password", PASSWORD_MIN_CHARS, PASSWORD_MAX_CHARS)?;
        Ok(Password(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(UserName::parse("  Ann ").expect("valid").as_str(), "Ann");
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse(&"x".repeat(NAME_MAX_CHARS + 1)).is_err());
        assert!(UserName::parse(&"é".repeat(NAME_MAX_CHARS)).is_ok());
        assert!(UserName::parse("a\nb").is_err());
    }

    /// A name shown inside other text cannot reverse what follows it;
    /// right-to-left letters themselves are names like any other.
    #[test]
    fn names_hold_no_text_direction_controls() {
        for control in ['\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}'] {
            let name = format!("Eve{control}");
            assert!(UserName::parse(&name).is_err(), "{name:?}");
            assert!(ChatName::parse(&name).is_err(), "{name:?}");
        }
        assert!(UserName::parse("שלום").is_ok());
        assert!(ChatName::parse("فريق").is_ok());
    }

    #[test]
    fn content_keeps_its_layout_but_is_not_blank() {
        let text = "  line one\nline two 😀";
        assert_eq!(Content::parse(text).expect("valid").as_str(), text);
        assert!(Content::parse(" \n\t").is_err());
        assert!(Content::parse(&"a".repeat(CONTENT_MAX_CHARS + 1)).is_err());
        assert!(Content::parse("a\0b").is_err());
        assert!(Content::parse("tab\tand bell\u{7}").is_ok());
    }

    #[test]
    fn searches_are_one_line_of_text() {
        assert_eq!(SearchQuery::parse(" ann ").expect("valid").as_str(), "ann");
        assert!(SearchQuery::parse("a\0").is_err());
        assert!(SearchQuery::parse("a\nb").is_err());
    }

    #[test]
    fn passwords_are_bounded_and_hidden_from_debug() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"p".repeat(PASSWORD_MAX_CHARS + 1)).is_err());
        let password = Password::parse("correct horse").expect("valid");
        assert!(!format!("{password:?}").contains("horse"));
    }

    #[test]
    fn client_ids_are_plain_tokens() {
        assert!(ClientId::parse("0190a5c2-7b7e-7000-8000-000000000000").is_ok());
        assert!(ClientId::parse("").is_err());
        assert!(ClientId::parse("has space").is_err());
        assert!(ClientId::parse(&"a".repeat(CLIENT_ID_MAX_CHARS + 1)).is_err());
    }
}
