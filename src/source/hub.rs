//! Downloading a checkpoint from the Hugging Face hub, or from any server that speaks its file
//! API (`HF_ENDPOINT`), into the cache: only the files a conversion reads, resumable, checked,
//! and with failures put in words a person can act on.
//!
//! 1. `GET {endpoint}/api/models/{repo}/revision/{revision}`: the commit and the file list.
//! 2. For each needed file, `HEAD {endpoint}/{repo}/resolve/{commit}/{file}`, following relative
//!    redirects only (as huggingface_hub does): `X-Repo-Commit`, the ETag (`X-Linked-Etag` for
//!    LFS files) and the size (`X-Linked-Size`, else `Content-Length`); an absolute `Location`
//!    is where the bytes are.
//! 3. `GET` the bytes into `blobs/<etag>.incomplete`, with `Range: bytes=<n>-` when an earlier
//!    attempt or run left `n` bytes there; a dropped connection is retried from where it stopped
//!    while retries make progress.
//! 4. Check the size, and the SHA-256 when the ETag is one (LFS files); only then rename the
//!    part to `blobs/<etag>` and link `snapshots/<commit>/<file>`. `refs/<revision>` is written
//!    once every file is in place.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ureq::http::Response;

use super::cache::{self, is_commit_hash};
use super::{
    local_folder, read_index, shard_names, HubEnv, ModelFiles, Result, SourceError, TokenUse,
    CHAT_TEMPLATE_FILES, DEFAULT_TIMEOUT, SINGLE_WEIGHTS, TOKENIZER_FILES, WEIGHTS_INDEX,
};

/// The hub's address when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Attempts in a row that bring no new byte of a file before the download gives up.
pub(super) const ATTEMPTS: u32 = 3;
/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// One file fetched from the hub (listed in `anec convert --json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Downloaded {
    /// The file name in the repository.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// Bytes an earlier, interrupted run had left in the cache, not fetched again.
    pub resumed_from: u64,
    /// Wall time of this file's download, checks included.
    pub seconds: f64,
}

/// What a download reports as it goes (`anec convert` draws it; the default does nothing).
pub trait DownloadProgress {
    /// `file` starts, or starts again after a dropped connection: `size` bytes in all, `done`
    /// of them already in the cache.
    fn start(&self, _file: &str, _size: u64, _done: u64) {}
    /// `bytes` more bytes of the current file arrived.
    fn advance(&self, _bytes: u64) {}
    /// The current file is complete and checked.
    fn finish(&self, _file: &str) {}
}

impl DownloadProgress for () {}

/// The revision listing's fields anec reads.
#[derive(Deserialize)]
struct Listing {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

/// What a HEAD on a file's resolve URL tells.
struct FileMeta {
    etag: String,
    size: u64,
    /// Where the bytes are (the resolve URL itself, or the CDN it redirects to).
    location: String,
}

/// Why one GET of a file's bytes stopped short.
enum Stop {
    /// The connection failed or closed early: worth another attempt.
    Dropped(String),
    /// Anything else ends the download.
    Fatal(SourceError),
}

/// One repository at one revision on one hub, with the cache it downloads into.
struct Hub<'a> {
    endpoint: String,
    repo_id: &'a str,
    revision: &'a str,
    cache: &'a Path,
    repo_dir: PathBuf,
    token: Option<String>,
    token_use: TokenUse,
    timeout: Duration,
    agent: ureq::Agent,
}

