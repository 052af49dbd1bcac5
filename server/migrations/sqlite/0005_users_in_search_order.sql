-- User search lists users in search-key order (store/sql.rs `search_users`,
-- bytewise, SQLite's default). Without an index in that order, every
-- search read and sorted every user; walking this one stops at the page's
-- last match.
CREATE INDEX users_in_search_order ON users (search_key, id);
