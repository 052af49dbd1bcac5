-- What every node of a deployment must agree on, decided once: the first
-- node to start records its value, and the others check theirs against it.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

-- A deployment from before this table spread its chats over eight partition
-- queues, which may still hold messages: it keeps eight.
INSERT INTO settings (name, value)
SELECT 'partitions', '8' WHERE EXISTS (SELECT 1 FROM messages);
