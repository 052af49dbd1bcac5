-- An outbox row whose message the server stored, though its ack was held
-- back: its chat was behind (connection.rs), and the message, stored in
-- the cache now, would leave a hole before it. The row stays, shown as
-- before, until the chat's history brings the message; meanwhile it is
-- not sent again, nor reported unsent if its chat goes.
ALTER TABLE outbox ADD COLUMN stored_seq INTEGER;
