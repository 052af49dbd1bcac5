-- Facts about the cache itself, by name.
-- `caught_up`: a catch-up has completed here (a cache from before this
-- migration that holds chats has had one).
CREATE TABLE facts (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO facts (name, value)
SELECT 'caught_up', 'yes' WHERE EXISTS (SELECT 1 FROM chats);

-- How far a chat's history was not news when the chat entered the cache:
-- its latest seq then, when it came in while the app was in touch (a live
-- event, the first catch-up of a login); NULL when it was first met by a
-- later catch-up, after being away: it is new since, and nothing in it was
-- seen. Only a chat with no messages cached goes by it; the others are
-- read on from their highest cached seq.
ALTER TABLE chats ADD COLUMN seen_through INTEGER;
UPDATE chats SET seen_through = json_extract(body, '$.latestMessage.seq');
