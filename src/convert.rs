//! `anec convert`: the pipeline from a model source to the output folder, with progress.
//!
//! [`ConvertPlan`] is the validated settings the CLI fills; [`plan_parts`] turns it and the
//! model's config into the parts to write (the dry run prints exactly that); [`run`] writes them.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use serde::Serialize;

use crate::ane::layout::{self, PartNames};
use crate::arch::DecoderConfig;
use crate::quant::LutSpec;
use crate::source::ModelSpec;

/// iOS refuses to load a model file larger than this.
pub const IOS_FILE_LIMIT: u64 = 1 << 30;
/// macOS's per-file limit.
pub const MACOS_FILE_LIMIT: u64 = 2 << 30;
const MB: u64 = 1 << 20;

/// How many transformer chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Chunks {
    /// Exactly this many.
    Count(usize),
    /// The smallest count whose largest chunk fits `max_chunk_mb` MiB (after quantization).
    Auto { max_chunk_mb: u64 },
}

/// Whether to compile each package to `.mlmodelc` with `xcrun coremlcompiler`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
pub enum Compile {
    /// When `xcrun` is on PATH.
    #[default]
    Auto,
    Always,
    Never,
}

/// Everything `anec convert` needs, resolved by the CLI before any work runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvertPlan {
    pub model: ModelSpec,
    pub output: PathBuf,
    pub force: bool,
    pub context_length: usize,
    pub batch_size: usize,
    pub chunks: Chunks,
    /// Package name prefix (`P_` is prepended to every file name when non-empty).
    pub prefix: String,
    pub argmax: bool,
    pub lut_ffn: Option<LutSpec>,
    pub lut_lmhead: Option<LutSpec>,
    pub lut_embed: Option<LutSpec>,
    /// Convert only the first K layers (debugging).
    pub num_layers: Option<usize>,
    pub dry_run: bool,
    pub quiet: bool,
    pub compile: Compile,
}

impl ConvertPlan {
    /// The defaults of the CLI for `model` into `output`: context 512, batch 64, 2 chunks,
    /// fp16 everywhere, no prefix, compile when possible.
    pub fn new(model: ModelSpec, output: impl Into<PathBuf>) -> Self {
        ConvertPlan {
            model,
            output: output.into(),
            force: false,
            context_length: 512,
            batch_size: 64,
            chunks: Chunks::Count(2),
            prefix: String::new(),
            argmax: false,
            lut_ffn: None,
            lut_lmhead: None,
            lut_embed: None,
            num_layers: None,
            dry_run: false,
            quiet: false,
            compile: Compile::Auto,
        }
    }

    /// Checks that need no model: sizes, prefix characters, LUT bit widths.
    pub fn validate(&self) -> Result<(), ConvertError> {
        let bad = |flag: &'static str, value: String, reason: &str| {
            Err(ConvertError::InvalidFlag {
                flag,
                value,
                reason: reason.to_string(),
            })
        };
        if self.context_length == 0 {
            return bad("--context-length", "0".into(), "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("--batch-size", "0".into(), "must be at least 1");
        }
        if self.batch_size > self.context_length {
            return bad(
                "--batch-size",
                self.batch_size.to_string(),
                &format!("must not exceed --context-length ({})", self.context_length),
            );
        }
        match self.chunks {
            Chunks::Count(0) => return bad("--chunks", "0".into(), "must be at least 1"),
            Chunks::Auto { max_chunk_mb: 0 } => {
                return bad("--max-chunk-mb", "0".into(), "must be at least 1")
            }
            _ => {}
        }
        if self.num_layers == Some(0) {
            return bad("--num-layers", "0".into(), "must be at least 1");
        }
        if !self.prefix.is_empty() {
            let ok_chars = self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok_chars {
                return bad(
                    "--prefix",
                    self.prefix.clone(),
                    "may hold only ASCII letters, digits, '_' and '-'",
                );
            }
        }
        for (flag, lut) in [
            ("--lut", self.lut_ffn),
            ("--lut-lmhead", self.lut_lmhead),
            ("--lut-embed", self.lut_embed),
        ] {
            if let Some(l) = lut {
                if !matches!(l.bits, 1 | 2 | 3 | 4 | 6 | 8) {
                    return bad(
                        flag,
                        l.bits.to_string(),
                        "LUT bits must be 1, 2, 3, 4, 6 or 8",
                    );
                }
                if l.group == Some(0) {
                    return bad(
                        flag,
                        format!("{},0", l.bits),
                        "the group size must be at least 1",
                    );
                }
            }
        }
        Ok(())
    }

