//! The console's files, built into the binary: htmx and uPlot as vendored
//! from npm (`collector/web/vendor/`, with their licences and how to
//! update them), and the console's own `console.js` and `console.css`.
//! Served under `/assets/NAME`, open to anyone (they hold nothing secret),
//! with the same security headers as every page.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Console;

/// One built-in file: its name under `/assets/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every file the console serves.
const ASSETS: [Asset; 7] = [
    Asset {
        name: "console.js",
        content_type: JS,
        bytes: include_bytes!("../../web/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: CSS,
        bytes: include_bytes!("../../web/console.css"),
    },
    Asset {
        name: "htmx.min.js",
        content_type: JS,
        bytes: include_bytes!("../../web/vendor/htmx/htmx.min.js"),
    },
    Asset {
        name: "htmx-LICENSE.txt",
        content_type: TEXT,
        bytes: include_bytes!("../../web/vendor/htmx/LICENSE"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: JS,
        bytes: include_bytes!("../../web/vendor/uplot/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: CSS,
        bytes: include_bytes!("../../web/vendor/uplot/uPlot.min.css"),
    },
    Asset {
        name: "uPlot-LICENSE.txt",
        content_type: TEXT,
        bytes: include_bytes!("../../web/vendor/uplot/LICENSE"),
    },
];

/// How long a browser may reuse an asset without asking: short, since the
/// names carry no version and a new collector may bring new files.
const CACHE: &str = "public, max-age=300";

/// The `/assets/` route.
pub(crate) fn routes() -> Router<Console> {
    Router::new().route("/assets/{name}", get(asset))
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => {
            let mut response = asset.bytes.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE));
            response
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
