//! `anec convert`: the pipeline from a model source to the output folder, with progress.
//!
//! [`ConvertPlan`] is the validated settings the CLI fills; [`plan_parts`] turns it and the
//! model's config into the parts to write (the dry run prints exactly that); [`run`] writes them.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ane::layout::{self, PartNames};
use crate::ane::{
    build_chunk, build_embeddings, build_lm_head, build_monolithic, AneError, Ctx, PartOptions,
};
use crate::arch::DecoderConfig;
use crate::calib::{data::CalibrationSource, Source as CalibrationInput};
use crate::calib::{CalibError, Calibrator};
use crate::lint::PackageLint;
use crate::meta::{LutBits, Meta, ModelInfo, Parameters, Source};
use crate::mil::{Metadata, PackageWriter};
use crate::quant::{LutSpec, QuantReport};
use crate::source::{ModelFiles, ModelSpec};
use crate::weights::{WeightError, WeightStore};

pub use crate::source::CHAT_TEMPLATE_FILES;

/// iOS refuses to load a model file larger than this.
pub const IOS_FILE_LIMIT: u64 = 1 << 30;
/// macOS's per-file limit.
pub const MACOS_FILE_LIMIT: u64 = 2 << 30;
/// The longest context: positions gather table rows with uint16 indices.
pub const MAX_CONTEXT: usize = 1 << 16;
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
    /// Calibration for activation-weighted LUTs (`--calibration`); `None` is plain k-means.
    /// Runs only when the chunks or the LM head are LUT-quantized.
    pub calibration: Option<CalibrationInput>,
    /// At most this many calibration tokens (`--calibration-tokens`).
    pub calibration_tokens: usize,
    /// Calibrate each layer on the outputs of the already-quantized layers below it.
    pub calibration_sequential: bool,
    /// How the statistics shape the LUTs (`--calibration-method`).
    pub calibration_method: crate::calib::Method,
    /// Lint findings are errors (nothing is written) instead of warnings.
    pub strict: bool,
    /// `--fp16-scale`: Gemma's fp16 range scale α (ANE-CONTRACT.md).
    pub fp16_scale: Fp16Scale,
    /// One package holding embeddings, every layer and the LM head (`--monolithic`).
    pub monolithic: bool,
    /// The platform the output must load on (`--target`).
    pub target: Target,
    /// The iOS per-file limit a monolithic package is held to with `Target::Ios`
    /// ([`IOS_FILE_LIMIT`]; lower only to test the refusal).
    pub ios_file_limit: u64,
}

/// Where the output must load (`--target`): iOS holds a monolithic package to its per-file
/// limit; macOS does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    #[default]
    Ios,
    Macos,
}

/// `--fp16-scale`: how Gemma's residual stream is kept inside fp16.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fp16Scale {
    /// Measure the residual peak of the f32 reference over the calibration text and pick α.
    Auto,
    /// No scaling (α = 1).
    Off,
    /// This α (0 < α ≤ 1).
    Value(f64),
}

/// The residual peak `--fp16-scale auto` aims for: half of fp16's largest value (65504), so
/// inputs beyond the calibration text still have a factor of two of headroom.
pub const FP16_SCALE_TARGET: f64 = 32768.0;

/// Calibration tokens the peak measurement runs through the f32 reference.
pub const FP16_SCALE_TOKENS: usize = 512;

/// The α `--fp16-scale auto` picks for a measured residual `peak`: 1 when the peak is within
/// [`FP16_SCALE_TARGET`], else the largest power of two that brings it there (a power of two
/// scales fp16 values exactly).
pub fn fp16_scale_for(peak: f64) -> f64 {
    if peak.is_nan() || peak <= FP16_SCALE_TARGET {
        return 1.0;
    }
    (FP16_SCALE_TARGET / peak).log2().floor().exp2()
}

/// What `--fp16-scale` chose: α and, when measured, the peak and the tokens it was measured on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fp16ScaleReport {
    pub alpha: f64,
    pub peak: Option<f64>,
    pub tokens: usize,
}

