-- The message the server stored for an outbox row marked stored (0005).
-- Should its chat be left before history brings it, the cache keeps it
-- from here: one who left can no longer read the chat's history.
ALTER TABLE outbox ADD COLUMN stored_message TEXT;
