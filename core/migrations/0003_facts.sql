-- Facts about the cache itself, by name.
-- `caught_up`: a catch-up has completed here. A chat met after that with no
-- messages cached is new since then (or was empty): its messages were not
-- seen, where on the first catch-up they are the past.
CREATE TABLE facts (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
