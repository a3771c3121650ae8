//! source / arch / weights: the fixtures' configs in both key styles, every expected tensor with
//! its shape, the hub cache layout (offline, revisions, cache-dir precedence), and corrupt input
//! refused with a message naming the file, tensor and value.

use std::path::{Path, PathBuf};

use anec::arch::{self, names, DecoderConfig, RopeScaling};
use anec::source::{self, HubEnv, ModelFiles, ModelSpec};
use anec::weights::{WeightError, WeightStore};
use serde_json::{json, Map, Value};

use super::util::{expected_tensors, fixture, MODELS};

fn config(model: &str, file: &str) -> DecoderConfig {
    DecoderConfig::from_config_file(fixture(model).join(file))
        .unwrap_or_else(|e| panic!("{model}/{file}: {e}"))
}

fn local(dir: &Path) -> ModelFiles {
    source::resolve_with(
        &ModelSpec {
            model: dir.display().to_string(),
            ..ModelSpec::default()
        },
        &HubEnv::default(),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// A copy of a fixture folder in a temp dir, to corrupt.
fn copy_fixture(model: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(model)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

/// A safetensors file split into its JSON header and data area.
fn read_st(path: &Path) -> (Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn write_st(path: &Path, header: &Map<String, Value>, data: &[u8]) {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap();
}

fn offsets(header: &Map<String, Value>, name: &str) -> (usize, usize) {
    let o = &header[name]["data_offsets"];
    (
        o[0].as_u64().unwrap() as usize,
        o[1].as_u64().unwrap() as usize,
    )
}

/// Open the store, fetch every expected tensor by name and shape, and require nothing else.
fn load_all(files: &ModelFiles, cfg: &DecoderConfig) -> Result<WeightStore, WeightError> {
    let store = WeightStore::open(files)?;
    for (name, shape) in expected_tensors(cfg) {
        store.get(&name, &shape)?;
    }
    store.ensure_all_used(&names::allowed_extras(cfg))?;
    Ok(store)
}

fn err_of(r: Result<WeightStore, WeightError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------- configs

#[test]
fn every_fixture_parses_identically_in_both_key_styles() {
    for m in MODELS {
        assert_eq!(
            config(m, "config.json"),
            config(m, "config.transformers5.json"),
            "{m}"
        );
    }
}

#[test]
fn fixture_configs_have_the_documented_variants() {
    let llama = config("tiny-llama", "config.transformers5.json");
    assert_eq!(
        llama.rope_scaling,
        RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0
        }
    );
    assert_eq!(llama.rope_theta, 5e5);
    assert!(!llama.tie_embeddings && !llama.qkv_bias && !llama.mlp_bias);
    assert_eq!((llama.num_heads, llama.num_kv_heads), (4, 2));

    let qwen2 = config("tiny-qwen2", "config.json");
    assert!(qwen2.tie_embeddings && qwen2.qkv_bias && !qwen2.o_bias && !qwen2.qk_norm);
    assert_eq!(qwen2.vocab_size, 512);
    assert_eq!(qwen2.sliding_window, vec![None; 3]);

    let qwen3 = config("tiny-qwen3", "config.json");
    assert!(qwen3.qk_norm && qwen3.tie_embeddings && !qwen3.qkv_bias);
    assert_eq!(
        (qwen3.head_dim, qwen3.hidden_size / qwen3.num_heads),
        (32, 16)
    );

    let mistral = config("tiny-mistral", "config.json");
    assert_eq!(mistral.sliding_window, vec![Some(16); 3]);
    assert_eq!(mistral.num_kv_heads, 1);
    let files = local(&fixture("tiny-mistral"));
    assert_eq!(files.weights.len(), 3);
    assert!(files.index.is_some());
}

#[test]
fn llama3_rope_matches_the_hf_formula() {
    let cfg = config("tiny-llama", "config.json");
    let inv = arch::rope_inv_freq(&cfg);
    assert_eq!(inv.len(), 8);
    // f64 replay of _compute_llama3_parameters; ours replays the float32 steps.
    for (i, &got) in inv.iter().enumerate() {
        let base = 1.0 / 5e5f64.powf((2 * i) as f64 / 16.0);
        let wavelen = 2.0 * std::f64::consts::PI / base;
        let want = if wavelen < 8192.0 / 4.0 {
            base
        } else if wavelen > 8192.0 {
            base / 32.0
        } else {
            let s = (8192.0 / wavelen - 1.0) / 3.0;
            (1.0 - s) * base / 32.0 + s * base
        };
        assert!(
            ((got - want) / want).abs() < 1e-6,
            "inv_freq[{i}] = {got}, want {want}"
        );
        assert_eq!(got, got as f32 as f64, "transformers keeps inv_freq in f32");
    }
    // The highest frequency is untouched, the lowest divided by the factor.
    assert_eq!(inv[0], 1.0);
    let default = arch::rope_inv_freq(&DecoderConfig {
        rope_scaling: RopeScaling::None,
        ..cfg.clone()
    });
    assert!((inv[7] - default[7] / 32.0).abs() < 1e-12);
    let linear = arch::rope_inv_freq(&DecoderConfig {
        rope_scaling: RopeScaling::Linear { factor: 4.0 },
        ..cfg
    });
    for (l, d) in linear.iter().zip(&default) {
        assert_eq!(*l, (*d as f32 / 4.0) as f64);
    }
}

#[test]
fn qwen2_sliding_layers_follow_max_window_layers() {
    let text = std::fs::read_to_string(fixture("tiny-qwen2").join("config.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["use_sliding_window"] = json!(true);
    v["sliding_window"] = json!(8);
    v["max_window_layers"] = json!(1);
    let c = DecoderConfig::from_json_str(&v.to_string()).unwrap();
    assert_eq!(c.sliding_window, vec![None, Some(8), Some(8)]);
    // use_sliding_window false disables the window whatever max_window_layers says.
    v["use_sliding_window"] = json!(false);
    let c = DecoderConfig::from_json_str(&v.to_string()).unwrap();
    assert_eq!(c.sliding_window, vec![None; 3]);
    // Explicit layer_types (transformers 5) win.
    v["use_sliding_window"] = json!(true);
    v["layer_types"] = json!(["sliding_attention", "full_attention", "sliding_attention"]);
    let c = DecoderConfig::from_json_str(&v.to_string()).unwrap();
    assert_eq!(c.sliding_window, vec![Some(8), None, Some(8)]);
}

#[test]
fn mistral_null_window_means_full_attention() {
    let text = std::fs::read_to_string(fixture("tiny-mistral").join("config.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["sliding_window"] = Value::Null;
    let c = DecoderConfig::from_json_str(&v.to_string()).unwrap();
    assert_eq!(c.sliding_window, vec![None; 3]);
}

#[test]
fn config_errors_name_field_and_value() {
    let base = std::fs::read_to_string(fixture("tiny-llama").join("config.json")).unwrap();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_str(&base).unwrap();
        f(&mut v);
        DecoderConfig::from_json_str(&v.to_string())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        edit(&|v| v["model_type"] = json!("gpt2")),
        "<string>: model_type \"gpt2\" is not supported (supported: llama, qwen2, qwen3, mistral, gemma3_text)"
    );
    assert_eq!(
        edit(&|v| v["rope_scaling"]["rope_type"] = json!("yarn")),
        "<string>: rope_type \"yarn\" is not supported (supported: default, linear, llama3)"
    );
    assert_eq!(
        edit(&|v| v["num_key_value_heads"] = json!(3)),
        "<string>: num_key_value_heads = 3 (num_attention_heads 4): num_attention_heads must be a multiple of num_key_value_heads"
    );
    assert_eq!(
        edit(&|v| {
            v.as_object_mut().unwrap().remove("head_dim");
            v["hidden_size"] = json!(66);
        }),
        "<string>: hidden_size = 66 (num_attention_heads 4): must be divisible by num_attention_heads when head_dim is not given"
    );
    assert_eq!(
        edit(&|v| v["intermediate_size"] = json!(0)),
        "<string>: intermediate_size = 0: must be positive"
    );
    assert_eq!(
        edit(&|v| v["hidden_act"] = json!("gelu")),
        "<string>: hidden_act \"gelu\" is not supported (supported: silu)"
    );
    assert!(edit(&|v| {
        v.as_object_mut().unwrap().remove("model_type");
    })
    .contains("has no \"model_type\""));
}

#[test]
fn config_file_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    std::fs::write(&path, "{\"model_type\": \"llama\", ").unwrap();
    let msg = DecoderConfig::from_config_file(&path)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(&format!("{} is not a valid model config: ", path.display())),
        "{msg}"
    );
    std::fs::write(&path, r#"{"model_type": "gemma3"}"#).unwrap();
    let msg = DecoderConfig::from_config_file(&path)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        format!(
            "{}: model_type \"gemma3\" is not supported (supported: llama, qwen2, qwen3, mistral, gemma3_text)",
            path.display()
        )
    );
    std::fs::write(&path, r#"{"model_type": "llama", "hidden_size": "big"}"#).unwrap();
    let msg = DecoderConfig::from_config_file(&path)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("invalid type: string \"big\""), "{msg}");
}

// ---------------------------------------------------------------- weights on the fixtures

#[test]
fn every_expected_tensor_is_found_and_nothing_is_left_unused() {
    for m in MODELS {
        let files = local(&fixture(m));
        let cfg = DecoderConfig::from_config_file(&files.config).unwrap();
        let store = load_all(&files, &cfg).unwrap_or_else(|e| panic!("{m}: {e}"));
        let expected = expected_tensors(&cfg);
        assert_eq!(
            store.names().count(),
            expected.len(),
            "{m}: checkpoint holds exactly the expected tensors"
        );
        // The dtype the config declares is the one stored.
        let (dtype, _) = store.info(&names::embed_tokens()).unwrap();
        let declared = match cfg.torch_dtype.as_deref() {
            Some("float32") => "F32",
            Some("float16") => "F16",
            Some("bfloat16") => "BF16",
            other => panic!("{m}: {other:?}"),
        };
        assert_eq!(dtype.to_string(), declared, "{m}");
        let t = store.get(&names::final_norm(), &[cfg.hidden_size]).unwrap();
        assert_eq!(t.to_f32().len(), cfg.hidden_size);
        assert_eq!(t.to_f16().unwrap().len(), cfg.hidden_size);
    }
}

#[test]
fn qwen_variants_are_in_the_checkpoints() {
    let qwen2 = local(&fixture("tiny-qwen2"));
    let store = WeightStore::open(&qwen2).unwrap();
    assert!(store.contains("model.layers.0.self_attn.q_proj.bias"));
    assert!(!store.contains("model.layers.0.self_attn.o_proj.bias"));
    assert!(!store.contains("lm_head.weight"));
    let qwen3 = local(&fixture("tiny-qwen3"));
    let store = WeightStore::open(&qwen3).unwrap();
    assert_eq!(
        store
            .info("model.layers.2.self_attn.k_norm.weight")
            .unwrap()
            .1,
        &[32]
    );
}

#[test]
fn local_folder_lists_its_files() {
    let files = local(&fixture("tiny-mistral"));
    let shards: Vec<String> = files
        .weights
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        shards,
        [
            "model-00001-of-00003.safetensors",
            "model-00002-of-00003.safetensors",
            "model-00003-of-00003.safetensors"
        ]
    );
    let toks: Vec<String> = files
        .tokenizer_files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        toks,
        [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json"
        ]
    );
    assert_eq!((files.repo_id, files.revision), (None, None));
}

// ---------------------------------------------------------------- hub cache

const COMMIT_MAIN: &str = "0123456789abcdef0123456789abcdef01234567";
const COMMIT_DEV: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// Lay a fixture out as huggingface_hub does: blobs/<hash>, snapshots/<commit>/<file> →
/// ../../blobs/<hash> symlinks, refs/<branch> holding the commit.
fn put_in_cache(cache: &Path, repo_id: &str, model: &str, commit: &str, branch: Option<&str>) {
    let repo = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let blobs = repo.join("blobs");
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    for entry in std::fs::read_dir(fixture(model)).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("reference") || name == "config.transformers5.json" {
            continue;
        }
        let blob = format!("{commit}-{name}-blob");
        std::fs::copy(entry.path(), blobs.join(&blob)).unwrap();
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&blob), snap.join(&name)).unwrap();
    }
    if let Some(branch) = branch {
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join(branch), commit).unwrap();
    }
}

