//! What the two RabbitMQ links (the message pipeline's and the events'
//! fan-out) share: getting a connection back after the broker went away,
//! and letting go of the old one.
//!
//! Every wait on the broker here is bounded. lapin has no timeout of its
//! own on opening or closing a connection, and has had releases where
//! either never returned (a refused `connection.open`, a broker that went
//! quiet); a link whose supervisor waits forever never comes back, and
//! nothing says so.

use std::future::Future;
use std::time::Duration;

use lapin::Connection;

/// The longest wait between two tries.
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// How long one try to connect (and declare what the link needs) may take
/// before it counts as failed. A broker that answers at all does it in
/// milliseconds; ten seconds leaves room for a loaded one.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// How long closing an old connection may take. Past it the connection is
/// dropped unclosed: RabbitMQ lets its exclusive queues go when the socket
/// closes or its heartbeat lapses.
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

/// Calls `connect` until it succeeds: after `first_pause`, then waiting
/// twice as long each time, up to 5 s. A try that has not finished within
/// [`CONNECT_PATIENCE`] is given up and counts as failed. `link` names the
/// link in the logs.
pub async fn reconnect<T, E, F, Fut>(link: &str, first_pause: Duration, mut connect: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = first_pause;
    loop {
        tokio::time::sleep(pause).await;
        match tokio::time::timeout(CONNECT_PATIENCE, connect()).await {
            Ok(Ok(connected)) => {
                tracing::info!(link, "reconnected to RabbitMQ");
                return connected;
            }
            Ok(Err(err)) => tracing::debug!(link, error = %err, "RabbitMQ still unreachable"),
            Err(_) => tracing::warn!(
                link,
                patience = ?CONNECT_PATIENCE,
                "RabbitMQ did not finish a connection in time: trying again"
            ),
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Closes `connection`, waiting at most [`CLOSE_PATIENCE`] for RabbitMQ's
/// answer (none comes when the link broke), so that a new link is not held
/// up by the old one.
pub async fn close(link: &str, connection: &Connection, reason: &str) {
    match tokio::time::timeout(CLOSE_PATIENCE, connection.close(0, reason.into())).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(link, error = %err, "the old connection was already gone"),
        Err(_) => tracing::warn!(
            link,
            patience = ?CLOSE_PATIENCE,
            "RabbitMQ did not answer the old connection's close: dropped unclosed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A try that never answers is given up and the next one made: the
    /// link comes back once the broker does.
    #[tokio::test(start_paused = true)]
    async fn a_try_that_never_answers_is_given_up_and_tried_again() {
        let tries = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let reconnecting = reconnect("test", Duration::from_millis(100), || {
            let attempt = tries.fetch_add(1, Ordering::SeqCst);
            async move {
                if attempt == 0 {
                    std::future::pending::<()>().await;
                }
                Ok::<_, std::convert::Infallible>(attempt)
            }
        });
        // Without the patience the hung try would be waited on for ever:
        // fail instead of hanging the test.
        let connected = tokio::time::timeout(CONNECT_PATIENCE * 3, reconnecting)
            .await
            .expect("the hung try was given up");
        assert_eq!(connected, 1, "the second try connects");
        // The hung try was waited on for its patience, not for ever.
        let waited = started.elapsed();
        assert!(
            waited >= CONNECT_PATIENCE && waited < CONNECT_PATIENCE + Duration::from_secs(1),
            "{waited:?}"
        );
    }
}
