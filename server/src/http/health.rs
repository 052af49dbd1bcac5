use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /health`: 200 while the database answers, 503 otherwise, for load
/// balancers; with the picture store's state and the number of sockets open
/// on this node, for operators. Pictures failing alone does not make a node
/// unhealthy: chatting still works.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let connections = state.hub.connections();
    let database = state.store.ping().await;
    if let Err(err) = &database {
        tracing::warn!(error = %err, "health check: database unreachable");
    }
    let blobs = state.blobs.ping().await;
    if let Err(err) = &blobs {
        tracing::warn!(error = %err, "health check: picture store unreachable");
    }
    let up = |ok: bool| if ok { "ok" } else { "unreachable" };
    let status = if database.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if database.is_ok() { "ok" } else { "unavailable" },
        "database": up(database.is_ok()),
        "pictures": up(blobs.is_ok()),
        "connections": connections,
    });
    (status, Json(body))
}