/// An environment that can never reach the network (unroutable endpoint) even when online.
fn env_with_cache(cache: &Path) -> HubEnv {
    HubEnv {
        hf_hub_cache: Some(cache.to_path_buf()),
        endpoint: Some("http://127.0.0.1:9".into()),
        offline: true,
        ..HubEnv::default()
    }
}

/// An online hub id spec (also used by tests/suite/hub.rs).
pub fn hub(id: &str, revision: Option<&str>) -> ModelSpec {
    ModelSpec {
        model: id.into(),
        revision: revision.map(String::from),
        offline: false,
    }
}

#[test]
fn hub_id_resolves_offline_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    put_in_cache(
        tmp.path(),
        "org/tiny",
        "tiny-llama",
        COMMIT_MAIN,
        Some("main"),
    );
    let files = source::resolve_with(&hub("org/tiny", None), &env_with_cache(tmp.path())).unwrap();
    let snap = tmp
        .path()
        .join("models--org--tiny/snapshots")
        .join(COMMIT_MAIN);
    assert_eq!(files.dir, snap);
    assert_eq!(files.config, snap.join("config.json"));
    assert_eq!(files.weights, vec![snap.join("model.safetensors")]);
    assert_eq!(files.repo_id.as_deref(), Some("org/tiny"));
    assert_eq!(files.revision.as_deref(), Some(COMMIT_MAIN));
    assert!(files.tokenizer_files.contains(&snap.join("tokenizer.json")));
    // Read through the symlinks.
    let cfg = DecoderConfig::from_config_file(&files.config).unwrap();
    load_all(&files, &cfg).unwrap();
}

