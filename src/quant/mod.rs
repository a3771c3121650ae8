//! LUT palettization: the exact 1-D k-means LUT per group of output channels, and error metrics.
//!
//! Core ML's iOS 18 `constexpr_lut_to_dense` gives each group of `G` consecutive output channels
//! (rows of a `[rows, cols]` weight) its own table of `2^bits` fp16 values. This module finds, for
//! every group, the table with the least squared error (LUT.md §2, §7 phase 1):
//!
//! 1. a 65,536-bin histogram of order-preserving 16-bit keys (bf16 codes for bf16 sources, fp16
//!    codes for fp16 sources, f32 rounded to fp16 first), so the work depends on the number of
//!    distinct values `n`, not on the group's size;
//! 2. the exact weighted k-means DP over the `n` sorted values (`kmeans.rs`); optionally
//!    ([`Options::coarsen`]) fp16-resolution groups with `n > 4096` and `k ≤ 64` first run the
//!    DP on bins merged to bf16 resolution, then each boundary is re-optimized by the exact DP
//!    on the fine bins within a window around it, re-centred until nothing moves (near-exact,
//!    not exact: off by default, so the LUT is never worse than coremltools' exact kmeans1d);
//! 3. centroids rounded to fp16 (round to nearest, ties to even), every distinct value reassigned
//!    to its nearest rounded centroid (ties to the lower index), SSE and Σw² accumulated.
//!
//! The result is deterministic (no randomness, leftmost ties, per-group work independent of the
//! thread schedule) and parallel over groups with rayon. It knows no files and no MIL: it returns
//! one unpacked index per weight and the group-major fp16 LUT; packing is the caller's.

pub mod gptq;
mod kmeans;
mod report;
pub mod synth;

pub use report::{QuantReport, RoleSummary, TensorFlag, TensorSummary};

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use half::f16;
use rayon::prelude::*;
use serde::Serialize;

/// The index widths `constexpr_lut_to_dense` accepts.
pub const SUPPORTED_BITS: [u32; 6] = [1, 2, 3, 4, 6, 8];
/// Output channels per LUT when a spec gives only the bits (ANEMLL's default; LUT.md §4.5).
pub const DEFAULT_GROUP: usize = 8;
/// Above this many distinct fp16 values a group's DP runs on bf16-resolution bins (LUT.md §2.5).
pub const COARSEN_ABOVE: usize = 4096;
/// Key bits dropped when coarsening: fp16 → bf16 mantissa resolution.
const COARSEN_SHIFT: u32 = 3;
/// After a coarse DP, each boundary is re-optimized exactly on the fine bins within
/// `n / k` bins of its coarse position (clamped to these limits)...
const REFINE_RADIUS_MIN: usize = 64;
const REFINE_RADIUS_MAX: usize = 512;
/// ...re-centred until no boundary moves, at most this many times.
const REFINE_ROUNDS: usize = 8;
/// Histogram counts are `u32`.
const MAX_GROUP_ELEMENTS: usize = u32::MAX as usize;

/// Why a weight could not be palettized, or a LUT spec was not understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    #[error("LUT bits {value:?} not supported: use one of 1, 2, 3, 4, 6, 8")]
    Bits { value: String },
    #[error(
        "LUT group size {value:?} invalid: expected a positive number of output channels or \"tensor\""
    )]
    Group { value: String },
    #[error("LUT spec {value:?} invalid: expected BITS or BITS,GROUP (e.g. \"6\", \"4,16\", \"4,tensor\")")]
    Spec { value: String },
    #[error("weight shape {rows} x {cols} is empty")]
    Empty { rows: usize, cols: usize },
    #[error("weight buffer holds {len} values, but its shape {rows} x {cols} needs {expected}")]
    Shape {
        rows: usize,
        cols: usize,
        len: usize,
        expected: usize,
    },
    #[error("non-finite weight {value} at row {row}, col {col}")]
    NonFinite { row: usize, col: usize, value: f32 },
    #[error("weight {value} at row {row}, col {col} is outside the fp16 range (|x| <= 65504)")]
    Overflow { row: usize, col: usize, value: f32 },
    #[error("a LUT group of {elements} weights exceeds the supported {max}")]
    GroupTooLarge { elements: usize, max: usize },
    #[error("the calibration Hessian ({cols} x {cols}) is not positive definite")]
    NotPositiveDefinite { cols: usize },
    #[error("importance needs one positive finite value per column ({cols}), got {len} values or a value that is not")]
    Importance { cols: usize, len: usize },
}

