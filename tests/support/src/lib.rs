//! `natter-test-support`: small helpers the test suites of several crates
//! share (the server's integration and fault tests, the desktop core's
//! engine tests, the desktop app's end-to-end tests). Dev-dependency only.

use std::sync::atomic::{AtomicU16, Ordering};

/// A port free now, for a process that binds it later. Taken below 32768,
/// where Linux picks the local ports of outgoing connections: one of those
/// could take a port from there between this check and the bind. Each call
/// in this process tries the next port; processes start apart by their pid.
pub fn free_port() -> u16 {
    static TRIED: AtomicU16 = AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 600) as u16 * 20;
    loop {
        let step = TRIED.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (start - 20_000 + step) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Holds the write lock of the SQLite database at `path`, as another
/// program or a stalled disk could: the owner still reads, but its writes
/// wait out their busy timeout (and then fail). Dropped, the lock goes (the
/// transaction is rolled back).
pub async fn hold_write_lock(path: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("the database opens");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut connection)
        .await
        .expect("the write lock");
    connection
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_not_repeated() {
        let first = free_port();
        let second = free_port();
        assert!((20_000..32_000).contains(&first), "{first}");
        assert_ne!(first, second);
    }
}