#[test]
fn complete_cache_needs_no_network_when_online() {
    let tmp = tempfile::tempdir().unwrap();
    put_in_cache(
        tmp.path(),
        "org/m",
        "tiny-mistral",
        COMMIT_MAIN,
        Some("main"),
    );
    let env = HubEnv {
        offline: false,
        ..env_with_cache(tmp.path())
    };
    let files = source::resolve_with(&hub("org/m", None), &env).unwrap();
    assert_eq!(files.weights.len(), 3);
    assert!(files.index.is_some());
}

#[test]
fn revision_by_commit_hash_and_by_branch() {
    let tmp = tempfile::tempdir().unwrap();
    put_in_cache(tmp.path(), "org/m", "tiny-llama", COMMIT_MAIN, Some("main"));
    put_in_cache(tmp.path(), "org/m", "tiny-qwen2", COMMIT_DEV, Some("dev"));
    let env = env_with_cache(tmp.path());
    let model_type = |rev: Option<&str>| {
        let files = source::resolve_with(&hub("org/m", rev), &env).unwrap();
        let cfg = DecoderConfig::from_config_file(&files.config).unwrap();
        (cfg.model_type, files.revision.unwrap())
    };
    assert_eq!(model_type(None), ("llama".into(), COMMIT_MAIN.into()));
    assert_eq!(
        model_type(Some("main")),
        ("llama".into(), COMMIT_MAIN.into())
    );
    assert_eq!(model_type(Some("dev")), ("qwen2".into(), COMMIT_DEV.into()));
    assert_eq!(
        model_type(Some(COMMIT_DEV)),
        ("qwen2".into(), COMMIT_DEV.into())
    );
    let msg = source::resolve_with(&hub("org/m", Some("v9")), &env)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("(revision v9)") && msg.contains("no refs/v9"),
        "{msg}"
    );
}

