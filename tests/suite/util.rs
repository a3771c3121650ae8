//! The shared test harness: fixture paths, the fixtures' transformers outputs, and the `anec`
//! binary.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anec::arch::{names, DecoderConfig};
use anec::mil::{self, ConstData, ConstValue, Function, OpKind};
use anec::source::ModelSpec;
use candle_core::{Device, Tensor};

/// `tests/fixtures/<name>` inside the repository.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The tiny checkpoints with transformers reference logits.
pub const MODELS: [&str; 6] = [
    "tiny-llama",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-mistral",
    "tiny-llama-linear",
    "tiny-qwen2-swa",
];

/// [`MODELS`] and tiny-gemma3. Gemma's prefill batch must divide its window (16), so the
/// tests that convert at batch 64 keep to [`MODELS`]; tests/suite/gemma.rs covers its conversion.
pub const ALL_MODELS: [&str; 7] = [
    "tiny-llama",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-mistral",
    "tiny-llama-linear",
    "tiny-qwen2-swa",
    "tiny-gemma3",
];

/// A fixture folder as an offline `--model`.
pub fn spec(model: &str) -> ModelSpec {
    ModelSpec {
        model: fixture(model).display().to_string(),
        revision: None,
        offline: true,
    }
}

/// A command running the `anec` binary built for these tests.
pub fn anec() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("anec").expect("the anec binary is built with the tests")
}

/// The names of a program's functions, in order.
pub fn function_names(program: &mil::Program) -> Vec<&str> {
    program.functions.iter().map(|(n, _)| n.as_str()).collect()
}

/// Every file below `dir` with its bytes, by path relative to `dir` (for byte-for-byte
/// comparisons of written outputs).
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// What transformers computed for a fixture: reference.json's prompts and reference.safetensors
/// (`ids_{s}` int32 `[n]`, `logits_{s}` f32 `[n, vocab]`, `gen_ids_{s}` / `gen_logits_{s}`).
pub struct Expected {
    pub prompts: Vec<String>,
    tensors: HashMap<String, Tensor>,
}

impl Expected {
    pub fn open(model: &str) -> Expected {
        let dir = fixture(model);
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("reference.json")).expect("reference.json"),
        )
        .expect("reference.json is JSON");
        let prompts = json["sequences"]
            .as_array()
            .expect("sequences")
            .iter()
            .map(|s| s["prompt"].as_str().expect("prompt").to_string())
            .collect();
        let tensors =
            candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
                .expect("reference.safetensors");
        Expected { prompts, tensors }
    }

    /// How many sequences (`ids_0`, `ids_1`, ...) the fixture has.
    pub fn count(&self) -> usize {
        (0..)
            .take_while(|i| self.tensors.contains_key(&format!("ids_{i}")))
            .count()
    }

    pub fn ids(&self, key: &str) -> Vec<u32> {
        self.tensors[key]
            .to_vec1::<i32>()
            .expect("int32 ids")
            .into_iter()
            .map(|x| x as u32)
            .collect()
    }

    pub fn logits(&self, key: &str) -> Vec<Vec<f32>> {
        self.tensors[key].to_vec2::<f32>().expect("f32 logits")
    }
}

/// The gap between the two largest logits: where it is within fp16 noise, top-1 is a coin toss.
pub fn margin(v: &[f32]) -> f32 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    s[0] - s[1]
}

/// Rewrites a package through mil's reader and writer after `edit` has changed every function.
pub fn rewrite(pkg: &Path, edit: impl Fn(&str, &mut Function)) {
    let mut model = mil::read_package(pkg).expect("read package");
    for (name, f) in model.program.functions.iter_mut() {
        for c in f.operations.iter_mut().flat_map(|op| op.constants_mut()) {
            materialize(c);
        }
        edit(name, f);
    }
    let mut w = mil::PackageWriter::create(pkg, true).expect("writer");
    // keep the writer's blob file in use so stored constants are re-stored
    for (_, f) in model.program.functions.iter_mut() {
        for op in f.operations.iter_mut() {
            if let Some(v) = op.val.take() {
                op.val = Some(if v.num_elements() >= 10 {
                    w.store(v).expect("store")
                } else {
                    v
                });
            }
        }
    }
    w.finish(&model).expect("write package");
}

