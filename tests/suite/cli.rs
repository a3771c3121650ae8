//! The `anec` binary end to end: every bad input exits with its documented code and an
//! `anec: error:` line naming the value, file or flag, without a panic or partial output; and the
//! CLI behaviours (dry run, `--chunks auto`, `--json`, `--num-layers`, inspect, verify, generate,
//! `--quiet`, compiling with a fake `xcrun`). Tiny fixtures only: the module runs in seconds.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use super::util::{anec, files, fixture, MODELS};

const EXIT_VERIFY_FAILED: i32 = 1;
const EXIT_INPUT: i32 = 2;
const EXIT_IO: i32 = 3;

/// A fresh temp folder per test; `out()` is the output path inside it (not created).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn out(&self) -> PathBuf {
        self.path().join("out")
    }

    /// A copy of `tests/fixtures/<name>` at `<scratch>/<name>`, to be edited.
    fn copy_fixture(&self, name: &str) -> PathBuf {
        let dst = self.path().join(name);
        std::fs::create_dir(&dst).unwrap();
        for entry in std::fs::read_dir(fixture(name)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
            }
        }
        dst
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `anec convert --model <model> --output <out> --no-compile <args>`, output captured.
fn convert(model: &Path, out: &Path, args: &[&str]) -> Output {
    anec()
        .arg("convert")
        .arg("--model")
        .arg(model)
        .arg("--output")
        .arg(out)
        .arg("--no-compile")
        .args(args)
        .output()
        .expect("anec runs")
}

/// Entries of `dir` whose name starts `.anec-` (temp folders of an interrupted write).
fn temp_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".anec-"))
                .collect()
        })
        .unwrap_or_default()
}

/// The process failed with `code`, said `anec: error: …` holding every needle, did not panic,
/// and left neither `out` nor a `.anec-*` temp folder beside it. Returns stderr.
fn assert_fails(output: &Output, code: i32, needles: &[&str], out: &Path) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit code; stderr:\n{stderr}"
    );
    assert!(
        stderr.starts_with("anec: error: "),
        "stderr must start with `anec: error: `:\n{stderr}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr must name {needle:?}:\n{stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists(), "{} was left behind", out.display());
    if let Some(parent) = out.parent() {
        assert_eq!(
            temp_leftovers(parent),
            Vec::<String>::new(),
            "temp folders left in {}",
            parent.display()
        );
    }
    stderr
}

fn assert_ok(output: &Output) {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr:\n{}",
        text(&output.stderr)
    );
}

// ---------------------------------------------------------------- a tiny safetensors editor

/// The header (without `__metadata__`) and the data area of a safetensors file.
fn read_safetensors(path: &Path) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header.remove("__metadata__");
    (header, bytes[8 + n..].to_vec())
}

