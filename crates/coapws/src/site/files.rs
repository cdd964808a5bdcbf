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

#[cfg(test)]
mod tests {
    //! Confinement and limits of the file server, on a real directory tree: what `resolve`
    //! refuses, and what GET, PUT and DELETE do with symlinks that lead outside the root.
    use super::*;

    /// A fresh directory with `root/` and `outside/` in it, removed on drop.
    struct Tree {
        base: PathBuf,
        files: FileServer,
    }

    impl Tree {
        fn new(tag: &str) -> Tree {
            static N: AtomicU64 = AtomicU64::new(0);
            let base = std::env::temp_dir().join(format!(
                "coapws-files-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&base);
            std::fs::create_dir_all(base.join("root")).unwrap();
            std::fs::create_dir_all(base.join("outside")).unwrap();
            let files = FileServer::new(base.join("root")).unwrap().writable(true);
            Tree { base, files }
        }
        fn root(&self) -> PathBuf {
            self.files.root.as_ref().clone()
        }
        fn outside(&self) -> PathBuf {
            std::fs::canonicalize(self.base.join("outside")).unwrap()
        }
        /// The path `segments` resolve to; panics if refused.
        fn path(&self, segments: &[&str]) -> (PathBuf, bool) {
            self.files
                .resolve(&segs(segments))
                .unwrap_or_else(|| panic!("{segments:?} refused"))
        }
        async fn get(&self, segments: &[&str]) -> Message {
            let (p, dir) = self.path(segments);
            self.files.get(&p, dir, &segs(segments)).await
        }
        async fn put(&self, segments: &[&str], body: &[u8]) -> Message {
            let (p, dir) = self.path(segments);
            let m = Message::request(Code::PUT, "/").with_payload(body.to_vec());
            self.files.put(&p, dir, &m).await
        }
        async fn delete(&self, segments: &[&str]) -> Message {
            self.files.delete(&self.path(segments).0).await
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    fn segs(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn resolve_refuses_segments_that_could_leave_the_root() {
        let t = Tree::new("resolve");
        for bad in [
            &[".."][..],
            &["a", ".."],
            &["..", "etc", "passwd"],
            &["."],
            &[".hidden"],
            &["a", ".git", "config"],
            &["a/b"],
            &["/etc"],
            &["a\\b"],
            &["..\\x"],
            &["a\0b"],
            &["a", "", "b"],
            &["", ""],
        ] {
            assert_eq!(t.files.resolve(&segs(bad)), None, "{bad:?} must be refused");
        }
        let root = t.root();
        assert_eq!(t.files.resolve(&[]), Some((root.clone(), false)));
        assert_eq!(
            t.files.resolve(&segs(&[""])),
            Some((root.clone(), true)),
            "`/` with its trailing slash is the root directory"
        );
        assert_eq!(
            t.files.resolve(&segs(&["a", "b.txt"])),
            Some((root.join("a").join("b.txt"), false))
        );
        assert_eq!(
            t.files.resolve(&segs(&["sub", ""])),
            Some((root.join("sub"), true)),
            "a trailing empty segment names a directory"
        );
        assert_eq!(
            t.files.resolve(&segs(&["a..b", "x.y.z"])),
            Some((root.join("a..b").join("x.y.z"), false)),
            "dots inside a name are fine"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn symlinks_out_of_the_root_are_not_followed() {
        let t = Tree::new("symlinks");
        let (root, outside) = (t.root(), t.outside());
        std::fs::write(outside.join("secret.txt"), "outside").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("file.txt")).unwrap();
        std::fs::create_dir(root.join("in")).unwrap();
        std::fs::write(root.join("in").join("ok.txt"), "inside").unwrap();
        std::os::unix::fs::symlink(root.join("in"), root.join("alias")).unwrap();

        // GET: through a symlinked directory, of a symlinked file, of the directory itself.
        for p in [
            &["dir", "secret.txt"][..],
            &["file.txt"],
            &["dir", ""],
            &["dir"],
        ] {
            let r = t.get(p).await;
            assert_eq!(r.code, Code::NOT_FOUND, "GET {p:?}");
            assert!(!r.payload.starts_with(b"outside"), "GET {p:?} leaked");
        }
        // A symlink that stays inside is served.
        let r = t.get(&["alias", "ok.txt"]).await;
        assert_eq!((r.code, &r.payload[..]), (Code::CONTENT, &b"inside"[..]));

        // PUT through a symlinked directory: refused, nothing written outside.
        let r = t.put(&["dir", "new.txt"], b"planted").await;
        assert_eq!(r.code, Code::NOT_FOUND, "PUT through a symlinked directory");
        assert!(
            !outside.join("new.txt").exists(),
            "PUT wrote outside the root"
        );
        // PUT over a symlink to a file outside: refused, the target unchanged.
        let r = t.put(&["file.txt"], b"overwritten").await;
        assert_eq!(
            r.code,
            Code::BAD_REQUEST,
            "PUT over a symlink that leads out"
        );
        assert_eq!(
            std::fs::read(outside.join("secret.txt")).unwrap(),
            b"outside"
        );
        // No temporary upload file was left anywhere.
        for d in [&root, &outside] {
            let leftovers: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".coapws-upload")
                })
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?} in {}", d.display());
        }
        // PUT through a symlink that stays inside works.
        let r = t.put(&["alias", "up.txt"], b"fine").await;
        assert_eq!(r.code, Code::CREATED);
        assert_eq!(
            std::fs::read(root.join("in").join("up.txt")).unwrap(),
            b"fine"
        );

        // DELETE through a symlinked directory: refused, the file stays. DELETE of the
        // symlink itself removes the link, not what it points to.
        let r = t.delete(&["dir", "secret.txt"]).await;
        assert_eq!(r.code, Code::NOT_FOUND);
        assert!(outside.join("secret.txt").exists());
        let r = t.delete(&["file.txt"]).await;
        assert_eq!(r.code, Code::DELETED);
        assert!(!root.join("file.txt").exists());
        assert_eq!(
            std::fs::read(outside.join("secret.txt")).unwrap(),
            b"outside",
            "the link's target is untouched"
        );
    }

    #[tokio::test]
    async fn the_size_limit_holds_both_ways() {
        let mut t = Tree::new("size");
        t.files = t.files.clone().max_file_size(10);
        let root = t.root();
        // PUT at the limit is stored; one byte over gets 4.13 and changes nothing.
        let r = t.put(&["ten.txt"], b"0123456789").await;
        assert_eq!(r.code, Code::CREATED);
        let r = t.put(&["ten.txt"], b"0123456789A").await;
        assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
        assert_eq!(std::fs::read(root.join("ten.txt")).unwrap(), b"0123456789");
        let r = t.put(&["eleven.txt"], b"0123456789A").await;
        assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
        assert!(!root.join("eleven.txt").exists());
        // GET of a file over the limit (put there by other means) is refused, at the limit served.
        std::fs::write(root.join("big.txt"), b"0123456789A").unwrap();
        let r = t.get(&["big.txt"]).await;
        assert_eq!(r.code, Code::INTERNAL_SERVER_ERROR);
        assert_eq!(r.payload_text(), "file too large to serve");
        let r = t.get(&["ten.txt"]).await;
        assert_eq!(
            (r.code, &r.payload[..]),
            (Code::CONTENT, &b"0123456789"[..])
        );
    }

    #[tokio::test]
    async fn directories_and_trailing_slashes() {
        let t = Tree::new("dirs");
        let root = t.root();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub").join("a.json"), "{}").unwrap();
        std::fs::write(root.join(".hidden"), "x").unwrap();
        let r = t.get(&[]).await;
        assert_eq!(r.code, Code::CONTENT);
        assert_eq!(r.payload_text(), "</sub/>", "hidden names are not listed");
        let r = t.get(&["sub", "a.json", ""]).await;
        assert_eq!(r.code, Code::NOT_FOUND, "a file asked for as a directory");
        let r = t.put(&["sub", ""], b"x").await;
        assert_eq!(r.code, Code::BAD_REQUEST, "PUT of a directory");
        let r = t.put(&["sub"], b"x").await;
        assert_eq!(r.code, Code::BAD_REQUEST, "PUT over a directory");
        assert!(root.join("sub").is_dir());
        let r = t.put(&["nodir", "x.txt"], b"x").await;
        assert_eq!(r.code, Code::NOT_FOUND, "PUT into a missing directory");
        let r = t.delete(&["sub"]).await;
        assert_eq!(r.code, Code::METHOD_NOT_ALLOWED);
        assert!(root.join("sub").join("a.json").exists());
    }
}