/// Calibration text is cut into sequences of at most this many tokens.
pub const CALIBRATION_SEQ_LEN: usize = 256;

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
            calibration: Some(CalibrationInput::Text(CalibrationSource::Builtin)),
            calibration_tokens: 2048,
            calibration_sequential: false,
            calibration_method: crate::calib::Method::Weighted,
            strict: false,
            fp16_scale: Fp16Scale::Auto,
            monolithic: false,
            target: Target::Ios,
            ios_file_limit: IOS_FILE_LIMIT,
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
        if !(1..=crate::meta::MAX_CONTEXT_LENGTH).contains(&self.context_length) {
            return bad(
                "--context-length",
                self.context_length.to_string(),
                &format!(
                    "must be between 1 and {} (the ANE's widest tensor dimension)",
                    crate::meta::MAX_CONTEXT_LENGTH
                ),
            );
        }
        if self.batch_size == 0 {
            return bad("--batch-size", "0".into(), "must be at least 1");
        }
        if let Fp16Scale::Value(a) = self.fp16_scale {
            if !(a > 0.0 && a <= 1.0) {
                return bad(
                    "--fp16-scale",
                    a.to_string(),
                    "must be auto, none or a number in (0, 1]",
                );
            }
        }
        if self.batch_size > self.context_length {
            return bad(
                "--batch-size",
                self.batch_size.to_string(),
                &format!("must not exceed --context-length ({})", self.context_length),
            );
        }
        // The KV state's width: coremltools #2631 reports stateful models failing on the ANE
        // unless state dims are multiples of 32; positions index tables as uint16.
        if self.context_length % 32 != 0 || self.context_length > MAX_CONTEXT {
            return bad(
                "--context-length",
                self.context_length.to_string(),
                &format!(
                    "must be a multiple of 32 (an ANE state shape), at most {MAX_CONTEXT} \
                     (uint16 positions)"
                ),
            );
        }
        // Runners pad the last prefill batch to B rows (ANEMLL's chat.py): every padded batch
        // must stay inside the C rows of the cache, the mask and the RoPE tables.
        if self.context_length % self.batch_size != 0 {
            return bad(
                "--batch-size",
                self.batch_size.to_string(),
                &format!(
                    "must divide --context-length ({}): runners pad the last prefill batch to B \
                     rows, which must end inside the context",
                    self.context_length
                ),
            );
        }
        match self.chunks {
            Chunks::Count(0) => return bad("--chunks", "0".into(), "must be at least 1"),
            Chunks::Auto { max_chunk_mb: 0 } => {
                return bad("--max-chunk-mb", "0".into(), "must be at least 1")
            }
            _ => {}
        }
        if self.calibration.is_some() && self.calibration_tokens == 0 {
            return bad(
                "--calibration-tokens",
                "0".into(),
                "must be at least 1 (use --calibration none for plain k-means)",
            );
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
    #[error(transparent)]
    Output(#[from] crate::outdir::OutputError),
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
    #[error(transparent)]
    Source(Box<crate::source::SourceError>),
    #[error(transparent)]
    Arch(#[from] crate::arch::ArchError),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(transparent)]
    Mil(#[from] crate::mil::MilError),
    #[error(transparent)]
    Calib(Box<CalibError>),
    #[error("{part}: {source}")]
    Part { part: String, source: Box<AneError> },
    #[error("--strict: {count} lint finding(s), nothing written; first: {first}")]
    Lint { count: usize, first: String },
    #[error("--fp16-scale auto: measuring the residual peak: {0}")]
    Reference(Box<crate::reference::ReferenceError>),
    #[error("{file} {what} {} ({bytes} bytes), over the iOS per-file limit of {} ({limit} bytes); nothing written. Convert in chunks (without --monolithic), with smaller LUTs, or for --target macos", human_bytes(*bytes), human_bytes(*limit))]
    TooLargeForIos {
        file: String,
        /// "would be" (the plan's estimate) or "is" (as written).
        what: &'static str,
        bytes: u64,
        limit: u64,
    },
}

impl From<crate::source::SourceError> for ConvertError {
    fn from(e: crate::source::SourceError) -> Self {
        ConvertError::Source(Box::new(e))
    }
}

impl From<CalibError> for ConvertError {
    fn from(e: CalibError) -> Self {
        ConvertError::Calib(Box::new(e))
    }
}

/// What one output file is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartKind {
    Embeddings,
    Chunk {
        index: usize,
        layers: Range<usize>,
    },
    LmHead,
    /// Embeddings, `layers` and the LM head in one package.
    Monolithic {
        layers: Range<usize>,
    },
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
                PartKind::Chunk { .. } | PartKind::Monolithic { .. } => chunks.push(p.name.clone()),
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
                PartKind::Monolithic { layers } => {
                    format!("all, {} layers", layers.end)
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
        + layout::channel_split(i)
            .into_iter()
            .map(|part| 2 * weight_bytes(part, h, lut) + weight_bytes(h, part, lut))
            .sum::<u64>()
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
    let c = plan.context_length;
    let rope = 2 * weight_bytes(c, cfg.head_dim, None);
    // One [C, C] sliding-window band per distinct window narrower than the context.
    let mut windows: Vec<usize> = layers
        .clone()
        .filter_map(|l| crate::ane::parts::layer_window(cfg, l, c))
        .collect();
    windows.sort_unstable();
    windows.dedup();
    let bands = windows.len() as u64 * weight_bytes(c, c, None);
    let final_norm = if last { weight_bytes(h, 1, None) } else { 0 };
    per_layer * layers.len() as u64 + rope + bands + final_norm + 64
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

/// Gemma's α: `--fp16-scale` as given, or (`auto`) from the residual peak of the f32 reference
/// over [`FP16_SCALE_TOKENS`] calibration tokens. `None` for the other families (a given value
/// is refused there).
fn resolve_fp16_scale(
    plan: &ConvertPlan,
    cfg: &DecoderConfig,
    files: &ModelFiles,
    layers: usize,
) -> Result<Option<Fp16ScaleReport>, ConvertError> {
    if cfg.gemma.is_none() {
        return match plan.fp16_scale {
            Fp16Scale::Value(a) => Err(ConvertError::InvalidFlag {
                flag: "--fp16-scale",
                value: a.to_string(),
                reason: format!("only Gemma 3 is scaled (this model is {})", cfg.model_type),
            }),
            _ => Ok(None),
        };
    }
    match plan.fp16_scale {
        Fp16Scale::Off => Ok(Some(Fp16ScaleReport {
            alpha: 1.0,
            peak: None,
            tokens: 0,
        })),
        Fp16Scale::Value(a) => Ok(Some(Fp16ScaleReport {
            alpha: a,
            peak: None,
            tokens: 0,
        })),
        Fp16Scale::Auto => {
            let (peak, tokens) = residual_peak(plan, files, &cfg.eos_token_ids, layers)?;
            if !peak.is_finite() {
                return Err(ConvertError::InvalidFlag {
                    flag: "--fp16-scale",
                    value: "auto".into(),
                    reason: "the f32 reference's residual stream is not finite on the \
                             calibration text; give α explicitly"
                        .into(),
                });
            }
            Ok(Some(Fp16ScaleReport {
                alpha: fp16_scale_for(peak),
                peak: Some(peak),
                tokens,
            }))
        }
    }
}

/// The largest |value| of the residual stream after any layer of the f32 reference, over the
/// calibration text (`--calibration`, the built-in corpus when none), and the tokens run.
fn residual_peak(
    plan: &ConvertPlan,
    files: &ModelFiles,
    eos: &[u32],
    layers: usize,
) -> Result<(f64, usize), ConvertError> {
    use crate::reference::{Config, Reference};
    let boxed = |e| ConvertError::Reference(Box::new(e));
    let rcfg = Config::from_file(&files.config).map_err(boxed)?;
    let r = Reference::load_first_layers(&rcfg, files, layers).map_err(boxed)?;
    let source = plan
        .calibration
        .clone()
        .unwrap_or(CalibrationInput::Text(CalibrationSource::Builtin));
    let set = crate::calib::load(&source, files, eos, FP16_SCALE_TOKENS, CALIBRATION_SEQ_LEN)?;
    let mut peak = 0f64;
    for seq in &set.sequences {
        let mut cache = r.new_cache();
        let trace = r.forward_traced(seq, &mut cache).map_err(boxed)?;
        for m in &trace.layers {
            for &v in &m.data {
                // A non-finite residual is beyond any scale: report it as infinite.
                let a = if v.is_finite() {
                    f64::from(v.abs())
                } else {
                    f64::INFINITY
                };
                peak = peak.max(a);
            }
        }
    }
    Ok((peak, set.tokens))
}

/// Resolves the chunk count (`--chunks auto` included), layer ranges, LM head split, names and
/// size estimates. Reads no weights.
pub fn plan_parts(plan: &ConvertPlan, cfg: &DecoderConfig) -> Result<PartsPlan, ConvertError> {
    plan.validate()?;
    if plan.monolithic {
        return plan_monolithic(plan, cfg);
    }
    let layers = plan.layers_for(cfg)?;
    // Gemma beyond its window: a prefill batch lies wholly below the window (`prefill` writes
    // the local cache at its positions) or wholly past it (`prefill_rotate` shifts it), as the
    // runner steps batches of B from position 0.
    if cfg.gemma.is_some() {
        let window = cfg
            .sliding_window
            .iter()
            .take(layers)
            .flatten()
            .copied()
            .max();
        if let Some(w) = window.filter(|&w| plan.context_length > w) {
            if plan.batch_size > w || w % plan.batch_size != 0 {
                return Err(ConvertError::InvalidFlag {
                    flag: "--batch-size",
                    value: plan.batch_size.to_string(),
                    reason: format!(
                        "Gemma's sliding window {w} is shorter than --context-length {}: the \
                         batch must divide the window (a prefill batch may not straddle it)",
                        plan.context_length
                    ),
                });
            }
        }
    }
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
                reason: match plan.num_layers {
                    Some(k) => format!("--num-layers {k} leaves only {k} layer(s) to split"),
                    None => format!("the model has only {layers} layers to split"),
                },
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

/// `[P_]monolithic_full[_lutB]`: ANEMLL 0.3.5's name, B the layers' LUT bits.
pub fn monolithic_name(prefix: &str, lut_bits: Option<u32>) -> String {
    let stem = format!(
        "monolithic_full{}",
        lut_bits.map(|b| format!("_lut{b}")).unwrap_or_default()
    );
    if prefix.is_empty() {
        stem
    } else {
        format!("{prefix}_{stem}")
    }
}

/// The one-package plan; refused with `Target::Ios` when the estimate is over the limit.
fn plan_monolithic(plan: &ConvertPlan, cfg: &DecoderConfig) -> Result<PartsPlan, ConvertError> {
    if cfg.gemma.is_some() {
        return Err(ConvertError::InvalidFlag {
            flag: "--monolithic",
            value: cfg.model_type.clone(),
            reason: "Gemma 3 converts to chunks only for now (its two caches and rotate \
                     functions are not joined into one package yet)"
                .into(),
        });
    }
    let layers = plan.layers_for(cfg)?;
    let lm_head_chunk_sizes = layout::lm_head_split(cfg.vocab_size);
    let bytes = weight_bytes(cfg.vocab_size, cfg.hidden_size, plan.lut_embed)
        + chunk_bytes(cfg, plan, 0..layers, true)
        + lm_head_chunk_sizes
            .iter()
            .map(|&v| weight_bytes(v, cfg.hidden_size, plan.lut_lmhead))
            .sum::<u64>()
        + 64;
    let name = monolithic_name(&plan.prefix, plan.lut_ffn.map(|l| l.bits));
    check_ios_size(plan, &name, "would be", bytes)?;
    Ok(PartsPlan {
        model_type: cfg.model_type.clone(),
        layers,
        num_chunks: 1,
        layer_ranges: vec![Range {
            start: 0,
            end: layers,
        }],
        lm_head_chunk_sizes,
        parts: vec![part(
            name,
            PartKind::Monolithic { layers: 0..layers },
            bytes,
        )],
    })
}

/// With `--monolithic` for iOS: refuses `bytes` over the plan's iOS limit.
fn check_ios_size(
    plan: &ConvertPlan,
    name: &str,
    what: &'static str,
    bytes: u64,
) -> Result<(), ConvertError> {
    if plan.monolithic && plan.target == Target::Ios && bytes > plan.ios_file_limit {
        return Err(ConvertError::TooLargeForIos {
            file: format!("{name}.mlpackage"),
            what,
            bytes,
            limit: plan.ios_file_limit,
        });
    }
    Ok(())
}

/// Bytes of every file under `path`.
fn tree_bytes(path: &Path) -> Result<u64, ConvertError> {
    let mut total = 0;
    for entry in
        std::fs::read_dir(path).map_err(io_err(format!("cannot list {}", path.display())))?
    {
        let entry = entry.map_err(io_err(format!("cannot list {}", path.display())))?;
        let meta = entry
            .metadata()
            .map_err(io_err(format!("cannot stat {}", entry.path().display())))?;
        total += if meta.is_dir() {
            tree_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

// ---------------------------------------------------------------- running the plan

/// One written package.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FileReport {
    /// File name in the output folder (`.mlpackage`).
    pub name: String,
    /// Size of the whole package: weight.bin, model.mlmodel and Manifest.json.
    pub bytes: u64,
    /// Size of its weight.bin.
    pub weight_bytes: u64,
    /// The `.mlmodelc` beside it, when compiled.
    pub compiled: Option<String>,
}

/// What `convert::run` did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConvertReport {
    pub output: PathBuf,
    pub dry_run: bool,
    pub plan: PartsPlan,
    pub files: Vec<FileReport>,
    /// Every palettized weight's SNR (build order), role medians and flagged tensors.
    pub quant: QuantReport,
    /// The calibration pass, when the LUTs were activation-weighted.
    pub calibration: Option<CalibrationReport>,
    /// Gemma's fp16 range scale.
    pub fp16_scale: Option<Fp16ScaleReport>,
    /// `anec lint` over every written package.
    pub lint: Vec<PackageLint>,
    pub seconds: f64,
    /// Size of everything written: the packages, tokenizer files and meta.
    pub total_bytes: u64,
    pub meta: Option<Meta>,
    /// The files fetched from the hub for this run (empty when the cache or a folder had them).
    pub downloaded: Vec<crate::source::Downloaded>,
}

/// What the calibration pass read and how long it took.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CalibrationReport {
    /// Where the text came from, and how many of its tokens were used.
    pub source: String,
    pub tokens: usize,
    pub sequences: usize,
    /// Calibrate layer `l` on the quantized layers below it.
    pub sequential: bool,
    pub method: crate::calib::Method,
    /// Forward passes and statistics (the quantizer's own time is `quant.seconds`).
    pub seconds: f64,
    /// Set when there were fewer tokens than asked for.
    pub warning: Option<String>,
}

/// The summary a person reads, one screen for any model: the files and their sizes, the plan,
/// calibration, SNR per role, flagged tensors, grouped notes, lint and the time. The per-tensor
/// rows are in `--json` and `--report`.
impl fmt::Display for ConvertReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            writeln!(
                f,
                "dry run: nothing written; {} would hold:",
                self.output.display()
            )?;
            return write!(f, "{}", self.plan);
        }
        writeln!(f, "wrote {}:", self.output.display())?;
        let width = self.files.iter().map(|x| x.name.len()).max().unwrap_or(0);
        for file in &self.files {
            let what = self
                .plan
                .parts
                .iter()
                .find(|p| file.name.strip_suffix(".mlpackage") == Some(p.name.as_str()))
                .map(|p| match &p.kind {
                    PartKind::Embeddings => "embeddings".to_string(),
                    PartKind::LmHead => "LM head".to_string(),
                    PartKind::Chunk { layers, .. } => {
                        format!("layers {}..{}", layers.start, layers.end)
                    }
                    PartKind::Monolithic { layers } => {
                        format!(
                            "embeddings, layers {}..{}, LM head",
                            layers.start, layers.end
                        )
                    }
                })
                .unwrap_or_default();
            writeln!(
                f,
                "  {:width$}  {:>10}  {what}{}",
                file.name,
                human_bytes(file.bytes),
                file.compiled
                    .as_ref()
                    .map(|c| format!("  → {c}"))
                    .unwrap_or_default()
            )?;
        }
        writeln!(
            f,
            "  {:width$}  {:>10}  with the tokenizer files and meta.yaml/meta.json",
            "total",
            human_bytes(self.total_bytes)
        )?;
        write!(f, "plan: {}", self.plan_line())?;
        if let Some(sc) = &self.fp16_scale {
            match sc.peak {
                Some(peak) => writeln!(
                    f,
                    "fp16 scale α = {} (reference residual peak {peak:.1} over {} calibration \
                     tokens; scaled peak {:.1})",
                    sc.alpha,
                    sc.tokens,
                    peak * sc.alpha
                )?,
                None => writeln!(f, "fp16 scale α = {} (as given)", sc.alpha)?,
            }
        }
        if let Some(c) = &self.calibration {
            writeln!(
                f,
                "calibrated ({}) in {:.1} s{}\n  on {}",
                format!("{:?}", c.method).to_lowercase(),
                c.seconds,
                if c.sequential {
                    ", each layer on the quantized layers below it"
                } else {
                    ""
                },
                c.source,
            )?;
            if let Some(w) = &c.warning {
                writeln!(f, "warning: {w}")?;
            }
        }
        if self.quant.tensors.is_empty() {
            writeln!(f, "no LUT: every weight is fp16")?;
        } else {
            write!(f, "{}", self.quant)?;
        }
        let findings: usize = self.lint.iter().map(|l| l.findings.len()).sum();
        if findings == 0 {
            writeln!(f, "lint: {} packages clean", self.lint.len())?;
        } else {
            writeln!(f, "lint: {findings} finding(s)")?;
            for l in self.lint.iter().filter(|l| !l.findings.is_empty()) {
                writeln!(f, "  {}:", l.package)?;
                for x in &l.findings {
                    writeln!(f, "    {x}")?;
                }
            }
        }
        writeln!(f, "time: {:.1} s", self.seconds)
    }
}

impl ConvertReport {
    /// `llama, 16 layers in 2 chunks; LUT chunks 4-bit (group 8), LM head 6-bit (group 8),
    /// embeddings fp16; context 512, batch 64`, ending with a newline.
    fn plan_line(&self) -> String {
        let mut line = format!(
            "{}, {} layers in {} chunk(s)",
            self.plan.model_type, self.plan.layers, self.plan.num_chunks
        );
        if let Some(m) = &self.meta {
            let p = &m.model_info.parameters;
            let lut = |bits: LutBits, group: Option<usize>| match (bits, group) {
                (LutBits::None, _) => "fp16".to_string(),
                (LutBits::Bits(b), Some(g)) => format!("{b}-bit (group {g})"),
                (LutBits::Bits(b), None) => format!("{b}-bit (one LUT per tensor)"),
            };
            line += &format!(
                "; chunks {}, LM head {}, embeddings {}; context {}, batch {}",
                lut(p.lut_ffn, p.lut_ffn_per_channel),
                lut(p.lut_lmhead, p.lut_lmhead_per_channel),
                lut(p.lut_embeddings, p.lut_embeddings_per_channel),
                p.context_length,
                p.batch_size
            );
            if p.split_lm_head > 1 {
                line += &format!("; LM head in {} parts", p.split_lm_head);
            }
            if p.argmax_in_model {
                line += "; argmax in the LM head";
            }
        }
        line.push('\n');
        line
    }

    /// Writes the per-tensor quantization rows to `path`, atomically (a temp file beside it,
    /// renamed): CSV with a header, or the JSON of the whole quantization report.
    pub fn write_tensor_report(
        &self,
        path: &Path,
        format: ReportFormat,
    ) -> Result<(), ConvertError> {
        let text = match format {
            ReportFormat::Csv => self.quant.to_csv(),
            ReportFormat::Json => {
                let mut t =
                    serde_json::to_string_pretty(&self.quant).map_err(|e| ConvertError::Io {
                        context: format!("cannot serialize the report for {}", path.display()),
                        source: std::io::Error::other(e),
                    })?;
                t.push('\n');
                t
            }
        };
        let context = || format!("cannot write {}", path.display());
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(context()))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(io_err(context()))?;
        tmp.persist(path).map_err(|e| ConvertError::Io {
            context: context(),
            source: e.error,
        })?;
        Ok(())
    }
}

/// The format of `--report FILE`, from its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Csv,
    Json,
}

