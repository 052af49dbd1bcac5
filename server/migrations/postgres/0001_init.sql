-- Natter's schema on PostgreSQL. Times are milliseconds since the Unix epoch,
-- as on SQLite, so both backends share their queries.

-- Trigram indexes make "name or email contains q" searches fast on big tables.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    pic           TEXT,
    -- lower-cased "name\nemail", what user search looks in
    search_key    TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX users_search_key ON users USING gin (search_key gin_trgm_ops);

CREATE TABLE chats (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    is_group    BOOLEAN NOT NULL,
    admin_id    TEXT REFERENCES users (id),
    -- "smaller-id:larger-id" for one-to-one chats, so there is only one per pair
    direct_key  TEXT UNIQUE,
    last_seq    BIGINT NOT NULL DEFAULT 0,
    updated_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE chat_members (
    -- joining order: the longest-standing member inherits the admin role
    id        BIGSERIAL PRIMARY KEY,
    chat_id   TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL REFERENCES users (id),
    joined_at BIGINT NOT NULL,
    UNIQUE (chat_id, user_id)
);
CREATE INDEX chat_members_by_user ON chat_members (user_id, chat_id);

CREATE TABLE messages (
    id         TEXT PRIMARY KEY,
    chat_id    TEXT NOT NULL REFERENCES chats (id),
    seq        BIGINT NOT NULL,
    sender_id  TEXT NOT NULL REFERENCES users (id),
    content    TEXT NOT NULL,
    client_id  TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (chat_id, seq)
);
CREATE UNIQUE INDEX messages_by_client_id ON messages (sender_id, client_id) WHERE client_id IS NOT NULL;
