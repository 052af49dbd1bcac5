-- Sessions logged out before their tokens expire (auth/sessions.rs): every
-- token of one is refused until `good_until`, the last second any of them
-- could still have been good for. Each node reads what was ended since it
-- last looked (`ended_at`, seconds since the epoch).
CREATE TABLE ended_sessions (
    id         TEXT PRIMARY KEY NOT NULL,
    ended_at   BIGINT NOT NULL,
    good_until BIGINT NOT NULL
);
CREATE INDEX ended_sessions_by_ended_at ON ended_sessions (ended_at);