#[test]
fn a_ref_that_is_not_a_commit_hash_is_refused_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    put_in_cache(tmp.path(), "org/m", "tiny-llama", COMMIT_MAIN, Some("main"));
    let r = tmp.path().join("models--org--m/refs/main");
    for bad in ["../../../../etc", "", "0123", "snapshots/x"] {
        std::fs::write(&r, bad).unwrap();
        let msg = source::resolve_with(&hub("org/m", None), &env_with_cache(tmp.path()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            format!(
                "the Hugging Face cache file {} holds \"{bad}\", which is not a 40-hex commit hash; delete it (the next online run writes it again)",
                r.display()
            )
        );
    }
}

#[test]
fn hf_hub_cache_takes_precedence_over_hf_home() {
    let hub_cache = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    put_in_cache(
        hub_cache.path(),
        "org/a",
        "tiny-llama",
        COMMIT_MAIN,
        Some("main"),
    );
    put_in_cache(
        &home.path().join("hub"),
        "org/b",
        "tiny-qwen3",
        COMMIT_MAIN,
        Some("main"),
    );
    let both = HubEnv {
        hf_hub_cache: Some(hub_cache.path().into()),
        hf_home: Some(home.path().into()),
        offline: true,
        ..HubEnv::default()
    };
    assert!(source::resolve_with(&hub("org/a", None), &both).is_ok());
    // org/b lives under HF_HOME/hub, which HF_HUB_CACHE hides.
    let msg = source::resolve_with(&hub("org/b", None), &both)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(
            &hub_cache
                .path()
                .join("models--org--b")
                .display()
                .to_string()
        ),
        "{msg}"
    );
    let home_only = HubEnv {
        hf_hub_cache: None,
        ..both.clone()
    };
    assert!(source::resolve_with(&hub("org/b", None), &home_only).is_ok());
    // Neither set: ~/.cache/huggingface/hub.
    let fake_home = tempfile::tempdir().unwrap();
    put_in_cache(
        &fake_home.path().join(".cache/huggingface/hub"),
        "org/c",
        "tiny-qwen2",
        COMMIT_MAIN,
        Some("main"),
    );
    let home_dir = HubEnv {
        home: Some(fake_home.path().into()),
        offline: true,
        ..HubEnv::default()
    };
    assert!(source::resolve_with(&hub("org/c", None), &home_dir).is_ok());
}

