//! Turning `--model` into files: a local folder, or a hub id resolved through the HF cache.
//!
//! A hub id `org/name` is looked up in the standard Hugging Face cache layout
//! (`<cache>/models--org--name/{refs/<revision>, snapshots/<commit>/…, blobs/…}`), the cache
//! being `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`. A complete snapshot
//! is used as is, without the network. Otherwise, unless offline (`HF_HUB_OFFLINE=1` or the
//! spec's flag), the missing files are downloaded with `hf-hub` into that same cache.
//! The environment is read once into [`HubEnv`], so tests pass their own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The single-file checkpoint name.
pub const SINGLE_WEIGHTS: &str = "model.safetensors";
/// The sharded checkpoint's index.
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
/// Tokenizer (and generation) files copied next to the converted model when present.
pub const TOKENIZER_FILES: [&str; 8] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
];

/// What `--model`, `--revision` and `--offline` asked for.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ModelSpec {
    /// A local folder, or a hub id `org/name`.
    pub model: String,
    /// Branch, tag or commit hash (hub ids only); `main` when absent.
    pub revision: Option<String>,
    /// Use the cache only (as `HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

/// The files of one checkpoint, all inside `dir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFiles {
    /// The folder (for a hub id: the cache snapshot folder).
    pub dir: PathBuf,
    /// `dir/config.json`.
    pub config: PathBuf,
    /// The safetensors files: `[model.safetensors]`, or the shards named by the index (sorted).
    pub weights: Vec<PathBuf>,
    /// `dir/model.safetensors.index.json` for a sharded checkpoint.
    pub index: Option<PathBuf>,
    /// The [`TOKENIZER_FILES`] present, in that order.
    pub tokenizer_files: Vec<PathBuf>,
    /// The hub id, when the model came from the hub.
    pub repo_id: Option<String>,
    /// The commit hash of the snapshot, when the model came from the hub.
    pub revision: Option<String>,
}

/// Why `--model` could not be turned into files. Each names the path or id and what is missing.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("model folder {} does not exist (and \"{model}\" is not a hub id of the form org/name)", path.display())]
    NotFound { model: String, path: PathBuf },
    #[error("--model {} is a file, not a folder or a hub id", path.display())]
    NotAFolder { path: PathBuf },
    #[error("model folder {} has no {file}", dir.display())]
    MissingFile { dir: PathBuf, file: String },
    #[error("model folder {} has neither model.safetensors nor model.safetensors.index.json{hint}", dir.display())]
    NoWeights { dir: PathBuf, hint: String },
    #[error("{}: {reason}", path.display())]
    BadIndex { path: PathBuf, reason: String },
    #[error("model folder {} lacks the shard {shard} named by {}", dir.display(), index.display())]
    MissingShard {
        dir: PathBuf,
        index: PathBuf,
        shard: String,
    },
    #[error("--revision {revision} is given for the local folder {}; revisions apply to hub ids only", path.display())]
    RevisionForFolder { path: PathBuf, revision: String },
    #[error("--revision \"{revision}\" is not a branch, tag or commit name")]
    BadRevision { revision: String },
    #[error("cannot locate the Hugging Face cache: none of HF_HUB_CACHE, HF_HOME, HOME is set")]
    NoCacheDir,
    #[error("{repo_id} (revision {revision}) is not in the Hugging Face cache and offline mode is on (HF_HUB_OFFLINE or --offline): looked in {}, {missing}", looked.display())]
    NotInCache {
        repo_id: String,
        revision: String,
        looked: PathBuf,
        missing: String,
    },
    #[error("downloading {file} of {repo_id} (revision {revision}) into {}: {source}", cache.display())]
    Download {
        repo_id: String,
        revision: String,
        file: String,
        cache: PathBuf,
        #[source]
        source: Box<hf_hub::api::sync::ApiError>,
    },
    #[error("{repo_id} (revision {revision}) has no safetensors weights (neither model.safetensors nor model.safetensors.index.json)")]
    NoHubWeights { repo_id: String, revision: String },
    #[error("the hub answered commit \"{sha}\" for {repo_id}, which is not a 40-hex commit hash")]
    BadCommit { repo_id: String, sha: String },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, SourceError>;

