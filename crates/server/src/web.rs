//! The browser IDE: three files built from `web/` (see web/README.md) and
//! embedded in the binary, so a build needs no npm.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &[u8] = include_bytes!("../../../web/dist/index.html");
const SCRIPT: &[u8] = include_bytes!("../../../web/dist/app.js");
const STYLE: &[u8] = include_bytes!("../../../web/dist/app.css");

pub async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], INDEX)
}

pub async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], SCRIPT)
}

pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], STYLE)
}