    /// The number of layers converted: `--num-layers` when given (checked against the model).
    pub fn layers_for(&self, cfg: &DecoderConfig) -> Result<usize, ConvertError> {
        match self.num_layers {
            None => Ok(cfg.num_layers),
            Some(k) if k == 0 || k > cfg.num_layers => Err(ConvertError::InvalidFlag {
                flag: "--num-layers",
                value: k.to_string(),
                reason: format!("the model has {} layers", cfg.num_layers),
            }),
            Some(k) => Ok(k),
        }
    }
}

/// Errors of the conversion pipeline; each names the flag, file or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{flag} {value}: {reason}")]
    InvalidFlag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("--max-chunk-mb {max_chunk_mb}: no chunk count fits; with one layer per chunk ({layers} chunks) the largest chunk is still {smallest_mb} MiB")]
    NoChunkCountFits {
        max_chunk_mb: u64,
        layers: usize,
        smallest_mb: u64,
    },
    #[error("the output {path} already exists (use --force to replace it)")]
    OutputExists { path: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("xcrun coremlcompiler failed on {package} ({status}): {stderr}")]
    Compile {
        package: PathBuf,
        status: String,
        stderr: String,
    },
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
}

/// What one output file is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartKind {
    Embeddings,
    Chunk { index: usize, layers: Range<usize> },
    LmHead,
}

/// One package of the output, with its estimated size after quantization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartPlan {
    /// Base name (no extension).
    pub name: String,
    pub kind: PartKind,
    pub estimated_bytes: u64,
    pub fits_ios: bool,
    pub fits_macos: bool,
}

/// The resolved layout of the output: what the dry run prints and what `run` writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartsPlan {
    pub model_type: String,
    pub layers: usize,
    pub num_chunks: usize,
    pub layer_ranges: Vec<Range<usize>>,
    pub lm_head_chunk_sizes: Vec<usize>,
    pub parts: Vec<PartPlan>,
}

impl PartsPlan {
    pub fn names(&self) -> PartNames {
        let mut embeddings = String::new();
        let mut lm_head = String::new();
        let mut chunks = Vec::new();
        for p in &self.parts {
            match p.kind {
                PartKind::Embeddings => embeddings = p.name.clone(),
                PartKind::LmHead => lm_head = p.name.clone(),
                PartKind::Chunk { .. } => chunks.push(p.name.clone()),
            }
        }
        PartNames {
            embeddings,
            lm_head,
            chunks,
        }
    }
}

impl fmt::Display for PartsPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} layers in {} chunk(s); LM head in {} part(s) {:?}",
            self.model_type,
            self.layers,
            self.num_chunks,
            self.lm_head_chunk_sizes.len(),
            self.lm_head_chunk_sizes
        )?;
        let width = self.parts.iter().map(|p| p.name.len()).max().unwrap_or(0) + 10;
        for p in &self.parts {
            let what = match &p.kind {
                PartKind::Embeddings => "embeddings".to_string(),
                PartKind::LmHead => "lm head".to_string(),
                PartKind::Chunk { layers, .. } => {
                    format!("layers {}..{}", layers.start, layers.end)
                }
            };
            let limit = if p.fits_ios {
                "ok (iOS 1 GB, macOS 2 GB)"
            } else if p.fits_macos {
                "OVER the iOS 1 GB limit (fits macOS 2 GB)"
            } else {
                "OVER the iOS 1 GB and macOS 2 GB limits"
            };
            writeln!(
                f,
                "  {:width$} {:>14}  {:>10}  {limit}",
                format!("{}.mlpackage", p.name),
                what,
                human_bytes(p.estimated_bytes),
            )?;
        }
        Ok(())
    }
}

/// `12.3 MiB` style.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The largest divisor of `rows` not above `group` (what the quantizer uses when `group` does
/// not divide the channel count).
pub fn effective_group(rows: usize, group: usize) -> usize {
    (1..=group.min(rows).max(1))
        .rev()
        .find(|g| rows % g == 0)
        .unwrap_or(1)
}

/// Bytes a `[rows, cols]` weight takes in weight.bin: fp16, or packed indices plus fp16 LUTs.
pub fn weight_bytes(rows: usize, cols: usize, lut: Option<LutSpec>) -> u64 {
    const BLOB_OVERHEAD: u64 = 128; // metadata record + alignment, at most
    let n = (rows * cols) as u64;
    match lut {
        None => n * 2 + BLOB_OVERHEAD,
        Some(l) => {
            let groups = match l.group {
                Some(g) => (rows / effective_group(rows, g)) as u64,
                None => 1,
            };
            (n * u64::from(l.bits)).div_ceil(8) + groups * (1u64 << l.bits) * 2 + 2 * BLOB_OVERHEAD
        }
    }
}

