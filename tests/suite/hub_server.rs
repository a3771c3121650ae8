//! A stand-in for the Hugging Face hub, in process, on std::net: the revision listing
//! (`/api/models/{repo}/revision/{rev}`) and the file API (`/{repo}/resolve/{rev}/{file}`, HEAD
//! and GET) with `ETag`, `X-Repo-Commit`, `Range`, LFS-style redirects for safetensors files, and
//! the hub's error codes. Failures on demand: gated and private repositories, a connection dropped
//! mid-file, a server that never answers. Every request is logged for the tests to inspect.
//!
//! Self-contained (std, sha2, serde_json), so `examples/serve_hub.rs` serves a folder with it.

#![allow(dead_code)] // the example uses part of it

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Who may read a repository.
#[derive(Clone, Debug)]
pub enum Access {
    Public,
    /// Listed for everyone; files need `Bearer <token>` (401 without a token, 403 with another).
    Gated {
        token: String,
    },
    /// Invisible (404 RepoNotFound) without `Bearer <token>`.
    Private {
        token: String,
    },
}

/// One file as served: where its bytes are, their size and SHA-256.
#[derive(Clone, Debug)]
struct Served {
    path: PathBuf,
    size: u64,
    sha256: String,
}

/// One commit of a repository.
#[derive(Clone, Debug)]
struct Commit {
    sha: String,
    files: BTreeMap<String, Served>,
}

/// A repository the server holds.
#[derive(Clone, Debug)]
pub struct HubRepo {
    id: String,
    access: Access,
    commits: Vec<Commit>,
    branches: BTreeMap<String, String>,
}

impl HubRepo {
    pub fn new(id: &str) -> Self {
        HubRepo {
            id: id.into(),
            access: Access::Public,
            commits: Vec::new(),
            branches: BTreeMap::new(),
        }
    }

    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Commit `sha` holds every file of `dir` (hashed now); `branch` points at it when given.
    pub fn commit(mut self, sha: &str, branch: Option<&str>, dir: &Path) -> Self {
        let mut files = BTreeMap::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let mut hasher = Sha256::new();
            let mut f = std::fs::File::open(&path).unwrap();
            let size = std::io::copy(&mut f, &mut hasher).unwrap();
            let sha256 = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            files.insert(name, Served { path, size, sha256 });
        }
        self.commits.push(Commit {
            sha: sha.into(),
            files,
        });
        if let Some(b) = branch {
            self.branches.insert(b.into(), sha.into());
        }
        self
    }

    /// The commit a branch name or commit hash names.
    fn resolve(&self, rev: &str) -> Option<&Commit> {
        let sha = self.branches.get(rev).map(String::as_str).unwrap_or(rev);
        self.commits.iter().find(|c| c.sha == sha)
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

/// Failures the server can be told to produce.
#[derive(Default)]
struct Faults {
    /// (file name, byte offset, how many more times): a GET of the file's bytes stops at the
    /// offset and the connection is closed.
    drop_at: Option<(String, u64, usize)>,
    /// Read requests and never answer.
    stall: bool,
}

#[derive(Default)]
struct State {
    repos: Vec<HubRepo>,
    faults: Faults,
    log: Vec<Logged>,
}

/// The running server; stops when dropped.
pub struct HubServer {
    /// `http://127.0.0.1:<port>`, for `HF_ENDPOINT`.
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl HubServer {
    pub fn start() -> HubServer {
        Self::start_on("127.0.0.1:0")
    }

    /// Listen on `addr` (`127.0.0.1:0` for any free port).
    pub fn start_on(addr: &str) -> HubServer {
        let listener = TcpListener::bind(addr).expect("bind a local port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        // The "CDN" is this server under another host name, as the hub's CDN is another host.
        let cdn = url.replace("127.0.0.1", "localhost");
        let (st, stop2) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, stop3, cdn) = (st.clone(), stop2.clone(), cdn.clone());
                std::thread::spawn(move || serve_connection(conn, &st, &stop3, &cdn));
            }
        });
        HubServer { url, state, stop }
    }

    pub fn add(&self, repo: HubRepo) {
        self.state.lock().unwrap().repos.push(repo);
    }

    /// The next `times` GETs of `file`'s bytes stop at byte `offset` (the connection closes).
    pub fn drop_at(&self, file: &str, offset: u64, times: usize) {
        self.state.lock().unwrap().faults.drop_at = Some((file.into(), offset, times));
    }

    /// From now on, read requests and never answer.
    pub fn stall(&self) {
        self.state.lock().unwrap().faults.stall = true;
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// The files fetched with GET (their resolve or LFS paths' last component).
    pub fn fetched(&self) -> Vec<String> {
        self.log()
            .iter()
            .filter(|l| l.method == "GET" && !l.path.starts_with("/api/"))
            .map(|l| l.path.rsplit('/').next().unwrap_or("").to_string())
            .collect()
    }

    /// The SHA-256 of `file` in `repo` at `rev`, as served.
    pub fn sha256(&self, repo: &str, rev: &str, file: &str) -> String {
        let st = self.state.lock().unwrap();
        let r = st.repos.iter().find(|r| r.id == repo).unwrap();
        r.resolve(rev).unwrap().files[file].sha256.clone()
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// A response: status, headers, and the body (bytes, or a range of a file).
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    File {
        path: PathBuf,
        start: u64,
        len: u64,
        /// Close the connection after this many bytes.
        cut: Option<u64>,
    },
}

impl Reply {
    fn bytes(status: u16, body: &[u8]) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Bytes(body.to_vec()),
        }
    }

    /// An error answer with the hub's `X-Error-Code`.
    fn error(status: u16, code: &str) -> Reply {
        Reply::bytes(status, code.as_bytes()).header("X-Error-Code", code)
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

fn serve_connection(conn: TcpStream, state: &Mutex<State>, stop: &AtomicBool, cdn: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut writer = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = match (parts.next(), parts.next()) {
            (Some(m), Some(t)) => (m.to_string(), t.to_string()),
            _ => return,
        };
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let logged = Logged {
            method: method.clone(),
            path: target.clone(),
            range: headers.get("range").cloned(),
            authorization: headers.get("authorization").cloned(),
        };
        let reply = {
            let mut st = state.lock().unwrap();
            st.log.push(logged.clone());
            if st.faults.stall {
                None
            } else {
                Some(route(&mut st, &logged, cdn))
            }
        };
        let Some(reply) = reply else {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        };
        if write_reply(&mut writer, &method, reply).is_err() {
            return;
        }
    }
}

