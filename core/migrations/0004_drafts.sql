-- What the user was writing in a chat and has not sent, kept across
-- restarts as other messengers keep it. Gone with its chat and with the
-- cache at logout.
CREATE TABLE drafts (
    chat_id TEXT PRIMARY KEY,
    text    TEXT NOT NULL
);
