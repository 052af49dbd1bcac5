//! What the two RabbitMQ links (the message pipeline's and the events'
//! fan-out) share: getting a connection back after the broker went away.

use std::future::Future;
use std::time::Duration;

/// The longest wait between two tries.
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// Calls `connect` until it succeeds: after `first_pause`, then waiting
/// twice as long each time, up to 5 s. `link` names the link in the logs.
pub async fn reconnect<T, E, F, Fut>(link: &str, first_pause: Duration, mut connect: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = first_pause;
    loop {
        tokio::time::sleep(pause).await;
        match connect().await {
            Ok(connected) => {
                tracing::info!(link, "reconnected to RabbitMQ");
                return connected;
            }
            Err(err) => {
                tracing::debug!(link, error = %err, "RabbitMQ still unreachable");
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
        }
    }
}