impl ReportFormat {
    /// From the file name's extension, `.csv` or `.json` in any case; `None` for anything else.
    pub fn for_path(path: &Path) -> Option<ReportFormat> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("csv") => Some(ReportFormat::Csv),
            Some("json") => Some(ReportFormat::Json),
            _ => None,
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ConvertError {
    let context = context.into();
    move |source| ConvertError::Io { context, source }
}

/// Whether `name` belongs to a layer at or beyond `layers` (left out by `--num-layers`).
fn skipped_layer(name: &str, layers: usize) -> bool {
    name.strip_prefix("model.layers.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| i >= layers)
}

/// The Core ML metadata of one part (shown by Xcode and `anec inspect`).
fn package_metadata(
    cfg: &DecoderConfig,
    source: &str,
    plan: &ConvertPlan,
    kind: &PartKind,
) -> Metadata {
    let what = match kind {
        PartKind::Embeddings => "embeddings".to_string(),
        PartKind::LmHead => "LM head".to_string(),
        PartKind::Chunk { index, layers } => {
            format!(
                "transformer chunk {index} (layers {}..{})",
                layers.start, layers.end
            )
        }
        PartKind::Monolithic { layers } => format!(
            "monolithic model (embeddings, layers {}..{}, LM head)",
            layers.start, layers.end
        ),
    };
    let mut user_defined = std::collections::BTreeMap::new();
    user_defined.insert("com.anec.source".to_string(), source.to_string());
    user_defined.insert("com.anec.architecture".to_string(), cfg.model_type.clone());
    user_defined.insert(
        "com.anec.context_length".to_string(),
        plan.context_length.to_string(),
    );
    user_defined.insert(
        "com.anec.batch_size".to_string(),
        plan.batch_size.to_string(),
    );
    Metadata {
        author: "anec".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        short_description: format!(
            "{source} {what}, converted by anec for the Apple Neural Engine"
        ),
        license: String::new(),
        user_defined,
    }
}

/// Progress on stderr (a terminal, and not `--quiet`): one bar over the estimated work of all
/// weights, so the ETA holds across fp16 tables and LUT layers alike (see [`work_per_element`]);
/// the first line names the part (k/N) and what it does to which tensor, the second has the bar,
/// elapsed time, ETA, tensors and source bytes done; both fit 80 columns. It ticks on its own
/// while one tensor takes seconds, and is cleared when dropped.
struct Progress {
    bar: indicatif::ProgressBar,
    parts: usize,
    total_bytes: u64,
    state: std::cell::RefCell<ProgressState>,
    /// Milliseconds from the start to the last finished tensor (for [`eta`]).
    last_step_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Default)]
struct ProgressState {
    index: usize,
    part: String,
    lut: Option<LutSpec>,
    /// The matrix being converted (announced with 0 bytes), until it is stored.
    started: Option<String>,
    tensors: usize,
    bytes: u64,
}

/// Work units per weight element: 1 to convert it to fp16 and store it; quantizing adds a
/// k-means over 2^bits levels (measured on a Llama-1B: ≈4×, 10–20× and 50× the fp16 time at
/// 4, 6 and 8 bits).
fn work_per_element(lut: Option<LutSpec>) -> u64 {
    match lut {
        None => 1,
        Some(l) => 1 + (1u64 << l.bits) / 4,
    }
}

/// Elements of the weights the parts read: one vocab × hidden table, one layer's matrices, one
/// layer's vectors (norms, biases).
fn weight_elements(cfg: &DecoderConfig) -> (u64, u64, u64) {
    let h = cfg.hidden_size as u64;
    let q = (cfg.num_heads * cfg.head_dim) as u64;
    let kv = (cfg.num_kv_heads * cfg.head_dim) as u64;
    let i = cfg.intermediate_size as u64;
    let matrices = 2 * h * q + 2 * h * kv + 3 * h * i;
    let vectors = 2 * h
        + if cfg.qkv_bias { q + 2 * kv } else { 0 }
        + if cfg.o_bias { h } else { 0 }
        + if cfg.mlp_bias { 2 * i + h } else { 0 }
        + if cfg.qk_norm {
            2 * cfg.head_dim as u64
        } else {
            0
        };
    (cfg.vocab_size as u64 * h, matrices, vectors)
}

/// The work units of every weight the parts read (the progress total).
fn total_work(cfg: &DecoderConfig, plan: &ConvertPlan, layers: usize) -> u64 {
    let (table, matrices, vectors) = weight_elements(cfg);
    table * work_per_element(plan.lut_embed)
        + layers as u64 * (matrices * work_per_element(plan.lut_ffn) + vectors)
        + cfg.hidden_size as u64
        + table * work_per_element(plan.lut_lmhead)
}

/// Source bytes (as fp16) of every weight the parts read: the embeddings table read twice
/// (embeddings and LM head, tied or not), the layers, the final norm.
fn total_weight_bytes(cfg: &DecoderConfig, layers: usize) -> u64 {
    let (table, matrices, vectors) = weight_elements(cfg);
    2 * (2 * table + layers as u64 * (matrices + vectors) + cfg.hidden_size as u64)
}

/// The time left at the run's average rate so far (work per second up to the last finished
/// tensor), counting down while the next one is in work. indicatif's own `{eta}` follows the
/// recent rate and swings by minutes while one LM head slice quantizes for seconds.
fn eta(pos: u64, len: u64, elapsed: std::time::Duration, last_step_ms: u64) -> Option<u64> {
    if pos == 0 || last_step_ms == 0 {
        return None;
    }
    let at_step = last_step_ms as f64 / 1000.0;
    let left = len.saturating_sub(pos) as f64 * at_step / pos as f64;
    let since = (elapsed.as_secs_f64() - at_step).max(0.0);
    // Running late on this tensor: the average rate including the time spent on it.
    let left = if left > since {
        left - since
    } else {
        len.saturating_sub(pos) as f64 * elapsed.as_secs_f64() / pos as f64
    };
    Some(left.round() as u64)
}

/// `45s`, `2m05s`, `1h02m`.
fn short_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

impl Progress {
    fn new(quiet: bool, parts: usize, total_work: u64, total_bytes: u64) -> Self {
        use std::io::IsTerminal;
        let last_step_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let bar = if quiet || !std::io::stderr().is_terminal() {
            indicatif::ProgressBar::hidden()
        } else {
            let bar = indicatif::ProgressBar::new(total_work);
            let last = last_step_ms.clone();
            let eta_key = move |st: &indicatif::ProgressState, w: &mut dyn fmt::Write| {
                let step = last.load(std::sync::atomic::Ordering::Relaxed);
                let text = eta(st.pos(), st.len().unwrap_or(0), st.elapsed(), step)
                    .map(short_duration)
                    .unwrap_or_else(|| "?".to_string());
                let _ = write!(w, "{text:<6}");
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} {wide_msg}\n  [{bar:20}] {percent:>3}% {elapsed_precise} eta {anec_eta} {prefix}",
            ) {
                bar.set_style(style.with_key("anec_eta", eta_key).progress_chars("=> "));
            }
            bar.set_message("reading the checkpoint");
            bar.enable_steady_tick(std::time::Duration::from_millis(150));
            bar
        };
        Progress {
            bar,
            parts,
            total_bytes,
            state: Default::default(),
            last_step_ms,
        }
    }

