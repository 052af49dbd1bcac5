//! `natter-pic://localhost/api/pic/<key>`: profile pictures for the UI,
//! served by the engine (from its disk cache, else the server), so the web
//! view never talks to the server itself and avatars show offline.

use natter_core::Engine;
use tauri::http::{Request, Response, StatusCode, header};
use tauri::{Manager, Runtime, UriSchemeContext, UriSchemeResponder};

pub fn serve<R: Runtime>(
    ctx: UriSchemeContext<'_, R>,
    request: Request<Vec<u8>>,
    responder: UriSchemeResponder,
) {
    let engine = ctx.app_handle().state::<Engine>().inner().clone();
    let path = request.uri().path().to_owned();
    tauri::async_runtime::spawn(async move {
        let response = match engine.picture(&path).await {
            Ok((bytes, kind)) => Response::builder()
                .header(header::CONTENT_TYPE, kind)
                .header(header::CACHE_CONTROL, "max-age=31536000, immutable")
                .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
                .body(bytes),
            Err(err) => Response::builder()
                .status(StatusCode::NOT_FOUND)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(err.to_string().into_bytes()),
        };
        match response {
            Ok(response) => responder.respond(response),
            Err(err) => tracing::warn!(error = %err, "building a picture response"),
        }
    });
}