fn write_reply(w: &mut TcpStream, method: &str, reply: Reply) -> std::io::Result<()> {
    let reason = match reply.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Error",
    };
    let len = match &reply.body {
        Body::Bytes(b) => b.len() as u64,
        Body::File { len, .. } => *len,
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Length: {len}\r\n",
        reply.status
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if method == "HEAD" {
        return w.flush();
    }
    match reply.body {
        Body::Bytes(b) => w.write_all(&b)?,
        Body::File {
            path,
            start,
            len,
            cut,
        } => {
            let mut f = std::fs::File::open(path)?;
            f.seek(SeekFrom::Start(start))?;
            let send = cut.map_or(len, |c| c.min(len));
            std::io::copy(&mut f.take(send), w)?;
            if send < len {
                w.flush()?;
                let _ = w.shutdown(std::net::Shutdown::Both);
                return Err(std::io::Error::other("dropped on purpose"));
            }
        }
    }
    w.flush()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route(st: &mut State, req: &Logged, cdn: &str) -> Reply {
    let path = req.path.split('?').next().unwrap_or("");
    if let Some(sha) = path.strip_prefix("/lfs/") {
        return lfs(st, req, sha);
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let token = req
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "));
    // /api/models/{org}/{name}/revision/{rev}
    if segs.len() == 6 && segs[0] == "api" && segs[1] == "models" && segs[4] == "revision" {
        let id = format!("{}/{}", segs[2], segs[3]);
        let rev = percent_decode(segs[5]);
        let Some(repo) = visible(st, &id, token) else {
            return Reply::error(404, "RepoNotFound");
        };
        let Some(commit) = repo.resolve(&rev) else {
            return Reply::error(404, "RevisionNotFound");
        };
        let siblings: Vec<_> = commit
            .files
            .keys()
            .map(|f| serde_json::json!({ "rfilename": f }))
            .collect();
        let body = serde_json::json!({ "id": id, "sha": commit.sha, "siblings": siblings });
        return Reply::bytes(200, body.to_string().as_bytes())
            .header("Content-Type", "application/json");
    }
    // /{org}/{name}/resolve/{rev}/{file}
    if segs.len() == 5 && segs[2] == "resolve" {
        let id = format!("{}/{}", segs[0], segs[1]);
        let (rev, file) = (percent_decode(segs[3]), percent_decode(segs[4]));
        let Some(repo) = visible(st, &id, token) else {
            return Reply::error(404, "RepoNotFound");
        };
        if let Access::Gated { token: t } = &repo.access {
            match token {
                None => return Reply::error(401, "GatedRepo"),
                Some(given) if given != t => return Reply::error(403, "GatedRepo"),
                Some(_) => {}
            }
        }
        let Some(commit) = repo.resolve(&rev) else {
            return Reply::error(404, "RevisionNotFound");
        };
        let Some(served) = commit.files.get(&file) else {
            return Reply::error(404, "EntryNotFound");
        };
        let sha = commit.sha.clone();
        if file.ends_with(".safetensors") {
            // LFS: the hub answers with a redirect to its CDN and the file's hash as ETag.
            return Reply::bytes(302, b"")
                .header("Location", format!("{cdn}/lfs/{}", served.sha256))
                .header("X-Repo-Commit", sha)
                .header("X-Linked-Etag", format!("\"{}\"", served.sha256))
                .header("X-Linked-Size", served.size.to_string())
                .header("ETag", "\"redirect\"");
        }
        let served = served.clone();
        return file_reply(st, req, &file, &served)
            .header("X-Repo-Commit", sha)
            .header("ETag", format!("\"{}\"", &served.sha256[..40]));
    }
    Reply::error(404, "NotFound")
}

/// The repository `id`, unless it does not exist or is private to another token.
fn visible<'a>(st: &'a State, id: &str, token: Option<&str>) -> Option<&'a HubRepo> {
    let repo = st.repos.iter().find(|r| r.id == id)?;
    match &repo.access {
        Access::Private { token: t } if token != Some(t.as_str()) => None,
        _ => Some(repo),
    }
}

