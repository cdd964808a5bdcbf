//! Static content for the HTTP side of a WebSocket listener: files embedded in the binary or
//! read from a directory, answered to GET and HEAD with their content type, an ETag and
//! Last-Modified (304 when the browser has them), and `Cache-Control: no-cache` so that a
//! browser revalidates (cheaply) after an upgrade of the server.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tracing::debug;

/// A website to serve: files embedded in the binary, or a directory read on each request.
#[derive(Clone, Debug)]
pub struct WebContent {
    source: Arc<Source>,
}

#[derive(Debug)]
enum Source {
    Embedded {
        files: HashMap<String, File>,
        /// Served as Last-Modified: when the content was handed to us.
        since: SystemTime,
    },
    Dir(PathBuf),
}

#[derive(Debug, Clone)]
struct File {
    body: Bytes,
    etag: String,
}

/// One file found for a request.
struct Found {
    body: Bytes,
    etag: String,
    modified: SystemTime,
    content_type: &'static str,
}

impl WebContent {
    /// Files embedded in the binary, by path below the site's root (`index.html`,
    /// `js/app.js`, …); `/` and paths ending in `/` serve their `index.html`.
    pub fn embedded(files: &[(&str, &'static [u8])]) -> WebContent {
        let files = files
            .iter()
            .map(|(p, b)| {
                let body = Bytes::from_static(b);
                let etag = etag_of(&body);
                (p.trim_start_matches('/').to_owned(), File { body, etag })
            })
            .collect();
        WebContent {
            source: Arc::new(Source::Embedded {
                files,
                since: SystemTime::now(),
            }),
        }
    }

    /// The files below `dir`, read when asked for (symlinks leading out of it, hidden names
    /// and anything but regular files are not served).
    pub fn dir(dir: impl AsRef<Path>) -> std::io::Result<WebContent> {
        let root = std::fs::canonicalize(dir)?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(WebContent {
            source: Arc::new(Source::Dir(root)),
        })
    }

    /// The answer to an HTTP request for `req`'s path.
    pub(crate) async fn serve<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let Some(rel) = relative_path(req.uri().path()) else {
            return text(StatusCode::NOT_FOUND, "Not Found");
        };
        let found = match &*self.source {
            Source::Embedded { files, since } => files.get(&rel).map(|f| Found {
                body: f.body.clone(),
                etag: f.etag.clone(),
                modified: *since,
                content_type: content_type(&rel),
            }),
            Source::Dir(root) => {
                let root = root.clone();
                let rel2 = rel.clone();
                tokio::task::spawn_blocking(move || read_below(&root, &rel2))
                    .await
                    .ok()
                    .flatten()
            }
        };
        let Some(f) = found else {
            debug!(path = %req.uri().path(), "no such web file");
            return text(StatusCode::NOT_FOUND, "Not Found");
        };
        let last_modified = httpdate::fmt_http_date(f.modified);
        let fresh = match req.headers().get(header::IF_NONE_MATCH) {
            Some(inm) => inm.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == f.etag)
            }),
            None => req
                .headers()
                .get(header::IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok())
                .is_some_and(|since| {
                    // HTTP dates have whole seconds.
                    let secs = |t: SystemTime| {
                        t.duration_since(SystemTime::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0)
                    };
                    secs(f.modified) <= secs(since)
                }),
        };
        let (status, body) = if fresh {
            (StatusCode::NOT_MODIFIED, Bytes::new())
        } else if method == Method::HEAD {
            (StatusCode::OK, Bytes::new())
        } else {
            (StatusCode::OK, f.body.clone())
        };
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&f.etag) {
            h.insert(header::ETAG, v);
        }
        if let Ok(v) = HeaderValue::from_str(&last_modified) {
            h.insert(header::LAST_MODIFIED, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(f.content_type),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if status == StatusCode::OK && method == Method::HEAD {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(f.body.len()));
        }
        r
    }
}

fn text(status: StatusCode, t: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{t}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn etag_of(body: &[u8]) -> String {
    let mut h = std::hash::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

/// The request path as a relative file path: `/` and `…/` name their `index.html`; `None`
/// for anything that could leave the root or name a hidden file (`..`, `.x`, `\`, NUL,
/// percent-escapes of those).
fn relative_path(path: &str) -> Option<String> {
    let mut segments = Vec::new();
    for s in path.split('/').skip(1) {
        if s.is_empty() {
            continue;
        }
        if s.starts_with('.') || s.contains(['\\', '\0', '%']) {
            return None;
        }
        segments.push(s);
    }
    if path.ends_with('/') || segments.is_empty() {
        segments.push("index.html");
    }
    Some(segments.join("/"))
}

fn read_below(root: &Path, rel: &str) -> Option<Found> {
    let path = std::fs::canonicalize(root.join(rel)).ok()?;
    if !path.starts_with(root) {
        return None;
    }
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let body = Bytes::from(std::fs::read(&path).ok()?);
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    Some(Found {
        etag: etag_of(&body),
        body,
        modified,
        content_type: content_type(rel),
    })
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::relative_path;

    #[test]
    fn paths_stay_inside() {
        assert_eq!(relative_path("/").as_deref(), Some("index.html"));
        assert_eq!(relative_path("/js/").as_deref(), Some("js/index.html"));
        assert_eq!(relative_path("/coap.js").as_deref(), Some("coap.js"));
        assert_eq!(relative_path("/a//b.css").as_deref(), Some("a/b.css"));
        for bad in [
            "/../etc/passwd",
            "/.git/config",
            "/a\\b",
            "/%2e%2e/x",
            "/x\0",
        ] {
            assert_eq!(relative_path(bad), None, "{bad}");
        }
    }
}
