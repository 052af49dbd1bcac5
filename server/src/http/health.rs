use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

/// How long the health check waits for the database and the picture store,
/// each: a load balancer's check must get an answer, even when one of them
/// does not (the S3 client alone would retry for minutes).
const PING_PATIENCE: Duration = Duration::from_secs(2);

/// `GET /health`, for load balancers: 200 while the database answers, or
/// while messages flow without it (through RabbitMQ: "degraded"), 503
/// otherwise; with the picture store's state and the number of sockets open
/// on this node and, with several nodes, the link to the others' events,
/// for operators. Pictures failing alone does not make a node
/// unhealthy: chatting still works.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let connections = state.hub.connections();
    let (database, blobs) = tokio::join!(
        within_patience(state.store.ping()),
        within_patience(state.blobs.ping())
    );
    if let Err(err) = &database {
        tracing::warn!(error = %err, "health check: database unreachable");
    }
    if let Err(err) = &blobs {
        tracing::warn!(error = %err, "health check: picture store unreachable");
    }
    let up = |ok: bool| if ok { "ok" } else { "unreachable" };
    let (status, summary) = match (database.is_ok(), state.pipeline.works_without_database()) {
        (true, _) => (StatusCode::OK, "ok"),
        (false, true) => (StatusCode::OK, "degraded"),
        (false, false) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    let mut body = json!({
        "status": summary,
        "database": up(database.is_ok()),
        "pictures": up(blobs.is_ok()),
        "connections": connections,
    });
    // Several nodes: whether this one hears the others' events right now.
    if let Some(nodes) = state.events.other_nodes_up() {
        body["nodes"] = json!(up(nodes));
    }
    (status, Json(body))
}

/// `ping`'s answer, or "no answer in time" after `PING_PATIENCE`.
async fn within_patience<E: std::fmt::Display>(
    ping: impl Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(PING_PATIENCE, ping).await {
        Ok(result) => result.map_err(|err| err.to_string()),
        Err(_) => Err("no answer in time".to_owned()),
    }
}
