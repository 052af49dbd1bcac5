//! Maps and sets keyed by ids the server made itself (users, chats,
//! messages, correlation ids), hashed with foldhash rather than std's
//! SipHash: a message costs a dozen or more such lookups on its way (the
//! sequencer's memory, the hub's sockets per member, the senders waiting
//! for a reply), and SipHash was 3% of the server's time at 28,000 msg/s
//! (docs/benchmarks.md, fourteenth round).
//!
//! Not for keys a client chooses (clientIds): foldhash does not claim to
//! resist keys picked to collide, so such a map keeps std's keyed hasher.

pub type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type IdSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