/// The environment the hub lookup depends on, read once (tests build their own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubEnv {
    /// `HF_HUB_CACHE`
    pub hf_hub_cache: Option<PathBuf>,
    /// `HF_HOME`
    pub hf_home: Option<PathBuf>,
    /// `HOME` (for `~/.cache/huggingface/hub`)
    pub home: Option<PathBuf>,
    /// `HF_TOKEN`
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE` is 1/true/yes/on
    pub offline: bool,
    /// `HF_ENDPOINT`
    pub endpoint: Option<String>,
    /// Show download progress bars.
    pub progress: bool,
}

impl HubEnv {
    /// Read the process environment (empty variables count as unset).
    pub fn from_process() -> HubEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        HubEnv {
            hf_hub_cache: var("HF_HUB_CACHE").map(PathBuf::from),
            hf_home: var("HF_HOME").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
            token: var("HF_TOKEN"),
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v)),
            endpoint: var("HF_ENDPOINT"),
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    /// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `HOME/.cache/huggingface/hub`.
    pub fn cache_dir(&self) -> Result<PathBuf> {
        if let Some(c) = &self.hf_hub_cache {
            Ok(c.clone())
        } else if let Some(h) = &self.hf_home {
            Ok(h.join("hub"))
        } else if let Some(h) = &self.home {
            Ok(h.join(".cache").join("huggingface").join("hub"))
        } else {
            Err(SourceError::NoCacheDir)
        }
    }
}

/// huggingface_hub's truthy spellings of a boolean environment variable.
fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

impl ModelSpec {
    /// [`resolve`] this spec with the process environment.
    pub fn resolve(&self) -> Result<ModelFiles> {
        resolve(self)
    }
}

/// Resolve `--model` with the process environment.
pub fn resolve(spec: &ModelSpec) -> Result<ModelFiles> {
    resolve_with(spec, &HubEnv::from_process())
}

/// Resolve `--model`: an existing folder is used as is; otherwise an `org/name` id goes through
/// the cache (and, when online and the snapshot is incomplete, the hub).
pub fn resolve_with(spec: &ModelSpec, env: &HubEnv) -> Result<ModelFiles> {
    let path = Path::new(&spec.model);
    if path.is_dir() {
        if let Some(revision) = &spec.revision {
            return Err(SourceError::RevisionForFolder {
                path: path.to_path_buf(),
                revision: revision.clone(),
            });
        }
        return local_folder(path);
    }
    if path.exists() {
        return Err(SourceError::NotAFolder {
            path: path.to_path_buf(),
        });
    }
    if !is_hub_id(&spec.model) {
        return Err(SourceError::NotFound {
            model: spec.model.clone(),
            path: path.to_path_buf(),
        });
    }
    let revision = spec.revision.clone().unwrap_or_else(|| "main".to_string());
    let revision_ok = !revision.is_empty()
        && !revision.starts_with('/')
        && revision
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if !revision_ok {
        return Err(SourceError::BadRevision { revision });
    }
    let cache = env.cache_dir()?;
    match from_cache(&cache, &spec.model, &revision) {
        Ok(files) => Ok(files),
        Err(miss) if spec.offline || env.offline => Err(SourceError::NotInCache {
            repo_id: spec.model.clone(),
            revision,
            looked: miss.looked,
            missing: miss.missing,
        }),
        Err(_) => download(&cache, &spec.model, &revision, env),
    }
}

/// `org/name` with the characters the hub allows (letters, digits, `-`, `_`, `.`).
pub fn is_hub_id(s: &str) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !p.starts_with(['-', '.'])
            && !p.ends_with(['-', '.'])
            && !p.contains("--")
            && !p.contains("..")
    };
    match s.split_once('/') {
        Some((org, name)) => part_ok(org) && part_ok(name),
        None => false,
    }
}

/// The index's `weight_map`, tensor name → shard file name.
#[derive(Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

/// Read a `model.safetensors.index.json`: tensor name → shard file name (a plain file name
/// in the same folder; paths that leave the folder are refused).
pub fn read_index(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let index: IndexFile = serde_json::from_str(&text).map_err(|e| SourceError::BadIndex {
        path: path.to_path_buf(),
        reason: format!("not a safetensors index: {e}"),
    })?;
    for (tensor, shard) in &index.weight_map {
        let p = Path::new(shard);
        let plain = p.components().count() == 1
            && matches!(p.components().next(), Some(std::path::Component::Normal(_)));
        if !plain {
            return Err(SourceError::BadIndex {
                path: path.to_path_buf(),
                reason: format!("tensor {tensor} maps to \"{shard}\", which is not a file name in the same folder"),
            });
        }
    }
    if index.weight_map.is_empty() {
        return Err(SourceError::BadIndex {
            path: path.to_path_buf(),
            reason: "weight_map is empty".into(),
        });
    }
    Ok(index.weight_map)
}

/// The shard file names of an index, sorted and deduplicated.
fn shard_names(map: &BTreeMap<String, String>) -> Vec<String> {
    map.values()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// A checkpoint folder: config.json, then the index (and every shard it names) or
/// model.safetensors, then whichever tokenizer files exist.
fn local_folder(dir: &Path) -> Result<ModelFiles> {
    let config = dir.join("config.json");
    if !config.is_file() {
        return Err(SourceError::MissingFile {
            dir: dir.to_path_buf(),
            file: "config.json".into(),
        });
    }
    let index_path = dir.join(WEIGHTS_INDEX);
    let (weights, index) = if index_path.is_file() {
        let map = read_index(&index_path)?;
        let mut weights = Vec::new();
        for shard in shard_names(&map) {
            let p = dir.join(&shard);
            if !p.is_file() {
                return Err(SourceError::MissingShard {
                    dir: dir.to_path_buf(),
                    index: index_path,
                    shard,
                });
            }
            weights.push(p);
        }
        (weights, Some(index_path))
    } else if dir.join(SINGLE_WEIGHTS).is_file() {
        (vec![dir.join(SINGLE_WEIGHTS)], None)
    } else {
        let hint = if dir.join("pytorch_model.bin").exists()
            || dir.join("pytorch_model.bin.index.json").exists()
        {
            " (only PyTorch .bin weights, which anec does not read: convert them to safetensors)"
        } else {
            ""
        };
        return Err(SourceError::NoWeights {
            dir: dir.to_path_buf(),
            hint: hint.into(),
        });
    };
    let tokenizer_files = TOKENIZER_FILES
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.is_file())
        .collect();
    Ok(ModelFiles {
        dir: dir.to_path_buf(),
        config,
        weights,
        index,
        tokenizer_files,
        repo_id: None,
        revision: None,
    })
}

/// Where a cache lookup stopped.
#[derive(Debug)]
struct CacheMiss {
    looked: PathBuf,
    missing: String,
}

/// `<cache>/models--org--name`
pub fn repo_cache_dir(cache: &Path, repo_id: &str) -> PathBuf {
    cache.join(format!("models--{}", repo_id.replace('/', "--")))
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A complete snapshot of `repo_id` at `revision` (commit hash, or a name under refs/).
fn from_cache(
    cache: &Path,
    repo_id: &str,
    revision: &str,
) -> std::result::Result<ModelFiles, CacheMiss> {
    let repo_dir = repo_cache_dir(cache, repo_id);
    let miss = |missing: String| CacheMiss {
        looked: repo_dir.clone(),
        missing,
    };
    if !repo_dir.is_dir() {
        return Err(miss("which does not exist".into()));
    }
    let commit = if is_commit_hash(revision) && repo_dir.join("snapshots").join(revision).is_dir() {
        revision.to_string()
    } else {
        let ref_path = repo_dir.join("refs").join(revision);
        match std::fs::read_to_string(&ref_path) {
            Ok(s) => s.trim().to_string(),
            Err(_) => return Err(miss(format!("which has no refs/{revision}"))),
        }
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(miss(format!("which has no snapshots/{commit}")));
    }
    match local_folder(&snapshot) {
        Ok(files) => Ok(ModelFiles {
            repo_id: Some(repo_id.to_string()),
            revision: Some(commit),
            ..files
        }),
        Err(e) => Err(miss(format!("whose snapshot is incomplete: {e}"))),
    }
}

/// Fetch config.json, the weights (index and shards, or model.safetensors) and the tokenizer
/// files through hf-hub into `cache` (files already there are not fetched again).
fn download(cache: &Path, repo_id: &str, revision: &str, env: &HubEnv) -> Result<ModelFiles> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Cache, Repo, RepoType};
    let fail = |file: &str, source: hf_hub::api::sync::ApiError| SourceError::Download {
        repo_id: repo_id.to_string(),
        revision: revision.to_string(),
        file: file.to_string(),
        cache: cache.to_path_buf(),
        source: Box::new(source),
    };
    let mut builder = ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
        .with_progress(env.progress)
        .with_retries(2);
    if env.token.is_some() {
        builder = builder.with_token(env.token.clone());
    }
    if let Some(endpoint) = &env.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let api = builder.build().map_err(|e| fail("(connecting)", e))?;
    let repo = api.repo(Repo::with_revision(
        repo_id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let info = repo.info().map_err(|e| fail("(repository listing)", e))?;
    if !is_commit_hash(&info.sha) {
        return Err(SourceError::BadCommit {
            repo_id: repo_id.to_string(),
            sha: info.sha,
        });
    }
    let listed: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    // Pin the revision to the commit just listed, so files already cached under that commit are
    // reused and every new one lands in the same snapshot.
    Cache::new(cache.to_path_buf())
        .repo(Repo::with_revision(
            repo_id.to_string(),
            RepoType::Model,
            revision.to_string(),
        ))
        .create_ref(&info.sha)
        .map_err(|source| SourceError::Io {
            path: repo_cache_dir(cache, repo_id).join("refs").join(revision),
            source,
        })?;
    repo.get("config.json")
        .map_err(|e| fail("config.json", e))?;
    if listed.contains(WEIGHTS_INDEX) {
        let index = repo
            .get(WEIGHTS_INDEX)
            .map_err(|e| fail(WEIGHTS_INDEX, e))?;
        for shard in shard_names(&read_index(&index)?) {
            repo.get(&shard).map_err(|e| fail(&shard, e))?;
        }
    } else if listed.contains(SINGLE_WEIGHTS) {
        repo.get(SINGLE_WEIGHTS)
            .map_err(|e| fail(SINGLE_WEIGHTS, e))?;
    } else {
        return Err(SourceError::NoHubWeights {
            repo_id: repo_id.to_string(),
            revision: revision.to_string(),
        });
    }
    for f in TOKENIZER_FILES {
        if listed.contains(f) {
            repo.get(f).map_err(|e| fail(f, e))?;
        }
    }
    let dir = repo_cache_dir(cache, repo_id)
        .join("snapshots")
        .join(&info.sha);
    Ok(ModelFiles {
        repo_id: Some(repo_id.to_string()),
        revision: Some(info.sha),
        ..local_folder(&dir)?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids() {
        for ok in [
            "meta-llama/Llama-3.2-1B-Instruct",
            "Qwen/Qwen2.5-0.5B",
            "a/b",
        ] {
            assert!(is_hub_id(ok), "{ok}");
        }
        for bad in [
            "",
            "gpt2",
            "/abs/path",
            "./x/y",
            "a/b/c",
            "a/../b",
            "../a",
            "a/",
            "a--b/c",
        ] {
            assert!(!is_hub_id(bad), "{bad}");
        }
    }

    #[test]
    fn truthy_offline_values() {
        for t in ["1", "true", "YES", "on"] {
            assert!(is_true(t));
        }
        for f in ["0", "false", "no", ""] {
            assert!(!is_true(f));
        }
    }

    #[test]
    fn cache_dir_precedence() {
        let mut env = HubEnv {
            home: Some("/h".into()),
            ..HubEnv::default()
        };
        assert_eq!(
            env.cache_dir().unwrap(),
            PathBuf::from("/h/.cache/huggingface/hub")
        );
        env.hf_home = Some("/hf".into());
        assert_eq!(env.cache_dir().unwrap(), PathBuf::from("/hf/hub"));
        env.hf_hub_cache = Some("/c".into());
        assert_eq!(env.cache_dir().unwrap(), PathBuf::from("/c"));
        assert!(matches!(
            HubEnv::default().cache_dir(),
            Err(SourceError::NoCacheDir)
        ));
    }
}
