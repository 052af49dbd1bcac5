-- Natter's schema on SQLite. Times are milliseconds since the Unix epoch.

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    pic           TEXT,
    -- lower-cased "name\nemail", what user search looks in
    search_key    TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE chats (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    is_group    INTEGER NOT NULL,
    admin_id    TEXT REFERENCES users (id),
    -- "smaller-id:larger-id" for one-to-one chats, so there is only one per pair
    direct_key  TEXT UNIQUE,
    last_seq    INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE chat_members (
    -- joining order: the longest-standing member inherits the admin role
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id   TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL REFERENCES users (id),
    joined_at INTEGER NOT NULL,
    UNIQUE (chat_id, user_id)
);
CREATE INDEX chat_members_by_user ON chat_members (user_id, chat_id);

CREATE TABLE messages (
    id         TEXT PRIMARY KEY NOT NULL,
    chat_id    TEXT NOT NULL REFERENCES chats (id),
    seq        INTEGER NOT NULL,
    sender_id  TEXT NOT NULL REFERENCES users (id),
    content    TEXT NOT NULL,
    client_id  TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (chat_id, seq)
);
CREATE UNIQUE INDEX messages_by_client_id ON messages (sender_id, client_id) WHERE client_id IS NOT NULL;
