//! Writes a Llama-shaped checkpoint with random bf16 weights (the real config and tensor shapes,
//! no hub access needed), for measuring conversion time, memory and output sizes:
//! Llama-3.2-1B (one file, tied embeddings) or Llama-3.1-8B (untied, four shards and an index,
//! about 16 GB: write it outside the repository).
//!
//! cargo run --release --example make_checkpoint -- OUT_DIR [--shape 1b|8b] [--layers N]
//!
//! Weights are 0.02 · N(0,1) scaled per row by a log-normal factor (heavier rows, as in real
//! checkpoints); norm gains are 1 + 0.1 · N(0,1). Each row has its own quant::synth splitmix64
//! stream and draws near-normal values as Irwin–Hall sums of four 16-bit uniforms (one 64-bit
//! draw per value, tails cut at ±3.5σ), so rows are generated in parallel and the 8 B values of
//! the 8B shape take about a minute of CPU; the bytes do not depend on the thread count. The
//! tokenizer files are tiny-llama's.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anec::quant::synth::Rng;
use anyhow::{bail, Context, Result};
use half::bf16;
use rayon::prelude::*;

/// Seed of every row's stream, mixed with the tensor's and the row's index.
const SEED: u64 = 0x0A2E_C001;
/// Rows generated per parallel batch: about this many bytes.
const BATCH_BYTES: usize = 32 << 20;

/// The shapes of one Llama model (HF config names).
struct Shape {
    hidden: usize,
    intermediate: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    layers: usize,
    tied: bool,
    /// Safetensors files; more than one are written with an index, as HF shards them.
    shards: usize,
    rope_factor: f64,
}

/// Llama-3.2-1B.
const LLAMA_1B: Shape = Shape {
    hidden: 2048,
    intermediate: 8192,
    heads: 32,
    kv_heads: 8,
    head_dim: 64,
    vocab: 128_256,
    layers: 16,
    tied: true,
    shards: 1,
    rope_factor: 32.0,
};

/// Llama-3.1-8B.
const LLAMA_8B: Shape = Shape {
    hidden: 4096,
    intermediate: 14_336,
    heads: 32,
    kv_heads: 8,
    head_dim: 128,
    vocab: 128_256,
    layers: 32,
    tied: false,
    shards: 4,
    rope_factor: 8.0,
};

/// A near-standard normal from one 64-bit draw: the sum of its four 16-bit quarters (each
/// uniform on 0..65536) centred and scaled to unit variance.
fn normal(rng: &mut Rng) -> f64 {
    let u = rng.next_u64();
    let sum = (0..4).map(|q| (u >> (16 * q)) & 0xFFFF).sum::<u64>() as f64;
    // Each quarter has mean 32767.5 and variance (65536² − 1) / 12.
    (sum - 4.0 * 32767.5) / (4.0 * (65536.0f64 * 65536.0 - 1.0) / 12.0).sqrt()
}

/// Row `row` of tensor number `tensor` (`cols` bf16 values) into `out`.
fn fill_row(tensor: usize, row: usize, is_norm: bool, out: &mut [u8]) {
    // splitmix64's output mixing decorrelates neighbouring seeds.
    let mut rng = Rng::new(SEED ^ ((tensor as u64) << 40) ^ row as u64);
    let scale = if is_norm {
        0.1
    } else {
        0.02 * (0.3 * normal(&mut rng)).exp()
    };
    for v in out.chunks_exact_mut(2) {
        let z = scale * normal(&mut rng);
        let x = if is_norm { 1.0 + z } else { z };
        v.copy_from_slice(&bf16::from_f64(x).to_bits().to_le_bytes());
    }
}

/// Every tensor and its shape, sorted by name.
fn tensors(s: &Shape) -> Vec<(String, Vec<usize>)> {
    let (h, q, kv) = (s.hidden, s.heads * s.head_dim, s.kv_heads * s.head_dim);
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![s.vocab, h])];
    if !s.tied {
        t.push(("lm_head.weight".to_string(), vec![s.vocab, h]));
    }
    for i in 0..s.layers {
        let p = format!("model.layers.{i}");
        t.push((format!("{p}.input_layernorm.weight"), vec![h]));
        t.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        t.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
        t.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
        t.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
        t.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
        t.push((format!("{p}.mlp.gate_proj.weight"), vec![s.intermediate, h]));
        t.push((format!("{p}.mlp.up_proj.weight"), vec![s.intermediate, h]));
        t.push((format!("{p}.mlp.down_proj.weight"), vec![h, s.intermediate]));
    }
    t.push(("model.norm.weight".to_string(), vec![h]));
    t.sort();
    t
}

