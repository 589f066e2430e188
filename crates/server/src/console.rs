//! The web console: one page of plain HTML, CSS and a JavaScript module,
//! embedded in the binary, at `GET /console`. The page reads and changes
//! streams through the same API clients use (`POST /` with an
//! `X-Amz-Target`, `GET /metrics`, the consumer-groups extension), so it can
//! do nothing a client cannot and needs no API of its own.
//!
//! Deep links (`/console/anything`) serve the same page, which routes on the
//! URL's fragment. Assets carry an ETag and a strict Content-Security-Policy
//! that allows only this origin.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The header the page sends on every API call. With authentication on,
/// requests that carry it may use [`READ_OPERATIONS`] unsigned (see
/// `ServeOptions::console_unsigned_reads`).
pub const CONSOLE_HEADER: &str = "x-shardlog-console";

/// What the console may do unsigned when authentication is on: look, never
/// change. Policies are left out: they describe who may do what.
pub const READ_OPERATIONS: &[&str] = &[
    "ListStreams",
    "DescribeStream",
    "DescribeStreamSummary",
    "ListShards",
    "ListStreamConsumers",
    "DescribeStreamConsumer",
    "GetShardIterator",
    "GetRecords",
    "DescribeLimits",
    "ListTagsForStream",
    "ListTagsForResource",
    "ListGroups",
    "DescribeGroup",
];

/// Everything the page loads comes from this origin; nothing inline, no
/// frames, no plugins. Inline SVG built through the DOM needs no exception.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The files under `crates/server/console/`, compiled in so the console works
/// from the single binary with no files beside it.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/style.css"),
    ),
];

/// The console's routes, to merge into the server's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(page))
        .route("/console/", get(page))
        .route("/console/assets/{name}", get(asset))
        .route("/console/{*rest}", get(page))
}

async fn page(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

/// A strong ETag per asset: a hash of its bytes, computed once. Browsers
/// revalidate on each load (`no-cache`) and get a 304 while the binary is
/// unchanged, so an upgraded server never runs with a stale script.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, bytes)| {
                // FNV-1a, 64 bits: enough to tell two builds' files apart.
                let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                format!("\"{h:016x}\"")
            })
            .collect()
    })
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such console asset").into_response();
    };
    let (_, content_type, bytes) = ASSETS[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves only the console's routes on a free port.
    async fn spawn() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, routes::<()>()).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn serves_the_page_on_deep_links_and_assets_with_their_types() {
        let base = spawn().await;
        let client = reqwest::Client::new();
        for path in ["/console", "/console/", "/console/stream/x/records"] {
            let r = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
            assert!(r.text().await.unwrap().starts_with("<!doctype html>"), "{path}");
        }
        for (name, ty) in [
            ("app.js", "text/javascript; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
        ] {
            let url = format!("{base}/console/assets/{name}");
            let r = client.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], ty);
            assert_eq!(r.headers()["cache-control"], "no-cache");
            let csp = r.headers()["content-security-policy"].to_str().unwrap();
            assert!(
                csp.contains("script-src 'self'") && !csp.contains("unsafe"),
                "{csp}"
            );
            let etag = r.headers()["etag"].to_str().unwrap().to_string();
            let again = client
                .get(&url)
                .header("if-none-match", &etag)
                .send()
                .await
                .unwrap();
            assert_eq!(again.status(), 304);
        }
        let missing = client
            .get(format!("{base}/console/assets/secret.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
    }
}
