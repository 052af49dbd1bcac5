use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /health`: 200 while the database answers, 503 otherwise, with the
/// number of sockets open on this node, for load balancers and operators.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let connections = state.hub.connections();
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ok", "connections": connections})),
        ),
        Err(err) => {
            tracing::warn!(error = %err, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({"status": "unavailable", "error": "database unreachable", "connections": connections}),
                ),
            )
        }
    }
}