pub type Result<T> = std::result::Result<T, QuantError>;

/// How to palettize one weight: `2^bits` LUT entries per `group` output channels
/// (`None`: one LUT for the whole tensor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct LutSpec {
    pub bits: u32,
    pub group: Option<usize>,
}

impl LutSpec {
    /// A checked spec: bits in [`SUPPORTED_BITS`], group (if any) at least 1.
    pub fn new(bits: u32, group: Option<usize>) -> Result<Self> {
        let spec = LutSpec { bits, group };
        spec.validate()?;
        Ok(spec)
    }

    /// Parses the CLI form `BITS[,GROUP]`: `"6"` is 6 bits, group 8; `"4,16"`; `"4,tensor"` is one
    /// LUT per tensor. Errors name the offending part.
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        let mut parts = t.split(',');
        let bits_s = parts.next().unwrap_or("").trim();
        let group_s = parts.next().map(str::trim);
        if parts.next().is_some() || bits_s.is_empty() {
            return Err(QuantError::Spec {
                value: s.to_string(),
            });
        }
        let bits = bits_s.parse::<u32>().map_err(|_| QuantError::Bits {
            value: bits_s.to_string(),
        })?;
        let group = match group_s {
            None => Some(DEFAULT_GROUP),
            Some(g) if g.eq_ignore_ascii_case("tensor") || g.eq_ignore_ascii_case("per-tensor") => {
                None
            }
            Some(g) => match g.parse::<usize>() {
                Ok(v) if v > 0 => Some(v),
                _ => {
                    return Err(QuantError::Group {
                        value: g.to_string(),
                    })
                }
            },
        };
        Self::new(bits, group)
    }

    /// Like [`LutSpec::parse`], with `"none"` meaning no palettization (fp16 weights).
    pub fn parse_optional(s: &str) -> Result<Option<Self>> {
        if s.trim().eq_ignore_ascii_case("none") {
            Ok(None)
        } else {
            Self::parse(s).map(Some)
        }
    }

    /// Checks the fields (they are public, so a hand-built spec may be invalid).
    pub fn validate(&self) -> Result<()> {
        if !SUPPORTED_BITS.contains(&self.bits) {
            return Err(QuantError::Bits {
                value: self.bits.to_string(),
            });
        }
        if self.group == Some(0) {
            return Err(QuantError::Group { value: "0".into() });
        }
        Ok(())
    }

    /// LUT entries per group, `2^bits`.
    pub fn entries(&self) -> usize {
        1usize << self.bits
    }
}

impl FromStr for LutSpec {
    type Err = QuantError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for LutSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.group {
            Some(g) => write!(f, "{},{}", self.bits, g),
            None => write!(f, "{},tensor", self.bits),
        }
    }
}

/// A row-major `[rows, cols]` weight (rows = output channels) in its source precision.
#[derive(Debug, Clone, Copy)]
pub enum WeightView<'a> {
    /// Raw bfloat16 bit patterns (histogrammed directly: no double rounding).
    Bf16Codes(&'a [u16]),
    /// Raw IEEE fp16 bit patterns.
    F16Codes(&'a [u16]),
    /// f32 values, rounded to fp16 (nearest, ties to even) before palettizing.
    F32(&'a [f32]),
}

impl WeightView<'_> {
    fn len(&self) -> usize {
        match self {
            WeightView::Bf16Codes(c) | WeightView::F16Codes(c) => c.len(),
            WeightView::F32(v) => v.len(),
        }
    }
}

/// Distinct values per group (the `n` of the DP), over all groups of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DistinctStats {
    pub min: usize,
    pub max: usize,
    pub mean: f64,
}