#[test]
fn offline_miss_says_where_it_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let env = HubEnv {
        hf_hub_cache: Some(tmp.path().into()),
        ..HubEnv::default()
    };
    let spec = ModelSpec {
        model: "meta-llama/Llama-3.2-1B-Instruct".into(),
        revision: None,
        offline: true,
    };
    let msg = source::resolve_with(&spec, &env).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "meta-llama/Llama-3.2-1B-Instruct (revision main) is not in the Hugging Face cache and offline mode is on (HF_HUB_OFFLINE or --offline): looked in {}, which does not exist",
            tmp.path().join("models--meta-llama--Llama-3.2-1B-Instruct").display()
        )
    );
}

#[test]
fn incomplete_snapshot_offline_names_the_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    put_in_cache(
        tmp.path(),
        "org/m",
        "tiny-mistral",
        COMMIT_MAIN,
        Some("main"),
    );
    let snap = tmp
        .path()
        .join("models--org--m/snapshots")
        .join(COMMIT_MAIN);
    std::fs::remove_file(snap.join("model-00002-of-00003.safetensors")).unwrap();
    let msg = source::resolve_with(&hub("org/m", None), &env_with_cache(tmp.path()))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("whose snapshot is incomplete")
            && msg.contains("lacks the shard model-00002-of-00003.safetensors"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- bad folders

#[test]
fn missing_folder_and_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let nope = tmp.path().join("nope");
    let spec = ModelSpec {
        model: nope.display().to_string(),
        ..ModelSpec::default()
    };
    assert_eq!(
        source::resolve_with(&spec, &HubEnv::default())
            .unwrap_err()
            .to_string(),
        format!(
            "model folder {} does not exist (and \"{}\" is not a hub id of the form org/name)",
            nope.display(),
            nope.display()
        )
    );
    let dir = copy_fixture("tiny-qwen2");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let spec = ModelSpec {
        model: dir.path().display().to_string(),
        ..ModelSpec::default()
    };
    assert_eq!(
        source::resolve_with(&spec, &HubEnv::default())
            .unwrap_err()
            .to_string(),
        format!("model folder {} has no config.json", dir.path().display())
    );
    let dir = copy_fixture("tiny-qwen2");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let spec = ModelSpec {
        model: dir.path().display().to_string(),
        ..ModelSpec::default()
    };
    assert_eq!(
        source::resolve_with(&spec, &HubEnv::default())
            .unwrap_err()
            .to_string(),
        format!(
            "model folder {} has neither model.safetensors nor model.safetensors.index.json",
            dir.path().display()
        )
    );
}

