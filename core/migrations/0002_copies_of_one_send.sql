-- A message's sender and clientId, taken from its body, so that two copies
-- of one send are recognised: a server that died before storing a message
-- it had delivered stores it later, when its sender resends it, under
-- another id and seq. The cache keeps the copy with the highest seq.
ALTER TABLE messages ADD COLUMN sender_id TEXT;
ALTER TABLE messages ADD COLUMN client_id TEXT;
UPDATE messages
SET sender_id = json_extract(body, '$.sender.id'),
    client_id = json_extract(body, '$.clientId');
CREATE INDEX messages_by_client_id ON messages (sender_id, client_id)
    WHERE client_id IS NOT NULL;