/// A blob-backed constant → the same constant held in memory.
fn materialize(v: &mut ConstValue) {
    if let ConstData::Stored(_) = v.data {
        let bytes = v.bytes().expect("loaded blob").to_vec();
        *v = ConstValue::from_bytes(v.ty.dtype, &v.shape(), bytes).expect("bytes");
    }
}

/// The value of the `const` op whose output is `name`.
pub fn const_mut<'a>(f: &'a mut Function, name: &str) -> &'a mut ConstValue {
    f.operations
        .iter_mut()
        .find(|o| o.kind == OpKind::Const && o.outputs[0].0 == name)
        .and_then(|o| o.val.as_mut())
        .unwrap_or_else(|| panic!("const {name}"))
}

/// Every tensor a checkpoint of `cfg` holds, with its shape (PyTorch `[out, in]` for
/// projections), in a fixed order: embeddings, then each layer, then the final norm and the LM
/// head. Written from the config here, apart from the part builders: the converter itself
/// requires every checkpoint tensor to be read (`WeightStore::ensure_all_used`).
pub fn expected_tensors(cfg: &DecoderConfig) -> Vec<(String, Vec<usize>)> {
    let (h, q, kv, i_sz) = (
        cfg.hidden_size,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.intermediate_size,
    );
    let mut v = vec![(names::embed_tokens(), vec![cfg.vocab_size, h])];
    for l in 0..cfg.num_layers {
        v.push((names::input_layernorm(l).weight(), vec![h]));
        v.push((names::q_proj(l).weight(), vec![q, h]));
        v.push((names::k_proj(l).weight(), vec![kv, h]));
        v.push((names::v_proj(l).weight(), vec![kv, h]));
        if cfg.qkv_bias {
            v.push((names::q_proj(l).bias(), vec![q]));
            v.push((names::k_proj(l).bias(), vec![kv]));
            v.push((names::v_proj(l).bias(), vec![kv]));
        }
        v.push((names::o_proj(l).weight(), vec![h, q]));
        if cfg.o_bias {
            v.push((names::o_proj(l).bias(), vec![h]));
        }
        if cfg.qk_norm {
            v.push((names::q_norm(l).weight(), vec![cfg.head_dim]));
            v.push((names::k_norm(l).weight(), vec![cfg.head_dim]));
        }
        v.push((names::post_attention_layernorm(l).weight(), vec![h]));
        if cfg.gemma.is_some() {
            v.push((names::pre_feedforward_layernorm(l).weight(), vec![h]));
            v.push((names::post_feedforward_layernorm(l).weight(), vec![h]));
        }
        v.push((names::gate_proj(l).weight(), vec![i_sz, h]));
        v.push((names::up_proj(l).weight(), vec![i_sz, h]));
        v.push((names::down_proj(l).weight(), vec![h, i_sz]));
        if cfg.mlp_bias {
            v.push((names::gate_proj(l).bias(), vec![i_sz]));
            v.push((names::up_proj(l).bias(), vec![i_sz]));
            v.push((names::down_proj(l).bias(), vec![h]));
        }
    }
    v.push((names::final_norm(), vec![h]));
    if !cfg.tie_embeddings {
        v.push((names::lm_head(), vec![cfg.vocab_size, h]));
    }
    v
}

/// Copies the folder `from` to `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// Apple's coremltools validator (`ANEC_COREML_PYTHON` running `ANEC_VALIDATOR`) with `args`
/// on a copy of `pkg` in `scratch` (coremltools rewrites Manifest.json); asserts that it passes.
/// Returns false, saying so, when the two variables are not set.
pub fn validate_with_coremltools(pkg: &Path, args: &[&str], scratch: &Path) -> bool {
    let (Ok(python), Ok(validator)) = (
        std::env::var("ANEC_COREML_PYTHON"),
        std::env::var("ANEC_VALIDATOR"),
    ) else {
        println!("ANEC_COREML_PYTHON / ANEC_VALIDATOR not set: skipped coremltools validation");
        return false;
    };
    let copy = scratch.join(pkg.file_name().unwrap());
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(pkg, &copy);
    let out = std::process::Command::new(python)
        .arg(validator)
        .arg(&copy)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("RESULT: OK"),
        "validator failed on {}:\n{stdout}\n{}",
        pkg.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}