/// Writes `header` + `data` as given (offsets untouched), header padded to 8 bytes.
fn write_safetensors_raw(path: &Path, header: &serde_json::Map<String, Value>, data: &[u8]) {
    let mut h = serde_json::to_vec(header).unwrap();
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

fn offsets(entry: &Value) -> (usize, usize) {
    let o = entry["data_offsets"].as_array().unwrap();
    (
        o[0].as_u64().unwrap() as usize,
        o[1].as_u64().unwrap() as usize,
    )
}

/// Rewrites the file without `tensor`, the data area compacted (a well-formed file).
fn drop_tensor(path: &Path, tensor: &str) {
    let (mut header, data) = read_safetensors(path);
    assert!(
        header.remove(tensor).is_some(),
        "{tensor} not in the fixture"
    );
    let mut names: Vec<String> = header.keys().cloned().collect();
    names.sort_by_key(|n| offsets(&header[n]).0);
    let mut packed = Vec::new();
    for name in names {
        let (b, e) = offsets(&header[&name]);
        let start = packed.len();
        packed.extend_from_slice(&data[b..e]);
        header.get_mut(&name).unwrap()["data_offsets"] = serde_json::json!([start, packed.len()]);
    }
    write_safetensors_raw(path, &header, &packed);
}

const Q_PROJ: &str = "model.layers.0.self_attn.q_proj.weight";

// ---------------------------------------------------------------- bad inputs

#[test]
fn missing_model_folder_exits_2_naming_it() {
    let s = Scratch::new();
    let model = s.path().join("no-such-model");
    let o = convert(&model, &s.out(), &[]);
    assert_fails(
        &o,
        EXIT_INPUT,
        &[&model.display().to_string(), "does not exist"],
        &s.out(),
    );
}

/// HF_HUB_CACHE is an empty folder and HF_ENDPOINT a closed local port: even a bug that
/// ignored offline mode could not reach the network.
fn hub_convert(s: &Scratch, offline_env: bool, args: &[&str]) -> Output {
    let cache = s.path().join("hf-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let mut cmd = anec();
    cmd.args(["convert", "--model", "anec-test/not-cached", "--output"])
        .arg(s.out())
        .args(args)
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HOME", s.path().join("hf-home"))
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("HF_TOKEN");
    if offline_env {
        cmd.env("HF_HUB_OFFLINE", "1");
    } else {
        cmd.env_remove("HF_HUB_OFFLINE");
    }
    cmd.output().unwrap()
}

#[test]
fn hub_id_not_in_cache_while_offline_exits_2_naming_the_id_and_cache() {
    let s = Scratch::new();
    for (env, args) in [(true, &[][..]), (false, &["--offline"][..])] {
        let o = hub_convert(&s, env, args);
        let err = assert_fails(
            &o,
            EXIT_INPUT,
            &[
                "anec-test/not-cached",
                "not in the Hugging Face cache",
                "offline",
            ],
            &s.out(),
        );
        assert!(err.contains("hf-cache"), "names where it looked: {err}");
    }
}

#[test]
fn config_json_missing_exits_2() {
    let s = Scratch::new();
    let model = s.copy_fixture("tiny-llama");
    std::fs::remove_file(model.join("config.json")).unwrap();
    let o = convert(&model, &s.out(), &[]);
    assert_fails(
        &o,
        EXIT_INPUT,
        &["has no config.json", "tiny-llama"],
        &s.out(),
    );
}

#[test]
fn config_json_malformed_exits_2() {
    let s = Scratch::new();
    let model = s.copy_fixture("tiny-llama");
    std::fs::write(model.join("config.json"), "{\"model_type\": \"llama\",").unwrap();
    let o = convert(&model, &s.out(), &[]);
    assert_fails(
        &o,
        EXIT_INPUT,
        &["config.json", "is not a valid model config", "line 1"],
        &s.out(),
    );
}

#[test]
fn unsupported_model_type_exits_2_naming_it() {
    let s = Scratch::new();
    let model = s.copy_fixture("tiny-llama");
    let cfg = std::fs::read_to_string(model.join("config.json")).unwrap();
    let cfg = cfg.replace("\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"");
    assert!(cfg.contains("gpt2"));
    std::fs::write(model.join("config.json"), cfg).unwrap();
    let o = convert(&model, &s.out(), &[]);
    assert_fails(
        &o,
        EXIT_INPUT,
        &[
            "config.json",
            "model_type \"gpt2\" is not supported",
            "llama",
        ],
        &s.out(),
    );
}

#[test]
fn truncated_safetensors_exits_2_naming_the_file() {
    let s = Scratch::new();
    let model = s.copy_fixture("tiny-llama");
    let st = model.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    // Cut in the data area: the last tensors' offsets run past the end.
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let o = convert(&model, &s.out(), &[]);
    assert_fails(
        &o,
        EXIT_INPUT,
        &["model.safetensors", "outside the data area"],
        &s.out(),
    );
    // Cut inside the 8-byte header length.
    std::fs::write(&st, &bytes[..5]).unwrap();
    let o = convert(&model, &s.out(), &[]);
    assert_fails(
        &o,
        EXIT_INPUT,
        &["model.safetensors is truncated", "5 bytes"],
        &s.out(),
    );
}

#[test]
fn lying_safetensors_header_exits_2_naming_the_tensor() {
    let s = Scratch::new();
    let model = s.copy_fixture("tiny-llama");
    let st = model.join("model.safetensors");
    let (mut header, data) = read_safetensors(&st);
    // Claims twice the rows its data_offsets span.
    header.get_mut(Q_PROJ).unwrap()["shape"] = serde_json::json!([128, 64]);
    write_safetensors_raw(&st, &header, &data);
    let o = convert(&model, &s.out(), &[]);
    assert_fails(
        &o,
        EXIT_INPUT,
        &[
            "model.safetensors",
            Q_PROJ,
            "[128, 64]",
            "needs 32768 bytes",
        ],
        &s.out(),
    );
}

#[test]
fn missing_tensor_exits_2_naming_it() {
    let s = Scratch::new();
    let model = s.copy_fixture("tiny-llama");
    let tensor = "model.layers.1.mlp.up_proj.weight";
    drop_tensor(&model.join("model.safetensors"), tensor);
    let o = convert(&model, &s.out(), &[]);
    assert_fails(
        &o,
        EXIT_INPUT,
        &[tensor, "is missing from the checkpoint"],
        &s.out(),
    );
}

#[test]
fn tensor_with_the_wrong_shape_exits_2_naming_both_shapes() {
    let s = Scratch::new();
    let model = s.copy_fixture("tiny-llama");
    let cfg = std::fs::read_to_string(model.join("config.json")).unwrap();
    let cfg = cfg.replace("\"intermediate_size\": 172", "\"intermediate_size\": 128");
    std::fs::write(model.join("config.json"), cfg).unwrap();
    let o = convert(&model, &s.out(), &[]);
    assert_fails(
        &o,
        EXIT_INPUT,
        &[
            "model.layers.0.mlp.gate_proj.weight",
            "has shape [172, 64] but the config expects [128, 64]",
        ],
        &s.out(),
    );
}

#[test]
fn weights_beyond_fp16_exit_2_naming_tensor_and_value() {
    let s = Scratch::new();
    let model = s.copy_fixture("tiny-llama");
    let st = model.join("model.safetensors");
    let (header, mut data) = read_safetensors(&st);
    assert_eq!(header[Q_PROJ]["dtype"], "F32", "tiny-llama is float32");
    let (begin, _) = offsets(&header[Q_PROJ]);
    data[begin..begin + 4].copy_from_slice(&1e6f32.to_le_bytes());
    write_safetensors_raw(&st, &header, &data);
    // The fp16 path and the quantizer's path both refuse it.
    for lut in ["none", "6"] {
        let o = convert(&model, &s.out(), &["--lut", lut]);
        let err = assert_fails(&o, EXIT_INPUT, &[Q_PROJ, "1000000"], &s.out());
        assert!(err.contains("fp16"), "--lut {lut}: {err}");
    }
}

#[test]
fn bad_flag_values_exit_2_naming_flag_and_value() {
    let s = Scratch::new();
    let model = fixture("tiny-llama");
    let cases: [(&[&str], &[&str]); 7] = [
        (&["--chunks", "0"], &["--chunks 0", "at least 1"]),
        (&["--chunks", "5"], &["--chunks 5", "only 4 layers"]),
        (&["--chunks", "two"], &["--chunks \"two\"", "auto"]),
        (&["--lut", "5"], &["--lut", "\"5\"", "1, 2, 3, 4, 6, 8"]),
        (
            &["--batch-size", "1024", "--context-length", "512"],
            &["--batch-size 1024", "--context-length (512)"],
        ),
        (&["--num-layers", "9"], &["--num-layers 9", "4 layers"]),
        (
            &["--num-layers", "1", "--chunks", "2"],
            &["--chunks 2", "--num-layers 1 leaves only 1 layer"],
        ),
    ];
    for (args, needles) in cases {
        let o = convert(&model, &s.out(), args);
        assert_fails(&o, EXIT_INPUT, needles, &s.out());
    }
}

#[test]
fn usage_errors_exit_2_with_the_anec_prefix() {
    let s = Scratch::new();
    let o = anec()
        .args(["convert", "--model", "x", "--bogus"])
        .output()
        .unwrap();
    assert_fails(&o, EXIT_INPUT, &["--bogus"], &s.out());
    let o = anec().args(["convert"]).output().unwrap();
    assert_fails(&o, EXIT_INPUT, &["--model"], &s.out());
}

#[test]
fn existing_output_is_refused_untouched_without_force_and_replaced_with_it() {
    let s = Scratch::new();
    let out = s.out();
    let quick = ["--num-layers", "1", "--chunks", "1", "-q"];
    assert_ok(&convert(&fixture("tiny-llama"), &out, &quick));
    let before = files(&out);
    let o = convert(&fixture("tiny-llama"), &out, &quick);
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(EXIT_INPUT), "{stderr}");
    assert!(stderr.starts_with("anec: error: "), "{stderr}");
    assert!(
        stderr.contains(&out.display().to_string()) && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(files(&out), before, "the existing output was touched");
    assert_eq!(temp_leftovers(s.path()), Vec::<String>::new());

    // --force replaces an anec output: two layers now instead of one.
    let o = convert(
        &fixture("tiny-llama"),
        &out,
        &["--num-layers", "2", "--chunks", "1", "-q", "--force"],
    );
    assert_ok(&o);
    assert_eq!(read_meta(&out)["model_info"]["parameters"]["num_layers"], 2);
    assert_eq!(temp_leftovers(s.path()), Vec::<String>::new());
}

/// `convert --force` into `out` (run in `cwd`) fails with exit 2 naming every needle, and the
/// model folder `model` and the folder `kept` are byte for byte as before.
fn assert_force_refused(model: &Path, out: &Path, cwd: &Path, kept: &Path, needles: &[&str]) {
    let model_before = files(model);
    let kept_before = files(kept);
    let o = anec()
        .current_dir(cwd)
        .args([
            "convert",
            "--no-compile",
            "-q",
            "--force",
            "--num-layers",
            "1",
            "--chunks",
            "1",
            "--model",
        ])
        .arg(model)
        .arg("--output")
        .arg(out)
        .output()
        .unwrap();
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(EXIT_INPUT), "{stderr}");
    assert!(
        stderr.starts_with("anec: error: --force will not replace "),
        "{stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr must name {n:?}:\n{stderr}");
    }
    assert_eq!(files(model), model_before, "the model folder changed");
    assert_eq!(files(kept), kept_before, "{} changed", kept.display());
    assert_eq!(temp_leftovers(cwd), Vec::<String>::new());
}

#[test]
fn force_never_replaces_the_model_or_a_folder_anec_did_not_write() {
    let s = Scratch::new();
    let model = s.copy_fixture("tiny-llama");
    let root = s.path();
    // The model folder itself, a folder that contains it, and the current directory.
    assert_force_refused(&model, &model, root, &model, &["source model"]);
    assert_force_refused(&model, root, &model, root, &["source model"]);
    // A real anec output inside the model folder is still the model's folder.
    let inside = model.join("anec-out");
    assert_ok(&convert(
        &model,
        &inside,
        &["--num-layers", "1", "--chunks", "1", "-q"],
    ));
    assert_force_refused(&model, &inside, root, &model, &["inside it"]);
    std::fs::remove_dir_all(&inside).unwrap();

    // Folders that are not anec outputs.
    let foreign = root.join("photos");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("holiday.jpg"), "jpeg").unwrap();
    assert_force_refused(&model, &foreign, root, &foreign, &["holiday.jpg"]);
    let anec_like = root.join("anec-like");
    std::fs::create_dir(&anec_like).unwrap();
    std::fs::write(anec_like.join("meta.yaml"), "model_info: {}\n").unwrap();
    std::fs::write(anec_like.join("meta.json"), "{\"model_info\": {}}\n").unwrap();
    assert_force_refused(
        &model,
        &anec_like,
        root,
        &anec_like,
        &["no meta.json written by anec"],
    );
    let file = root.join("a-file");
    std::fs::write(&file, "data").unwrap();
    assert_force_refused(&model, &file, root, root, &["not a folder"]);

    // An anec output with one file of the user's added is not replaced either.
    let out = root.join("out");
    assert_ok(&convert(
        &model,
        &out,
        &["--num-layers", "1", "--chunks", "1", "-q"],
    ));
    assert_force_refused(&model, Path::new("."), &out, &out, &["current directory"]);
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    assert_force_refused(&model, &out, root, &out, &["notes.txt"]);
}

