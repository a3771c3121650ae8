//! Turning `--model` into files: a local folder, or a hub id resolved through the HF cache.
//!
//! A hub id `org/name` is looked up in the standard Hugging Face cache layout ([`cache`]), the
//! cache being `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`. A complete
//! snapshot is used as is, without the network. Otherwise, unless offline (`HF_HUB_OFFLINE=1` or
//! the spec's flag), the missing files are downloaded into that same cache ([`hub`]).
//! The environment is read once into [`HubEnv`], so tests pass their own.

mod cache;
mod hub;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use cache::repo_cache_dir;
pub use hub::{DownloadProgress, Downloaded};

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
/// The chat template, when the model keeps it in its own file rather than in
/// tokenizer_config.json (copied with the tokenizer files).
pub const CHAT_TEMPLATE_FILES: [&str; 2] = ["chat_template.jinja", "chat_template.json"];

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
#[derive(Clone, Debug, PartialEq)]
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
    /// The files this resolution fetched from the hub (empty when all came from the cache).
    pub downloaded: Vec<Downloaded>,
}

/// Why `--model` could not be turned into files. Each names the path or id and what is missing;
/// the hub's answers are put in words a person can act on.
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
    #[error("the Hugging Face cache file {} holds \"{value}\", which is not a 40-hex commit hash; delete it (the next online run writes it again)", path.display())]
    BadRef { path: PathBuf, value: String },
    #[error("{repo_id} (revision {revision}) has no safetensors weights (neither model.safetensors nor model.safetensors.index.json)")]
    NoHubWeights { repo_id: String, revision: String },
    #[error("the hub answered commit \"{sha}\" for {repo_id}, which is not a 40-hex commit hash")]
    BadCommit { repo_id: String, sha: String },
    #[error("the hub refused access to {repo_id} (revision {revision}) with HTTP {status}: the repository is gated or private, and {}. Accept the model's license on {page} while logged in, and set HF_TOKEN to a token of that account (or log in with `hf auth login`)", token.denial())]
    Denied {
        repo_id: String,
        revision: String,
        status: u16,
        token: TokenUse,
        page: String,
    },
    #[error("{repo_id} (revision {revision}) is not on the hub at {endpoint} (HTTP 404{}): {}; check the id and --revision. Private repositories also answer 404 {}", code.as_deref().map(|c| format!(", {c}")).unwrap_or_default(), not_found_what(code.as_deref(), revision), private_404_hint(*token_sent))]
    NotOnHub {
        repo_id: String,
        revision: String,
        endpoint: String,
        code: Option<String>,
        token_sent: bool,
    },
    #[error(
        "cannot reach the hub at {endpoint} for {repo_id} (revision {revision}): {reason}. {}",
        offline_hint(repo_id, cached)
    )]
    Unreachable {
        endpoint: String,
        repo_id: String,
        revision: String,
        reason: String,
        /// Complete cached snapshots: (revision name, commit).
        cached: Box<[(String, String)]>,
    },
    #[error("the hub answered HTTP {status} for {url}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    HubStatus {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the hub's answer for {url} is not usable: {reason}")]
    HubAnswer { url: String, reason: String },
    #[error("the download of {file} of {repo_id} stopped at {got} of {size} bytes ({reason}), {} times in a row; the part is kept in {} and the next run resumes it", hub::ATTEMPTS, part.display())]
    Interrupted {
        repo_id: String,
        file: String,
        got: u64,
        size: u64,
        reason: String,
        part: PathBuf,
    },
    #[error("{file} of {repo_id} arrived with {got}, but the hub announced {want}; the download was discarded and the next run fetches it again")]
    Corrupt {
        repo_id: String,
        file: String,
        got: String,
        want: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {} in the Hugging Face cache: {source}", path.display())]
    CacheWrite {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Whether a hub request carried a token, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenUse {
    /// No token was found: neither `HF_TOKEN` nor a saved login (the path looked at).
    None { looked: Option<PathBuf> },
    /// A token was sent; from where (`HF_TOKEN`, or the saved login's path).
    Sent { from: String },
}

impl TokenUse {
    fn denial(&self) -> String {
        match self {
            TokenUse::None { looked } => format!(
                "no token was sent (HF_TOKEN is not set{})",
                looked
                    .as_ref()
                    .map(|p| format!(" and there is no saved login in {}", p.display()))
                    .unwrap_or_default()
            ),
            TokenUse::Sent { from } => {
                format!("the token sent (from {from}) has not been granted access")
            }
        }
    }
}

/// Why a private repository may have answered 404.
fn private_404_hint(token_sent: bool) -> &'static str {
    if token_sent {
        "to a token without access: check that the token's account can see it"
    } else {
        "when no token is sent, as here: set HF_TOKEN if it is private"
    }
}

/// What a 404 says is missing, from the hub's `X-Error-Code` when it gives one.
fn not_found_what(code: Option<&str>, revision: &str) -> String {
    match code {
        Some("RevisionNotFound") => {
            format!("the repository exists but has no branch, tag or commit \"{revision}\"")
        }
        Some("RepoNotFound") => "there is no such repository".into(),
        _ => format!("there is no such repository, or no revision \"{revision}\" in it"),
    }
}

/// What to do instead of reaching the hub, from what the cache holds.
fn offline_hint(repo_id: &str, cached: &[(String, String)]) -> String {
    if cached.is_empty() {
        return format!("The cache holds no complete snapshot of {repo_id}; check the network (or HF_ENDPOINT) and run again");
    }
    let list: Vec<String> = cached
        .iter()
        .map(|(name, commit)| {
            if name == commit {
                commit.clone()
            } else {
                format!("{name} ({})", &commit[..commit.len().min(12)])
            }
        })
        .collect();
    format!(
        "The cache holds complete snapshots of {repo_id} at: {}; to use one, run again with --offline --revision <one of these>",
        list.join(", ")
    )
}

type Result<T> = std::result::Result<T, SourceError>;

/// How long a hub request may wait for each answer or read when `HF_HUB_DOWNLOAD_TIMEOUT` is
/// unset (huggingface_hub's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Where a saved login token is read when `HF_TOKEN` is unset: `HF_TOKEN_PATH`, else
    /// `HF_HOME/token`, else `~/.cache/huggingface/token`.
    pub token_file: Option<PathBuf>,
    /// `HF_HUB_OFFLINE` is 1/true/yes/on
    pub offline: bool,
    /// `HF_ENDPOINT`
    pub endpoint: Option<String>,
    /// `HF_HUB_DOWNLOAD_TIMEOUT` (seconds): the longest wait for a connection, an answer or
    /// the next bytes of a file; [`DEFAULT_TIMEOUT`] when unset.
    pub timeout: Option<Duration>,
}

