//! A file server resource, as `coapws serve ROOT` uses it: GET of files and of directory
//! listings (link-format, directories with a trailing slash), and with writing allowed, PUT
//! and DELETE. Paths cannot leave the root: dot-segments, hidden names and symlinks that point
//! outside are refused. A large file is served block by block straight from disk (each
//! Block2 request reads only its piece), with an ETag from the file's identity and mtime; a
//! block-wise PUT (mounted with [`crate::Site::subtree_taking_blocks`]) is written block by
//! block to a temporary file that is renamed over the target when the last block is in.

use super::IncomingRequest;
use bytes::Bytes;
use coapws_proto::blockwise::{BlockError, BlockSequence};
use coapws_proto::code::Code;
use coapws_proto::content_format::ContentFormat;
use coapws_proto::link_format::{self, Link};
use coapws_proto::message::Message;
use coapws_proto::option::BlockValue;
use coapws_proto::option::OptionNumber;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::debug;

/// Serves a directory tree.
#[derive(Clone, Debug)]
pub struct FileServer {
    root: Arc<PathBuf>,
    writable: bool,
    max_file_size: u64,
    uploads: Arc<Mutex<Uploads>>,
}

/// Block-wise PUTs being written to disk.
#[derive(Debug, Default)]
struct Uploads {
    by_id: HashMap<UploadId, DiskUpload>,
}

/// An upload: the client's link, the target, and its Request-Tag (RFC 9175).
type UploadId = ((u64, Option<SocketAddr>), PathBuf, Option<Bytes>);

#[derive(Debug)]
struct DiskUpload {
    tmp: PathBuf,
    sequence: BlockSequence,
    existed: bool,
    last: Instant,
}

/// Block-wise PUTs in progress at once; more get 5.03.
const MAX_DISK_UPLOADS: usize = 64;
/// An upload with no block for this long is abandoned (its temporary file removed).
const UPLOAD_IDLE: Duration = Duration::from_secs(60);

fn text(code: Code, t: impl Into<String>) -> Message {
    Message::response(code, t.into()).with_content_format(ContentFormat::TEXT_PLAIN.0)
}

