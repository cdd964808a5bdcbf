//! A file server resource, as `coapws serve ROOT` uses it: GET of files and of directory
//! listings (link-format, directories with a trailing slash), and with writing allowed, PUT
//! and DELETE. Paths cannot leave the root: dot-segments, hidden names and symlinks that point
//! outside are refused.

use super::IncomingRequest;
use coapws_proto::code::Code;
use coapws_proto::content_format::ContentFormat;
use coapws_proto::link_format::{self, Link};
use coapws_proto::message::Message;
use coapws_proto::option::OptionNumber;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::debug;

/// Serves a directory tree.
#[derive(Clone, Debug)]
pub struct FileServer {
    root: Arc<PathBuf>,
    writable: bool,
    max_file_size: u64,
}

fn text(code: Code, t: impl Into<String>) -> Message {
    Message::response(code, t.into()).with_content_format(ContentFormat::TEXT_PLAIN.0)
}

impl FileServer {
    /// Serves `root` read-only. Files larger than 16 MiB are refused.
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<FileServer> {
        let root = std::fs::canonicalize(root.into())?;
        Ok(FileServer {
            root: Arc::new(root),
            writable: false,
            max_file_size: 16 << 20,
        })
    }
    /// Allows PUT and DELETE.
    pub fn writable(mut self, writable: bool) -> FileServer {
        self.writable = writable;
        self
    }
    /// Largest file served or accepted, in bytes.
    pub fn max_file_size(mut self, bytes: u64) -> FileServer {
        self.max_file_size = bytes;
        self
    }

    /// Maps Uri-Path segments to a path under the root; `None` if a segment is unsafe.
    /// The bool says whether the request named a directory (trailing empty segment).
    fn resolve(&self, segments: &[String]) -> Option<(PathBuf, bool)> {
        let mut p = (*self.root).clone();
        let trailing_slash = segments.last().is_some_and(|s| s.is_empty());
        let body = if trailing_slash {
            &segments[..segments.len() - 1]
        } else {
            segments
        };
        for s in body {
            if s.is_empty() || s.starts_with('.') || s.contains(['/', '\\', '\0']) {
                return None;
            }
            p.push(s);
        }
        Some((p, trailing_slash))
    }

    /// True if `p` (which exists) is inside the root after following symlinks.
    fn inside_root(&self, p: &Path) -> bool {
        std::fs::canonicalize(p).is_ok_and(|c| c.starts_with(&*self.root))
    }

    /// Answers one request below the root.
    pub async fn handle(&self, req: IncomingRequest) -> Message {
        let segments = req.path();
        let Some((path, want_dir)) = self.resolve(&segments) else {
            return text(Code::NOT_FOUND, "no such file");
        };
        match req.method() {
            Code::GET => self.get(&path, want_dir, &segments).await,
            Code::PUT if self.writable => self.put(&path, want_dir, &req.message).await,
            Code::DELETE if self.writable => self.delete(&path).await,
            _ => Message::new(Code::METHOD_NOT_ALLOWED),
        }
    }

    async fn get(&self, path: &Path, want_dir: bool, segments: &[String]) -> Message {
        let Ok(meta) = tokio::fs::metadata(path).await else {
            return text(Code::NOT_FOUND, "no such file");
        };
        if !self.inside_root(path) {
            return text(Code::NOT_FOUND, "no such file");
        }
        if meta.is_dir() {
            return self.listing(path, segments).await;
        }
        // Devices, FIFOs and sockets are not files to serve (a FIFO would block the read).
        if !meta.is_file() {
            return text(Code::NOT_FOUND, "no such file");
        }
        if want_dir {
            return text(Code::NOT_FOUND, "not a directory");
        }
        if meta.len() > self.max_file_size {
            return text(Code::INTERNAL_SERVER_ERROR, "file too large to serve");
        }
        match tokio::fs::read(path).await {
            Ok(data) => {
                let mut m = Message::response(Code::CONTENT, data);
                if let Some(cf) = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .and_then(ContentFormat::from_extension)
                {
                    m = m.with_content_format(cf.0);
                }
                m
            }
            Err(e) => {
                debug!(path = %path.display(), error = %e, "read failed");
                text(Code::INTERNAL_SERVER_ERROR, "cannot read file")
            }
        }
    }