#[cfg(unix)]
#[test]
fn force_refuses_a_symlinked_output() {
    let s = Scratch::new();
    let out = s.out();
    assert_ok(&convert(
        &fixture("tiny-llama"),
        &out,
        &["--num-layers", "1", "--chunks", "1", "-q"],
    ));
    let link = s.path().join("link");
    std::os::unix::fs::symlink(&out, &link).unwrap();
    assert_force_refused(
        &fixture("tiny-llama"),
        &link,
        s.path(),
        &out,
        &["symbolic link"],
    );
    assert!(link.is_symlink());
}

#[cfg(unix)]
#[test]
fn a_failure_before_the_swap_keeps_the_previous_output() {
    let s = Scratch::new();
    let out = s.out();
    assert_ok(&convert(
        &fixture("tiny-llama"),
        &out,
        &["--num-layers", "1", "--chunks", "1", "-q"],
    ));
    let before = files(&out);
    // Compiling is the last step that can fail before the swap.
    let path = fake_xcrun(s.path(), "#!/bin/sh\necho 'compiler crashed' >&2\nexit 1\n");
    let o = anec()
        .args([
            "convert",
            "--compile",
            "--force",
            "-q",
            "--num-layers",
            "2",
            "--model",
        ])
        .arg(fixture("tiny-llama"))
        .arg("--output")
        .arg(&out)
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("compiler crashed"));
    assert_eq!(files(&out), before, "the previous output changed");
    assert_eq!(temp_leftovers(s.path()), Vec::<String>::new());
}

