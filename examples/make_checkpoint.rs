//! Writes a Llama-3.2-1B-shaped checkpoint with random bf16 weights (the real config and tensor
//! shapes, no hub access needed), for measuring conversion time, memory and output sizes.
//!
//! cargo run --release --example make_checkpoint -- OUT_DIR [--layers N]
//!
//! Weights are 0.02 · N(0,1) scaled per row by a log-normal factor (heavier rows, as in real
//! checkpoints); norm gains are 1 + 0.1 · N(0,1), from quant::synth's splitmix64. The tokenizer
//! files are tiny-llama's.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anec::quant::synth::Rng;
use half::bf16;

const HIDDEN: usize = 2048;
const INTERMEDIATE: usize = 8192;
const HEADS: usize = 32;
const KV_HEADS: usize = 8;
const HEAD_DIM: usize = 64;
const VOCAB: usize = 128_256;

/// Two standard normals from two uniforms (Box-Muller, both branches).
fn normal2(rng: &mut Rng) -> (f64, f64) {
    let r = (-2.0 * rng.uniform().ln()).sqrt();
    let t = std::f64::consts::TAU * rng.uniform();
    (r * t.cos(), r * t.sin())
}

fn tensors(layers: usize) -> Vec<(String, Vec<usize>)> {
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, HIDDEN])];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        t.push((format!("{p}.input_layernorm.weight"), vec![HIDDEN]));
        t.push((format!("{p}.post_attention_layernorm.weight"), vec![HIDDEN]));
        t.push((
            format!("{p}.self_attn.q_proj.weight"),
            vec![HEADS * HEAD_DIM, HIDDEN],
        ));
        t.push((
            format!("{p}.self_attn.k_proj.weight"),
            vec![KV_HEADS * HEAD_DIM, HIDDEN],
        ));
        t.push((
            format!("{p}.self_attn.v_proj.weight"),
            vec![KV_HEADS * HEAD_DIM, HIDDEN],
        ));
        t.push((
            format!("{p}.self_attn.o_proj.weight"),
            vec![HIDDEN, HEADS * HEAD_DIM],
        ));
        t.push((
            format!("{p}.mlp.gate_proj.weight"),
            vec![INTERMEDIATE, HIDDEN],
        ));
        t.push((
            format!("{p}.mlp.up_proj.weight"),
            vec![INTERMEDIATE, HIDDEN],
        ));
        t.push((
            format!("{p}.mlp.down_proj.weight"),
            vec![HIDDEN, INTERMEDIATE],
        ));
    }
    t.push(("model.norm.weight".to_string(), vec![HIDDEN]));
    t.sort();
    t
}

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>)]) -> std::io::Result<()> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * 2;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header))?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut out = BufWriter::with_capacity(1 << 22, File::create(path)?);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    let mut rng = Rng::new(0x0A2E_C001);
    let mut row = Vec::new();
    for (name, shape) in tensors {
        let cols = *shape.last().unwrap_or(&1);
        let rows = shape.iter().product::<usize>() / cols;
        let is_norm = shape.len() == 1;
        for _ in 0..rows {
            let row_scale = if is_norm {
                0.1
            } else {
                0.02 * (0.3 * normal2(&mut rng).0).exp()
            };
            row.clear();
            while row.len() < cols * 2 {
                let (a, b) = normal2(&mut rng);
                for z in [a, b] {
                    let v = if is_norm {
                        1.0 + row_scale * z
                    } else {
                        row_scale * z
                    };
                    row.extend_from_slice(&bf16::from_f64(v).to_bits().to_le_bytes());
                }
            }
            out.write_all(&row[..cols * 2])?;
        }
        eprintln!("  {name} {shape:?}");
    }
    out.flush()
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: make_checkpoint OUT_DIR [--layers N]");
        std::process::exit(2);
    };
    let layers = match (args.next().as_deref(), args.next()) {
        (Some("--layers"), Some(n)) => n.parse().expect("--layers takes a number"),
        _ => 16,
    };
    fs::create_dir_all(&dir)?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": HEAD_DIM,
        "hidden_act": "silu", "hidden_size": HIDDEN, "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE, "max_position_embeddings": 131072, "mlp_bias": false,
        "model_type": "llama", "num_attention_heads": HEADS, "num_hidden_layers": layers,
        "num_key_value_heads": KV_HEADS, "pretraining_tp": 1, "rms_norm_eps": 1e-5,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
        "use_cache": true, "vocab_size": VOCAB
    });
    fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        fs::copy(fixture.join(f), dir.join(f))?;
    }
    eprintln!(
        "writing {} ({layers} layers)",
        dir.join("model.safetensors").display()
    );
    write_safetensors(&dir.join("model.safetensors"), &tensors(layers))
}