fn bytes_of(shape: &[usize]) -> usize {
    shape.iter().product::<usize>() * 2
}

/// Splits the tensors, in order, into `shards` runs of about equal bytes.
fn split(tensors: &[(String, Vec<usize>)], shards: usize) -> Vec<&[(String, Vec<usize>)]> {
    let total: usize = tensors.iter().map(|(_, s)| bytes_of(s)).sum();
    let mut runs = Vec::new();
    let (mut start, mut acc) = (0, 0);
    for (i, (_, shape)) in tensors.iter().enumerate() {
        acc += bytes_of(shape);
        if acc * shards >= total * (runs.len() + 1) && runs.len() + 1 < shards {
            runs.push(&tensors[start..=i]);
            start = i + 1;
        }
    }
    runs.push(&tensors[start..]);
    runs
}

/// Writes one safetensors file holding `tensors`; `first` is the number of the first one among
/// all of the checkpoint's tensors (it seeds their rows).
fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>)],
    first: usize,
) -> std::io::Result<()> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = bytes_of(shape);
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
    let mut batch = Vec::new();
    for (t, (name, shape)) in tensors.iter().enumerate() {
        let cols = *shape.last().unwrap_or(&1);
        let rows = shape.iter().product::<usize>() / cols;
        let per_batch = (BATCH_BYTES / (2 * cols)).max(1);
        for start in (0..rows).step_by(per_batch) {
            let n = per_batch.min(rows - start);
            batch.resize(n * cols * 2, 0);
            batch
                .par_chunks_mut(cols * 2)
                .enumerate()
                .for_each(|(r, row)| fill_row(first + t, start + r, shape.len() == 1, row));
            out.write_all(&batch)?;
        }
        eprintln!("  {name} {shape:?}");
    }
    out.flush()
}

fn main() -> Result<()> {
    const USAGE: &str = "usage: make_checkpoint OUT_DIR [--shape 1b|8b] [--layers N]";
    let mut args = std::env::args().skip(1);
    let dir = match args.next() {
        Some(a) if a == "--help" || a == "-h" => {
            println!("{USAGE}");
            return Ok(());
        }
        // A flag first is a mistake, not a folder named `--shape`.
        Some(a) if a.starts_with('-') => bail!("{a:?} is not an output folder; {USAGE}"),
        Some(a) => PathBuf::from(a),
        None => bail!("{USAGE}"),
    };
    let mut shape = LLAMA_1B;
    let mut layers = None;
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--shape" => {
                shape = match value.as_str() {
                    "1b" => LLAMA_1B,
                    "8b" => LLAMA_8B,
                    other => bail!("--shape {other:?}: want 1b or 8b"),
                }
            }
            "--layers" => {
                layers = Some(
                    value
                        .parse()
                        .with_context(|| format!("--layers {value:?}"))?,
                )
            }
            other => bail!("unknown argument {other:?} (use --shape, --layers)"),
        }
    }
    if let Some(n) = layers {
        shape.layers = n;
    }
    let s = &shape;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": s.head_dim,
        "hidden_act": "silu", "hidden_size": s.hidden, "initializer_range": 0.02,
        "intermediate_size": s.intermediate, "max_position_embeddings": 131072, "mlp_bias": false,
        "model_type": "llama", "num_attention_heads": s.heads, "num_hidden_layers": s.layers,
        "num_key_value_heads": s.kv_heads, "pretraining_tp": 1, "rms_norm_eps": 1e-5,
        "rope_scaling": {"factor": s.rope_factor, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": s.tied, "torch_dtype": "bfloat16",
        "use_cache": true, "vocab_size": s.vocab
    });
    fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        fs::copy(fixture.join(f), dir.join(f))?;
    }
    let all = tensors(s);
    if s.shards == 1 {
        let path = dir.join("model.safetensors");
        eprintln!("writing {} ({} layers)", path.display(), s.layers);
        return write_safetensors(&path, &all, 0)
            .with_context(|| format!("writing {}", path.display()));
    }
    let runs = split(&all, s.shards);
    let mut weight_map = serde_json::Map::new();
    let mut first = 0;
    for (i, run) in runs.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, runs.len());
        eprintln!(
            "writing {} ({} layers)",
            dir.join(&file).display(),
            s.layers
        );
        write_safetensors(&dir.join(&file), run, first)
            .with_context(|| format!("writing {file}"))?;
        first += run.len();
        for (name, _) in run.iter() {
            weight_map.insert(name.clone(), file.clone().into());
        }
    }
    let total: usize = all.iter().map(|(_, s)| bytes_of(s)).sum();
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index)?,
    )?;
    Ok(())
}