/// Whether this process can create files in a folder it made read-only (false as root).
fn permissions_enforced(dir: &Path) -> bool {
    std::fs::write(dir.join("probe"), b"").is_err()
}

#[cfg(unix)]
#[test]
fn unwritable_output_exits_3_naming_the_path() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let model = fixture("tiny-llama");
    // A regular file where a folder is needed fails for root too.
    let file = s.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let out = file.join("out");
    let o = convert(&model, &out, &[]);
    assert_fails(&o, EXIT_IO, &[&file.display().to_string()], &out);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a folder");
    assert_eq!(temp_leftovers(s.path()), Vec::<String>::new());

    // A read-only parent, when permissions apply to this user.
    let ro = s.path().join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    if permissions_enforced(&ro) {
        let out = ro.join("out");
        let o = convert(&model, &out, &[]);
        assert_fails(
            &o,
            EXIT_IO,
            &[&ro.display().to_string(), "ermission denied"],
            &out,
        );
    } else {
        eprintln!(
            "running as root: the read-only folder case is covered by the file-as-parent case"
        );
    }
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn inspect_of_a_non_package_exits_2() {
    let s = Scratch::new();
    let dir = fixture("tiny-llama");
    let o = anec().arg("inspect").arg(&dir).output().unwrap();
    assert_fails(
        &o,
        EXIT_INPUT,
        &[&dir.display().to_string(), "is not a .mlpackage"],
        &s.out(),
    );
    let missing = s.path().join("absent.mlpackage");
    let o = anec().arg("inspect").arg(&missing).output().unwrap();
    assert_fails(
        &o,
        EXIT_INPUT,
        &["absent.mlpackage", "does not exist"],
        &s.out(),
    );
}