    /// Part `index` (from 1) starts; its matrices are stored with `lut`.
    fn part(&self, index: usize, name: &str, lut: Option<LutSpec>) {
        {
            let mut st = self.state.borrow_mut();
            st.index = index;
            st.part = name.to_string();
            st.lut = lut;
            st.started = None;
        }
        self.show("reading weights");
    }

    /// The part callback: `bytes == 0` announces a matrix, otherwise `tensor` is stored.
    fn tensor(&self, tensor: &str, bytes: u64) {
        let short = tensor.strip_prefix("model.").unwrap_or(tensor);
        let short = short.strip_suffix(".weight").unwrap_or(short);
        let doing = {
            let mut st = self.state.borrow_mut();
            if bytes == 0 {
                st.started = Some(tensor.to_string());
                match st.lut {
                    Some(l) => format!("quantizing {short} (LUT{})", l.bits),
                    None => format!("converting {short} (fp16)"),
                }
            } else {
                let per = if st.started.as_deref() == Some(tensor) {
                    work_per_element(st.lut)
                } else {
                    1
                };
                st.started = None;
                st.tensors += 1;
                st.bytes += bytes;
                self.bar.inc(bytes / 2 * per);
                self.last_step_ms.store(
                    self.bar.elapsed().as_millis().max(1) as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                format!("stored {short}")
            }
        };
        self.show(&doing);
    }

    /// The LUT of the tensors that follow (the monolithic package mixes the parts' LUTs).
    fn set_lut(&self, lut: Option<LutSpec>) {
        self.state.borrow_mut().lut = lut;
    }

    /// A stage of the current part with no tensor (writing, compiling).
    fn show(&self, doing: &str) {
        let st = self.state.borrow();
        self.bar.set_prefix(format!(
            "{} tensors, {}/{}",
            st.tensors,
            human_bytes(st.bytes),
            human_bytes(self.total_bytes)
        ));
        self.bar
            .set_message(format!("{}/{} {}: {doing}", st.index, self.parts, st.part));
    }
}

impl Drop for Progress {
    /// An error mid-way leaves no half-drawn bar above its message.
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

/// The LUT of `tensor` as the monolithic package reads it (see [`build_monolithic`]): the
/// embedding table first with `--lut-embed`, the layers with `--lut`, then the LM head with
/// `--lut-lmhead` (`lm_head`, or the tied table read again once `table_done` is set, which the
/// table's first store does).
fn monolithic_lut(
    plan: &ConvertPlan,
    tensor: &str,
    bytes: u64,
    table_done: &std::cell::Cell<bool>,
) -> Option<LutSpec> {
    let table = tensor == crate::arch::names::embed_tokens();
    if table && !table_done.get() {
        if bytes > 0 {
            table_done.set(true);
        }
        plan.lut_embed
    } else if table || tensor == crate::arch::names::lm_head() {
        plan.lut_lmhead
    } else {
        plan.lut_ffn
    }
}

/// Download progress in the conversion's display: per file, the bar with bytes, rate and ETA,
/// then a line with its size and time. Hidden like [`Progress`], cleared when dropped.
struct DownloadBar(indicatif::ProgressBar);

impl DownloadBar {
    fn new(quiet: bool) -> Self {
        use std::io::IsTerminal;
        if quiet || !std::io::stderr().is_terminal() {
            return DownloadBar(indicatif::ProgressBar::hidden());
        }
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {wide_msg}\n  [{bar:20}] {percent:>3}% {elapsed_precise} eta {eta:<6} {binary_bytes}/{binary_total_bytes} at {binary_bytes_per_sec}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(std::time::Duration::from_millis(150));
        DownloadBar(bar)
    }
}

impl crate::source::DownloadProgress for DownloadBar {
    fn start(&self, file: &str, size: u64, done: u64) {
        self.0.reset();
        self.0.set_length(size);
        self.0.set_position(done);
        self.0.reset_eta();
        self.0.set_message(if done > 0 {
            format!("downloading {file} (resuming at {})", human_bytes(done))
        } else {
            format!("downloading {file}")
        });
    }

    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    fn finish(&self, file: &str) {
        let secs = self.0.elapsed().as_secs_f64();
        let size = self.0.length().unwrap_or(0);
        self.0.println(format!(
            "downloaded {file}: {} in {secs:.1} s",
            human_bytes(size)
        ));
    }
}

impl Drop for DownloadBar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// The first file called `name` in the directories of `path` (a PATH value).
fn find_on_path(name: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|d| d.join(name))
        .find(|f| f.is_file())
}

/// `<xcrun> coremlcompiler compile <pkg> <dir>` → `<dir>/<stem>.mlmodelc`.
fn compile_package(xcrun: &Path, pkg: &Path, dir: &Path) -> Result<String, ConvertError> {
    let out = std::process::Command::new(xcrun)
        .arg("coremlcompiler")
        .arg("compile")
        .arg(pkg)
        .arg(dir)
        .output()
        .map_err(io_err(format!(
            "cannot run xcrun coremlcompiler on {}",
            pkg.display()
        )))?;
    let stem = pkg
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let compiled = format!("{stem}.mlmodelc");
    if !out.status.success() || !dir.join(&compiled).exists() {
        return Err(ConvertError::Compile {
            // The file name: the temp folder it sits in is gone by the time the error prints.
            package: pkg
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| pkg.to_path_buf()),
            status: out.status.to_string(),
            stderr: if out.status.success() {
                format!("{compiled} was not produced")
            } else {
                String::from_utf8_lossy(&out.stderr).trim().to_string()
            },
        });
    }
    Ok(compiled)
}

