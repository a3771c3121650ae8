//! Downloads from a local stand-in of the hub (`hub_server`): only the files a conversion reads,
//! single file and shards, offline reuse, gated and private repositories with and without a
//! token, missing repositories and revisions, branches and commits, connections dropped mid-file,
//! an unreachable or silent hub, and the cache folder failing; each failure's message and exit
//! code as the user sees them.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anec::source::{self, DownloadProgress, HubEnv, ModelFiles, SourceError};
use serde_json::Value;

use super::hub_server::{Access, HubRepo, HubServer};
use super::source::hub;
use super::util::{anec, fixture};

const COMMIT_MAIN: &str = "0123456789abcdef0123456789abcdef01234567";
const COMMIT_DEV: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// A repository folder: the fixture's files plus what a real repository also holds and anec must
/// not fetch (PyTorch weights, a README; the fixture's reference files are there too).
fn repo_folder(tmp: &Path, model: &str) -> PathBuf {
    let dir = tmp.join(format!("repo-{model}"));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture(model)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.join("pytorch_model.bin"), vec![7u8; 4096]).unwrap();
    std::fs::write(dir.join("README.md"), "# a model\n").unwrap();
    dir
}

/// A server holding `id` = `model` at COMMIT_MAIN on branch main.
fn serve(tmp: &Path, id: &str, model: &str, access: Access) -> HubServer {
    let server = HubServer::start();
    server.add(HubRepo::new(id).access(access).commit(
        COMMIT_MAIN,
        Some("main"),
        &repo_folder(tmp, model),
    ));
    server
}

fn env(url: &str, cache: &Path) -> HubEnv {
    HubEnv {
        hf_hub_cache: Some(cache.to_path_buf()),
        endpoint: Some(url.to_string()),
        timeout: Some(Duration::from_secs(5)),
        ..HubEnv::default()
    }
}

fn names(files: &ModelFiles) -> Vec<&str> {
    files.downloaded.iter().map(|d| d.file.as_str()).collect()
}

fn repo_dir(cache: &Path, id: &str) -> PathBuf {
    source::repo_cache_dir(cache, id)
}

/// Files under blobs/ still being downloaded.
fn parts(cache: &Path, id: &str) -> Vec<(String, u64)> {
    std::fs::read_dir(repo_dir(cache, id).join("blobs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".incomplete")
                .then(|| (name, e.metadata().unwrap().len()))
        })
        .collect()
}

/// What a download reported, in order.
#[derive(Default)]
struct Recorder {
    events: RefCell<Vec<(String, u64, u64)>>,
}

impl DownloadProgress for Recorder {
    fn start(&self, file: &str, size: u64, done: u64) {
        self.events
            .borrow_mut()
            .push((format!("start {file}"), size, done));
    }
    fn advance(&self, bytes: u64) {
        self.events.borrow_mut().push(("bytes".into(), bytes, 0));
    }
    fn finish(&self, file: &str) {
        self.events
            .borrow_mut()
            .push((format!("finish {file}"), 0, 0));
    }
}

/// `anec convert --model <id>` against `server`, with its cache and home under `home`.
fn convert(server_url: &str, home: &Path, id: &str, args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = anec();
    cmd.args(["convert", "--model", id, "--output"])
        .arg(home.join("out"))
        .args(["--no-compile"])
        .args(args)
        .env("HF_ENDPOINT", server_url)
        .env("HF_HUB_CACHE", home.join("cache"))
        .env("HF_HOME", home.join("hf-home"))
        .env("HF_HUB_DOWNLOAD_TIMEOUT", "5")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN_PATH");
    match token {
        Some(t) => cmd.env("HF_TOKEN", t),
        None => cmd.env_remove("HF_TOKEN"),
    };
    cmd.output().expect("anec runs")
}