#[test]
fn verify_of_a_folder_without_meta_exits_2() {
    let s = Scratch::new();
    let dir = fixture("tiny-llama");
    let o = anec().arg("verify").arg(&dir).output().unwrap();
    assert_fails(&o, EXIT_INPUT, &["meta.json"], &s.out());
    let o = anec()
        .args(["generate", "--prompt", "hi"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_fails(&o, EXIT_INPUT, &["meta.json"], &s.out());
}

// ---------------------------------------------------------------- behaviours

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let s = Scratch::new();
    let o = convert(
        &fixture("tiny-llama"),
        &s.out(),
        &["--dry-run", "--lut", "4"],
    );
    assert_ok(&o);
    let stdout = text(&o.stdout);
    for needle in [
        "dry run: nothing written",
        "4 layers in 2 chunk(s)",
        "embeddings.mlpackage",
        "combined_lut4_chunk_01of02.mlpackage",
        "layers 0..2",
        "layers 2..4",
        "lm_head_lut6.mlpackage",
        "KiB",
        "iOS 1 GB",
    ] {
        assert!(stdout.contains(needle), "{needle:?} in:\n{stdout}");
    }
    assert!(!s.out().exists());
    let entries: Vec<_> = std::fs::read_dir(s.path()).unwrap().collect();
    assert!(entries.is_empty(), "the dry run wrote {entries:?}");
}

fn dry_run_json(args: &[&str]) -> Value {
    let s = Scratch::new();
    let o = convert(
        &fixture("tiny-llama"),
        &s.out(),
        &[&["--dry-run", "--json"], args].concat(),
    );
    assert_ok(&o);
    serde_json::from_slice(&o.stdout).expect("--json prints JSON")
}

fn largest_chunk_bytes(plan: &Value) -> u64 {
    plan["plan"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"].get("chunk").is_some())
        .map(|p| p["estimated_bytes"].as_u64().unwrap())
        .max()
        .unwrap()
}

#[test]
fn chunks_auto_picks_the_smallest_count_that_fits_max_chunk_mb() {
    // fp16 with a 12288-token context: each chunk carries 768 KiB of rotary tables, so the four
    // layers (90 KiB each) fit 1 MiB only in two chunks.
    let base = ["--lut", "none", "--context-length", "12288"];
    let auto = dry_run_json(&[&base[..], &["--chunks", "auto", "--max-chunk-mb", "1"]].concat());
    assert_eq!(auto["plan"]["num_chunks"], 2, "{auto:#}");
    assert!(largest_chunk_bytes(&auto) <= 1 << 20);
    let one = dry_run_json(&[&base[..], &["--chunks", "1"]].concat());
    assert!(
        largest_chunk_bytes(&one) > 1 << 20,
        "one chunk must not fit"
    );
    let roomy = dry_run_json(&[&base[..], &["--chunks", "auto", "--max-chunk-mb", "2"]].concat());
    assert_eq!(roomy["plan"]["num_chunks"], 1);
}

#[test]
fn convert_json_lists_the_written_files() {
    let s = Scratch::new();
    let o = convert(&fixture("tiny-qwen3"), &s.out(), &["--json", "--lut", "4"]);
    assert_ok(&o);
    assert!(o.stderr.is_empty(), "--json is quiet: {}", text(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    assert_eq!(report["dry_run"], false);
    let files: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "embeddings.mlpackage",
            "combined_lut4_chunk_01of02.mlpackage",
            "combined_lut4_chunk_02of02.mlpackage",
            "lm_head_lut6.mlpackage"
        ]
    );
    for f in report["files"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        assert!(s.out().join(name).join("Manifest.json").is_file(), "{name}");
        assert!(f["weight_bytes"].as_u64().unwrap() > 0, "{name}");
        assert!(f["compiled"].is_null(), "--no-compile");
    }
    assert_eq!(
        report["meta"]["model_info"]["architecture"], "qwen3",
        "{report:#}"
    );
    assert!(!report["quant"]["tensors"].as_array().unwrap().is_empty());
}

fn read_meta(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap()
}

#[test]
fn num_layers_converts_only_the_first_layers() {
    let s = Scratch::new();
    let o = convert(
        &fixture("tiny-llama"),
        &s.out(),
        &["--num-layers", "2", "-q"],
    );
    assert_ok(&o);
    let meta = read_meta(&s.out());
    let p = &meta["model_info"]["parameters"];
    assert_eq!(p["num_layers"], 2);
    assert_eq!(p["num_chunks"], 2);
    assert_eq!(p["chunk_layers"], serde_json::json!([[0, 1], [1, 2]]));
    let o = anec()
        .arg("inspect")
        .arg(s.out().join("combined_lut6_chunk_02of02.mlpackage"))
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(
        text(&o.stdout).contains("layers 1..2"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn inspect_json_lists_functions_and_the_state() {
    let s = Scratch::new();
    assert_ok(&convert(&fixture("tiny-llama"), &s.out(), &["-q"]));
    let pkg = s.out().join("combined_lut6_chunk_01of02.mlpackage");
    let o = anec()
        .arg("inspect")
        .arg(&pkg)
        .arg("--json")
        .output()
        .unwrap();
    assert_ok(&o);
    let r: Value = serde_json::from_slice(&o.stdout).expect("inspect --json prints JSON");
    assert_eq!(r["default_function"], "infer");
    let functions = r["functions"].as_array().unwrap();
    let names: Vec<&str> = functions
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["infer", "prefill"]);
    for f in functions {
        let states = f["states"].as_array().unwrap();
        assert_eq!(states.len(), 1, "{f:#}");
        assert_eq!(states[0]["name"], "model_model_kv_cache_0");
        assert_eq!(states[0]["dtype"], "fp16");
    }
    let prefill_hidden = &functions[1]["inputs"][0];
    assert_eq!(
        prefill_hidden["shape"],
        serde_json::json!(["1", "64", "64"])
    );
    assert!(r["weights"]["lut"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["bits"] == 6));
    assert!(r["weight_file_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn verify_passes_a_good_conversion_and_fails_unmeetable_thresholds() {
    let s = Scratch::new();
    assert_ok(&convert(&fixture("tiny-llama"), &s.out(), &["-q"]));
    let o = anec().arg("verify").arg(s.out()).output().unwrap();
    assert_ok(&o);
    assert!(text(&o.stdout).contains("PASSED"), "{}", text(&o.stdout));

    let o = anec()
        .arg("verify")
        .arg(s.out())
        .args(["--min-top1", "1.01"])
        .output()
        .unwrap();
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(EXIT_VERIFY_FAILED), "{stderr}");
    assert!(
        stderr.starts_with("anec: verification failed: top-1 agreement")
            && stderr.contains("< 101.00 %"),
        "{stderr}"
    );
    assert!(text(&o.stdout).contains("FAILED"), "{}", text(&o.stdout));
    assert!(!stderr.contains("panicked"));

    // --json prints the report even when it fails.
    let o = anec()
        .arg("verify")
        .arg(s.out())
        .args(["--min-top1", "1.01", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(EXIT_VERIFY_FAILED));
    let r: Value = serde_json::from_slice(&o.stdout).expect("verify --json prints JSON");
    assert!(!r["failures"].as_array().unwrap().is_empty(), "{r:#}");
}

#[test]
fn verify_fails_a_lut2_conversion_at_the_default_thresholds() {
    let s = Scratch::new();
    assert_ok(&convert(
        &fixture("tiny-llama"),
        &s.out(),
        &["-q", "--lut", "2"],
    ));
    let o = anec().arg("verify").arg(s.out()).output().unwrap();
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(EXIT_VERIFY_FAILED), "{stderr}");
    assert!(
        stderr.contains("verification failed") && stderr.contains("top-1"),
        "{stderr}"
    );
}

#[test]
fn generate_prints_the_prompt_and_a_speed() {
    let s = Scratch::new();
    assert_ok(&convert(&fixture("tiny-llama"), &s.out(), &["-q"]));
    let o = anec()
        .arg("generate")
        .arg(s.out())
        .args(["--prompt", "Once upon a time", "--max-tokens", "5"])
        .output()
        .unwrap();
    assert_ok(&o);
    let stdout = text(&o.stdout);
    assert!(stdout.starts_with("Once upon a time"), "{stdout}");
    let stderr = text(&o.stderr);
    assert!(stderr.contains("tokens/s"), "{stderr}");
    assert!(stderr.contains("generated"), "{stderr}");
    // Nothing to generate: no made-up speed.
    let o = anec()
        .arg("generate")
        .arg(s.out())
        .args(["--prompt", "Once", "--max-tokens", "0"])
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(
        text(&o.stderr).contains("0 generated, 0.0 tokens/s"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn quiet_prints_only_the_summary() {
    let s = Scratch::new();
    let o = convert(&fixture("tiny-llama"), &s.out(), &["--quiet"]);
    assert_ok(&o);
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("wrote "), "{}", text(&o.stdout));
}

/// The default summary fits a screen: no per-tensor rows, and the group-size fallback of
/// tiny-llama's 172-row gate and up projections said once for all eight tensors.
#[test]
fn default_summary_has_no_per_tensor_rows_and_grouped_notes() {
    let s = Scratch::new();
    let o = convert(
        &fixture("tiny-llama"),
        &s.out(),
        &["--quiet", "--lut", "4", "--calibration", "none"],
    );
    assert_ok(&o);
    let out = text(&o.stdout);
    assert_eq!(
        out.matches("note: group 8 does not divide 172 rows; used 4 in 8 tensors\n")
            .count(),
        1,
        "{out}"
    );
    assert_eq!(out.matches("note: ").count(), 1, "{out}");
    // Tensor names appear only in flagged lines (rows were `  <part>/<tensor>  shape ...`).
    assert!(
        out.lines()
            .filter(|l| l.contains(".weight"))
            .all(|l| l.starts_with("flagged: ")),
        "no per-tensor rows:\n{out}"
    );
    for needle in [
        "SNR by role",
        "plan: llama, 4 layers in 2 chunk(s)",
        "time: ",
    ] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    assert!(
        out.lines().count() < 30,
        "{} lines:\n{out}",
        out.lines().count()
    );
}

/// `--report x.csv`: a header, then one row per palettized tensor in the `--json` order;
/// `--report x.json`: the same rows as the `--json` report's `quant`.
#[test]
fn report_file_holds_one_row_per_tensor() {
    let s = Scratch::new();
    let csv = s.path().join("x.csv");
    let csv_arg = csv.display().to_string();
    let o = convert(
        &fixture("tiny-llama"),
        &s.out(),
        &[
            "--json",
            "--lut",
            "4",
            "--calibration",
            "none",
            "--report",
            &csv_arg,
        ],
    );
    assert_ok(&o);
    let report: Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    let tensors = report["quant"]["tensors"].as_array().unwrap();
    assert!(!tensors.is_empty());
    let text = std::fs::read_to_string(&csv).expect("the CSV report");
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("name,role,rows,cols,bits,group_size,"),
        "{text}"
    );
    let names: Vec<&str> = lines.map(|l| l.split(',').next().unwrap()).collect();
    let expected: Vec<&str> = tensors
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, expected);

    let json = s.path().join("x.json");
    let out2 = s.path().join("out2");
    let o = anec()
        .arg("convert")
        .arg("--model")
        .arg(fixture("tiny-llama"))
        .arg("--output")
        .arg(&out2)
        .args([
            "--no-compile",
            "--quiet",
            "--lut",
            "4",
            "--calibration",
            "none",
        ])
        .arg("--report")
        .arg(&json)
        .output()
        .expect("anec runs");
    assert_ok(&o);
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // The same rows but for the time each took.
    let untimed = |rows: &Value| -> Vec<Value> {
        let mut rows = rows.as_array().expect("tensor rows").clone();
        for r in &mut rows {
            r.as_object_mut().unwrap().remove("seconds");
        }
        rows
    };
    assert_eq!(
        untimed(&written["tensors"]),
        untimed(&report["quant"]["tensors"])
    );
}

/// Another extension is refused before any work: the model is not even looked at.
#[test]
fn report_file_of_another_kind_is_refused_before_any_work() {
    let s = Scratch::new();
    let o = convert(
        &s.path().join("no-such-model"),
        &s.out(),
        &["--report", "x.txt"],
    );
    let err = assert_fails(
        &o,
        EXIT_INPUT,
        &["--report", "x.txt", ".csv or .json"],
        &s.out(),
    );
    assert!(!err.contains("no-such-model"), "{err}");
}

/// The command run under a pseudo-terminal by util-linux `script` (None when it is missing):
/// what a user's terminal would receive.
fn under_pty(args: &[String]) -> Option<String> {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let o = std::process::Command::new("script")
        .args(["-qfec", &quoted.join(" "), "/dev/null"])
        .env("COLUMNS", "200")
        .output()
        .ok()?;
    assert!(o.status.success(), "{}", text(&o.stdout));
    Some(text(&o.stdout))
}

/// The last `N tensors, A/B` of the progress display (before the summary, whose quantization
/// table also counts tensors): source bytes done and total.
fn last_bytes_done(shown: &str) -> Option<(String, String)> {
    let shown = &shown[..shown.find("wrote ")?];
    let at = shown.rfind("tensors, ")? + "tensors, ".len();
    let rest = &shown[at..];
    let end = rest.find(['\r', '\n', '\x1b']).unwrap_or(rest.len());
    let (done, total) = rest[..end].trim().split_once('/')?;
    Some((done.to_string(), total.to_string()))
}

#[test]
fn progress_shows_on_a_terminal_unless_quiet() {
    let s = Scratch::new();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_anec"));
    let args = |model: &str, out: &str, extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            bin.display().to_string(),
            "convert".into(),
            "--model".into(),
            fixture(model).display().to_string(),
            "--output".into(),
            s.path().join(out).display().to_string(),
            "--no-compile".into(),
            "--lut".into(),
            "4".into(),
        ];
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };
    for model in MODELS {
        let Some(shown) = under_pty(&args(model, model, &[])) else {
            eprintln!("no `script` on PATH: progress test skipped");
            return;
        };
        assert!(shown.contains("wrote "), "{shown}");
        // Part k/N, the stage and tensor, the bar with its ETA. Only the first frames are
        // certain: indicatif drops redraws beyond 20 per second, and the tiny runs take 0.1 s.
        for needle in [
            "1/4 embeddings: ",
            "converting embed_tokens (fp16)",
            " eta ",
            " tensors, ",
        ] {
            assert!(shown.contains(needle), "{model}: {needle:?} in:\n{shown}");
        }
        // The display is rate-limited, so its last frame may stop short of the total (the
        // totals themselves are pinned by convert's unit test).
        let (done, total) = last_bytes_done(&shown).expect("bytes in the progress line");
        assert!(!done.is_empty() && !total.is_empty(), "{model}: {shown}");
    }
    let quiet = under_pty(&args("tiny-llama", "quiet", &["--quiet"])).unwrap();
    assert!(quiet.contains("wrote "), "{quiet}");
    assert!(
        !quiet.contains(" eta ") && !quiet.contains("1/4 embeddings"),
        "--quiet shows progress:\n{quiet}"
    );
}

// ---------------------------------------------------------------- compiling with xcrun

#[cfg(unix)]
fn fake_xcrun(dir: &Path, script: &str) -> std::ffi::OsString {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let xcrun = bin.join("xcrun");
    std::fs::write(&xcrun, script).unwrap();
    std::fs::set_permissions(&xcrun, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut paths = vec![bin];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

/// `xcrun coremlcompiler compile X.mlpackage DIR` → `DIR/X.mlmodelc/coremldata.bin`.
const GOOD_XCRUN: &str = "#!/bin/sh\n\
    [ \"$1 $2\" = \"coremlcompiler compile\" ] || { echo \"unexpected: $*\" >&2; exit 64; }\n\
    [ -f \"$3/Manifest.json\" ] || { echo \"no package at $3\" >&2; exit 65; }\n\
    out=\"$4/$(basename \"$3\" .mlpackage).mlmodelc\"\n\
    mkdir -p \"$out\" && echo compiled > \"$out/coremldata.bin\"\n";

#[cfg(unix)]
#[test]
fn xcrun_on_path_compiles_every_package_and_meta_names_the_mlmodelc() {
    let s = Scratch::new();
    let path = fake_xcrun(s.path(), GOOD_XCRUN);
    let out = s.out();
    let o = anec()
        .args(["convert", "--model"])
        .arg(fixture("tiny-llama"))
        .arg("--output")
        .arg(&out)
        .args(["--json", "--num-layers", "2"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_ok(&o);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let compiled: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["compiled"].as_str().expect("every package compiled"))
        .collect();
    assert_eq!(
        compiled,
        [
            "embeddings.mlmodelc",
            "combined_lut6_chunk_01of02.mlmodelc",
            "combined_lut6_chunk_02of02.mlmodelc",
            "lm_head_lut6.mlmodelc"
        ]
    );
    for c in &compiled {
        assert!(out.join(c).join("coremldata.bin").is_file(), "{c}");
        let pkg = c.replace(".mlmodelc", ".mlpackage");
        assert!(out.join(&pkg).join("Manifest.json").is_file(), "{pkg} kept");
    }
    let p = &read_meta(&out)["model_info"]["parameters"];
    assert_eq!(p["embeddings"], "embeddings.mlmodelc");
    assert_eq!(p["lm_head"], "lm_head_lut6.mlmodelc");
    assert_eq!(p["ffn"], "combined_lut6_chunk_01of02.mlmodelc");
    assert_eq!(
        p["chunk_files"],
        serde_json::json!([
            "combined_lut6_chunk_01of02.mlmodelc",
            "combined_lut6_chunk_02of02.mlmodelc"
        ])
    );
    let yaml = std::fs::read_to_string(out.join("meta.yaml")).unwrap();
    assert!(yaml.contains("lm_head: lm_head_lut6.mlmodelc"), "{yaml}");
    // verify and generate read the .mlpackage beside each named .mlmodelc.
    let o = anec().arg("verify").arg(&out).output().unwrap();
    assert_ok(&o);
    let o = anec()
        .arg("generate")
        .arg(&out)
        .args(["--prompt", "hi", "--max-tokens", "2"])
        .output()
        .unwrap();
    assert_ok(&o);

    // --no-compile: the same xcrun on PATH is not run.
    let o = anec()
        .args(["convert", "--model"])
        .arg(fixture("tiny-llama"))
        .arg("--output")
        .arg(s.path().join("out3"))
        .args(["--num-layers", "2", "-q", "--no-compile"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_ok(&o);
    let names: Vec<String> = std::fs::read_dir(s.path().join("out3"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".mlmodelc")), "{names:?}");
    let p = &read_meta(&s.path().join("out3"))["model_info"]["parameters"];
    assert_eq!(p["lm_head"], "lm_head_lut6.mlpackage");
}

#[cfg(unix)]
#[test]
fn failing_xcrun_names_the_package_and_leaves_nothing() {
    let s = Scratch::new();
    let path = fake_xcrun(
        s.path(),
        "#!/bin/sh\necho 'coremlcompiler: unsupported op' >&2\nexit 1\n",
    );
    let o = anec()
        .args(["convert", "--model"])
        .arg(fixture("tiny-llama"))
        .arg("--output")
        .arg(s.out())
        .args(["--num-layers", "1", "--chunks", "1", "-q"])
        .env("PATH", &path)
        .output()
        .unwrap();
    let err = assert_fails(
        &o,
        EXIT_INPUT,
        &["embeddings.mlpackage", "unsupported op"],
        &s.out(),
    );
    assert!(!err.contains(".anec-"), "names a temp folder: {err}");
}

#[test]
fn a_reader_that_goes_away_is_no_panic() {
    // `anec convert … | true`: stdout is closed long before the summary is printed.
    let s = Scratch::new();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_anec"))
        .args(["convert", "--no-compile", "--model"])
        .arg(fixture("tiny-llama"))
        .arg("--output")
        .arg(s.out())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let stderr = text(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(s.out().join("meta.json").is_file());
}

/// Converts tiny-qwen2's first two layers at `--lut 4` with `RAYON_NUM_THREADS=threads` and
/// the `extra` flags into `out`, and returns the files written.
fn calibrated_conversion(
    out: &Path,
    threads: &str,
    extra: &[&str],
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let o = anec()
        .env("RAYON_NUM_THREADS", threads)
        .args([
            "convert",
            "--no-compile",
            "-q",
            "--lut",
            "4",
            "--num-layers",
            "2",
        ])
        .arg("--model")
        .arg(fixture("tiny-qwen2"))
        .arg("--output")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert_ok(&o);
    files(out)
}

fn weight_bins(v: &std::collections::BTreeMap<String, Vec<u8>>) -> Vec<Vec<u8>> {
    v.iter()
        .filter(|(p, _)| p.ends_with("weight.bin"))
        .map(|(_, b)| b.clone())
        .collect()
}

/// A calibrated conversion (the default) gives the same bytes whatever the thread count, and
/// `--calibration none` gives other LUTs than the calibrated one.
#[test]
fn calibrated_bytes_do_not_depend_on_the_thread_count() {
    let s = Scratch::new();
    let one = calibrated_conversion(&s.path().join("t1"), "1", &[]);
    let two = calibrated_conversion(&s.path().join("t2"), "2", &[]);
    assert!(
        one == two,
        "calibrated output differs between 1 and 2 threads"
    );
    let plain = calibrated_conversion(&s.path().join("plain"), "2", &["--calibration", "none"]);
    assert_ne!(
        weight_bins(&one),
        weight_bins(&plain),
        "calibration changed no LUT"
    );
}

/// LUT-GPTQ and text sampled from the model are as reproducible as the default: the same
/// bytes with 1 and 2 threads, and LUTs of their own.
#[test]
fn gptq_and_self_calibration_do_not_depend_on_the_thread_count() {
    let s = Scratch::new();
    let weighted = calibrated_conversion(&s.path().join("w"), "2", &[]);
    for (name, flags) in [
        ("gptq", ["--calibration-method", "gptq"]),
        ("self", ["--calibration", "self"]),
    ] {
        let one = calibrated_conversion(&s.path().join(format!("{name}1")), "1", &flags);
        let two = calibrated_conversion(&s.path().join(format!("{name}2")), "2", &flags);
        assert!(one == two, "{name}: output differs between 1 and 2 threads");
        assert_ne!(
            weight_bins(&one),
            weight_bins(&weighted),
            "{name} gave the weighted LUTs"
        );
    }
}