/// The bytes of every file below `path` (a package or the output folder).
fn dir_size(path: &Path) -> Result<u64, ConvertError> {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(io_err(format!("cannot read {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_err(format!("cannot read {}", dir.display())))?;
            let kind = entry
                .file_type()
                .map_err(io_err(format!("cannot read {}", entry.path().display())))?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                let meta = entry
                    .metadata()
                    .map_err(io_err(format!("cannot read {}", entry.path().display())))?;
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// The length of a package's weight.bin.
fn weight_file_size(package: &Path) -> Result<u64, ConvertError> {
    let path = package.join("Data/com.apple.CoreML/weights/weight.bin");
    std::fs::metadata(&path)
        .map(|m| m.len())
        .map_err(io_err(format!("cannot read {}", path.display())))
}

/// Runs the plan: resolves the model, plans the parts, and (unless dry run) writes every
/// package, the tokenizer files and meta into a temp folder beside `output`, then renames it.
pub fn run(plan: &ConvertPlan) -> Result<ConvertReport, ConvertError> {
    let t0 = std::time::Instant::now();
    plan.validate()?;
    let files = crate::source::resolve_with_progress(
        &plan.model,
        &crate::source::HubEnv::from_process(),
        &DownloadBar::new(plan.quiet),
    )?;
    let cfg = DecoderConfig::from_config_file(&files.config)?;
    let parts = plan_parts(plan, &cfg)?;
    let mut report = ConvertReport {
        downloaded: files.downloaded.clone(),
        output: plan.output.clone(),
        dry_run: plan.dry_run,
        plan: parts.clone(),
        files: Vec::new(),
        quant: QuantReport::new(),
        calibration: None,
        fp16_scale: None,
        lint: Vec::new(),
        seconds: 0.0,
        total_bytes: 0,
        meta: None,
    };
    if plan.dry_run {
        report.seconds = t0.elapsed().as_secs_f64();
        return Ok(report);
    }
    crate::outdir::check_target(&plan.output, plan.force, &files)?;
    let parent = match plan.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .map_err(io_err(format!("cannot create {}", parent.display())))?;
    let tmp = tempfile::Builder::new()
        .prefix(".anec-convert-")
        .tempdir_in(&parent)
        .map_err(io_err(format!(
            "cannot create a temp folder in {}",
            parent.display()
        )))?;

    let weights = WeightStore::open(&files)?;
    let scale = resolve_fp16_scale(plan, &cfg, &files, parts.layers)?;
    let opts = PartOptions {
        context_length: plan.context_length,
        batch_size: plan.batch_size,
        layers: parts.layers,
        lut_ffn: plan.lut_ffn,
        lut_lmhead: plan.lut_lmhead,
        lut_embed: plan.lut_embed,
        argmax: plan.argmax,
        fp16_scale: scale.as_ref().map_or(1.0, |s| s.alpha),
    };
    report.fp16_scale = scale;
    let progress = Progress::new(
        plan.quiet,
        parts.parts.len(),
        total_work(&cfg, plan, parts.layers),
        total_weight_bytes(&cfg, parts.layers),
    );
    // The calibration pass runs the Llama-family decoder: Gemma's LUTs use plain k-means.
    let calibration = plan.calibration.as_ref().filter(|_| cfg.gemma.is_none());
    let mut calibrator = match (calibration, plan.lut_ffn.or(plan.lut_lmhead)) {
        (Some(source), Some(_)) => {
            progress.show("calibrating: reading the calibration text");
            let set = crate::calib::load(
                source,
                &files,
                &cfg.eos_token_ids,
                plan.calibration_tokens,
                CALIBRATION_SEQ_LEN,
            )?;
            let c = Calibrator::new(
                &cfg,
                &weights,
                parts.layers,
                &set.sequences,
                crate::calib::Options {
                    sequential: plan.calibration_sequential,
                    method: plan.calibration_method,
                },
            )?;
            report.calibration = Some(CalibrationReport {
                source: set.description.clone(),
                tokens: set.tokens,
                sequences: set.sequences.len(),
                sequential: plan.calibration_sequential,
                method: plan.calibration_method,
                seconds: 0.0,
                warning: set.shortfall(plan.calibration_tokens),
            });
            Some(c)
        }
        _ => None,
    };
    let table_done = std::cell::Cell::new(false);
    let on_tensor = |tensor: &str, bytes: u64| {
        if plan.monolithic {
            progress.set_lut(monolithic_lut(plan, tensor, bytes, &table_done));
        }
        progress.tensor(tensor, bytes)
    };
    let source_name = model_display_name(&files, &plan.model);
    let path_var = std::env::var_os("PATH");
    let xcrun = match plan.compile {
        Compile::Always => {
            Some(find_on_path("xcrun", path_var.as_deref()).unwrap_or_else(|| "xcrun".into()))
        }
        Compile::Never => None,
        Compile::Auto => find_on_path("xcrun", path_var.as_deref()),
    };
    for (k, p) in parts.parts.iter().enumerate() {
        let file = format!("{}.mlpackage", p.name);
        let path = tmp.path().join(&file);
        let lut = match p.kind {
            PartKind::Embeddings => plan.lut_embed,
            PartKind::Chunk { .. } | PartKind::Monolithic { .. } => plan.lut_ffn,
            PartKind::LmHead => plan.lut_lmhead,
        };
        progress.part(k + 1, &p.name, lut);
        let mut writer = PackageWriter::create(&path, false)?;
        let mut ctx = Ctx {
            cfg: &cfg,
            weights: &weights,
            writer: &mut writer,
            opts: &opts,
            part: p.name.clone(),
            quant: &mut report.quant,
            calib: calibrator.as_mut(),
            progress: &on_tensor,
        };
        let built = match &p.kind {
            PartKind::Embeddings => build_embeddings(&mut ctx),
            PartKind::LmHead => build_lm_head(&mut ctx),
            PartKind::Chunk { index, layers } => {
                build_chunk(&mut ctx, layers.clone(), *index == parts.num_chunks)
            }
            PartKind::Monolithic { layers } => build_monolithic(&mut ctx, layers.end),
        };
        let model = built.map_err(|source| ConvertError::Part {
            part: p.name.clone(),
            source: Box::new(source),
        })?;
        let model = model.with_metadata(package_metadata(&cfg, &source_name, plan, &p.kind));
        progress.show(&format!("writing {file}"));
        writer.finish(&model)?;
        check_ios_size(plan, &p.name, "is", tree_bytes(&path)?)?;
        let compiled = match &xcrun {
            Some(xcrun) => {
                progress.show(&format!("compiling {file} with xcrun coremlcompiler"));
                Some(compile_package(xcrun, &path, tmp.path())?)
            }
            None => None,
        };
        let lint = crate::lint::lint_package(&path)?;
        if let (true, Some(first)) = (plan.strict, lint.findings.first()) {
            return Err(ConvertError::Lint {
                count: lint.findings.len(),
                first: format!("{file}: {first}"),
            });
        }
        report.lint.push(lint);
        report.files.push(FileReport {
            name: file,
            bytes: dir_size(&path)?,
            weight_bytes: weight_file_size(&path)?,
            compiled,
        });
    }
    // Tensors of layers left out by --num-layers are the only ones allowed to stay unread.
    let unused: Vec<String> = weights
        .unused(&crate::arch::names::allowed_extras(&cfg))
        .into_iter()
        .filter(|n| !skipped_layer(n, parts.layers))
        .collect();
    if !unused.is_empty() {
        return Err(ConvertError::Weights(WeightError::Unused {
            tensors: unused,
        }));
    }
    progress.bar.finish_and_clear();
    if let (Some(r), Some(c)) = (report.calibration.as_mut(), &calibrator) {
        r.seconds = c.seconds();
    }

    // Tokenizer files, plus the chat template when the source keeps it in its own file.
    let templates = CHAT_TEMPLATE_FILES
        .iter()
        .map(|n| files.dir.join(n))
        .filter(|p| p.is_file());
    for f in files.tokenizer_files.iter().cloned().chain(templates) {
        if let Some(name) = f.file_name() {
            std::fs::copy(&f, tmp.path().join(name))
                .map_err(io_err(format!("cannot copy {}", f.display())))?;
        }
    }
    let meta = build_meta(
        plan,
        &cfg,
        &parts,
        &files,
        &source_name,
        &report.files,
        opts.fp16_scale,
    );
    let meta = if plan.monolithic {
        monolithic_meta(meta, plan)
    } else {
        meta
    };
    meta.write(tmp.path())?;
    report.meta = Some(meta);
    report.total_bytes = dir_size(tmp.path())?;
    crate::outdir::swap_in(tmp, &plan.output, &parent)?;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// The short model name: the hub id's last component, or the folder name.
fn model_display_name(files: &ModelFiles, spec: &ModelSpec) -> String {
    if let Some(id) = &files.repo_id {
        return id.rsplit('/').next().unwrap_or(id).to_string();
    }
    files
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| spec.model.clone())
}

fn build_meta(
    plan: &ConvertPlan,
    cfg: &DecoderConfig,
    parts: &PartsPlan,
    files: &ModelFiles,
    source_name: &str,
    written: &[FileReport],
    fp16_scale: f64,
) -> Meta {
    let file_of = |base: &str| -> String {
        written
            .iter()
            .find(|f| f.name == format!("{base}.mlpackage"))
            .map(|f| f.compiled.clone().unwrap_or_else(|| f.name.clone()))
            .unwrap_or_else(|| format!("{base}.mlpackage"))
    };
    let names = parts.names();
    let chunk_files: Vec<String> = names.chunks.iter().map(|c| file_of(c)).collect();
    let bits = |l: Option<LutSpec>| LutBits::from(l.map(|l| l.bits));
    let group = |l: Option<LutSpec>| l.and_then(|l| l.group);
    let source = Source {
        repo_id: files.repo_id.clone(),
        revision: files.revision.clone(),
        path: std::fs::canonicalize(&files.dir)
            .unwrap_or_else(|_| files.dir.clone())
            .display()
            .to_string(),
    };
    let described = files.repo_id.clone().unwrap_or_else(|| source.path.clone());
    let window = cfg
        .sliding_window
        .iter()
        .take(parts.layers)
        .flatten()
        .copied()
        .max();
    Meta {
        model_info: ModelInfo {
            name: format!("anec-{source_name}-ctx{}", plan.context_length),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: format!("{described} converted by anec for the Apple Neural Engine\n"),
            license: "see source model".to_string(),
            framework: "Core ML".to_string(),
            architecture: cfg.model_type.clone(),
            model_type: None,
            parameters: Parameters {
                context_length: plan.context_length,
                batch_size: plan.batch_size,
                lut_bits: None,
                lut_per_channel: None,
                lut_embeddings: bits(plan.lut_embed),
                lut_embeddings_per_channel: group(plan.lut_embed),
                lut_ffn: bits(plan.lut_ffn),
                lut_ffn_per_channel: group(plan.lut_ffn),
                lut_lmhead: bits(plan.lut_lmhead),
                lut_lmhead_per_channel: group(plan.lut_lmhead),
                num_chunks: parts.num_chunks,
                model_prefix: plan.prefix.clone(),
                embeddings: file_of(&names.embeddings),
                lm_head: file_of(&names.lm_head),
                ffn: chunk_files.first().cloned().unwrap_or_default(),
                monolithic_model: None,
                split_lm_head: parts.lm_head_chunk_sizes.len(),
                functions: Vec::new(),
                lm_head_chunk_sizes: parts.lm_head_chunk_sizes.clone(),
                vocab_size: cfg.vocab_size,
                argmax_in_model: plan.argmax,
                sliding_window: window,
                split_rotate: cfg.gemma.as_ref().map(|_| false),
                single_cache: cfg.gemma.as_ref().map(|_| false),
                fp16_scale: cfg.gemma.as_ref().map(|_| fp16_scale),
                num_layers: parts.layers,
                hidden_size: cfg.hidden_size,
                state_name: if cfg.gemma.is_some() {
                    layout::LOCAL_STATE_NAME.to_string()
                } else {
                    layout::STATE_NAME.to_string()
                },
                num_attention_heads: cfg.num_heads,
                num_key_value_heads: cfg.num_kv_heads,
                head_dim: cfg.head_dim,
                chunk_files,
                chunk_layers: parts
                    .layer_ranges
                    .iter()
                    .map(|r| [r.start, r.end])
                    .collect(),
                source,
            },
        },
    }
}

/// The chunked meta of a monolithic conversion (its one package in `chunk_files`) in ANEMLL
/// 0.3.5's monolithic form: `model_type: monolithic`, the `-monolithic` name, `lut_bits`,
/// `monolithic_model`, `functions`, and no chunk or part file keys.
fn monolithic_meta(mut meta: Meta, plan: &ConvertPlan) -> Meta {
    let info = &mut meta.model_info;
    info.name.push_str("-monolithic");
    info.model_type = Some("monolithic".to_string());
    let p = &mut info.parameters;
    p.lut_bits = Some(LutBits::from(plan.lut_ffn.map(|l| l.bits)));
    p.lut_per_channel = plan.lut_ffn.and_then(|l| l.group);
    p.monolithic_model = p.chunk_files.first().cloned();
    p.functions = vec!["infer".to_string(), "prefill".to_string()];
    p.num_chunks = 0;
    p.chunk_files.clear();
    p.chunk_layers.clear();
    p.embeddings.clear();
    p.lm_head.clear();
    p.ffn.clear();
    meta
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
            max_position_embeddings: 131072,
            gemma: None,
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

    #[cfg(unix)]
    #[test]
    fn compile_runs_xcrun_coremlcompiler_and_names_the_mlmodelc() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let xcrun = bin.join("xcrun");
        // A fake xcrun: logs its arguments, makes <dir>/<stem>.mlmodelc.
        std::fs::write(
            &xcrun,
            "#!/bin/sh\necho \"$@\" >> \"$(dirname \"$0\")/log\"\n\
             [ \"$1 $2\" = \"coremlcompiler compile\" ] || exit 3\n\
             mkdir -p \"$4/$(basename \"$3\" .mlpackage).mlmodelc\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&xcrun, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path_var = std::env::join_paths([dir.path().join("none"), bin.clone()]).unwrap();
        assert_eq!(find_on_path("xcrun", Some(&path_var)), Some(xcrun.clone()));
        assert_eq!(find_on_path("xcrun", None), None);
        let pkg = dir.path().join("lm_head.mlpackage");
        std::fs::create_dir(&pkg).unwrap();
        let name = compile_package(&xcrun, &pkg, dir.path()).unwrap();
        assert_eq!(name, "lm_head.mlmodelc");
        assert!(dir.path().join("lm_head.mlmodelc").is_dir());
        let log = std::fs::read_to_string(bin.join("log")).unwrap();
        assert!(log.starts_with("coremlcompiler compile "), "{log}");
        // A compiler that fails is an error naming the package.
        std::fs::write(&xcrun, "#!/bin/sh\necho broken >&2\nexit 1\n").unwrap();
        let err = compile_package(&xcrun, &pkg, dir.path()).unwrap_err();
        assert!(err.to_string().contains("lm_head.mlpackage"), "{err}");
        assert!(err.to_string().contains("broken"), "{err}");
    }

    /// The progress totals are what the part builders report, for every architecture: the bar
    /// ends at 100 % and the bytes at their total.
    #[test]
    fn progress_totals_match_what_the_parts_read() {
        for model in ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-mistral"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(model);
            let mut plan = ConvertPlan::new(
                ModelSpec {
                    model: dir.display().to_string(),
                    revision: None,
                    offline: true,
                },
                "unused",
            );
            plan.lut_ffn = LutSpec::new(4, Some(8)).ok();
            plan.lut_lmhead = LutSpec::new(6, Some(8)).ok();
            plan.num_layers = Some(3);
            // One model as the monolithic package: the same tensors, read once.
            plan.monolithic = model == "tiny-qwen3";
            let files = crate::source::resolve(&plan.model).unwrap();
            let cfg = DecoderConfig::from_config_file(&files.config).unwrap();
            let parts = plan_parts(&plan, &cfg).unwrap();
            let weights = WeightStore::open(&files).unwrap();
            let work = total_work(&cfg, &plan, parts.layers);
            let bytes = total_weight_bytes(&cfg, parts.layers);
            let progress = Progress::new(true, parts.parts.len(), work, bytes);
            let table_done = std::cell::Cell::new(false);
            let on_tensor = |t: &str, b: u64| {
                if plan.monolithic {
                    progress.set_lut(monolithic_lut(&plan, t, b, &table_done));
                }
                progress.tensor(t, b)
            };
            let opts = PartOptions {
                context_length: 64,
                batch_size: 8,
                layers: parts.layers,
                lut_ffn: plan.lut_ffn,
                lut_lmhead: plan.lut_lmhead,
                lut_embed: plan.lut_embed,
                argmax: false,
                fp16_scale: 1.0,
            };
            let tmp = tempfile::tempdir().unwrap();
            let mut quant = QuantReport::new();
            for (k, p) in parts.parts.iter().enumerate() {
                let lut = match p.kind {
                    PartKind::Embeddings => plan.lut_embed,
                    PartKind::Chunk { .. } | PartKind::Monolithic { .. } => plan.lut_ffn,
                    PartKind::LmHead => plan.lut_lmhead,
                };
                progress.part(k + 1, &p.name, lut);
                let path = tmp.path().join(format!("{}.mlpackage", p.name));
                let mut writer = PackageWriter::create(&path, false).unwrap();
                let mut ctx = Ctx {
                    cfg: &cfg,
                    weights: &weights,
                    writer: &mut writer,
                    opts: &opts,
                    part: p.name.clone(),
                    quant: &mut quant,
                    calib: None,
                    progress: &on_tensor,
                };
                match &p.kind {
                    PartKind::Embeddings => build_embeddings(&mut ctx).map(drop),
                    PartKind::LmHead => build_lm_head(&mut ctx).map(drop),
                    PartKind::Chunk { index, layers } => {
                        build_chunk(&mut ctx, layers.clone(), *index == parts.num_chunks).map(drop)
                    }
                    PartKind::Monolithic { layers } => {
                        build_monolithic(&mut ctx, layers.end).map(drop)
                    }
                }
                .unwrap();
            }
            assert_eq!(progress.bar.position(), work, "{model}: work units");
            assert_eq!(progress.state.borrow().bytes, bytes, "{model}: bytes");
        }
    }

    #[test]
    fn eta_counts_down_at_the_average_rate_then_falls_back_to_it() {
        let s = std::time::Duration::from_secs;
        // 25 % done at the last step, 10 s in: 30 s left then; 4 s later 26 s.
        assert_eq!(eta(25, 100, s(10), 10_000), Some(30));
        assert_eq!(eta(25, 100, s(14), 10_000), Some(26));
        // 40 s after the step, past the estimate: 75 × 50 / 25 at the rate including now.
        assert_eq!(eta(25, 100, s(50), 10_000), Some(150));
        assert_eq!(eta(0, 100, s(3), 0), None);
        assert_eq!(short_duration(45), "45s");
        assert_eq!(short_duration(125), "2m05s");
        assert_eq!(short_duration(3720), "1h02m");
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
