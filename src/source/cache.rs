//! The Hugging Face cache layout of one repository, as huggingface_hub writes it (so both tools
//! share one cache): `<cache>/models--org--name/` holds `refs/<revision>` (a file holding a commit
//! hash), `snapshots/<commit>/<file>` (links to `../../blobs/<etag>`) and `blobs/<etag>` (the
//! bytes; `<etag>.incomplete` while a download is under way, so no snapshot file is ever partial).

use std::path::{Path, PathBuf};

use super::{local_folder, ModelFiles, Result, SourceError};

/// Where a cache lookup stopped: the repository folder, and what it lacks.
#[derive(Debug)]
pub(super) struct CacheMiss {
    pub looked: PathBuf,
    pub missing: String,
}

/// `<cache>/models--org--name`
pub fn repo_cache_dir(cache: &Path, repo_id: &str) -> PathBuf {
    cache.join(format!("models--{}", repo_id.replace('/', "--")))
}

/// 40 hex digits, the only thing a ref may hold and a snapshot folder may be named.
pub(super) fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit `refs/<revision>` names, or `None` when there is no such ref. Its content becomes
/// a path (`snapshots/<commit>`), so anything but a commit hash is refused.
pub(super) fn read_ref(repo_dir: &Path, revision: &str) -> Result<Option<String>> {
    let path = repo_dir.join("refs").join(revision);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let value = text.trim();
            if is_commit_hash(value) {
                Ok(Some(value.to_string()))
            } else {
                let value: String = value.chars().take(80).collect();
                Err(SourceError::BadRef { path, value })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SourceError::Io { path, source }),
    }
}

/// A complete snapshot of `repo_id` at `revision` (a commit hash, or a name under refs/), or
/// where the lookup stopped; a corrupt ref or an unreadable cache is an error.
pub(super) fn lookup(
    cache: &Path,
    repo_id: &str,
    revision: &str,
) -> Result<std::result::Result<ModelFiles, CacheMiss>> {
    let repo_dir = repo_cache_dir(cache, repo_id);
    let miss = |missing: String| {
        Ok(Err(CacheMiss {
            looked: repo_dir.clone(),
            missing,
        }))
    };
    if !repo_dir.is_dir() {
        return miss("which does not exist".into());
    }
    let commit = if is_commit_hash(revision) {
        revision.to_string()
    } else {
        match read_ref(&repo_dir, revision)? {
            Some(commit) => commit,
            None => return miss(format!("which has no refs/{revision}")),
        }
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return miss(format!("which has no snapshots/{commit}"));
    }
    match local_folder(&snapshot) {
        Ok(files) => Ok(Ok(ModelFiles {
            repo_id: Some(repo_id.to_string()),
            revision: Some(commit),
            ..files
        })),
        Err(e) => miss(format!("whose snapshot is incomplete: {e}")),
    }
}

/// The complete snapshots the cache holds for `repo_id`, as (revision, commit): every ref that
/// names one, then those no ref names (by commit). Unreadable parts are skipped: this only
/// suggests what `--offline` could use.
pub(super) fn complete_snapshots(cache: &Path, repo_id: &str) -> Vec<(String, String)> {
    let repo_dir = repo_cache_dir(cache, repo_id);
    let complete = |commit: &str| local_folder(&repo_dir.join("snapshots").join(commit)).is_ok();
    let mut names = Vec::new();
    ref_names(&repo_dir.join("refs"), "", &mut names);
    names.sort();
    let mut found: Vec<(String, String)> = names
        .into_iter()
        .filter_map(|name| {
            let commit = read_ref(&repo_dir, &name).ok().flatten()?;
            complete(&commit).then_some((name, commit))
        })
        .collect();
    let mut unnamed: Vec<String> = std::fs::read_dir(repo_dir.join("snapshots"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|c| is_commit_hash(c) && !found.iter().any(|(_, f)| f == c) && complete(c))
        .collect();
    unnamed.sort();
    found.extend(unnamed.into_iter().map(|c| (c.clone(), c)));
    found
}

/// The ref names under `dir` (branch names may hold `/`: `refs/pr/1`).
fn ref_names(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Some(name) = entry.file_name().to_str().map(|n| format!("{prefix}{n}")) else {
            continue;
        };
        match entry.file_type() {
            Ok(t) if t.is_dir() => ref_names(&entry.path(), &format!("{name}/"), out),
            Ok(_) => out.push(name),
            Err(_) => {}
        }
    }
}

fn cache_write(path: &Path) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
    move |source| SourceError::CacheWrite {
        path: path.to_path_buf(),
        source,
    }
}

/// Create `dir` and its parents.
pub(super) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(cache_write(dir))
}

/// Point `refs/<revision>` at `commit` (written beside, then renamed into place).
pub(super) fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> Result<()> {
    let path = repo_dir.join("refs").join(revision);
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("ref"),
        std::process::id()
    ));
    std::fs::write(&tmp, commit).map_err(cache_write(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(cache_write(&path))
}

/// `blobs/<etag>`
pub(super) fn blob_path(repo_dir: &Path, etag: &str) -> PathBuf {
    repo_dir.join("blobs").join(etag)
}

/// `blobs/<etag>.incomplete`: where a download is written until it is complete and checked.
pub(super) fn part_path(repo_dir: &Path, etag: &str) -> PathBuf {
    repo_dir.join("blobs").join(format!("{etag}.incomplete"))
}

/// Make `snapshots/<commit>/<file>` point at `blobs/<etag>` (a relative symlink; a copy where
/// there are no symlinks), replacing whatever was there.
pub(super) fn link_snapshot(repo_dir: &Path, commit: &str, file: &str, etag: &str) -> Result<()> {
    let dir = repo_dir.join("snapshots").join(commit);
    create_dir(&dir)?;
    let pointer = dir.join(file);
    if pointer.symlink_metadata().is_ok() {
        std::fs::remove_file(&pointer).map_err(cache_write(&pointer))?;
    }
    #[cfg(unix)]
    let linked = std::os::unix::fs::symlink(Path::new("../../blobs").join(etag), &pointer);
    #[cfg(not(unix))]
    let linked = std::fs::copy(blob_path(repo_dir, etag), &pointer).map(|_| ());
    linked.map_err(cache_write(&pointer))
}
