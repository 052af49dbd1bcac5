-- Messages reach the database through the pipeline, which gives them their
-- seq and recognises a sender's retry (same client id) before storing. A
-- unique index on the client id would make a retry that the pipeline could
-- not recognise (the database was down at the time) vanish on insert and
-- leave a hole in the chat's seqs; a plain index keeps lookups fast, and the
-- message is stored twice instead.
DROP INDEX messages_by_client_id;
CREATE INDEX messages_by_client_id ON messages (sender_id, client_id) WHERE client_id IS NOT NULL;