/// The CDN side: bytes by SHA-256, no token needed.
fn lfs(st: &mut State, req: &Logged, sha: &str) -> Reply {
    let found = st.repos.iter().find_map(|r| {
        r.commits.iter().find_map(|c| {
            c.files
                .iter()
                .find(|(_, s)| s.sha256 == sha)
                .map(|(name, s)| (name.clone(), s.clone()))
        })
    });
    match found {
        Some((name, served)) => file_reply(st, req, &name, &served),
        None => Reply::error(404, "EntryNotFound"),
    }
}

/// A file's bytes, all of them or the asked range, cut short when a fault says so.
fn file_reply(st: &mut State, req: &Logged, name: &str, served: &Served) -> Reply {
    let start = req
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse::<u64>().ok());
    if start.is_some_and(|s| s >= served.size) && served.size > 0 {
        return Reply::error(416, "RangeNotSatisfiable")
            .header("Content-Range", format!("bytes */{}", served.size));
    }
    let first = start.unwrap_or(0);
    let len = served.size - first;
    let mut cut = None;
    if req.method == "GET" {
        if let Some((file, offset, times)) = &mut st.faults.drop_at {
            if file == name && *times > 0 && *offset < served.size {
                *times -= 1;
                cut = Some(offset.saturating_sub(first));
            }
        }
    }
    let reply = Reply {
        status: if start.is_some() { 206 } else { 200 },
        headers: vec![("Accept-Ranges".into(), "bytes".into())],
        body: Body::File {
            path: served.path.clone(),
            start: first,
            len,
            cut,
        },
    };
    if start.is_some() {
        reply.header(
            "Content-Range",
            format!("bytes {first}-{}/{}", served.size - 1, served.size),
        )
    } else {
        reply
    }
}