/// Estimated weight.bin bytes of a chunk holding `layers` layers.
pub fn chunk_bytes(
    cfg: &DecoderConfig,
    plan: &ConvertPlan,
    layers: Range<usize>,
    last: bool,
) -> u64 {
    let h = cfg.hidden_size;
    let q = cfg.num_heads * cfg.head_dim;
    let kv = cfg.num_kv_heads * cfg.head_dim;
    let i = cfg.intermediate_size;
    let lut = plan.lut_ffn;
    let per_layer = weight_bytes(q, h, lut)
        + 2 * weight_bytes(kv, h, lut)
        + weight_bytes(h, q, lut)
        + 2 * weight_bytes(i, h, lut)
        + weight_bytes(h, i, lut)
        + 2 * weight_bytes(h, 1, None)
        + if cfg.qkv_bias {
            weight_bytes(q + 2 * kv, 1, None)
        } else {
            0
        }
        + if cfg.qk_norm {
            2 * weight_bytes(cfg.head_dim, 1, None)
        } else {
            0
        };
    let rope = 2 * weight_bytes(plan.context_length, cfg.head_dim, None);
    let final_norm = if last { weight_bytes(h, 1, None) } else { 0 };
    per_layer * layers.len() as u64 + rope + final_norm + 64
}

fn part(name: String, kind: PartKind, estimated_bytes: u64) -> PartPlan {
    PartPlan {
        name,
        kind,
        estimated_bytes,
        fits_ios: estimated_bytes <= IOS_FILE_LIMIT,
        fits_macos: estimated_bytes <= MACOS_FILE_LIMIT,
    }
}