/// A server holding the gated `org/gated` (tiny-llama), readable with the token `hf_right`.
fn gated(tmp: &Path) -> HubServer {
    serve(
        tmp,
        "org/gated",
        "tiny-llama",
        Access::Gated {
            token: "hf_right".into(),
        },
    )
}

fn succeeded(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The `anec: error:` line of a run that must fail with `code`, leaving no output folder
/// (printed, so `-- --nocapture` shows every message).
fn failure(o: &Output, code: i32, home: &Path) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    println!("exit {:?}: {err}", o.status.code());
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.starts_with("anec: error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!home.join("out").exists(), "no output on failure");
    err
}

// ---------------------------------------------------------------- the happy path

#[test]
fn single_file_checkpoint_downloads_only_what_convert_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(tmp.path(), "org/tiny", "tiny-llama", Access::Public);
    let o = convert(&server.url, tmp.path(), "org/tiny", &["--json"], None);
    succeeded(&o);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let listed: Vec<&str> = report["downloaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["file"].as_str().unwrap())
        .collect();
    let wanted = [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ];
    assert_eq!(listed, wanted);
    let weights = &report["downloaded"][1];
    assert_eq!(
        weights["bytes"].as_u64().unwrap(),
        std::fs::metadata(fixture("tiny-llama").join("model.safetensors"))
            .unwrap()
            .len()
    );
    assert_eq!(weights["resumed_from"].as_u64(), Some(0));
    // Nothing else was fetched: not the PyTorch weights, the README or the reference files.
    let mut fetched = server.fetched();
    fetched.sort();
    let sha = server.sha256("org/tiny", "main", "model.safetensors");
    let mut expected: Vec<String> = wanted
        .iter()
        .map(|f| {
            if *f == "model.safetensors" {
                sha.clone()
            } else {
                f.to_string()
            }
        })
        .collect();
    expected.sort();
    assert_eq!(fetched, expected);
    // The cache has huggingface_hub's layout, byte-identical files and no leftovers.
    let repo = repo_dir(&tmp.path().join("cache"), "org/tiny");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT_MAIN
    );
    let snap = repo.join("snapshots").join(COMMIT_MAIN);
    for f in wanted {
        assert_eq!(
            std::fs::read(snap.join(f)).unwrap(),
            std::fs::read(fixture("tiny-llama").join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(snap.join("model.safetensors").is_symlink());
    assert!(repo.join("blobs").join(&sha).is_file());
    assert!(parts(&tmp.path().join("cache"), "org/tiny").is_empty());
    assert!(tmp.path().join("out/meta.json").is_file());
}

#[test]
fn sharded_checkpoint_downloads_the_index_and_every_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(tmp.path(), "org/sharded", "tiny-mistral", Access::Public);
    let cache = tmp.path().join("cache");
    let progress = Recorder::default();
    let files = source::resolve_with_progress(
        &hub("org/sharded", None),
        &env(&server.url, &cache),
        &progress,
    )
    .unwrap();
    let shards = [
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
    ];
    let mut want = vec!["config.json", "model.safetensors.index.json"];
    want.extend(shards);
    want.extend([
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ]);
    assert_eq!(names(&files), want);
    assert_eq!(files.weights.len(), 3);
    assert_eq!(files.revision.as_deref(), Some(COMMIT_MAIN));
    for shard in shards {
        assert_eq!(
            std::fs::read(files.dir.join(shard)).unwrap(),
            std::fs::read(fixture("tiny-mistral").join(shard)).unwrap()
        );
    }
    // The progress saw every file start at 0, all its bytes, then its end.
    let events = progress.events.borrow();
    for d in &files.downloaded {
        let start = events
            .iter()
            .position(|e| e.0 == format!("start {}", d.file))
            .unwrap();
        assert_eq!((events[start].1, events[start].2), (d.bytes, 0));
        let end = events
            .iter()
            .position(|e| e.0 == format!("finish {}", d.file))
            .unwrap();
        let bytes: u64 = events[start..end]
            .iter()
            .filter(|e| e.0 == "bytes")
            .map(|e| e.1)
            .sum();
        assert_eq!(bytes, d.bytes, "{}", d.file);
    }
}

#[test]
fn a_second_run_reuses_the_snapshot_offline_and_without_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let server = serve(tmp.path(), "org/tiny", "tiny-qwen3", Access::Public);
    let url = server.url.clone();
    let first = source::resolve_with(&hub("org/tiny", None), &env(&url, &cache)).unwrap();
    assert_eq!(names(&first).len(), 5);
    drop(server);
    let offline = HubEnv {
        offline: true,
        ..env(&url, &cache)
    };
    let again = source::resolve_with(&hub("org/tiny", None), &offline).unwrap();
    assert!(again.downloaded.is_empty());
    assert_eq!(
        (again.dir.clone(), again.weights.clone()),
        (first.dir.clone(), first.weights.clone())
    );
    // Online with the hub gone: the complete snapshot is used without asking it.
    let online = source::resolve_with(&hub("org/tiny", None), &env(&url, &cache)).unwrap();
    assert_eq!(online.dir, first.dir);
    // And the binary converts it with HF_HUB_OFFLINE=1.
    let o = anec()
        .args(["convert", "--model", "org/tiny", "--no-compile", "--output"])
        .arg(tmp.path().join("out"))
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", &url)
        .output()
        .unwrap();
    succeeded(&o);
}

// ---------------------------------------------------------------- access

#[test]
fn gated_repository_without_a_token_says_so_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let server = gated(tmp.path());
    let o = convert(&server.url, tmp.path(), "org/gated", &[], None);
    let err = failure(&o, 2, tmp.path());
    assert_eq!(
        err.trim_end(),
        format!(
            "anec: error: the hub refused access to org/gated (revision main) with HTTP 401: the repository is gated or private, and no token was sent (HF_TOKEN is not set and there is no saved login in {}). Accept the model's license on {}/org/gated while logged in, and set HF_TOKEN to a token of that account (or log in with `hf auth login`)",
            tmp.path().join("hf-home/token").display(),
            server.url
        )
    );
    let snap = repo_dir(&tmp.path().join("cache"), "org/gated").join("snapshots");
    assert!(!snap.exists(), "nothing is put in the snapshot");
}

