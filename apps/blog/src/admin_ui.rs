//! The Socket.IO Admin UI (`@socket.io/admin-ui`'s page) at `/admin-ui/`, with `--admin-ui`:
//! served from the binary, no CDN; it logs in to the `/admin` namespace that
//! [`wsgate_admin`] serves.

use axum::Router;
use axum::http::header;
use axum::response::{Html, Redirect};
use axum::routing::get;

use crate::AppState;

/// The vendored page's files: path under `/admin-ui/`, content type, bytes.
const FILES: [(&str, &str, &[u8]); 10] = [
    ("favicon.png", "image/png", include_bytes!("../web/vendor/admin-ui/favicon.png")),
    ("css/app.6e3b9661.css", CSS, include_bytes!("../web/vendor/admin-ui/css/app.6e3b9661.css")),
    (
        "css/chunk-vendors.9f55d012.css",
        CSS,
        include_bytes!("../web/vendor/admin-ui/css/chunk-vendors.9f55d012.css"),
    ),
    ("js/app.0d7d7845.js", JS, include_bytes!("../web/vendor/admin-ui/js/app.0d7d7845.js")),
    (
        "js/chunk-vendors.934c03ff.js",
        JS,
        include_bytes!("../web/vendor/admin-ui/js/chunk-vendors.934c03ff.js"),
    ),
    (
        "img/logo-dark.3727fec5.svg",
        SVG,
        include_bytes!("../web/vendor/admin-ui/img/logo-dark.3727fec5.svg"),
    ),
    (
        "img/logo-light.73342c25.svg",
        SVG,
        include_bytes!("../web/vendor/admin-ui/img/logo-light.73342c25.svg"),
    ),
    (
        "mdi/css/materialdesignicons.min.css",
        CSS,
        include_bytes!("../web/vendor/admin-ui/mdi/css/materialdesignicons.min.css"),
    ),
    (
        "mdi/fonts/materialdesignicons-webfont.woff2",
        "font/woff2",
        include_bytes!("../web/vendor/admin-ui/mdi/fonts/materialdesignicons-webfont.woff2"),
    ),
    ("LICENSE", TEXT, include_bytes!("../web/vendor/admin-ui/LICENSE")),
];

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";
const TEXT: &str = "text/plain; charset=utf-8";

/// The page's stylesheets from CDNs, and what replaces them.
const CDN_LINKS: [&str; 2] = [
    r#"<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto:100,300,400,500,700,900">"#,
    r#"<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@mdi/font@latest/css/materialdesignicons.min.css">"#,
];
const LOCAL_LINKS: &str = r#"<link rel="stylesheet" href="mdi/css/materialdesignicons.min.css"><script src="prefill.js"></script>"#;

/// Points the UI's connection form at this server, unless it was pointed elsewhere before.
const PREFILL: &str = r#"// Added by the blog: the UI connects to the server that served it.
if (!localStorage.getItem("server_url")) localStorage.setItem("server_url", location.origin);
"#;

/// `/admin-ui/` and its files.
pub(crate) fn router() -> Router<AppState> {
    let mut router = Router::new()
        .route("/admin-ui", get(|| async { Redirect::permanent("/admin-ui/") }))
        .route("/admin-ui/", get(|| async { Html(page()) }))
        .route("/admin-ui/prefill.js", get(|| async { ([(header::CONTENT_TYPE, JS)], PREFILL) }));
    for (path, content_type, bytes) in FILES {
        let handler = move || async move { ([(header::CONTENT_TYPE, content_type)], bytes) };
        router = router.route(&format!("/admin-ui/{path}"), get(handler));
    }
    router
}

/// The vendored `index.html` without its CDN stylesheets, with the local icons and the
/// prefill script instead.
fn page() -> String {
    let mut html = include_str!("../web/vendor/admin-ui/index.html").to_owned();
    for (i, link) in CDN_LINKS.iter().enumerate() {
        html = html.replace(link, if i == 0 { LOCAL_LINKS } else { "" });
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_fetches_nothing_from_a_cdn() {
        let html = page();
        assert!(!html.contains("https://"), "{html}");
        assert!(html.contains("prefill.js") && html.contains("mdi/css/"));
        // Every file the page links is served.
        for linked in ["css/app.6e3b9661.css", "js/chunk-vendors.934c03ff.js", "favicon.png"] {
            assert!(html.contains(linked));
            assert!(FILES.iter().any(|(path, _, _)| *path == linked));
        }
    }
}