/// Resolves the chunk count (`--chunks auto` included), layer ranges, LM head split, names and
/// size estimates. Reads no weights.
pub fn plan_parts(plan: &ConvertPlan, cfg: &DecoderConfig) -> Result<PartsPlan, ConvertError> {
    plan.validate()?;
    let layers = plan.layers_for(cfg)?;
    let largest_chunk = |n: usize| -> u64 {
        layout::layer_ranges(layers, n)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(k, r)| chunk_bytes(cfg, plan, r, k + 1 == n))
            .max()
            .unwrap_or(0)
    };
    let num_chunks = match plan.chunks {
        Chunks::Count(n) if n > layers => {
            return Err(ConvertError::InvalidFlag {
                flag: "--chunks",
                value: n.to_string(),
                reason: format!("the model has only {layers} layers to split"),
            })
        }
        Chunks::Count(n) => n,
        Chunks::Auto { max_chunk_mb } => (1..=layers)
            .find(|&n| largest_chunk(n) <= max_chunk_mb * MB)
            .ok_or(ConvertError::NoChunkCountFits {
                max_chunk_mb,
                layers,
                smallest_mb: largest_chunk(layers).div_ceil(MB),
            })?,
    };
    let layer_ranges =
        layout::layer_ranges(layers, num_chunks).ok_or_else(|| ConvertError::InvalidFlag {
            flag: "--chunks",
            value: num_chunks.to_string(),
            reason: format!("the model has only {layers} layers to split"),
        })?;
    let bits = |l: Option<LutSpec>| l.map(|l| l.bits);
    let names = PartNames::new(
        &plan.prefix,
        bits(plan.lut_embed),
        bits(plan.lut_lmhead),
        bits(plan.lut_ffn),
        num_chunks,
    );
    let lm_head_chunk_sizes = layout::lm_head_split(cfg.vocab_size);
    let mut parts = vec![part(
        names.embeddings.clone(),
        PartKind::Embeddings,
        weight_bytes(cfg.vocab_size, cfg.hidden_size, plan.lut_embed) + 64,
    )];
    for (k, (name, r)) in names.chunks.iter().zip(&layer_ranges).enumerate() {
        let bytes = chunk_bytes(cfg, plan, r.clone(), k + 1 == num_chunks);
        parts.push(part(
            name.clone(),
            PartKind::Chunk {
                index: k + 1,
                layers: r.clone(),
            },
            bytes,
        ));
    }
    let lm_bytes: u64 = lm_head_chunk_sizes
        .iter()
        .map(|&v| weight_bytes(v, cfg.hidden_size, plan.lut_lmhead))
        .sum::<u64>()
        + 64;
    parts.push(part(names.lm_head.clone(), PartKind::LmHead, lm_bytes));
    Ok(PartsPlan {
        model_type: cfg.model_type.clone(),
        layers,
        num_chunks,
        layer_ranges,
        lm_head_chunk_sizes,
        parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::RopeScaling;

    fn llama_1b() -> DecoderConfig {
        DecoderConfig {
            model_type: "llama".into(),
            vocab_size: 128256,
            hidden_size: 2048,
            intermediate_size: 8192,
            num_layers: 16,
            num_heads: 32,
            num_kv_heads: 8,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 5e5,
            rope_scaling: RopeScaling::None,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
            tie_embeddings: true,
            sliding_window: vec![None; 16],
            torch_dtype: None,
            bos_token_id: None,
            eos_token_ids: vec![],
        }
    }

    fn plan() -> ConvertPlan {
        ConvertPlan::new(
            ModelSpec {
                model: "m".into(),
                revision: None,
                offline: true,
            },
            "/tmp/out",
        )
    }

    fn flag_of(e: ConvertError) -> (&'static str, String) {
        match e {
            ConvertError::InvalidFlag { flag, value, .. } => (flag, value),
            other => panic!("expected InvalidFlag, got {other}"),
        }
    }

    #[test]
    fn validation_names_the_flag_and_value() {
        let cfg = llama_1b();
        let mut p = plan();
        p.chunks = Chunks::Count(0);
        assert_eq!(flag_of(p.validate().unwrap_err()), ("--chunks", "0".into()));
        p.chunks = Chunks::Count(17);
        let e = plan_parts(&p, &cfg).unwrap_err();
        assert!(e.to_string().contains("16 layers"), "{e}");
        assert_eq!(flag_of(e), ("--chunks", "17".into()));
        let mut p = plan();
        p.batch_size = 1024;
        assert_eq!(
            flag_of(p.validate().unwrap_err()),
            ("--batch-size", "1024".into())
        );
        let mut p = plan();
        p.lut_ffn = Some(LutSpec {
            bits: 5,
            group: Some(8),
        });
        assert_eq!(flag_of(p.validate().unwrap_err()), ("--lut", "5".into()));
        let mut p = plan();
        p.num_layers = Some(20);
        assert_eq!(
            flag_of(plan_parts(&p, &cfg).unwrap_err()),
            ("--num-layers", "20".into())
        );
        let mut p = plan();
        p.prefix = "a b".into();
        assert_eq!(
            flag_of(p.validate().unwrap_err()),
            ("--prefix", "a b".into())
        );
    }

    #[test]
    fn lut_weight_bytes_count_indices_and_luts() {
        // 64×64 at 4 bits, group 16: 2048 index bytes + 4 LUTs of 16 fp16.
        let b = weight_bytes(
            64,
            64,
            Some(LutSpec {
                bits: 4,
                group: Some(16),
            }),
        );
        assert_eq!(b, 2048 + 4 * 16 * 2 + 256);
        assert_eq!(weight_bytes(64, 64, None), 64 * 64 * 2 + 128);
        assert_eq!(effective_group(172, 8), 4);
        assert_eq!(effective_group(64, 8), 8);
    }

    #[test]
    fn llama_1b_fp16_needs_chunks_and_auto_picks_the_smallest_count() {
        let cfg = llama_1b();
        let mut p = plan();
        p.chunks = Chunks::Count(1);
        let one = plan_parts(&p, &cfg).unwrap();
        let chunk = &one.parts[1];
        // 16 layers × ~60.8M params × 2 bytes ≈ 1.95 GB: over iOS, within macOS.
        assert!(!chunk.fits_ios && chunk.fits_macos, "{one}");
        p.chunks = Chunks::Auto { max_chunk_mb: 1024 };
        let auto = plan_parts(&p, &cfg).unwrap();
        assert_eq!(auto.num_chunks, 2, "{auto}");
        assert!(auto.parts.iter().all(|p| p.fits_ios), "{auto}");
        p.lut_ffn = Some(LutSpec {
            bits: 4,
            group: Some(8),
        });
        p.chunks = Chunks::Auto { max_chunk_mb: 1024 };
        assert_eq!(plan_parts(&p, &cfg).unwrap().num_chunks, 1);
        p.chunks = Chunks::Auto { max_chunk_mb: 1 };
        assert!(matches!(
            plan_parts(&p, &cfg).unwrap_err(),
            ConvertError::NoChunkCountFits { .. }
        ));
    }

    #[test]
    fn parts_are_named_and_ranged() {
        let cfg = llama_1b();
        let mut p = plan();
        p.chunks = Chunks::Count(3);
        p.lut_ffn = Some(LutSpec {
            bits: 6,
            group: Some(8),
        });
        p.lut_lmhead = Some(LutSpec {
            bits: 6,
            group: Some(8),
        });
        let pp = plan_parts(&p, &cfg).unwrap();
        assert_eq!(pp.layer_ranges, vec![0..6, 6..11, 11..16]);
        assert_eq!(pp.lm_head_chunk_sizes, vec![16032; 8]);
        let names: Vec<_> = pp.parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "embeddings",
                "combined_lut6_chunk_01of03",
                "combined_lut6_chunk_02of03",
                "combined_lut6_chunk_03of03",
                "lm_head_lut6"
            ]
        );
        let text = pp.to_string();
        assert!(text.contains("layers 6..11"), "{text}");
    }
}