    async fn listing(&self, dir: &Path, segments: &[String]) -> Message {
        let Ok(mut rd) = tokio::fs::read_dir(dir).await else {
            return text(Code::INTERNAL_SERVER_ERROR, "cannot list directory");
        };
        let base: Vec<&str> = segments
            .iter()
            .filter(|s| !s.is_empty())
            .map(String::as_str)
            .collect();
        let prefix = if base.is_empty() {
            "/".to_owned()
        } else {
            format!("/{}/", base.join("/"))
        };
        let mut links = Vec::new();
        while let Ok(Some(entry)) = rd.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
            let mut link = Link::new(format!("{prefix}{name}{}", if is_dir { "/" } else { "" }));
            if !is_dir
                && let Some(cf) = Path::new(&name)
                    .extension()
                    .and_then(|e| e.to_str())
                    .and_then(ContentFormat::from_extension)
            {
                link = link.with_param("ct", cf.0.to_string());
            }
            links.push(link);
        }
        links.sort_by(|a, b| a.target.cmp(&b.target));
        Message::response(Code::CONTENT, link_format::serialize(&links))
            .with_content_format(ContentFormat::LINK_FORMAT.0)
    }

    async fn put(&self, path: &Path, want_dir: bool, m: &Message) -> Message {
        if want_dir || path == self.root.as_path() {
            return text(Code::BAD_REQUEST, "cannot PUT a directory");
        }
        if m.payload.len() as u64 > self.max_file_size {
            return text(Code::REQUEST_ENTITY_TOO_LARGE, "file too large");
        }
        let existed = tokio::fs::metadata(path).await.is_ok();
        if existed && m.options.contains(OptionNumber::IF_NONE_MATCH) {
            return Message::new(Code::PRECONDITION_FAILED);
        }
        if !existed && m.options.contains(OptionNumber::IF_MATCH) {
            return Message::new(Code::PRECONDITION_FAILED);
        }
        let Some(parent) = path.parent() else {
            return text(Code::BAD_REQUEST, "bad path");
        };
        if !tokio::fs::metadata(parent).await.is_ok_and(|m| m.is_dir()) || !self.inside_root(parent)
        {
            return text(Code::NOT_FOUND, "no such directory");
        }
        if existed
            && (!self.inside_root(path)
                || tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir()))
        {
            return text(Code::BAD_REQUEST, "not a file");
        }
        // Write to a temporary name and rename, so readers never see half a file.
        static UPLOADS: AtomicU64 = AtomicU64::new(0);
        let tmp = parent.join(format!(
            ".coapws-upload-{}-{}",
            std::process::id(),
            UPLOADS.fetch_add(1, Ordering::Relaxed)
        ));
        let written = async {
            tokio::fs::write(&tmp, &m.payload).await?;
            tokio::fs::rename(&tmp, path).await
        }
        .await;
        match written {
            Ok(()) => Message::new(if existed {
                Code::CHANGED
            } else {
                Code::CREATED
            }),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                debug!(path = %path.display(), error = %e, "write failed");
                text(Code::INTERNAL_SERVER_ERROR, "cannot write file")
            }
        }
    }

    async fn delete(&self, path: &Path) -> Message {
        // The directory the entry is in must be inside the root once symlinks are followed;
        // a symlink as the last part is removed itself, not what it points to.
        if !path.parent().is_some_and(|p| self.inside_root(p)) {
            debug!(path = %path.display(), "DELETE outside the root refused");
            return text(Code::NOT_FOUND, "no such file");
        }
        match tokio::fs::symlink_metadata(path).await {
            Err(_) => text(Code::NOT_FOUND, "no such file"),
            Ok(m) if m.is_dir() => text(Code::METHOD_NOT_ALLOWED, "cannot DELETE a directory"),
            Ok(_) => match tokio::fs::remove_file(path).await {
                Ok(()) => Message::new(Code::DELETED),
                Err(e) => {
                    debug!(path = %path.display(), error = %e, "delete failed");
                    text(Code::INTERNAL_SERVER_ERROR, "cannot delete file")
                }
            },
        }
    }
}
