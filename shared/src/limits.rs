//! Input limits, in one place so that the server enforces and the app shows
//! exactly the same numbers. Lengths count Unicode scalar values (`chars`), not bytes.

/// A display name: 1 to this many characters after trimming.
pub const NAME_MAX_CHARS: usize = 100;
/// An email address, at most this many characters (RFC 5321's path limit).
pub const EMAIL_MAX_CHARS: usize = 254;
/// Passwords: at least this many characters...
pub const PASSWORD_MIN_CHARS: usize = 8;
/// ...and at most this many, so hashing cost stays bounded.
pub const PASSWORD_MAX_CHARS: usize = 256;
/// A chat message's text: 1 to this many characters.
pub const CONTENT_MAX_CHARS: usize = 4096;
/// A group chat's name: 1 to this many characters after trimming.
pub const CHAT_NAME_MAX_CHARS: usize = 100;
/// A client-chosen message id used to make retries idempotent.
pub const CLIENT_ID_MAX_CHARS: usize = 64;
/// A user search query.
pub const SEARCH_MAX_CHARS: usize = 100;
/// At most this many users are returned by one search.
pub const SEARCH_MAX_RESULTS: usize = 50;
/// Members of one group chat, the admin included.
pub const GROUP_MAX_MEMBERS: usize = 256;
/// A profile picture file, in bytes (5 MiB).
pub const PIC_MAX_BYTES: usize = 5 * 1024 * 1024;
/// A profile picture's width and height, in pixels.
pub const PIC_MAX_SIDE: usize = 4096;
/// One WebSocket message from a client, in bytes.
pub const FRAME_MAX_BYTES: usize = 64 * 1024;
/// A JSON request body, in bytes.
pub const JSON_BODY_MAX_BYTES: usize = 64 * 1024;
/// Messages in one page of history: the default...
pub const PAGE_DEFAULT: u32 = 50;
/// ...and the most a client may ask for.
pub const PAGE_MAX: u32 = 200;