// ---------------------------------------------------------------- corrupt safetensors

/// The tiny-llama copy with its model.safetensors rewritten by `f`, opened and fully loaded.
fn corrupt_llama(f: impl FnOnce(&Path)) -> (tempfile::TempDir, String) {
    let dir = copy_fixture("tiny-llama");
    let st = dir.path().join("model.safetensors");
    f(&st);
    let files = local(dir.path());
    let cfg = DecoderConfig::from_config_file(&files.config).unwrap();
    let msg = err_of(load_all(&files, &cfg));
    (dir, msg)
}

#[test]
fn file_shorter_than_the_header_length_field() {
    let (dir, msg) = corrupt_llama(|p| std::fs::write(p, [1u8, 2, 3]).unwrap());
    assert_eq!(
        msg,
        format!(
            "{} is truncated: 3 bytes, too short for the 8-byte safetensors header length",
            dir.path().join("model.safetensors").display()
        )
    );
}

#[test]
fn truncated_data_area() {
    let (dir, msg) = corrupt_llama(|p| {
        let bytes = std::fs::read(p).unwrap();
        std::fs::write(p, &bytes[..bytes.len() - 1000]).unwrap();
    });
    let (header, data) = read_st(&fixture("tiny-llama").join("model.safetensors"));
    // Headers are checked in name order: the first tensor (by name) reaching into the cut.
    let cut = data.len() - 1000;
    let (last, (b, e)) = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .map(|k| (k.clone(), offsets(&header, k)))
        .find(|(_, (_, e))| *e > cut)
        .unwrap();
    assert_eq!(
        msg,
        format!(
            "{}: tensor {last} has data_offsets [{b}, {e}] outside the data area of {} bytes",
            dir.path().join("model.safetensors").display(),
            data.len() - 1000
        )
    );
}

#[test]
fn lying_header_length() {
    let mut file_len = 0;
    let (dir, msg) = corrupt_llama(|p| {
        let mut bytes = std::fs::read(p).unwrap();
        file_len = bytes.len();
        bytes[..8].copy_from_slice(&(file_len as u64).to_le_bytes());
        std::fs::write(p, &bytes).unwrap();
    });
    assert_eq!(
        msg,
        format!(
            "{}: header length {file_len} runs past the end of the file ({file_len} bytes): truncated, or not a safetensors file",
            dir.path().join("model.safetensors").display()
        )
    );
    // A header length that cuts the JSON short.
    let (_, msg) = corrupt_llama(|p| {
        let mut bytes = std::fs::read(p).unwrap();
        bytes[..8].copy_from_slice(&100u64.to_le_bytes());
        std::fs::write(p, &bytes).unwrap();
    });
    assert!(
        msg.contains("the safetensors header is not valid JSON: EOF while parsing"),
        "{msg}"
    );
}

#[test]
fn out_of_bounds_offsets() {
    let (dir, msg) = corrupt_llama(|p| {
        let (mut h, data) = read_st(p);
        h["model.norm.weight"]["data_offsets"] = json!([data.len() - 100, data.len() + 156]);
        write_st(p, &h, &data);
    });
    let (_, data) = read_st(&fixture("tiny-llama").join("model.safetensors"));
    let n = data.len();
    assert_eq!(
        msg,
        format!(
            "{}: tensor model.norm.weight has data_offsets [{}, {}] outside the data area of {n} bytes",
            dir.path().join("model.safetensors").display(),
            n - 100,
            n + 156
        )
    );
}

#[test]
fn offsets_not_matching_dtype_and_shape() {
    let (dir, msg) = corrupt_llama(|p| {
        let (mut h, data) = read_st(p);
        let (b, _) = offsets(&h, "model.norm.weight");
        h["model.norm.weight"]["data_offsets"] = json!([b, b + 128]);
        write_st(p, &h, &data);
    });
    let (h, _) = read_st(&fixture("tiny-llama").join("model.safetensors"));
    let (b, _) = offsets(&h, "model.norm.weight");
    assert_eq!(
        msg,
        format!(
            "{}: tensor model.norm.weight (F32 [64]) needs 256 bytes but its data_offsets [{b}, {}] span 128",
            dir.path().join("model.safetensors").display(),
            b + 128
        )
    );
}

