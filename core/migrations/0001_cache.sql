-- The desktop app's local cache: what the server last told us, so the app
-- starts and shows chats and history at once, also with the server down.
-- Resources are kept as the server's own JSON; only what we query on is a column.

CREATE TABLE users (
    id   TEXT PRIMARY KEY,
    body TEXT NOT NULL
);

CREATE TABLE chats (
    id         TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    -- milliseconds since the epoch: the chat list's order
    updated_at INTEGER NOT NULL,
    unread     INTEGER NOT NULL DEFAULT 0
);

-- Per chat the cache holds one contiguous run of seqs: the newest page at
-- first, grown downwards as older pages are read and upwards by live
-- messages and catch-up.
CREATE TABLE messages (
    id      TEXT PRIMARY KEY,
    chat_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    body    TEXT NOT NULL,
    UNIQUE (chat_id, seq)
);

-- Messages written here and not yet acknowledged by the server. A row is
-- deleted in the same transaction that stores the acknowledged message.
CREATE TABLE outbox (
    client_id  TEXT PRIMARY KEY,
    chat_id    TEXT NOT NULL,
    content    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- set when the server refused the message for good (not a member, too long)
    error      TEXT
);
CREATE INDEX outbox_by_chat ON outbox (chat_id, created_at);