/// A palettized weight: indices and LUT in the layout `constexpr_lut_to_dense` wants, plus
/// error metrics for the report.
#[derive(Debug, Clone)]
pub struct Palettized {
    pub bits: u32,
    pub rows: usize,
    pub cols: usize,
    /// Output channels per LUT as used (divides `rows`; `rows` for a per-tensor LUT).
    pub group_size: usize,
    /// `rows / group_size`.
    pub groups: usize,
    /// `Some((requested, used))` when the requested group size did not divide `rows` and the
    /// largest divisor of `rows` not above it was used instead.
    pub group_adjusted: Option<(usize, usize)>,
    /// One LUT index per weight, row-major `[rows, cols]`, unpacked (`< 2^bits`).
    pub indices: Vec<u8>,
    /// `groups × 2^bits` fp16 entries, group-major, ascending within a group; short LUTs (fewer
    /// distinct values than entries) repeat their last value.
    pub lut: Vec<f16>,
    /// Σ (w − lut[index])² over the tensor, with w the source value (f32 sources: as fp16).
    pub sse: f64,
    /// Σ w² over the tensor.
    pub signal: f64,
    /// 10·log10(signal / sse); +∞ when lossless.
    pub snr_db: f64,
    /// The group with the lowest SNR and that SNR.
    pub worst_group: (usize, f64),
    /// SNR of each group.
    pub group_snr_db: Vec<f64>,
    pub distinct: DistinctStats,
    /// Groups whose DP ran on bf16-resolution bins ([`Options::coarsen`]).
    pub coarsened_groups: usize,
    /// Wall time of [`palettize`].
    pub seconds: f64,
}

impl Palettized {
    /// LUT entries per group, `2^bits`.
    pub fn entries(&self) -> usize {
        1usize << self.bits
    }

    /// The LUT of group `g`.
    pub fn group_lut(&self, g: usize) -> &[f16] {
        let k = self.entries();
        &self.lut[g * k..(g + 1) * k]
    }

    /// The dense fp16 weight the LUT encodes, row-major `[rows, cols]`.
    pub fn decode(&self) -> Vec<f16> {
        let k = self.entries();
        let per_group = self.group_size * self.cols;
        self.indices
            .chunks(per_group)
            .enumerate()
            .flat_map(|(g, idx)| {
                let lut = &self.lut[g * k..(g + 1) * k];
                idx.iter().map(move |&i| lut[i as usize])
            })
            .collect()
    }
}

/// Palettizes a row-major `[rows, cols]` weight (rows = output channels) with one exact k-means
/// LUT per group of output channels. See the module doc for the algorithm.
pub fn palettize(w: WeightView<'_>, rows: usize, cols: usize, spec: LutSpec) -> Result<Palettized> {
    palettize_with(w, rows, cols, spec, Options::default())
}

/// How hard [`palettize_with`] works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Run the DP of fp16 groups with more than [`COARSEN_ABOVE`] distinct values (and LUTs of
    /// at most 64 entries) on bf16-resolution bins, then refine each boundary on the fine bins
    /// (LUT.md §2.5). 2–4× faster on fp16-native weights; on the LUT.md §3 matrices it matched
    /// the exact optimum on most groups but not all (worst seen: 0.0003 dB below it, i.e. below
    /// coremltools' exact kmeans1d), so the default is the exact DP everywhere.
    pub coarsen: bool,
}

/// [`palettize`] with explicit [`Options`].
pub fn palettize_with(
    w: WeightView<'_>,
    rows: usize,
    cols: usize,
    spec: LutSpec,
    opts: Options,
) -> Result<Palettized> {
    palettize_inner(w, rows, cols, spec, opts, None)
}