/// Fetch config.json, the weights (index and shards, or model.safetensors), the tokenizer
/// files and the chat template of `repo_id` at `revision` into `cache`, reusing what is there.
pub(super) fn download(
    cache: &Path,
    repo_id: &str,
    revision: &str,
    env: &HubEnv,
    progress: &dyn DownloadProgress,
) -> Result<ModelFiles> {
    let hub = Hub::new(cache, repo_id, revision, env);
    let listing = hub.listing()?;
    if !is_commit_hash(&listing.sha) {
        return Err(SourceError::BadCommit {
            repo_id: repo_id.to_string(),
            sha: listing.sha,
        });
    }
    let commit = listing.sha.to_ascii_lowercase();
    let listed = |f: &str| listing.siblings.iter().any(|s| s.rfilename == f);
    let sharded = listed(WEIGHTS_INDEX);
    if !sharded && !listed(SINGLE_WEIGHTS) {
        return Err(SourceError::NoHubWeights {
            repo_id: repo_id.to_string(),
            revision: revision.to_string(),
        });
    }
    let mut downloaded = Vec::new();
    let mut fetch = |file: &str| -> Result<PathBuf> {
        if let Some(d) = hub.fetch(&commit, file, progress)? {
            downloaded.push(d);
        }
        Ok(hub.repo_dir.join("snapshots").join(&commit).join(file))
    };
    fetch("config.json")?;
    if sharded {
        let index = fetch(WEIGHTS_INDEX)?;
        for shard in shard_names(&read_index(&index)?) {
            fetch(&shard)?;
        }
    } else {
        fetch(SINGLE_WEIGHTS)?;
    }
    for f in TOKENIZER_FILES.iter().chain(&CHAT_TEMPLATE_FILES) {
        if listed(f) {
            fetch(f)?;
        }
    }
    if !is_commit_hash(revision) {
        cache::write_ref(&hub.repo_dir, revision, &commit)?;
    }
    Ok(ModelFiles {
        repo_id: Some(repo_id.to_string()),
        revision: Some(commit.clone()),
        downloaded,
        ..local_folder(&hub.repo_dir.join("snapshots").join(&commit))?
    })
}

