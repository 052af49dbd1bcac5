use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::response::IntoResponse;

use super::extract::PathParam;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /api/pic/{key}`: a profile picture, streamed from the store. Keys are
/// random and never reused, so the answer can be cached for good.
pub async fn get_pic(
    State(state): State<AppState>,
    PathParam(key): PathParam<String>,
) -> Result<impl IntoResponse, ApiError> {
    let blob = state
        .blobs
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found("no picture with that name"))?;
    Ok((
        [
            (CONTENT_TYPE, blob.kind.content_type().to_owned()),
            (CONTENT_LENGTH, blob.len.to_string()),
            (
                CACHE_CONTROL,
                "public, max-age=31536000, immutable".to_owned(),
            ),
            (X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        Body::from_stream(blob.body),
    ))
}