#[test]
fn overlapping_tensors() {
    let a = "model.layers.0.input_layernorm.weight";
    let b = "model.layers.0.post_attention_layernorm.weight";
    let (dir, msg) = corrupt_llama(|p| {
        let (mut h, data) = read_st(p);
        let (ab, ae) = offsets(&h, a);
        h[b]["data_offsets"] = json!([ab + 4, ae + 4]);
        write_st(p, &h, &data);
    });
    let (h, _) = read_st(&fixture("tiny-llama").join("model.safetensors"));
    let (ab, ae) = offsets(&h, a);
    assert_eq!(
        msg,
        format!(
            "{}: tensors {a} [{ab}, {ae}] and {b} [{}, {}] overlap",
            dir.path().join("model.safetensors").display(),
            ab + 4,
            ae + 4
        )
    );
}

#[test]
fn unsupported_dtype() {
    let (dir, msg) = corrupt_llama(|p| {
        let (mut h, data) = read_st(p);
        h["model.norm.weight"]["dtype"] = json!("I32");
        write_st(p, &h, &data);
    });
    assert_eq!(
        msg,
        format!(
            "{}: tensor model.norm.weight has dtype I32, which anec does not read (supported: F32, F16, BF16)",
            dir.path().join("model.safetensors").display()
        )
    );
}

#[test]
fn shape_disagreeing_with_config() {
    let dir = copy_fixture("tiny-llama");
    let cfg_path = dir.path().join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    v["intermediate_size"] = json!(176);
    std::fs::write(&cfg_path, v.to_string()).unwrap();
    let files = local(dir.path());
    let cfg = DecoderConfig::from_config_file(&files.config).unwrap();
    assert_eq!(
        err_of(load_all(&files, &cfg)),
        format!(
            "tensor model.layers.0.mlp.gate_proj.weight in {} has shape [172, 64] but the config expects [176, 64]",
            dir.path().join("model.safetensors").display()
        )
    );
}

#[test]
fn missing_tensor_single_file() {
    let (dir, msg) = corrupt_llama(|p| {
        let (mut h, data) = read_st(p);
        h.remove("model.layers.1.self_attn.o_proj.weight");
        write_st(p, &h, &data);
    });
    assert_eq!(
        msg,
        format!(
            "tensor model.layers.1.self_attn.o_proj.weight is missing from the checkpoint ({})",
            dir.path().join("model.safetensors").display()
        )
    );
}

#[test]
fn tensor_in_index_but_missing_from_its_shard() {
    let dir = copy_fixture("tiny-mistral");
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let shard = index["weight_map"]["model.layers.1.mlp.up_proj.weight"]
        .as_str()
        .unwrap()
        .to_string();
    let shard_path = dir.path().join(&shard);
    let (mut h, data) = read_st(&shard_path);
    h.remove("model.layers.1.mlp.up_proj.weight");
    write_st(&shard_path, &h, &data);
    let files = local(dir.path());
    let cfg = DecoderConfig::from_config_file(&files.config).unwrap();
    assert_eq!(
        err_of(load_all(&files, &cfg)),
        format!(
            "tensor model.layers.1.mlp.up_proj.weight is listed in {} but missing from its shard {}",
            dir.path().join("model.safetensors.index.json").display(),
            shard_path.display()
        )
    );
}

#[test]
fn unused_extra_tensor_is_an_error_unless_allowed() {
    let extra = |name: &'static str| {
        move |p: &Path| {
            let (mut h, mut data) = read_st(p);
            let start = data.len();
            data.extend_from_slice(&[0u8; 16]);
            h.insert(
                name.into(),
                json!({"dtype": "F32", "shape": [4], "data_offsets": [start, start + 16]}),
            );
            write_st(p, &h, &data);
        }
    };
    let (_, msg) = corrupt_llama(extra("model.layers.0.mlp.gate_proj.bias"));
    assert_eq!(
        msg,
        "1 checkpoint tensor(s) not used by the architecture (not on the allow-list): model.layers.0.mlp.gate_proj.bias"
    );
    // The precomputed RoPE table is on the allow-list.
    let dir = copy_fixture("tiny-llama");
    extra("model.layers.0.self_attn.rotary_emb.inv_freq")(&dir.path().join("model.safetensors"));
    let files = local(dir.path());
    let cfg = DecoderConfig::from_config_file(&files.config).unwrap();
    load_all(&files, &cfg).unwrap();
}

