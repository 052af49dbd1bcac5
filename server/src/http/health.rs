use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /health`, for load balancers: 200 while the database answers, or
/// while messages flow without it (through RabbitMQ: "degraded"), 503
/// otherwise; with the picture store's state and the number of sockets open
/// on this node and, with several nodes, the link to the others' events,
/// for operators. Pictures failing alone does not make a node
/// unhealthy: chatting still works. Answered at once, from the last pings
/// (`crate::health`).
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = state.health.database_up();
    let up = |ok: bool| if ok { "ok" } else { "unreachable" };
    let (status, summary) = match (database, state.pipeline.works_without_database()) {
        (true, _) => (StatusCode::OK, "ok"),
        (false, true) => (StatusCode::OK, "degraded"),
        (false, false) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    let mut body = json!({
        "status": summary,
        "database": up(database),
        "pictures": up(state.health.pictures_up()),
        "connections": state.hub.connections(),
    });
    // Several nodes: whether this one hears the others' events right now.
    if let Some(nodes) = state.events.other_nodes_up() {
        body["nodes"] = json!(up(nodes));
    }
    (status, Json(body))
}