#[test]
fn gated_repository_with_a_token_without_access_exits_2_saying_a_token_was_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let server = gated(tmp.path());
    let o = convert(&server.url, tmp.path(), "org/gated", &[], Some("hf_wrong"));
    let err = failure(&o, 2, tmp.path());
    assert!(
        err.contains("with HTTP 403: the repository is gated or private, and the token sent (from HF_TOKEN) has not been granted access."),
        "{err}"
    );
}

#[test]
fn gated_repository_with_its_token_downloads_and_the_token_stays_with_the_hub() {
    let tmp = tempfile::tempdir().unwrap();
    let server = gated(tmp.path());
    let o = convert(&server.url, tmp.path(), "org/gated", &[], Some("hf_right"));
    succeeded(&o);
    let log = server.log();
    assert!(log
        .iter()
        .filter(|l| l.path.contains("/resolve/"))
        .all(|l| l.authorization.as_deref() == Some("Bearer hf_right")));
    // The weights come from the CDN redirect, which gets no token.
    let cdn: Vec<_> = log.iter().filter(|l| l.path.starts_with("/lfs/")).collect();
    assert!(!cdn.is_empty());
    assert!(cdn.iter().all(|l| l.authorization.is_none()));
}

#[test]
fn saved_login_token_is_used_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let server = gated(tmp.path());
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "hf_stale\n").unwrap();
    let with_file = HubEnv {
        token_file: Some(token_file.clone()),
        ..env(&server.url, &tmp.path().join("cache"))
    };
    let msg = source::resolve_with(&hub("org/gated", None), &with_file)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!(
            "the token sent (from {}) has not been granted access",
            token_file.display()
        )),
        "{msg}"
    );
    std::fs::write(&token_file, "hf_right\n").unwrap();
    source::resolve_with(&hub("org/gated", None), &with_file).unwrap();
}