#[test]
fn value_not_representable_in_fp16() {
    let dir = copy_fixture("tiny-llama");
    let p = dir.path().join("model.safetensors");
    let (h, mut data) = read_st(&p);
    let (b, _) = offsets(&h, "model.norm.weight");
    data[b + 12..b + 16].copy_from_slice(&1e6f32.to_le_bytes());
    write_st(&p, &h, &data);
    let files = local(dir.path());
    let store = WeightStore::open(&files).unwrap();
    let t = store.get("model.norm.weight", &[64]).unwrap();
    assert_eq!(t.to_f32()[3], 1e6);
    assert_eq!(
        t.to_f16().unwrap_err().to_string(),
        "tensor model.norm.weight: value 1000000 (element 3) does not fit in fp16 (largest finite 65504)"
    );
}

#[test]
fn config_problems_through_the_folder() {
    let dir = copy_fixture("tiny-qwen3");
    let cfg_path: PathBuf = dir.path().join("config.json");
    std::fs::write(&cfg_path, "{ not json").unwrap();
    let files = local(dir.path());
    let msg = DecoderConfig::from_config_file(&files.config)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(&format!(
            "{} is not a valid model config: key must be a string",
            cfg_path.display()
        )),
        "{msg}"
    );
    std::fs::write(&cfg_path, r#"{"model_type": "phi3"}"#).unwrap();
    assert_eq!(
        DecoderConfig::from_config_file(&cfg_path)
            .unwrap_err()
            .to_string(),
        format!(
            "{}: model_type \"phi3\" is not supported (supported: llama, qwen2, qwen3, mistral, gemma3_text)",
            cfg_path.display()
        )
    );
}

#[test]
fn hf_defaults_and_legacy_spellings() {
    // Minimal configs take each architecture's HF defaults.
    let llama = DecoderConfig::from_json_str(r#"{"model_type": "llama"}"#).unwrap();
    assert_eq!(
        (llama.vocab_size, llama.hidden_size, llama.intermediate_size),
        (32000, 4096, 11008)
    );
    assert_eq!(
        (llama.num_kv_heads, llama.head_dim, llama.rope_theta),
        (32, 128, 1e4)
    );
    assert_eq!(
        (llama.bos_token_id, llama.eos_token_ids.clone()),
        (Some(1), vec![2])
    );
    let mistral = DecoderConfig::from_json_str(r#"{"model_type": "mistral"}"#).unwrap();
    assert_eq!(mistral.num_kv_heads, 8);
    assert_eq!(mistral.sliding_window, vec![Some(4096); 32]);
    let qwen3 = DecoderConfig::from_json_str(r#"{"model_type": "qwen3"}"#).unwrap();
    assert_eq!((qwen3.head_dim, qwen3.num_kv_heads), (128, 32));
    assert_eq!(qwen3.sliding_window, vec![None; 32]);
    // null means "derive it", as transformers does.
    let c = DecoderConfig::from_json_str(
        r#"{"model_type": "qwen3", "hidden_size": 64, "num_attention_heads": 4, "head_dim": null, "num_key_value_heads": null}"#,
    )
    .unwrap();
    assert_eq!((c.head_dim, c.num_kv_heads), (16, 4));
    // Legacy rope_scaling {"type": ...}; eos as a list (Llama 3 instruct).
    let c = DecoderConfig::from_json_str(
        r#"{"model_type": "llama", "rope_scaling": {"type": "linear", "factor": 2.0}, "eos_token_id": [128001, 128009]}"#,
    )
    .unwrap();
    assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });
    assert_eq!(c.eos_token_ids, vec![128001, 128009]);
    let msg =
        DecoderConfig::from_json_str(r#"{"model_type": "llama", "partial_rotary_factor": 0.5}"#)
            .unwrap_err()
            .to_string();
    assert_eq!(
        msg,
        "<string>: partial_rotary_factor = 0.5: partial rotary embeddings are not supported (only 1.0)"
    );
}