impl<'a> Hub<'a> {
    fn new(cache: &'a Path, repo_id: &'a str, revision: &'a str, env: &HubEnv) -> Self {
        let (token, token_use) = match (&env.token, &env.token_file) {
            (Some(t), _) => (
                Some(t.clone()),
                TokenUse::Sent {
                    from: "HF_TOKEN".into(),
                },
            ),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(t) if !t.trim().is_empty() => (
                    Some(t.trim().to_string()),
                    TokenUse::Sent {
                        from: path.display().to_string(),
                    },
                ),
                _ => (
                    None,
                    TokenUse::None {
                        looked: Some(path.clone()),
                    },
                ),
            },
            (None, None) => (None, TokenUse::None { looked: None }),
        };
        let timeout = env.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(timeout))
            .user_agent(concat!("anec/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Hub {
            endpoint: env
                .endpoint
                .as_deref()
                .unwrap_or(DEFAULT_ENDPOINT)
                .trim_end_matches('/')
                .to_string(),
            repo_id,
            revision,
            cache,
            repo_dir: cache::repo_cache_dir(cache, repo_id),
            token,
            token_use,
            timeout,
            agent,
        }
    }

    /// The commit `revision` names and the repository's file list.
    fn listing(&self) -> Result<Listing> {
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.endpoint,
            self.repo_id,
            quote(self.revision, false)
        );
        let mut resp = self
            .request("GET", &url, None, true)
            .map_err(|e| self.unreachable(&e))?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error(&resp, &url));
        }
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| SourceError::HubAnswer {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        serde_json::from_str(&text).map_err(|e| SourceError::HubAnswer {
            url,
            reason: format!("not a revision listing: {e}"),
        })
    }

    /// Put `file` of `commit` into the cache snapshot: `None` when its blob was already there,
    /// else what was downloaded.
    fn fetch(
        &self,
        commit: &str,
        file: &str,
        progress: &dyn DownloadProgress,
    ) -> Result<Option<Downloaded>> {
        let snapshot_file = self.repo_dir.join("snapshots").join(commit).join(file);
        if snapshot_file.is_file() {
            return Ok(None);
        }
        let t0 = Instant::now();
        let url = format!(
            "{}/{}/resolve/{commit}/{}",
            self.endpoint,
            self.repo_id,
            quote(file, true)
        );
        let meta = self.head(&url, commit)?;
        let blob = cache::blob_path(&self.repo_dir, &meta.etag);
        if std::fs::metadata(&blob).is_ok_and(|m| m.len() == meta.size) {
            cache::link_snapshot(&self.repo_dir, commit, file, &meta.etag)?;
            return Ok(None);
        }
        cache::create_dir(&self.repo_dir.join("blobs"))?;
        let part = cache::part_path(&self.repo_dir, &meta.etag);
        // Created up front, so an empty file needs no GET and the check has a file to read.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(|source| SourceError::CacheWrite {
                path: part.clone(),
                source,
            })?;
        let resumed_from = part_len(&part)?.min(meta.size);
        let is_sha256 = meta.etag.len() == 64 && meta.etag.bytes().all(|b| b.is_ascii_hexdigit());
        let mut hash = is_sha256.then(PartHash::default);
        let mut failures = 0;
        loop {
            let have = part_len(&part)?;
            if have >= meta.size {
                break; // complete (or too long, which the check refuses)
            }
            progress.start(file, meta.size, have);
            let stop = match self.get_into(file, &meta, &part, have, &mut hash, progress) {
                Ok(()) => break,
                Err(Stop::Fatal(e)) => return Err(e),
                Err(Stop::Dropped(reason)) => reason,
            };
            let now = part_len(&part)?;
            failures = if now > have { 1 } else { failures + 1 };
            if failures >= ATTEMPTS {
                return Err(SourceError::Interrupted {
                    repo_id: self.repo_id.to_string(),
                    file: file.to_string(),
                    got: now,
                    size: meta.size,
                    reason: stop,
                    part,
                });
            }
            std::thread::sleep(Duration::from_millis(250 * u64::from(failures)));
        }
        self.check(file, &meta, &part, hash)?;
        std::fs::rename(&part, &blob).map_err(|source| SourceError::CacheWrite {
            path: blob.clone(),
            source,
        })?;
        cache::link_snapshot(&self.repo_dir, commit, file, &meta.etag)?;
        progress.finish(file);
        Ok(Some(Downloaded {
            file: file.to_string(),
            bytes: meta.size,
            resumed_from,
            seconds: t0.elapsed().as_secs_f64(),
        }))
    }

    /// The ETag, size and location of a file from its resolve URL's headers.
    fn head(&self, url: &str, commit: &str) -> Result<FileMeta> {
        let resp = self
            .request("HEAD", url, None, false)
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        if !(status == 200 || resp.status().is_redirection()) {
            return Err(self.status_error(&resp, url));
        }
        let answer = |reason: String| SourceError::HubAnswer {
            url: url.to_string(),
            reason,
        };
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        match header("x-repo-commit") {
            Some(c) if c.eq_ignore_ascii_case(commit) => {}
            Some(c) => {
                return Err(answer(format!(
                    "X-Repo-Commit is {c}, not the listed commit {commit}"
                )))
            }
            None => return Err(answer("no X-Repo-Commit header".into())),
        }
        let etag = header("x-linked-etag")
            .or_else(|| header("etag"))
            .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
            .ok_or_else(|| answer("no ETag header".into()))?;
        // The ETag names a file in blobs/.
        if etag.is_empty()
            || etag.len() > 128
            || !etag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(answer(format!(
                "the ETag \"{etag}\" is not a plain hash (letters, digits, - and _)"
            )));
        }
        let size = header("x-linked-size")
            .or_else(|| header("content-length"))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| answer("no file size (X-Linked-Size or Content-Length)".into()))?;
        let location = match header("location") {
            Some(l) if resp.status().is_redirection() => l.to_string(),
            _ => url.to_string(),
        };
        Ok(FileMeta {
            etag,
            size,
            location,
        })
    }

    /// GET the bytes of `file` from offset `have` (0: all), append them to `part` and to its
    /// running `hash`.
    fn get_into(
        &self,
        file: &str,
        meta: &FileMeta,
        part: &Path,
        have: u64,
        hash: &mut Option<PartHash>,
        progress: &dyn DownloadProgress,
    ) -> std::result::Result<(), Stop> {
        let mut resp = self
            .request("GET", &meta.location, Some(have).filter(|&h| h > 0), true)
            .map_err(|e| Stop::Dropped(self.transport_reason(&e)))?;
        let start = match resp.status().as_u16() {
            200 => 0,
            206 => {
                let range = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                // `bytes <first>-<last>/<size>`
                let first = range
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|n| n.parse::<u64>().ok());
                if first != Some(have) {
                    return Err(Stop::Fatal(SourceError::HubAnswer {
                        url: meta.location.clone(),
                        reason: format!(
                            "asked for bytes from {have}, got Content-Range \"{range}\""
                        ),
                    }));
                }
                have
            }
            _ => return Err(Stop::Fatal(self.status_error(&resp, &meta.location))),
        };
        let write_err = |source| {
            Stop::Fatal(SourceError::CacheWrite {
                path: part.to_path_buf(),
                source,
            })
        };
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(start > 0)
            .write(true)
            .truncate(start == 0)
            .open(part)
            .map_err(write_err)?;
        if start == 0 && have > 0 {
            // The server sent the whole file again: count from zero.
            progress.start(file, meta.size, 0);
        }
        if let Some(h) = hash {
            if start == 0 {
                *h = PartHash::default();
            } else {
                h.catch_up(part, start).map_err(|source| {
                    Stop::Fatal(SourceError::Io {
                        path: part.to_path_buf(),
                        source,
                    })
                })?;
            }
        }
        let mut reader = resp.body_mut().as_reader();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = start;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Stop::Dropped(e.to_string())),
            };
            if at + n as u64 > meta.size {
                drop(out);
                let _ = std::fs::remove_file(part);
                return Err(Stop::Fatal(SourceError::Corrupt {
                    repo_id: self.repo_id.to_string(),
                    file: file.to_string(),
                    got: format!("more than {} bytes", meta.size),
                    want: format!("{} bytes", meta.size),
                }));
            }
            out.write_all(&buf[..n]).map_err(write_err)?;
            if let Some(h) = hash {
                h.update(&buf[..n]);
            }
            at += n as u64;
            progress.advance(n as u64);
        }
        out.flush().map_err(write_err)?;
        if at < meta.size {
            return Err(Stop::Dropped("the connection closed early".into()));
        }
        Ok(())
    }

    /// The complete part matches the size and, when the ETag is a SHA-256 (LFS files), its
    /// hash; a part that does not is removed, so the next run starts it again.
    fn check(
        &self,
        file: &str,
        meta: &FileMeta,
        part: &Path,
        hash: Option<PartHash>,
    ) -> Result<()> {
        let corrupt = |got: String, want: String| {
            let _ = std::fs::remove_file(part);
            SourceError::Corrupt {
                repo_id: self.repo_id.to_string(),
                file: file.to_string(),
                got,
                want,
            }
        };
        let len = part_len(part)?;
        if len != meta.size {
            return Err(corrupt(
                format!("{len} bytes"),
                format!("{} bytes", meta.size),
            ));
        }
        if let Some(mut hash) = hash {
            hash.catch_up(part, len).map_err(|source| SourceError::Io {
                path: part.to_path_buf(),
                source,
            })?;
            let got: String = hash
                .hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if !got.eq_ignore_ascii_case(&meta.etag) {
                return Err(corrupt(
                    format!("SHA-256 {got}"),
                    format!("SHA-256 {}", meta.etag),
                ));
            }
        }
        Ok(())
    }

    /// One request, following redirects: relative ones always, absolute ones when `follow_all`.
    /// The token goes only to the hub itself (a CDN's URLs carry their own signature).
    fn request(
        &self,
        method: &str,
        url: &str,
        from: Option<u64>,
        follow_all: bool,
    ) -> std::result::Result<Response<ureq::Body>, ureq::Error> {
        let mut url = url.to_string();
        let mut redirects = 0;
        loop {
            let mut req = ureq::http::Request::builder()
                .method(method)
                .uri(url.as_str());
            if let Some(from) = from {
                req = req.header("Range", format!("bytes={from}-"));
            }
            if let Some(token) = self
                .token
                .as_ref()
                .filter(|_| origin(&url) == origin(&self.endpoint))
            {
                req = req.header("Authorization", format!("Bearer {token}"));
            }
            let resp = self.agent.run(req.body(())?)?;
            let next = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .filter(|_| resp.status().is_redirection() && redirects < MAX_REDIRECTS)
                .and_then(|l| {
                    if l.starts_with('/') {
                        Some(format!("{}{l}", origin(&url)))
                    } else {
                        follow_all.then(|| l.to_string())
                    }
                });
            match next {
                Some(next) => {
                    url = next;
                    redirects += 1;
                }
                None => return Ok(resp),
            }
        }
    }

    /// An HTTP status other than success, in the user's terms.
    fn status_error(&self, resp: &Response<ureq::Body>, url: &str) -> SourceError {
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        match status {
            401 | 403 => SourceError::Denied {
                repo_id: self.repo_id.to_string(),
                revision: self.revision.to_string(),
                status,
                token: self.token_use.clone(),
                page: format!("{}/{}", self.endpoint, self.repo_id),
            },
            404 if header("x-error-code").as_deref() != Some("EntryNotFound")
                && url.contains("/api/models/") =>
            {
                SourceError::NotOnHub {
                    repo_id: self.repo_id.to_string(),
                    revision: self.revision.to_string(),
                    endpoint: self.endpoint.clone(),
                    code: header("x-error-code"),
                    token_sent: self.token.is_some(),
                }
            }
            _ => SourceError::HubStatus {
                url: url.to_string(),
                status,
                message: header("x-error-message").unwrap_or_default(),
            },
        }
    }

    /// A request that got no answer, with what the cache could be used for instead.
    fn unreachable(&self, e: &ureq::Error) -> SourceError {
        SourceError::Unreachable {
            endpoint: self.endpoint.clone(),
            repo_id: self.repo_id.to_string(),
            revision: self.revision.to_string(),
            reason: self.transport_reason(e),
            cached: cache::complete_snapshots(self.cache, self.repo_id).into(),
        }
    }

    fn transport_reason(&self, e: &ureq::Error) -> String {
        match e {
            ureq::Error::Timeout(_) => format!(
                "no answer within {} s (HF_HUB_DOWNLOAD_TIMEOUT)",
                self.timeout.as_secs_f64()
            ),
            ureq::Error::HostNotFound => "the host name does not resolve".into(),
            ureq::Error::ConnectionFailed => "the connection failed".into(),
            other => other.to_string(),
        }
    }
}