#[test]
fn missing_repository_exits_2_naming_repository_and_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(tmp.path(), "org/tiny", "tiny-llama", Access::Public);
    let o = convert(&server.url, tmp.path(), "org/nope", &[], None);
    let err = failure(&o, 2, tmp.path());
    assert_eq!(
        err.trim_end(),
        format!(
            "anec: error: org/nope (revision main) is not on the hub at {} (HTTP 404, RepoNotFound): there is no such repository; check the id and --revision. Private repositories also answer 404 when no token is sent, as here: set HF_TOKEN if it is private",
            server.url
        )
    );
    let o = convert(
        &server.url,
        tmp.path(),
        "org/tiny",
        &["--revision", "v9"],
        None,
    );
    let err = failure(&o, 2, tmp.path());
    assert!(
        err.contains("org/tiny (revision v9) is not on the hub")
            && err.contains("the repository exists but has no branch, tag or commit \"v9\""),
        "{err}"
    );
}

#[test]
fn private_repository_answers_404_without_its_token() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(
        tmp.path(),
        "org/private",
        "tiny-llama",
        Access::Private {
            token: "hf_mine".into(),
        },
    );
    let cache = tmp.path().join("cache");
    let err =
        source::resolve_with(&hub("org/private", None), &env(&server.url, &cache)).unwrap_err();
    assert!(
        matches!(&err, SourceError::NotOnHub { code: Some(c), .. } if c == "RepoNotFound"),
        "{err}"
    );
    let with_token = HubEnv {
        token: Some("hf_mine".into()),
        ..env(&server.url, &cache)
    };
    let files = source::resolve_with(&hub("org/private", None), &with_token).unwrap();
    assert_eq!(names(&files)[0], "config.json");
}

// ---------------------------------------------------------------- revisions

#[test]
fn revision_as_a_branch_and_as_a_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let server = HubServer::start();
    server.add(
        HubRepo::new("org/m")
            .commit(
                COMMIT_MAIN,
                Some("main"),
                &repo_folder(tmp.path(), "tiny-llama"),
            )
            .commit(
                COMMIT_DEV,
                Some("feature/dev"),
                &repo_folder(tmp.path(), "tiny-qwen2"),
            ),
    );
    let cache = tmp.path().join("cache");
    let env = env(&server.url, &cache);
    let model_type = |files: &ModelFiles| {
        anec::arch::DecoderConfig::from_config_file(&files.config)
            .unwrap()
            .model_type
    };
    // A branch (with a slash, sent as %2F) resolves to its commit and is remembered in refs/.
    let dev = source::resolve_with(&hub("org/m", Some("feature/dev")), &env).unwrap();
    assert_eq!(dev.revision.as_deref(), Some(COMMIT_DEV));
    assert_eq!(model_type(&dev), "qwen2");
    let repo = repo_dir(&cache, "org/m");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/feature/dev")).unwrap(),
        COMMIT_DEV
    );
    assert!(server
        .log()
        .iter()
        .any(|l| l.path == "/api/models/org/m/revision/feature%2Fdev"));
    // A commit hash is fetched as such, and no ref is written for it.
    let main = source::resolve_with(&hub("org/m", Some(COMMIT_MAIN)), &env).unwrap();
    assert_eq!(main.revision.as_deref(), Some(COMMIT_MAIN));
    assert_eq!(model_type(&main), "llama");
    assert!(!repo.join("refs").join(COMMIT_MAIN).exists());
    assert!(!repo.join("refs/main").exists());
    assert!(server
        .log()
        .iter()
        .any(|l| l.path == format!("/org/m/resolve/{COMMIT_MAIN}/config.json")));
}

