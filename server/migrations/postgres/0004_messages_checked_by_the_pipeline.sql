-- Messages are written only by the pipeline's sequencers, which store one
-- after finding its chat and its sender among the chat's members (and
-- chat_members references both); users and chats are never deleted. The
-- foreign keys on messages checked that again for every row, each check
-- locking the chat's and the sender's rows (FOR KEY SHARE): 15-30% of
-- PostgreSQL's CPU per stored message (docs/benchmarks.md, ninth round).
-- They go; chat_members keeps its own. SQLite's schema keeps them (their
-- cost there was not measured).
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_chat_id_fkey;
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_sender_id_fkey;