impl FileServer {
    /// Serves `root` read-only. Files of any size are served (block by block when large);
    /// uploads above 16 MiB are refused (see [`FileServer::max_file_size`]).
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<FileServer> {
        let root = std::fs::canonicalize(root.into())?;
        Ok(FileServer {
            root: Arc::new(root),
            writable: false,
            max_file_size: 16 << 20,
            uploads: Arc::new(Mutex::new(Uploads::default())),
        })
    }
    /// Allows PUT and DELETE.
    pub fn writable(mut self, writable: bool) -> FileServer {
        self.writable = writable;
        self
    }
    /// Largest file a PUT may upload, in bytes (4.13 beyond it).
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
            Code::GET => self.get(&req, &path, want_dir, &segments).await,
            Code::PUT if self.writable => match req.message.options.block1() {
                Some(block1) => self.put_block(&req, &path, want_dir, block1).await,
                None => self.put(&path, want_dir, &req.message).await,
            },
            Code::DELETE if self.writable => self.delete(&path).await,
            _ => Message::new(Code::METHOD_NOT_ALLOWED),
        }
    }

    async fn get(
        &self,
        req: &IncomingRequest,
        path: &Path,
        want_dir: bool,
        segments: &[String],
    ) -> Message {
        // Everything that touches the file system happens in one blocking call: metadata,
        // the root check (symlinks followed) and the read of the one piece asked for.
        let (me, file, req2) = (self.clone(), path.to_owned(), req.clone());
        let found = tokio::task::spawn_blocking(move || me.read_file(&req2, &file, want_dir)).await;
        match found {
            Ok(Found::Piece(m)) => m,
            Ok(Found::Dir) => self.listing(path, segments).await,
            Ok(Found::Refused(m)) => m,
            Err(e) => {
                debug!(path = %path.display(), error = %e, "read task failed");
                text(Code::INTERNAL_SERVER_ERROR, "cannot read file")
            }
        }
    }

    /// The response to a GET of `path` (blocking): the file or the Block2 piece of it asked
    /// for, with an ETag from its identity.
    fn read_file(&self, req: &IncomingRequest, path: &Path, want_dir: bool) -> Found {
        let Ok(meta) = std::fs::metadata(path) else {
            return Found::Refused(text(Code::NOT_FOUND, "no such file"));
        };
        if !self.inside_root(path) {
            return Found::Refused(text(Code::NOT_FOUND, "no such file"));
        }
        if meta.is_dir() {
            return Found::Dir;
        }
        // Devices, FIFOs and sockets are not files to serve (a FIFO would block the read).
        if !meta.is_file() {
            return Found::Refused(text(Code::NOT_FOUND, "no such file"));
        }
        if want_dir {
            return Found::Refused(text(Code::NOT_FOUND, "not a directory"));
        }
        let mut head =
            Message::new(Code::CONTENT).with_option(OptionNumber::ETAG, file_etag(&meta));
        if let Some(cf) = path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(ContentFormat::from_extension)
        {
            head = head.with_content_format(cf.0);
        }
        let total = meta.len();
        let window = match usize::try_from(total)
            .map_err(|_| ())
            .and_then(|t| req.block2_window(t, &head).map_err(|_| ()))
        {
            Ok(w) => w,
            Err(()) => {
                return Found::Refused(text(Code::BAD_OPTION, "Block2 past the end of the file"));
            }
        };
        let (offset, len) = match window {
            Some(w) => (w.offset as u64, w.len),
            None => (0, total as usize),
        };
        match read_range(path, offset, len) {
            Ok(data) => {
                let mut m = head.with_payload(data);
                if let Some(w) = window {
                    m.options.set(OptionNumber::BLOCK2, w.block.encode());
                    if w.block.num == 0 {
                        m.options.set_uint(
                            OptionNumber::SIZE2,
                            u32::try_from(total).unwrap_or(u32::MAX),
                        );
                    }
                }
                Found::Piece(m)
            }
            Err(e) => {
                debug!(path = %path.display(), error = %e, "read failed");
                Found::Refused(text(Code::INTERNAL_SERVER_ERROR, "cannot read file"))
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

    /// Where a PUT may write: `Ok(existed)`, or the answer refusing it.
    /// Where a PUT may write: `Ok(existed)`, or the answer refusing it. Every file system look
    /// happens in one blocking call, off the async runtime.
    async fn put_target(&self, path: &Path, want_dir: bool, m: &Message) -> Result<bool, Message> {
        if want_dir || path == self.root.as_path() {
            return Err(text(Code::BAD_REQUEST, "cannot PUT a directory"));
        }
        let if_match: Vec<bytes::Bytes> =
            m.options.get_all(OptionNumber::IF_MATCH).cloned().collect();
        let if_none_match = m.options.contains(OptionNumber::IF_NONE_MATCH);
        let (me, path) = (self.clone(), path.to_owned());
        let checked = tokio::task::spawn_blocking(move || {
            me.check_put_target(&path, &if_match, if_none_match)
        })
        .await;
        checked
            .unwrap_or_else(|_| Err(text(Code::INTERNAL_SERVER_ERROR, "cannot check the target")))
    }

    fn check_put_target(
        &self,
        path: &Path,
        if_match: &[bytes::Bytes],
        if_none_match: bool,
    ) -> Result<bool, Message> {
        let current = std::fs::metadata(path).ok();
        let existed = current.is_some();
        if existed && if_none_match {
            return Err(Message::new(Code::PRECONDITION_FAILED));
        }
        // RFC 7252 §5.10.8.1: an empty If-Match asks that the file exist, a value that its
        // ETag (as GET gives it) be that value.
        if !if_match.is_empty() {
            let etag = current.as_ref().map(file_etag);
            let matched = if_match
                .iter()
                .any(|want| want.is_empty() && existed || etag.as_deref() == Some(want.as_ref()));
            if !matched {
                return Err(Message::new(Code::PRECONDITION_FAILED));
            }
        }
        let Some(parent) = path.parent() else {
            return Err(text(Code::BAD_REQUEST, "bad path"));
        };
        if !std::fs::metadata(parent).is_ok_and(|m| m.is_dir()) || !self.inside_root(parent) {
            return Err(text(Code::NOT_FOUND, "no such directory"));
        }
        if existed && (!self.inside_root(path) || current.is_some_and(|m| m.is_dir())) {
            return Err(text(Code::BAD_REQUEST, "not a file"));
        }
        Ok(existed)
    }

    async fn put(&self, path: &Path, want_dir: bool, m: &Message) -> Message {
        if m.payload.len() as u64 > self.max_file_size {
            return too_large(self.max_file_size);
        }
        let existed = match self.put_target(path, want_dir, m).await {
            Ok(e) => e,
            Err(answer) => return answer,
        };
        // Write to a temporary name and rename, so readers never see half a file.
        let tmp = temporary_name(path);
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

    /// One block of a block-wise PUT (RFC 7959 §2.5), written straight to a temporary file
    /// beside the target, renamed over it when the last block is in: the upload is never
    /// held in memory, and readers never see half a file.
    async fn put_block(
        &self,
        req: &IncomingRequest,
        path: &Path,
        want_dir: bool,
        block1: BlockValue,
    ) -> Message {
        let m = &req.message;
        let id: UploadId = (
            req.remote.link_id(),
            path.to_owned(),
            m.options.get(OptionNumber::REQUEST_TAG).cloned(),
        );
        if block1.num == 0 {
            let announced = m.options.get_uint(OptionNumber::SIZE1);
            if announced.is_some_and(|n| u64::from(n) > self.max_file_size) {
                return too_large(self.max_file_size);
            }
            let existed = match self.put_target(path, want_dir, m).await {
                Ok(e) => e,
                Err(answer) => return answer,
            };
            if let Err(answer) = self.start_upload(&id, path, existed).await {
                return answer;
            }
        }
        // Where this block goes, decided under the lock; written without it.
        let step = {
            let mut u = lock(&self.uploads);
            match u.by_id.get_mut(&id) {
                None => Err(text(
                    Code::REQUEST_ENTITY_INCOMPLETE,
                    "no upload in progress for this block",
                )),
                Some(up) => {
                    up.last = Instant::now();
                    match up.sequence.admit(block1, m.payload.len()) {
                        Ok(offset) => Ok((up.tmp.clone(), offset, up.existed)),
                        Err(e) => {
                            let tmp = up.tmp.clone();
                            u.by_id.remove(&id);
                            Err(self.refused(&tmp, e))
                        }
                    }
                }
            }
        };
        let (tmp, offset, existed) = match step {
            Ok(s) => s,
            Err(answer) => return answer,
        };
        let (file, data) = (tmp.clone(), m.payload.clone());
        let written =
            tokio::task::spawn_blocking(move || write_at(&file, offset as u64, &data)).await;
        if !matches!(written, Ok(Ok(()))) {
            debug!(path = %path.display(), "writing an upload block failed");
            lock(&self.uploads).by_id.remove(&id);
            let _ = tokio::fs::remove_file(&tmp).await;
            return text(Code::INTERNAL_SERVER_ERROR, "cannot write file");
        }
        let echo = |more| {
            BlockValue {
                num: block1.num,
                more,
                szx: block1.szx,
            }
            .encode()
        };
        if block1.more {
            return Message::new(Code::CONTINUE).with_option(OptionNumber::BLOCK1, echo(true));
        }
        lock(&self.uploads).by_id.remove(&id);
        match tokio::fs::rename(&tmp, path).await {
            Ok(()) => Message::new(if existed {
                Code::CHANGED
            } else {
                Code::CREATED
            })
            .with_option(OptionNumber::BLOCK1, echo(false)),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                debug!(path = %path.display(), error = %e, "rename failed");
                text(Code::INTERNAL_SERVER_ERROR, "cannot write file")
            }
        }
    }

    /// Registers the upload `id` with an empty temporary file beside `path`.
    async fn start_upload(&self, id: &UploadId, path: &Path, existed: bool) -> Result<(), Message> {
        let tmp = temporary_name(path);
        let abandoned: Vec<PathBuf> = {
            let mut u = lock(&self.uploads);
            let now = Instant::now();
            let stale: Vec<UploadId> = u
                .by_id
                .iter()
                .filter(|(_, up)| now.duration_since(up.last) >= UPLOAD_IDLE)
                .map(|(k, _)| k.clone())
                .collect();
            let abandoned = stale
                .iter()
                .filter_map(|k| u.by_id.remove(k).map(|up| up.tmp))
                .collect();
            // Another untagged upload of this client to this file: its blocks and these could
            // not be told apart, so the newcomer is refused (RFC 9175 §3.4).
            if u.by_id.contains_key(id) {
                return Err(text(
                    Code::REQUEST_ENTITY_INCOMPLETE,
                    "another upload to this file is in progress; tag concurrent uploads with Request-Tag (RFC 9175)",
                ));
            }
            if u.by_id.len() >= MAX_DISK_UPLOADS {
                return Err(
                    text(Code::SERVICE_UNAVAILABLE, "too many uploads in progress")
                        .with_uint_option(OptionNumber::MAX_AGE, 5),
                );
            }
            u.by_id.insert(
                id.clone(),
                DiskUpload {
                    tmp: tmp.clone(),
                    sequence: BlockSequence::new(
                        usize::try_from(self.max_file_size).unwrap_or(usize::MAX),
                    ),
                    existed,
                    last: now,
                },
            );
            abandoned
        };
        for old in abandoned {
            let _ = tokio::fs::remove_file(&old).await;
        }
        if let Err(e) = tokio::fs::File::create(&tmp).await {
            lock(&self.uploads).by_id.remove(id);
            debug!(path = %tmp.display(), error = %e, "cannot create upload file");
            return Err(text(Code::INTERNAL_SERVER_ERROR, "cannot write file"));
        }
        Ok(())
    }

    /// The answer to a block that cannot be taken; the upload is over.
    fn refused(&self, tmp: &Path, e: BlockError) -> Message {
        let _ = std::fs::remove_file(tmp);
        match e {
            BlockError::TooLarge { .. } => too_large(self.max_file_size),
            BlockError::OutOfOrder { .. } => {
                text(Code::REQUEST_ENTITY_INCOMPLETE, "block out of order")
            }
            other => text(Code::BAD_REQUEST, other.to_string()),
        }
    }

    async fn delete(&self, path: &Path) -> Message {
        // The directory the entry is in must be inside the root once symlinks are followed;
        // a symlink as the last part is removed itself, not what it points to.
        let (me, p) = (self.clone(), path.to_owned());
        let inside = tokio::task::spawn_blocking(move || {
            p.parent().is_some_and(|parent| me.inside_root(parent))
        })
        .await
        .unwrap_or(false);
        if !inside {
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

fn lock(m: &Mutex<Uploads>) -> std::sync::MutexGuard<'_, Uploads> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// 4.13 with the largest file taken in Size1.
fn too_large(limit: u64) -> Message {
    text(Code::REQUEST_ENTITY_TOO_LARGE, "file too large").with_uint_option(
        OptionNumber::SIZE1,
        u32::try_from(limit).unwrap_or(u32::MAX),
    )
}

/// A hidden name beside `path` for writing it before the rename.
fn temporary_name(path: &Path) -> PathBuf {
    static UPLOADS: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    dir.join(format!(
        ".coapws-upload-{}-{}",
        std::process::id(),
        UPLOADS.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `data` at `offset` of the existing file `path`.
fn write_at(path: &Path, offset: u64, data: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(data)
}

/// What a GET found on disk.
enum Found {
    /// The file, or the piece of it asked for.
    Piece(Message),
    /// A directory: answered with a listing.
    Dir,
    /// The answer is an error.
    Refused(Message),
}

/// Reads `len` bytes at `offset` of `path` (fewer at the end of the file).
pub(crate) fn read_range(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len);
    f.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// An ETag from what identifies a file's content without reading it: device, inode, size and
/// modification time (a rename over it or a write changes it).
fn file_etag(meta: &std::fs::Metadata) -> Vec<u8> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut h = std::hash::DefaultHasher::new();
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
        .hash(&mut h);
    h.finish().to_be_bytes().to_vec()
}