/// The SHA-256 of a part file's first `len` bytes, kept up to date as bytes arrive, so the
/// check after the last byte costs nothing.
#[derive(Default)]
struct PartHash {
    hasher: Sha256,
    len: u64,
}

impl PartHash {
    fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Hash the part's bytes from `len` to `upto` (what an earlier run or attempt wrote).
    fn catch_up(&mut self, part: &Path, upto: u64) -> std::io::Result<()> {
        if upto > self.len {
            let mut f = std::fs::File::open(part)?;
            f.seek(std::io::SeekFrom::Start(self.len))?;
            std::io::copy(&mut f.take(upto - self.len), &mut self.hasher)?;
            self.len = upto;
        }
        Ok(())
    }
}

/// The length of a part file, 0 when there is none.
fn part_len(part: &Path) -> Result<u64> {
    match std::fs::metadata(part) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(SourceError::Io {
            path: part.to_path_buf(),
            source,
        }),
    }
}

/// `scheme://host[:port]` of an absolute URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// Percent-encode everything but unreserved characters (and `/` when `keep_slash`), as
/// huggingface_hub quotes revisions (`/` too) and file paths.
fn quote(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_unreserved_characters() {
        assert_eq!(quote("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(quote("a b/c.json", true), "a%20b/c.json");
        assert_eq!(quote("v1.0_rc-2~x", false), "v1.0_rc-2~x");
    }

    #[test]
    fn origin_of_urls() {
        assert_eq!(origin("http://127.0.0.1:8080/a/b"), "http://127.0.0.1:8080");
        assert_eq!(origin("https://huggingface.co"), "https://huggingface.co");
    }
}
