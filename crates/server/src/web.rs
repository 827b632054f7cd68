//! The browser IDE: every file of `web/dist/` (built from `web/`, committed;
//! see web/README.md), embedded in the binary so a build needs no npm.
//! `build.rs` lists the files; [`router`] serves each at `/<name>` and
//! `index.html` at `/` too.
//!
//! Caching: a chunk whose name carries its content hash (`<name>-<HASH>.js`,
//! esbuild's naming) never changes, so it is cached for a year as
//! `immutable`; everything else (`index.html`, `app.js`, `app.css`) is
//! `no-cache` with a strong ETag, so a browser revalidates it on every load
//! and gets a 304 while it is unchanged.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
pub(crate) struct Asset {
    pub name: &'static str,
    pub bytes: &'static [u8],
    /// A quoted strong ETag of the content.
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/web_dist.rs"));

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

/// The IDE's routes: `/` and `/<name>` for every file of `web/dist/`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    DIST.iter().fold(Router::new(), |router, asset| {
        let router = if asset.name == "index.html" {
            router.route("/", get(move |h: HeaderMap| serve(asset, h)))
        } else {
            router
        };
        router.route(&format!("/{}", asset.name), get(move |h: HeaderMap| serve(asset, h)))
    })
}

async fn serve(asset: &'static Asset, request: HeaderMap) -> Response {
    let cache = if is_hashed(asset.name) { IMMUTABLE } else { REVALIDATE };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type(asset.name))),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        (header::ETAG, HeaderValue::from_static(asset.etag)),
    ];
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == asset.etag || tag.trim() == "*");
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, asset.bytes).into_response()
}

/// The content type of a `web/dist/` file, by its extension.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `python-L4UCKTOL.js`: a name that ends in `-` and esbuild's 8-character
/// content hash (upper-case letters and digits) before the extension.
fn is_hashed(name: &str) -> bool {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    stem.rsplit_once('-').is_some_and(|(base, hash)| {
        !base.is_empty() && hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>().oneshot(req.body(Body::empty()).expect("request")).await.expect("infallible")
    }

    fn header_of(resp: &Response, name: header::HeaderName) -> &str {
        resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    async fn body_of(resp: Response) -> Vec<u8> {
        axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body").to_vec()
    }

    fn asset(name: &str) -> &'static Asset {
        DIST.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("web/dist/{name} is embedded"))
    }

    #[test]
    fn dist_holds_the_page_the_script_the_styles_and_hashed_chunks_only() {
        for name in ["index.html", "app.js", "app.css"] {
            asset(name);
        }
        for a in DIST {
            assert!(matches!(a.name, "index.html" | "app.js" | "app.css") || is_hashed(a.name), "{}", a.name);
        }
        assert!(DIST.iter().any(|a| is_hashed(a.name)), "the editor modes are chunks of their own");
    }

    #[tokio::test]
    async fn index_is_served_at_the_root_and_revalidated() {
        let resp = get("/", None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header_of(&resp, header::CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header_of(&resp, header::CACHE_CONTROL), "no-cache");
        assert_eq!(header_of(&resp, header::ETAG), asset("index.html").etag);
        assert_eq!(body_of(resp).await, asset("index.html").bytes);
    }

    #[tokio::test]
    async fn every_file_is_served_with_its_type_and_cache_policy() {
        for a in DIST {
            let resp = get(&format!("/{}", a.name), None).await;
            assert_eq!(resp.status(), StatusCode::OK, "{}", a.name);
            let expected_type = match a.name.rsplit_once('.').map(|(_, e)| e) {
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                _ => "text/html; charset=utf-8",
            };
            assert_eq!(header_of(&resp, header::CONTENT_TYPE), expected_type, "{}", a.name);
            let expected_cache = if is_hashed(a.name) { IMMUTABLE } else { REVALIDATE };
            assert_eq!(header_of(&resp, header::CACHE_CONTROL), expected_cache, "{}", a.name);
            assert_eq!(body_of(resp).await, a.bytes, "{}", a.name);
        }
    }

    #[tokio::test]
    async fn a_matching_etag_gets_304_without_a_body() {
        let tag = asset("app.js").etag;
        let resp = get("/app.js", Some(tag)).await;
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header_of(&resp, header::ETAG), tag);
        assert!(body_of(resp).await.is_empty());
        let resp = get("/app.js", Some("\"0000000000000000\"")).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_files_are_not_served() {
        for path in ["/nope.js", "/dist/app.js", "/../Cargo.toml", "/app.js.map"] {
            assert_eq!(get(path, None).await.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn hashed_names_are_recognised() {
        assert!(is_hashed("python-L4UCKTOL.js"));
        assert!(is_hashed("chunk-ONWNN2TO.js"));
        assert!(!is_hashed("app.js"));
        assert!(!is_hashed("index.html"));
        assert!(!is_hashed("my-module.js"));
        assert!(!is_hashed("-L4UCKTOL.js"));
        assert!(!is_hashed("python-l4ucktol.js"));
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("a.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a-ABCDEFGH.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("app.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("font.woff2"), "application/octet-stream");
    }
}