/// [`palettize`] minimizing the activation-weighted error `Σ s_j·(w_ij − c)²` instead of the
/// plain squared error: every weight of input column `j` counts `importance[j]` (> 0, e.g.
/// `E[x_j²]` of that input channel on calibration text), so each group's LUT spends its entries
/// where the layer's output is most sensitive. The DP is the same exact one, on a histogram whose
/// bins hold summed importance instead of counts. `sse`/`snr_db` stay the plain weight error.
pub fn palettize_weighted(
    w: WeightView<'_>,
    rows: usize,
    cols: usize,
    spec: LutSpec,
    importance: &[f64],
) -> Result<Palettized> {
    if importance.len() != cols || importance.iter().any(|&v| !(v > 0.0 && v.is_finite())) {
        return Err(QuantError::Importance {
            cols,
            len: importance.len(),
        });
    }
    palettize_inner(w, rows, cols, spec, Options::default(), Some(importance))
}

fn palettize_inner(
    w: WeightView<'_>,
    rows: usize,
    cols: usize,
    spec: LutSpec,
    opts: Options,
    importance: Option<&[f64]>,
) -> Result<Palettized> {
    let start = Instant::now();
    spec.validate()?;
    if rows == 0 || cols == 0 {
        return Err(QuantError::Empty { rows, cols });
    }
    let expected = rows.checked_mul(cols).ok_or(QuantError::Shape {
        rows,
        cols,
        len: w.len(),
        expected: usize::MAX,
    })?;
    if w.len() != expected {
        return Err(QuantError::Shape {
            rows,
            cols,
            len: w.len(),
            expected,
        });
    }
    let (group_size, group_adjusted) = resolve_group(rows, spec.group);
    let per_group = group_size * cols;
    if per_group > MAX_GROUP_ELEMENTS {
        return Err(QuantError::GroupTooLarge {
            elements: per_group,
            max: MAX_GROUP_ELEMENTS,
        });
    }
    let converted;
    let (codes, fmt) = match w {
        WeightView::Bf16Codes(c) => (c, Fmt::Bf16),
        WeightView::F16Codes(c) => (c, Fmt::F16),
        WeightView::F32(v) => {
            converted = f32_to_f16_codes(v, cols)?;
            (&converted[..], Fmt::F16)
        }
    };
    let k = spec.entries();
    let groups = rows / group_size;
    let mut indices = vec![0u8; expected];
    let mut lut = vec![f16::ZERO; groups * k];
    let outcomes: Vec<std::result::Result<GroupStat, Fault>> = indices
        .par_chunks_mut(per_group)
        .zip(lut.par_chunks_mut(k))
        .zip(codes.par_chunks(per_group))
        .map(|((idx, lut), codes)| {
            SCRATCH.with(|s| {
                quantize_group(codes, fmt, opts, importance, idx, lut, &mut s.borrow_mut())
            })
        })
        .collect();
    let mut stats = Vec::with_capacity(groups);
    for (g, o) in outcomes.into_iter().enumerate() {
        match o {
            Ok(s) => stats.push(s),
            Err(f) => return Err(f.locate(codes, fmt, g * per_group, cols)),
        }
    }

    let sse: f64 = stats.iter().map(|s| s.sse).sum();
    let signal: f64 = stats.iter().map(|s| s.signal).sum();
    let group_snr_db: Vec<f64> = stats.iter().map(|s| snr_db(s.signal, s.sse)).collect();
    let worst_group = worst_group(&group_snr_db);
    let distinct = DistinctStats {
        min: stats.iter().map(|s| s.distinct).min().unwrap_or(0),
        max: stats.iter().map(|s| s.distinct).max().unwrap_or(0),
        mean: stats.iter().map(|s| s.distinct as f64).sum::<f64>() / groups as f64,
    };
    Ok(Palettized {
        bits: spec.bits,
        rows,
        cols,
        group_size,
        groups,
        group_adjusted,
        indices,
        lut,
        sse,
        signal,
        snr_db: snr_db(signal, sse),
        worst_group,
        group_snr_db,
        distinct,
        coarsened_groups: stats.iter().filter(|s| s.coarsened).count(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The group with the lowest SNR, and that SNR (the first such group on ties).
fn worst_group(group_snr_db: &[f64]) -> (usize, f64) {
    group_snr_db
        .iter()
        .copied()
        .enumerate()
        .fold(
            (0, f64::INFINITY),
            |b, (g, v)| if v < b.1 { (g, v) } else { b },
        )
}

/// `10·log10(signal / noise)`; +∞ for no noise.
pub fn snr_db(signal: f64, noise: f64) -> f64 {
    if noise <= 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

/// The group size to use for `rows` output channels: the largest divisor of `rows` not above
/// the requested size, with `(requested, used)` when that differs from the request.
pub fn resolve_group(rows: usize, group: Option<usize>) -> (usize, Option<(usize, usize)>) {
    match group {
        None => (rows, None),
        Some(g) => {
            let used = (1..=g.min(rows)).rev().find(|d| rows % d == 0).unwrap_or(1);
            (used, (used != g).then_some((g, used)))
        }
    }
}

/// Rounds to the nearest fp16, ties to even, in one step from f64 (`half`'s `from_f64` goes
/// through f32 on x86, which can round twice). Out of range gives ±∞, NaN gives NaN.
pub fn f16_from_f64_rne(v: f64) -> f16 {
    if v.is_nan() {
        return f16::NAN;
    }
    let sign: u16 = if v.is_sign_negative() { 0x8000 } else { 0 };
    let a = v.abs();
    if a >= 65520.0 {
        return f16::from_bits(sign | 0x7C00);
    }
    if a < 6.103_515_625e-5 {
        // Subnormal range: units of 2^-24; 1024 carries into the smallest normal, 0x0400.
        let r = (a * 16_777_216.0).round_ties_even() as u16;
        return f16::from_bits(sign | r);
    }
    let e = ((a.to_bits() >> 52) & 0x7FF) as i64 - 1023; // -14..=15
    let scale = f64::from_bits(((1023 + 10 - e) as u64) << 52);
    let r = (a * scale).round_ties_even() as u64; // 1024..=2048; 2048 carries into the exponent
    f16::from_bits(sign | ((e + 14) as u64 * 1024 + r) as u16)
}

// ---------------------------------------------------------------------------------------------

/// The 16-bit source format of the codes being histogrammed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fmt {
    Bf16,
    F16,
}

impl Fmt {
    /// Exponent bits; all set means Inf or NaN.
    #[inline(always)]
    fn exp_mask(self) -> u16 {
        match self {
            Fmt::Bf16 => 0x7F80,
            Fmt::F16 => 0x7C00,
        }
    }

    #[inline(always)]
    fn value(self, code: u16) -> f64 {
        match self {
            Fmt::Bf16 => f32::from_bits((code as u32) << 16) as f64,
            Fmt::F16 => f16::from_bits(code).to_f64(),
        }
    }
}

/// Order-preserving key of a sign-magnitude 16-bit float code: negative codes reversed below
/// positive ones (LUT.md §2.2).
#[inline(always)]
fn key(h: u16) -> u16 {
    h ^ ((((h as i16) >> 15) as u16) | 0x8000)
}

/// Inverse of [`key`].
#[inline(always)]
fn code_of(key: u16) -> u16 {
    key ^ (!(((key as i16) >> 15) as u16) | 0x8000)
}

#[derive(Debug, Clone, Copy)]
struct GroupStat {
    sse: f64,
    signal: f64,
    distinct: usize,
    coarsened: bool,
}

/// A bad value inside a group, at this element offset; [`Fault::locate`] names row and column.
#[derive(Debug, Clone, Copy)]
enum Fault {
    NonFinite(usize),
    Overflow(usize),
}

impl Fault {
    fn locate(self, codes: &[u16], fmt: Fmt, base: usize, cols: usize) -> QuantError {
        let (Fault::NonFinite(off) | Fault::Overflow(off)) = self;
        let at = base + off;
        let (row, col, value) = (at / cols, at % cols, fmt.value(codes[at]) as f32);
        match self {
            Fault::NonFinite(_) => QuantError::NonFinite { row, col, value },
            Fault::Overflow(_) => QuantError::Overflow { row, col, value },
        }
    }
}

/// Per-thread buffers, reused across groups so the per-group work allocates nothing once warm.
struct Scratch {
    hist: Vec<u32>,
    table: Vec<u8>,
    keys: Vec<u16>,
    /// Summed importance per key ([`palettize_weighted`]); zero between groups.
    whist: Vec<f64>,
    x: Vec<f64>,
    /// DP weight of each distinct value: its count, or its summed importance.
    w: Vec<f64>,
    /// Occurrences of each distinct value (for the plain SSE).
    count: Vec<f64>,
    cx: Vec<f64>,
    cw: Vec<f64>,
    cstart: Vec<usize>,
    bounds: Vec<usize>,
    cent: Vec<f64>,
    rounded: Vec<f64>,
    dp: kmeans::Dp,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            hist: vec![0; 1 << 16],
            table: vec![0; 1 << 16],
            whist: vec![0.0; 1 << 16],
            keys: Vec::new(),
            x: Vec::new(),
            w: Vec::new(),
            count: Vec::new(),
            cx: Vec::new(),
            cw: Vec::new(),
            cstart: Vec::new(),
            bounds: Vec::new(),
            cent: Vec::new(),
            rounded: Vec::new(),
            dp: kmeans::Dp::default(),
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

/// Palettizes one group: `codes` in, `idx` (one per code) and `lut` (`2^bits`) out. With
/// `importance` (one per column; `codes` is whole rows), the DP weighs each value by it.
fn quantize_group(
    codes: &[u16],
    fmt: Fmt,
    opts: Options,
    importance: Option<&[f64]>,
    idx: &mut [u8],
    lut: &mut [f16],
    s: &mut Scratch,
) -> std::result::Result<GroupStat, Fault> {
    let k = lut.len();
    let mask = fmt.exp_mask();

    // 1. Histogram of keys; non-finite codes flagged on the way.
    let mut bad = false;
    for &h in codes {
        s.hist[key(h) as usize] += 1;
        bad |= h & mask == mask;
    }
    if bad {
        s.hist.fill(0);
        let off = codes.iter().position(|&h| h & mask == mask).unwrap_or(0);
        return Err(Fault::NonFinite(off));
    }
    if let Some(imp) = importance {
        for row_codes in codes.chunks(imp.len()) {
            for (&h, &v) in row_codes.iter().zip(imp) {
                s.whist[key(h) as usize] += v;
            }
        }
    }
    s.keys.clear();
    s.x.clear();
    s.w.clear();
    s.count.clear();
    for (kk, c) in s.hist.iter_mut().enumerate() {
        if *c != 0 {
            s.keys.push(kk as u16);
            s.x.push(fmt.value(code_of(kk as u16)));
            s.count.push(*c as f64);
            s.w.push(if importance.is_some() {
                std::mem::take(&mut s.whist[kk])
            } else {
                *c as f64
            });
            *c = 0;
        }
    }
    let n = s.x.len();
    // bf16 reaches beyond fp16's range; only the extremes can overflow.
    if fmt == Fmt::Bf16 {
        let over = |v: f64| f16_from_f64_rne(v).is_infinite();
        if over(s.x[0]) || over(s.x[n - 1]) {
            let off = codes.iter().position(|&h| over(fmt.value(h))).unwrap_or(0);
            return Err(Fault::Overflow(off));
        }
    }

    // 2. Centroids.
    let mut coarsened = false;
    s.cent.clear();
    if n <= k {
        s.cent.extend_from_slice(&s.x);
    } else {
        if opts.coarsen && fmt == Fmt::F16 && n > COARSEN_ABOVE && k < 256 {
            // Merge runs of 2^3 adjacent fp16 codes (bf16 resolution) into weighted means.
            s.cx.clear();
            s.cw.clear();
            s.cstart.clear();
            let mut t = 0;
            while t < n {
                let hi = s.keys[t] >> COARSEN_SHIFT;
                let (start, mut sw, mut swx) = (t, 0.0, 0.0);
                while t < n && s.keys[t] >> COARSEN_SHIFT == hi {
                    sw += s.w[t];
                    swx += s.w[t] * s.x[t];
                    t += 1;
                }
                s.cstart.push(start);
                s.cx.push(swx / sw);
                s.cw.push(sw);
            }
            s.cstart.push(n);
            // Worth it only when the coarse problem still has several points per centroid.
            coarsened = s.cx.len() >= 2 * k;
        }
        if coarsened {
            kmeans::optimal_bounds(&s.cx, &s.cw, k, &mut s.dp, &mut s.bounds);
            for b in s.bounds.iter_mut() {
                *b = s.cstart[*b];
            }
            let radius = (n / k).clamp(REFINE_RADIUS_MIN, REFINE_RADIUS_MAX);
            kmeans::refine_bounds(&s.x, &s.w, radius, REFINE_ROUNDS, &mut s.dp, &mut s.bounds);
            kmeans::segment_means(&s.x, &s.w, &s.bounds, &mut s.cent);
        } else {
            kmeans::optimal_bounds(&s.x, &s.w, k, &mut s.dp, &mut s.bounds);
            kmeans::segment_means(&s.x, &s.w, &s.bounds, &mut s.cent);
        }
    }

    // 3. Round to fp16; pad short tables with their last entry.
    s.rounded.clear();
    for (slot, &c) in lut.iter_mut().zip(&s.cent) {
        *slot = f16_from_f64_rne(c);
        s.rounded.push(slot.to_f64());
    }
    let used = s.cent.len();
    let last = lut[used - 1];
    lut[used..].fill(last);

    // 4. Every distinct value to its nearest rounded centroid (ties to the lower index): both are
    //    sorted, so one merge fills the key → index table.
    let r = &s.rounded;
    let (mut sse, mut signal) = (0.0f64, 0.0f64);
    let mut j = 0;
    for t in 0..n {
        let x = s.x[t];
        loop {
            let mut nj = j + 1;
            while nj < used && r[nj] == r[j] {
                nj += 1;
            }
            if nj < used && (x - r[nj]).abs() < (x - r[j]).abs() {
                j = nj;
            } else {
                break;
            }
        }
        s.table[s.keys[t] as usize] = j as u8;
        let d = x - r[j];
        sse += s.count[t] * d * d;
        signal += s.count[t] * x * x;
    }
    for (o, &h) in idx.iter_mut().zip(codes) {
        *o = s.table[key(h) as usize];
    }
    Ok(GroupStat {
        sse,
        signal,
        distinct: n,
        coarsened,
    })
}

/// f32 → fp16 codes (nearest, ties to even), rejecting non-finite and out-of-range values.
fn f32_to_f16_codes(v: &[f32], cols: usize) -> Result<Vec<u16>> {
    let mut out = vec![0u16; v.len()];
    let first_bad = out
        .par_chunks_mut(cols)
        .zip(v.par_chunks(cols))
        .enumerate()
        .filter_map(|(row, (o, v))| {
            for (col, (o, &x)) in o.iter_mut().zip(v).enumerate() {
                if !x.is_finite() {
                    return Some(QuantError::NonFinite { row, col, value: x });
                }
                let h = f16_from_f64_rne(x as f64);
                if h.is_infinite() {
                    return Some(QuantError::Overflow { row, col, value: x });
                }
                *o = h.to_bits();
            }
            None
        })
        .min_by_key(|e| match e {
            QuantError::NonFinite { row, .. } | QuantError::Overflow { row, .. } => *row,
            _ => usize::MAX,
        });
    match first_bad {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests;