// ---------------------------------------------------------------- interrupted downloads

#[test]
fn a_connection_dropped_mid_file_is_resumed_in_the_same_run() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(tmp.path(), "org/tiny", "tiny-llama", Access::Public);
    let size = std::fs::metadata(fixture("tiny-llama").join("model.safetensors"))
        .unwrap()
        .len();
    let cut = size / 2;
    server.drop_at("model.safetensors", cut, 1);
    let cache = tmp.path().join("cache");
    let progress = Recorder::default();
    let files =
        source::resolve_with_progress(&hub("org/tiny", None), &env(&server.url, &cache), &progress)
            .unwrap();
    let ranges: Vec<_> = server
        .log()
        .iter()
        .filter(|l| l.method == "GET" && l.path.starts_with("/lfs/"))
        .map(|l| l.range.clone())
        .collect();
    assert_eq!(ranges, vec![None, Some(format!("bytes={cut}-"))]);
    assert_eq!(
        std::fs::read(&files.weights[0]).unwrap(),
        std::fs::read(fixture("tiny-llama").join("model.safetensors")).unwrap()
    );
    // The progress restarted the file at the cut, not at zero.
    assert!(progress
        .events
        .borrow()
        .iter()
        .any(|e| e == &("start model.safetensors".to_string(), size, cut)));
    assert!(parts(&cache, "org/tiny").is_empty());
}

#[test]
fn a_download_that_keeps_failing_exits_2_and_the_next_run_resumes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(tmp.path(), "org/tiny", "tiny-llama", Access::Public);
    let size = std::fs::metadata(fixture("tiny-llama").join("model.safetensors"))
        .unwrap()
        .len();
    let cut = size / 3;
    server.drop_at("model.safetensors", cut, usize::MAX);
    let o = convert(&server.url, tmp.path(), "org/tiny", &[], None);
    let err = failure(&o, 2, tmp.path());
    let cache = tmp.path().join("cache");
    let sha = server.sha256("org/tiny", "main", "model.safetensors");
    let part = repo_dir(&cache, "org/tiny")
        .join("blobs")
        .join(format!("{sha}.incomplete"));
    assert!(
        err.contains(&format!(
            "the download of model.safetensors of org/tiny stopped at {cut} of {size} bytes"
        )) && err.contains(&format!(
            "3 times in a row; the part is kept in {} and the next run resumes it",
            part.display()
        )),
        "{err}"
    );
    // No partial file in the snapshot, so the cache does not pass for complete.
    let snap = repo_dir(&cache, "org/tiny")
        .join("snapshots")
        .join(COMMIT_MAIN);
    assert!(!snap.join("model.safetensors").exists());
    assert_eq!(std::fs::metadata(&part).unwrap().len(), cut);
    let offline = HubEnv {
        offline: true,
        ..env(&server.url, &cache)
    };
    assert!(source::resolve_with(&hub("org/tiny", None), &offline).is_err());
    // The hub recovers: the next run asks only for the rest.
    server.drop_at("model.safetensors", 0, 0);
    let files = source::resolve_with(&hub("org/tiny", None), &env(&server.url, &cache)).unwrap();
    let last = server
        .log()
        .into_iter()
        .rfind(|l| l.method == "GET" && l.path.starts_with("/lfs/"))
        .unwrap();
    assert_eq!(last.range, Some(format!("bytes={cut}-")));
    let weights = files
        .downloaded
        .iter()
        .find(|d| d.file == "model.safetensors")
        .unwrap();
    assert_eq!((weights.bytes, weights.resumed_from), (size, cut));
    assert_eq!(
        std::fs::read(&files.weights[0]).unwrap(),
        std::fs::read(fixture("tiny-llama").join("model.safetensors")).unwrap()
    );
    assert!(parts(&cache, "org/tiny").is_empty());
}