impl HubEnv {
    /// Read the process environment (empty variables count as unset).
    pub fn from_process() -> HubEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let hf_home = var("HF_HOME").map(PathBuf::from);
        let home = var("HOME").map(PathBuf::from);
        let token_file = var("HF_TOKEN_PATH").map(PathBuf::from).or_else(|| {
            hf_home
                .as_ref()
                .map(|h| h.join("token"))
                .or_else(|| home.as_ref().map(|h| h.join(".cache/huggingface/token")))
        });
        HubEnv {
            hf_hub_cache: var("HF_HUB_CACHE").map(PathBuf::from),
            hf_home,
            home,
            token: var("HF_TOKEN"),
            token_file,
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v)),
            endpoint: var("HF_ENDPOINT"),
            timeout: var("HF_HUB_DOWNLOAD_TIMEOUT")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64),
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

/// Resolve `--model` with the process environment, downloading silently.
pub fn resolve(spec: &ModelSpec) -> Result<ModelFiles> {
    resolve_with(spec, &HubEnv::from_process())
}

/// Resolve `--model` with `env`, downloading silently.
pub fn resolve_with(spec: &ModelSpec, env: &HubEnv) -> Result<ModelFiles> {
    resolve_with_progress(spec, env, &())
}

/// Resolve `--model`: an existing folder is used as is; otherwise an `org/name` id goes through
/// the cache (and, when online and the snapshot is incomplete, the hub, reporting each file's
/// bytes to `progress`).
pub fn resolve_with_progress(
    spec: &ModelSpec,
    env: &HubEnv,
    progress: &dyn DownloadProgress,
) -> Result<ModelFiles> {
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
    match cache::lookup(&cache, &spec.model, &revision)? {
        Ok(files) => Ok(files),
        Err(miss) if spec.offline || env.offline => Err(SourceError::NotInCache {
            repo_id: spec.model.clone(),
            revision,
            looked: miss.looked,
            missing: miss.missing,
        }),
        Err(_) => hub::download(&cache, &spec.model, &revision, env, progress),
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
        downloaded: Vec::new(),
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