#[test]
fn a_corrupt_partial_download_is_discarded_not_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(tmp.path(), "org/tiny", "tiny-llama", Access::Public);
    let cache = tmp.path().join("cache");
    let sha = server.sha256("org/tiny", "main", "model.safetensors");
    let blobs = repo_dir(&cache, "org/tiny").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let part = blobs.join(format!("{sha}.incomplete"));
    std::fs::write(&part, vec![0xAB; 1000]).unwrap();
    let err = source::resolve_with(&hub("org/tiny", None), &env(&server.url, &cache))
        .unwrap_err()
        .to_string();
    println!("{err}");
    assert!(
        err.starts_with("model.safetensors of org/tiny arrived with SHA-256 ")
            && err.ends_with(&format!(
                "but the hub announced SHA-256 {sha}; the download was discarded and the next run fetches it again"
            )),
        "{err}"
    );
    assert!(!part.exists());
    assert!(!blobs.join(&sha).exists());
    let files = source::resolve_with(&hub("org/tiny", None), &env(&server.url, &cache)).unwrap();
    assert_eq!(
        std::fs::read(&files.weights[0]).unwrap(),
        std::fs::read(fixture("tiny-llama").join("model.safetensors")).unwrap()
    );
}

// ---------------------------------------------------------------- no hub, no cache folder

#[test]
fn unreachable_hub_exits_2_and_names_the_cached_revisions_for_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let server = HubServer::start();
    server.add(HubRepo::new("org/m").commit(
        COMMIT_DEV,
        Some("dev"),
        &repo_folder(tmp.path(), "tiny-qwen2"),
    ));
    let cache = tmp.path().join("cache");
    source::resolve_with(&hub("org/m", Some("dev")), &env(&server.url, &cache)).unwrap();
    let url = server.url.clone();
    drop(server);
    // Give the port a moment to close.
    std::thread::sleep(Duration::from_millis(100));
    let o = convert(&url, tmp.path(), "org/m", &[], None);
    let err = failure(&o, 2, tmp.path());
    assert!(
        err.starts_with(&format!(
            "anec: error: cannot reach the hub at {url} for org/m (revision main): "
        )) && err.trim_end().ends_with(
            ". The cache holds complete snapshots of org/m at: dev (fedcba987654); to use one, run again with --offline --revision <one of these>"
        ),
        "{err}"
    );
    let o = convert(&url, tmp.path(), "org/other", &[], None);
    let err = failure(&o, 2, tmp.path());
    assert!(
        err.trim_end().ends_with("The cache holds no complete snapshot of org/other; check the network (or HF_ENDPOINT) and run again"),
        "{err}"
    );
}

#[test]
fn a_hub_that_never_answers_times_out_with_the_limit_named() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(tmp.path(), "org/tiny", "tiny-llama", Access::Public);
    server.stall();
    let quick = HubEnv {
        timeout: Some(Duration::from_millis(500)),
        ..env(&server.url, &tmp.path().join("cache"))
    };
    let t0 = std::time::Instant::now();
    let err = source::resolve_with(&hub("org/tiny", None), &quick)
        .unwrap_err()
        .to_string();
    println!("{err}");
    assert!(
        err.contains("cannot reach the hub at")
            && err.contains("no answer within 0.5 s (HF_HUB_DOWNLOAD_TIMEOUT)"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_cache_folder_that_cannot_be_written_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(tmp.path(), "org/tiny", "tiny-llama", Access::Public);
    // HF_HUB_CACHE is a file, so no folder can be made in it (whoever runs the test).
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("cache"), "not a folder").unwrap();
    let o = convert(&server.url, &home, "org/tiny", &[], None);
    let err = failure(&o, 3, &home);
    assert!(
        err.contains(&format!(
            "cannot write {} in the Hugging Face cache",
            home.join("cache/models--org--tiny/blobs").display()
        )),
        "{err}"
    );
}
