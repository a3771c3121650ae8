//! The three kinds of part (embeddings, transformer chunk, LM head) built from a
//! `DecoderConfig` and a `WeightStore` into a `PackageWriter`.
//!
//! Layout inside a chunk (Apple's "Deploying Transformers on the ANE", ANEMLL): activations are
//! `(1, C, 1, S)`, every projection is a 1×1 conv (FFNs split below 16384 channels), RMSNorm is
//! `layer_norm` over `[x, −x]`, heads are `[1, heads, S, D]` (the Qwen3 q/k norm on the last
//! axis, as ANEMLL), RoPE rows and sliding-window band rows are gathered from precomputed fp16
//! tables with uint16 positions, and each of the K and V writes is coremltools' stateful form:
//! read_state → slice_update → write_state, then read_state again.

use std::ops::Range;

use half::f16;

use crate::arch::{self, DecoderConfig};
use crate::calib::Calibrator;
use crate::mil::{ConstValue, DType, Function, Model, PackageWriter, Program};
use crate::quant::{self, f16_from_f64_rne, LutSpec, QuantReport};
use crate::weights::{Dtype, WeightStore};

use super::graph::{G, T};
use super::layout::{
    channel_split, lm_head_split, GLOBAL_STATE_NAME, LOCAL_STATE_NAME, STATE_NAME,
};
use super::AneError;

type R<T> = Result<T, AneError>;

/// The settings every part builder needs.
#[derive(Clone, Debug, PartialEq)]
pub struct PartOptions {
    pub context_length: usize,
    pub batch_size: usize,
    /// Layers converted (L of the state): `--num-layers` or the model's count.
    pub layers: usize,
    pub lut_ffn: Option<LutSpec>,
    pub lut_lmhead: Option<LutSpec>,
    pub lut_embed: Option<LutSpec>,
    pub argmax: bool,
    /// Gemma's fp16 range scale α (ANE-CONTRACT.md): the embeddings and the gains of the two
    /// block-output norms are multiplied by it; 1 for no scaling and for the other families.
    pub fp16_scale: f64,
}

/// A weight written into the package: fp16, or LUT indices + LUT.
#[derive(Clone, Debug)]
pub enum Stored {
    Dense(ConstValue),
    Lut {
        indices: ConstValue,
        lut: ConstValue,
    },
}

/// What a part builder works with; progress is told each tensor's name and stored bytes
/// (and, with 0 bytes, when a matrix starts: quantizing one can take seconds).
pub struct Ctx<'a> {
    pub cfg: &'a DecoderConfig,
    pub weights: &'a WeightStore,
    pub writer: &'a mut PackageWriter,
    pub opts: &'a PartOptions,
    pub part: String,
    pub quant: &'a mut QuantReport,
    /// The calibration pass, when LUT weights are activation-weighted.
    pub calib: Option<&'a mut Calibrator>,
    pub progress: &'a dyn Fn(&str, u64),
}

impl Ctx<'_> {
    /// Rows `rows` and columns `col_range` of the `[full_rows, full_cols]` tensor `name`, stored as
    /// `out_shape` (`[r, c, 1, 1]` for a conv, `[r, c]` for a table), fp16 or palettized.
    #[allow(clippy::too_many_arguments)]
    fn matrix(
        &mut self,
        name: &str,
        full_rows: usize,
        full_cols: usize,
        rows: Range<usize>,
        col_range: Range<usize>,
        conv: bool,
        lut: Option<LutSpec>,
    ) -> R<Stored> {
        (self.progress)(name, 0);
        let raw = self.weights.get(name, &[full_rows, full_cols])?;
        let n = rows.len();
        // Whole rows stay borrowed from the mmap; a column range (an input-channel split of a
        // conv) is copied out row by row.
        let mut picked = Vec::new();
        let whole = col_range == (0..full_cols);
        let part = if whole {
            raw.rows(rows.clone())
        } else {
            raw.rows(rows.clone())
                .columns(col_range.clone(), &mut picked)
        };
        let cols = col_range.len();
        let out_shape: Vec<u64> = if conv {
            vec![n as u64, cols as u64, 1, 1]
        } else {
            vec![n as u64, cols as u64]
        };
        let stored = match lut {
            None => {
                let bytes = part.to_f16_bytes()?;
                Stored::Dense(self.writer.store_bytes(DType::F16, &out_shape, &bytes)?)
            }
            Some(spec) => {
                let head =
                    conv && (name == arch::names::embed_tokens() || name == arch::names::lm_head());
                let stats = match self.calib.as_deref_mut() {
                    Some(c) => c.stats(self.cfg, self.weights, name, head)?,
                    None => None,
                };
                // A conv split along its input channels takes its columns' importance; error
                // feedback and the output error need every column, so they run on whole rows only.
                let importance = stats.map(|s| s.importance()[col_range.clone()].to_vec());
                let stats = stats.filter(|_| whole);
                let palettize = |view| match &importance {
                    Some(imp) => quant::palettize_weighted(view, n, cols, spec, imp),
                    None => quant::palettize(view, n, cols, spec),
                };
                let quant_err = |source| AneError::QuantTensor {
                    tensor: name.to_string(),
                    source,
                };
                let mut pal = match (part.dtype, part.codes16()) {
                    (Dtype::BF16, Some(codes)) => palettize(quant::WeightView::Bf16Codes(&codes)),
                    (Dtype::F16, Some(codes)) => palettize(quant::WeightView::F16Codes(&codes)),
                    _ => palettize(quant::WeightView::F32(&part.to_f32())),
                }
                .map_err(quant_err)?;
                if let Some(hessian) = stats.and_then(|s| s.hessian()) {
                    let t0 = std::time::Instant::now();
                    let w: Vec<f64> = part
                        .to_f32()
                        .iter()
                        .map(|&v| quant::f16_from_f64_rne(v as f64).to_f64())
                        .collect();
                    quant::gptq::refine(&mut pal, &w, hessian.map_err(quant_err)?);
                    pal.seconds += t0.elapsed().as_secs_f64();
                }
                let decoded = stats.map(|_| pal.decode());
                let output_error = match (stats, &decoded) {
                    (Some(s), Some(d)) => Some(s.output_error(&part.to_f32(), d, n)?),
                    _ => None,
                };
                if let (Some(c), Some(d), true) =
                    (self.calib.as_deref_mut(), &decoded, n == full_rows)
                {
                    c.record(name, n, d)?;
                }
                let groups = pal.groups as u64;
                let levels = 1u64 << spec.bits;
                let lut_shape: Vec<u64> = if conv {
                    vec![groups, 1, 1, 1, levels, 1]
                } else {
                    vec![groups, 1, levels, 1]
                };
                let indices = ConstValue::from_indices(spec.bits, &out_shape, &pal.indices)?;
                let lut_c = ConstValue::from_f16(&lut_shape, &pal.lut)?;
                let label = if n == full_rows && cols == full_cols {
                    format!("{}/{name}", self.part)
                } else if cols == full_cols {
                    format!("{}/{name}[{}..{}]", self.part, rows.start, rows.end)
                } else {
                    format!(
                        "{}/{name}[{}..{}, {}..{}]",
                        self.part, rows.start, rows.end, col_range.start, col_range.end
                    )
                };
                let role = if conv && name == arch::names::embed_tokens() {
                    "lm_head"
                } else {
                    QuantReport::role_of(name)
                };
                self.quant.add(quant::TensorSummary {
                    output_error,
                    ..quant::TensorSummary::new(label, role, &pal)
                });
                Stored::Lut {
                    indices: self.writer.store(indices)?,
                    lut: self.writer.store(lut_c)?,
                }
            }
        };
        part.release();
        (self.progress)(name, (n * cols * 2) as u64);
        Ok(stored)
    }

    /// A whole `[rows, cols]` projection as a 1×1 conv weight.
    fn conv_weight(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
        lut: Option<LutSpec>,
    ) -> R<Stored> {
        self.matrix(name, rows, cols, 0..rows, 0..cols, true, lut)
    }

    /// A 1-D fp16 tensor (norm weight, bias) stored with `shape`.
    fn vector(&mut self, name: &str, len: usize, shape: &[u64]) -> R<ConstValue> {
        self.vector_part(name, len, 0..len, shape)
    }

    /// Elements `range` of the 1-D tensor `name` of `len` elements, stored with `shape`.
    fn vector_part(
        &mut self,
        name: &str,
        len: usize,
        range: Range<usize>,
        shape: &[u64],
    ) -> R<ConstValue> {
        let raw = self.weights.get(name, &[len])?;
        let part = raw.rows(range.clone());
        let bytes = part.to_f16_bytes()?;
        let c = self.writer.store_bytes(DType::F16, shape, &bytes)?;
        raw.release();
        (self.progress)(name, (range.len() * 2) as u64);
        Ok(c)
    }

    /// A Gemma RMSNorm gain `scale · (1 + w)` (`1 + w` formed in f32 as transformers does),
    /// stored as fp16 with `shape`.
    fn gemma_gain(&mut self, name: &str, len: usize, shape: &[u64], scale: f64) -> R<ConstValue> {
        let raw = self.weights.get(name, &[len])?;
        let vals: Vec<f16> = raw
            .to_f32()
            .iter()
            .map(|&w| f16_from_f64_rne(f64::from(1.0f32 + w) * scale))
            .collect();
        raw.release();
        (self.progress)(name, (len * 2) as u64);
        self.fp16_table(shape, &vals)
    }

    /// A norm gain: the stored weight, or Gemma's `scale · (1 + w)`.
    fn norm_gain(&mut self, name: &str, len: usize, shape: &[u64], scale: f64) -> R<ConstValue> {
        if self.cfg.gemma.is_some() {
            self.gemma_gain(name, len, shape, scale)
        } else {
            self.vector(name, len, shape)
        }
    }

    fn fp16_table(&mut self, shape: &[u64], vals: &[f16]) -> R<ConstValue> {
        Ok(self.writer.store(ConstValue::from_f16(shape, vals)?)?)
    }
}

/// A stored weight as a value in `g`: a `const`, or a `constexpr_lut_to_dense`.
fn use_weight(g: &mut G, p: &str, w: &Stored) -> R<T> {
    match w {
        Stored::Dense(c) => g.konst(p, c.clone()),
        Stored::Lut { indices, lut } => g.lut_to_dense(p, indices.clone(), lut.clone()),
    }
}

/// The function name of single-function parts (coremltools' default).
pub const MAIN: &str = "main";

fn single(f: Function) -> Model {
    Model::new(Program {
        functions: vec![(MAIN.to_string(), f)],
        default_function: MAIN.to_string(),
    })
}

// ---------------------------------------------------------------- embeddings

/// The embeddings part: `input_ids` int32 `[1,1]`|`[1,B]` → `hidden_states` fp16 `[1,S,H]`.
pub fn build_embeddings(ctx: &mut Ctx<'_>) -> R<Model> {
    let cfg = ctx.cfg;
    let (v, h) = (cfg.vocab_size, cfg.hidden_size);
    let table = ctx.matrix(
        &arch::names::embed_tokens(),
        v,
        h,
        0..v,
        0..h,
        false,
        ctx.opts.lut_embed,
    )?;
    let b = ctx.opts.batch_size as u64;
    let mut g = G::new();
    let ids =
        g.b.input_enumerated("input_ids", DType::I32, &[vec![1, 1], vec![1, b]])?;
    let ids = T {
        var: ids,
        shape: vec![1, 1],
    };
    let w = use_weight(&mut g, "embed_tokens", &table)?;
    // uint16 indices when they can address the table (coremltools' add_int16_cast keeps int32
    // only for wider tables).
    let ids = if v <= 1 << 16 {
        g.cast(&ids, DType::U16)?
    } else {
        ids
    };
    let out = match &cfg.gemma {
        None => g.gather(&w, &ids, 0, vec![1, 1, h as u64], Some("hidden_states"))?,
        // Gemma: × √hidden (and the fp16 range scale α), one fp16 constant.
        Some(_) => {
            let rows = g.gather(&w, &ids, 0, vec![1, 1, h as u64], None)?;
            let scale = g.scalar_f16(((h as f64).sqrt() * ctx.opts.fp16_scale) as f32)?;
            g.mul_named(&rows, &scale, "hidden_states")?
        }
    };
    g.b.output(&out.var)?;
    let (f, shapes) = g.b.finish_with_shapes()?;
    let mut model = single(f);
    for (input, s) in shapes {
        model = model.with_enumerated_shapes(MAIN, &input, s);
    }
    Ok(model)
}

// ---------------------------------------------------------------- LM head

/// The `--argmax` outputs of the LM-head parts' `logits` (`[1,1,V_i]` each): `argmax_idx`
/// int32 `[N]` (the index inside each part) and `argmax_val` fp16 `[N]`.
pub(super) fn argmax_outputs(g: &mut G, logits: &[T]) -> R<()> {
    let mut idx = Vec::new();
    let mut val = Vec::new();
    for l in logits {
        let a = g.reduce_argmax(l, -1)?; // [1,1]
        idx.push(g.reshape(&a, &[1])?);
        let m = g.reduce_max(l, -1)?;
        val.push(g.reshape(&m, &[1])?);
    }
    let idx_refs: Vec<&T> = idx.iter().collect();
    let val_refs: Vec<&T> = val.iter().collect();
    let ai = g.concat_named(&idx_refs, 0, Some("argmax_idx"))?;
    let av = g.concat_named(&val_refs, 0, Some("argmax_val"))?;
    g.b.output(&ai.var)?;
    g.b.output(&av.var)?;
    Ok(())
}

/// The LM head: `hidden_states` `[1,1,H]` → `logits1..N` `[1,1,V_i]` (or argmax outputs).
pub fn build_lm_head(ctx: &mut Ctx<'_>) -> R<Model> {
    let cfg = ctx.cfg;
    let (v, h) = (cfg.vocab_size, cfg.hidden_size);
    let name = if cfg.tie_embeddings {
        arch::names::embed_tokens()
    } else {
        arch::names::lm_head()
    };
    let sizes = lm_head_split(v);
    let mut parts = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for &s in &sizes {
        parts.push(ctx.matrix(
            &name,
            v,
            h,
            start..start + s,
            0..h,
            true,
            ctx.opts.lut_lmhead,
        )?);
        start += s;
    }
    let mut g = G::new();
    let x = g.input("hidden_states", DType::F16, &[1, 1, h as u64])?;
    let x4 = g.reshape(&x, &[1, h as u64, 1, 1])?;
    let mut logits = Vec::new();
    for (i, (w, &s)) in parts.iter().zip(&sizes).enumerate() {
        let w = use_weight(&mut g, &format!("lm_head{}", i + 1), w)?;
        let y = g.conv("lm_head_conv", &x4, &w, None)?;
        let name = format!("logits{}", i + 1);
        let out = if ctx.opts.argmax {
            g.reshape(&y, &[1, 1, s as u64])?
        } else {
            g.reshape_named(&y, &[1, 1, s as u64], Some(&name))?
        };
        logits.push(out);
    }
    if ctx.opts.argmax {
        argmax_outputs(&mut g, &logits)?;
    } else {
        for l in &logits {
            g.b.output(&l.var)?;
        }
    }
    Ok(single(g.b.finish()?))
}

// ---------------------------------------------------------------- transformer chunk

/// One FFN slice: gate/up rows and down columns `range` of the intermediate dimension (the
/// whole of it unless it is wider than the ANE's conv limit).
struct FfnPart {
    gate: Stored,
    up: Stored,
    down: Stored,
    gate_bias: Option<ConstValue>,
    up_bias: Option<ConstValue>,
}

/// One layer's stored weights.
struct LayerWeights {
    index: usize,
    input_norm: ConstValue,
    /// The norm before the MLP (`post_attention_layernorm`; Gemma's `pre_feedforward_layernorm`).
    post_norm: ConstValue,
    /// Gemma: the norms on the attention and MLP outputs (gains × α).
    attn_out_norm: Option<ConstValue>,
    mlp_out_norm: Option<ConstValue>,
    q: Stored,
    k: Stored,
    v: Stored,
    o: Stored,
    q_bias: Option<ConstValue>,
    k_bias: Option<ConstValue>,
    v_bias: Option<ConstValue>,
    o_bias: Option<ConstValue>,
    q_norm: Option<ConstValue>,
    k_norm: Option<ConstValue>,
    ffn: Vec<FfnPart>,
    down_bias: Option<ConstValue>,
}

/// Everything a chunk's two functions share (all stored once).
struct ChunkWeights {
    layers: Vec<LayerWeights>,
    final_norm: Option<ConstValue>,
    cos: ConstValue,
    sin: ConstValue,
    /// `[C, C]` sliding-window band per distinct window narrower than the context.
    bands: Vec<(usize, ConstValue)>,
    /// Gemma: the sliding layers' RoPE tables `[C, D]` (plain, local base).
    local_rope: Option<(ConstValue, ConstValue)>,
}

/// RoPE tables `[C, D]`: cos(p·f) and the sign-folded sin, `-sin` on the first half and `+sin`
/// on the second, so that `rope(x) = x·cos + concat(x2, x1)·sin_signed`.
pub fn rope_tables(cfg: &DecoderConfig, context: usize) -> (Vec<f16>, Vec<f16>) {
    tables_of(&arch::rope_inv_freq(cfg), cfg.head_dim, context)
}

/// [`rope_tables`] of Gemma's sliding layers (plain RoPE at the local base).
pub fn local_rope_tables(cfg: &DecoderConfig, context: usize) -> (Vec<f16>, Vec<f16>) {
    tables_of(&arch::rope_inv_freq_local(cfg), cfg.head_dim, context)
}

fn tables_of(inv: &[f64], d: usize, context: usize) -> (Vec<f16>, Vec<f16>) {
    let half = d / 2;
    let mut cos = Vec::with_capacity(context * d);
    let mut sin = Vec::with_capacity(context * d);
    for p in 0..context {
        for j in 0..d {
            // transformers computes the angle in f32.
            let angle = f64::from((p as f32) * (inv[j % half] as f32));
            cos.push(f16_from_f64_rne(angle.cos()));
            let s = angle.sin();
            sin.push(f16_from_f64_rne(if j < half { -s } else { s }));
        }
    }
    (cos, sin)
}

/// The sliding-window band `[C, C]`: row p holds 0 where key position j is inside the window
/// (`p - j < window`) and fp16's lowest value where it is older. The graph gathers the rows of
/// its positions and takes the minimum with the causal mask, so nothing positional is computed
/// on the device (positions above 2048 are not exact in fp16).
pub fn window_band(context: usize, window: usize) -> Vec<f16> {
    let mut band = Vec::with_capacity(context * context);
    for p in 0..context {
        band.extend((0..context).map(|j| if p < j + window { f16::ZERO } else { f16::MIN }));
    }
    band
}

fn load_chunk(ctx: &mut Ctx<'_>, layers: Range<usize>, last: bool) -> R<ChunkWeights> {
    let cfg = ctx.cfg;
    let h = cfg.hidden_size;
    let (nh, kvh, d, inter) = (
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.intermediate_size,
    );
    let lut = ctx.opts.lut_ffn;
    let hv = [1, h as u64, 1, 1];
    let c = ctx.opts.context_length;
    let mut bands: Vec<(usize, ConstValue)> = Vec::new();
    let mut out = Vec::new();
    for i in layers {
        use arch::names as n;
        let bias =
            |ctx: &mut Ctx<'_>, on: bool, name: String, len: usize| -> R<Option<ConstValue>> {
                if on {
                    ctx.vector(&name, len, &[len as u64]).map(Some)
                } else {
                    Ok(None)
                }
            };
        let mut ffn = Vec::new();
        let mut start = 0;
        for width in channel_split(inter) {
            let r = start..start + width;
            start += width;
            let part_bias = |ctx: &mut Ctx<'_>, name: String| -> R<Option<ConstValue>> {
                if cfg.mlp_bias {
                    let shape = [width as u64];
                    ctx.vector_part(&name, inter, r.clone(), &shape).map(Some)
                } else {
                    Ok(None)
                }
            };
            let (gate_w, up_w) = (n::gate_proj(i), n::up_proj(i));
            ffn.push(FfnPart {
                gate: ctx.matrix(&gate_w.weight(), inter, h, r.clone(), 0..h, true, lut)?,
                up: ctx.matrix(&up_w.weight(), inter, h, r.clone(), 0..h, true, lut)?,
                down: ctx.matrix(
                    &n::down_proj(i).weight(),
                    h,
                    inter,
                    0..h,
                    r.clone(),
                    true,
                    lut,
                )?,
                gate_bias: part_bias(ctx, gate_w.bias())?,
                up_bias: part_bias(ctx, up_w.bias())?,
            });
        }
        let gemma = cfg.gemma.is_some();
        let alpha = ctx.opts.fp16_scale;
        // Stored in this order: input norm, the MLP's norm (Gemma: then the two output norms).
        let input_norm = ctx.norm_gain(&n::input_layernorm(i).weight(), h, &hv, 1.0)?;
        let (post_norm, attn_out_norm, mlp_out_norm) = if gemma {
            (
                ctx.norm_gain(&n::pre_feedforward_layernorm(i).weight(), h, &hv, 1.0)?,
                Some(ctx.norm_gain(&n::post_attention_layernorm(i).weight(), h, &hv, alpha)?),
                Some(ctx.norm_gain(&n::post_feedforward_layernorm(i).weight(), h, &hv, alpha)?),
            )
        } else {
            (
                ctx.vector(&n::post_attention_layernorm(i).weight(), h, &hv)?,
                None,
                None,
            )
        };
        let lw = LayerWeights {
            index: i,
            input_norm,
            post_norm,
            attn_out_norm,
            mlp_out_norm,
            q: ctx.conv_weight(&n::q_proj(i).weight(), nh * d, h, lut)?,
            k: ctx.conv_weight(&n::k_proj(i).weight(), kvh * d, h, lut)?,
            v: ctx.conv_weight(&n::v_proj(i).weight(), kvh * d, h, lut)?,
            o: ctx.conv_weight(&n::o_proj(i).weight(), h, nh * d, lut)?,
            q_bias: bias(ctx, cfg.qkv_bias, n::q_proj(i).bias(), nh * d)?,
            k_bias: bias(ctx, cfg.qkv_bias, n::k_proj(i).bias(), kvh * d)?,
            v_bias: bias(ctx, cfg.qkv_bias, n::v_proj(i).bias(), kvh * d)?,
            o_bias: bias(ctx, cfg.o_bias, n::o_proj(i).bias(), h)?,
            // Gemma: the attention scale `query_pre_attn_scalar`^−½ rides on q's gain (one fp16
            // rounding of the product instead of a rounded scale on every score).
            q_norm: if cfg.qk_norm {
                let scale = cfg
                    .gemma
                    .as_ref()
                    .map_or(1.0, |gm| gm.query_pre_attn_scalar.powf(-0.5));
                Some(ctx.norm_gain(&n::q_norm(i).weight(), d, &[d as u64], scale)?)
            } else {
                None
            },
            k_norm: if cfg.qk_norm {
                Some(ctx.norm_gain(&n::k_norm(i).weight(), d, &[d as u64], 1.0)?)
            } else {
                None
            },
            ffn,
            down_bias: bias(ctx, cfg.mlp_bias, n::down_proj(i).bias(), h)?,
        };
        if let (None, Some(win)) = (&cfg.gemma, layer_window(cfg, i, c)) {
            if !bands.iter().any(|(w, _)| *w == win) {
                let table = ctx.fp16_table(&[c as u64, c as u64], &window_band(c, win))?;
                bands.push((win, table));
            }
        }
        out.push(lw);
    }
    let final_norm = if last {
        Some(ctx.norm_gain(&arch::names::final_norm(), h, &hv, 1.0)?)
    } else {
        None
    };
    let (cos, sin) = rope_tables(cfg, c);
    let shape = [c as u64, d as u64];
    let local_rope = match &cfg.gemma {
        Some(_) => {
            let (lc, ls) = local_rope_tables(cfg, c);
            Some((ctx.fp16_table(&shape, &lc)?, ctx.fp16_table(&shape, &ls)?))
        }
        None => None,
    };
    Ok(ChunkWeights {
        layers: out,
        final_norm,
        cos: ctx.fp16_table(&shape, &cos)?,
        sin: ctx.fp16_table(&shape, &sin)?,
        bands,
        local_rope,
    })
}

/// Layer `i`'s sliding window when it is narrower than the context (wider ones mask nothing).
pub fn layer_window(cfg: &DecoderConfig, i: usize, context: usize) -> Option<usize> {
    cfg.sliding_window
        .get(i)
        .copied()
        .flatten()
        .filter(|&w| w < context)
}

/// RMSNorm over `axis` of `x` as layer_norm over `concat([x, −x])`, first half, times `w`.
fn rms_norm(g: &mut G, x: &T, axis: usize, eps: f64, w: &ConstValue) -> R<T> {
    let minus = g.scalar_f16(-1.0)?;
    let neg = g.mul(x, &minus)?;
    let both = g.concat(&[x, &neg], axis)?;
    let normed = g.layer_norm(&both, axis as i32, eps)?;
    let begin = vec![0; x.shape.len()];
    let first = g.slice(&normed, &begin, &x.shape)?;
    let wt = g.konst("norm_w", w.clone())?;
    g.mul(&first, &wt)
}

/// `x[1, heads, S, D]` rotated by the gathered tables `cos`, `sin` (`[1, 1, S, D]`).
fn rope(g: &mut G, x: &T, cos: &T, sin: &T) -> R<T> {
    let (hh, s, d) = (x.shape[1], x.shape[2], x.shape[3]);
    let x1 = g.slice(x, &[0, 0, 0, 0], &[1, hh, s, d / 2])?;
    let x2 = g.slice(x, &[0, 0, 0, d / 2], &[1, hh, s, d])?;
    let rot = g.concat(&[&x2, &x1], 3)?;
    let a = g.mul(x, cos)?;
    let b = g.mul(&rot, sin)?;
    g.add(&a, &b)
}

/// A conv output `[1, heads·D, 1, S]` as heads `[1, heads, S, D]` (D last, as ANEMLL lays
/// out attention).
fn heads_last(g: &mut G, x: &T, heads: u64, d: u64) -> R<T> {
    let s = x.shape[3];
    let x = g.reshape(x, &[1, heads, d, s])?;
    g.transpose(&x, &[0, 1, 3, 2])
}

fn stored_const(g: &mut G, p: &str, c: &Option<ConstValue>) -> R<Option<T>> {
    c.as_ref().map(|c| g.konst(p, c.clone())).transpose()
}

/// Writes `update` (`[1, KV, S, D]`) into row `row` of the state at `current_pos`, in
/// coremltools' stateful form: read_state → slice_update (begin and end built by concat,
/// `end_mask` on the whole axes) → write_state.
fn write_kv_row(g: &mut G, state: &T, update: &T, row: u64, pos: [&T; 2]) -> R<()> {
    let [cur, cur_end] = pos;
    let zero = g.ints_const(&[0])?;
    let first = g.ints_const(&[row as i32])?;
    let past = g.ints_const(&[row as i32 + 1])?;
    let begin = g.concat(&[&first, &zero, cur, &zero], 0)?;
    let end = g.concat(&[&past, &zero, cur_end, &zero], 0)?;
    let kv = g.read_state(state)?;
    let kv = g.slice_update(&kv, update, &begin, &end)?;
    g.write_state(state, &kv)
}

/// Gemma's two caches: which state and row each layer uses, the window W, the mask width M.
struct GemmaLayout {
    window: u64,
    /// Position of each converted layer in its own state (local or global), by layer index.
    slot: Vec<u64>,
    local_rows: u64,
    global_rows: u64,
}

impl GemmaLayout {
    fn new(cfg: &DecoderConfig, opts: &PartOptions) -> Option<GemmaLayout> {
        cfg.gemma.as_ref()?;
        let (mut local, mut global) = (0u64, 0u64);
        let mut slot = Vec::with_capacity(opts.layers);
        for i in 0..opts.layers {
            if is_local(cfg, i) {
                slot.push(local);
                local += 1;
            } else {
                slot.push(global);
                global += 1;
            }
        }
        Some(GemmaLayout {
            window: gemma_window(cfg, opts.layers)? as u64,
            slot,
            // A state of no layer still has one pair of rows: Core ML has no empty state.
            local_rows: 2 * local.max(1),
            global_rows: 2 * global.max(1),
        })
    }
}

/// Gemma: whether layer `i` is a sliding (local) one.
fn is_local(cfg: &DecoderConfig, i: usize) -> bool {
    cfg.sliding_window.get(i).copied().flatten().is_some()
}

/// Gemma's window W over the first `layers` layers (every sliding layer has the same one), or
/// the context when none slides.
pub fn gemma_window(cfg: &DecoderConfig, layers: usize) -> Option<usize> {
    cfg.sliding_window
        .iter()
        .take(layers)
        .flatten()
        .copied()
        .max()
}

/// Whether a Gemma conversion has the rotate functions: its context is longer than its window.
pub fn has_rotate(cfg: &DecoderConfig, opts: &PartOptions) -> bool {
    cfg.gemma.is_some() && gemma_window(cfg, opts.layers).is_some_and(|w| opts.context_length > w)
}

/// The causal-mask width the runner passes: `max(C, W)` for Gemma, C otherwise.
pub fn mask_width(cfg: &DecoderConfig, opts: &PartOptions) -> usize {
    match (&cfg.gemma, gemma_window(cfg, opts.layers)) {
        (Some(_), Some(w)) => opts.context_length.max(w),
        _ => opts.context_length,
    }
}

/// The rotate functions' mask `[S, W + S]` over `concat(local cache, new keys)`: with the cache
/// holding positions `p − W .. p`, query `i` (position `p + i`) sees key `k` iff `i < k ≤ W + i`.
pub fn rotate_band(window: usize, s: usize) -> Vec<f16> {
    let mut m = Vec::with_capacity(s * (window + s));
    for i in 0..s {
        m.extend((0..window + s).map(|k| {
            if i < k && k <= window + i {
                f16::ZERO
            } else {
                f16::MIN
            }
        }));
    }
    m
}

/// One function (`infer` with S = 1 or `prefill` with S = B; Gemma's `…_rotate` with `rotate`)
/// of a chunk.
fn chunk_function(
    cfg: &DecoderConfig,
    opts: &PartOptions,
    w: &ChunkWeights,
    s: u64,
    rotate: bool,
) -> R<Function> {
    let h = cfg.hidden_size as u64;
    let (nh, kvh, d) = (
        cfg.num_heads as u64,
        cfg.num_kv_heads as u64,
        cfg.head_dim as u64,
    );
    let groups = nh / kvh;
    let c = opts.context_length as u64;
    let l_total = opts.layers as u64;
    let eps = cfg.rms_norm_eps;
    let gl = GemmaLayout::new(cfg, opts);
    let m_width = mask_width(cfg, opts) as u64;

    let mut g = G::new();
    let hidden = g.input("hidden_states", DType::F16, &[1, s, h])?;
    let pos_ids = g.input("position_ids", DType::I32, &[s])?;
    let mask = g.input("causal_mask", DType::F16, &[1, 1, s, m_width])?;
    let cur = g.input("current_pos", DType::I32, &[1])?;
    let declare = |g: &mut G, name: &str, shape: Vec<u64>| -> R<T> {
        let ty = crate::mil::TensorType::new(DType::F16, &shape);
        Ok(T {
            var: g.b.state(name, ty)?,
            shape,
        })
    };
    // (state, Gemma's local state) — the one state of the other families is `state`.
    let (state, local_state) = match &gl {
        None => (
            declare(&mut g, STATE_NAME, vec![2 * l_total, kvh, c, d])?,
            None,
        ),
        Some(gl) => {
            let global = declare(&mut g, GLOBAL_STATE_NAME, vec![gl.global_rows, kvh, c, d])?;
            let local = declare(
                &mut g,
                LOCAL_STATE_NAME,
                vec![gl.local_rows, kvh, gl.window, d],
            )?;
            (global, Some(local))
        }
    };

    // (1, S, H) → (1, H, 1, S)
    let xt = g.transpose(&hidden, &[0, 2, 1])?;
    let mut x = g.reshape(&xt, &[1, h, 1, s])?;

    // Table rows for these positions, gathered with uint16 indices (coremltools' add_int16_cast
    // form; C ≤ 65535 is checked by the plan): RoPE [S, D] → [1, 1, S, D].
    let pos16 = g.cast(&pos_ids, DType::U16)?;
    let gathered = |g: &mut G, tables: &(ConstValue, ConstValue), p: [&str; 2]| -> R<(T, T)> {
        let cos_t = g.konst(p[0], tables.0.clone())?;
        let sin_t = g.konst(p[1], tables.1.clone())?;
        let cos_g = g.gather(&cos_t, &pos16, 0, vec![s, d], None)?;
        let sin_g = g.gather(&sin_t, &pos16, 0, vec![s, d], None)?;
        Ok((
            g.reshape(&cos_g, &[1, 1, s, d])?,
            g.reshape(&sin_g, &[1, 1, s, d])?,
        ))
    };
    let (cos, sin) = gathered(
        &mut g,
        &(w.cos.clone(), w.sin.clone()),
        ["rope_cos", "rope_sin"],
    )?;
    let local_rope = match &w.local_rope {
        Some(tables) => Some(gathered(
            &mut g,
            tables,
            ["rope_local_cos", "rope_local_sin"],
        )?),
        None => None,
    };

    // Sliding-window masks: the band rows of these positions, min'ed with the runner's mask.
    let mut window_masks: Vec<(usize, T)> = Vec::new();
    for (win, band) in &w.bands {
        let band_t = g.konst("window_band", band.clone())?;
        let rows = g.gather(&band_t, &pos16, 0, vec![s, c], None)?;
        let rows = g.reshape(&rows, &[1, 1, s, c])?;
        window_masks.push((*win, g.minimum(&mask, &rows)?));
    }
    // Gemma's masks: the global layers read the first C columns, the local ones the first W
    // (positions below W: the non-rotate functions), or the constant rotate band.
    let (global_mask, local_mask) = match &gl {
        None => (mask.clone(), None),
        Some(gl) => {
            let cut = |g: &mut G, width: u64| -> R<T> {
                if width == m_width {
                    Ok(mask.clone())
                } else {
                    g.slice(&mask, &[0, 0, 0, 0], &[1, 1, s, width])
                }
            };
            let global = cut(&mut g, c)?;
            let local = if rotate {
                let band = ConstValue::from_f16(
                    &[1, 1, s, gl.window + s],
                    &rotate_band(gl.window as usize, s as usize),
                )?;
                g.konst("rotate_band", band)?
            } else {
                cut(&mut g, gl.window)?
            };
            (global, Some(local))
        }
    };

    let attn_scale = match &cfg.gemma {
        Some(gm) => gm.query_pre_attn_scalar.powf(-0.5),
        None => 1.0 / (d as f64).sqrt(),
    };
    let scale = g.scalar_f16(attn_scale as f32)?;
    let extent = g.ints_const(&[s as i32])?;
    let cur_end = g.add(&cur, &extent)?;
    let (mut touched_global, mut touched_local) = (false, false);

    for lw in &w.layers {
        let li = lw.index as u64;
        let local = gl.is_some() && is_local(cfg, lw.index);
        // ---- attention
        let xn = rms_norm(&mut g, &x, 1, eps, &lw.input_norm)?;
        let wq = use_weight(&mut g, "q_proj", &lw.q)?;
        let wk = use_weight(&mut g, "k_proj", &lw.k)?;
        let wv = use_weight(&mut g, "v_proj", &lw.v)?;
        let bq = stored_const(&mut g, "q_bias", &lw.q_bias)?;
        let bk = stored_const(&mut g, "k_bias", &lw.k_bias)?;
        let bv = stored_const(&mut g, "v_bias", &lw.v_bias)?;
        let q = g.conv("q", &xn, &wq, bq.as_ref())?;
        let k = g.conv("k", &xn, &wk, bk.as_ref())?;
        let v = g.conv("v", &xn, &wv, bv.as_ref())?;
        let mut q = heads_last(&mut g, &q, nh, d)?;
        let mut k = heads_last(&mut g, &k, kvh, d)?;
        let v = heads_last(&mut g, &v, kvh, d)?;
        if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
            q = rms_norm(&mut g, &q, 3, eps, qn)?;
            k = rms_norm(&mut g, &k, 3, eps, kn)?;
        }
        let (rc, rs) = match (&local_rope, local) {
            (Some((lc, ls)), true) => (lc, ls),
            _ => (&cos, &sin),
        };
        let q = rope(&mut g, &q, rc, rs)?;
        let k = rope(&mut g, &k, rc, rs)?;
        let q = match &cfg.gemma {
            Some(_) => q,
            None => g.mul(&q, &scale)?,
        };

        // The keys and values this layer attends over ([KV, T, D]) and its mask.
        let (k_all, v_all, t, layer_mask) = match (&gl, &local_state) {
            (Some(gl), Some(ls)) if local => {
                touched_local = true;
                let row = gl.slot[lw.index];
                let rows = gl.local_rows / 2;
                let wn = gl.window;
                if rotate {
                    // Shift left by S and append: concat(cache, new)[S..], kept whole for the
                    // band mask (a narrow and a concat, as ANEMLL builds it).
                    let kv = g.read_state(ls)?;
                    let old_k = g.slice(&kv, &[row, 0, 0, 0], &[row + 1, kvh, wn, d])?;
                    let old_v =
                        g.slice(&kv, &[rows + row, 0, 0, 0], &[rows + row + 1, kvh, wn, d])?;
                    let keys = g.concat(&[&old_k, &k], 2)?; // [1, KV, W+S, D]
                    let vals = g.concat(&[&old_v, &v], 2)?;
                    let keep_k = g.slice(&keys, &[0, 0, s, 0], &[1, kvh, wn + s, d])?;
                    let keep_v = g.slice(&vals, &[0, 0, s, 0], &[1, kvh, wn + s, d])?;
                    write_kv_whole_row(&mut g, ls, &keep_k, row)?;
                    write_kv_whole_row(&mut g, ls, &keep_v, rows + row)?;
                    let keys = g.reshape(&keys, &[kvh, wn + s, d])?;
                    let vals = g.reshape(&vals, &[kvh, wn + s, d])?;
                    (
                        keys,
                        vals,
                        wn + s,
                        local_mask.clone().expect("Gemma has a local mask"),
                    )
                } else {
                    write_kv_row(&mut g, ls, &k, row, [&cur, &cur_end])?;
                    write_kv_row(&mut g, ls, &v, rows + row, [&cur, &cur_end])?;
                    let kv = g.read_state(ls)?;
                    let k_all = g.slice(&kv, &[row, 0, 0, 0], &[row + 1, kvh, wn, d])?;
                    let v_all =
                        g.slice(&kv, &[rows + row, 0, 0, 0], &[rows + row + 1, kvh, wn, d])?;
                    let k_all = g.reshape(&k_all, &[kvh, wn, d])?;
                    let v_all = g.reshape(&v_all, &[kvh, wn, d])?;
                    (
                        k_all,
                        v_all,
                        wn,
                        local_mask.clone().expect("Gemma has a local mask"),
                    )
                }
            }
            _ => {
                touched_global = true;
                let (row, rows) = match &gl {
                    Some(gl) => (gl.slot[lw.index], gl.global_rows / 2),
                    None => (li, l_total),
                };
                // KV write at current_pos into rows `row` (K) and `rows + row` (V), read back.
                write_kv_row(&mut g, &state, &k, row, [&cur, &cur_end])?;
                write_kv_row(&mut g, &state, &v, rows + row, [&cur, &cur_end])?;
                let kv = g.read_state(&state)?;
                let k_all = g.slice(&kv, &[row, 0, 0, 0], &[row + 1, kvh, c, d])?;
                let v_all = g.slice(&kv, &[rows + row, 0, 0, 0], &[rows + row + 1, kvh, c, d])?;
                let k_all = g.reshape(&k_all, &[kvh, c, d])?;
                let v_all = g.reshape(&v_all, &[kvh, c, d])?;
                let layer_mask = layer_window(cfg, lw.index, opts.context_length)
                    .filter(|_| gl.is_none())
                    .and_then(|win| window_masks.iter().find(|(w2, _)| *w2 == win))
                    .map_or(&global_mask, |(_, m)| m);
                (k_all, v_all, c, layer_mask.clone())
            }
        };

        // Scores per KV head: q [KV, g·S, D] × K [KV, T, D]ᵀ.
        let q3 = g.reshape(&q, &[kvh, groups * s, d])?;
        let scores = g.matmul(&q3, &k_all, true)?;
        let scores = g.reshape(&scores, &[kvh, groups, s, t])?;
        let scores = g.add(&scores, &layer_mask)?;
        let probs = g.softmax(&scores, -1)?;
        let probs = g.reshape(&probs, &[kvh, groups * s, t])?;
        let attn = g.matmul(&probs, &v_all, false)?; // [KV, g·S, D]
        let attn = g.reshape(&attn, &[1, nh, s, d])?;
        let attn = g.transpose(&attn, &[0, 1, 3, 2])?;
        let attn = g.reshape(&attn, &[1, nh * d, 1, s])?;
        let wo = use_weight(&mut g, "o_proj", &lw.o)?;
        let bo = stored_const(&mut g, "o_bias", &lw.o_bias)?;
        let mut o = g.conv("o", &attn, &wo, bo.as_ref())?;
        if let Some(n) = &lw.attn_out_norm {
            o = rms_norm(&mut g, &o, 1, eps, n)?;
        }
        x = g.add(&x, &o)?;

        // ---- MLP, one slice per ≤16384 intermediate channels; the down partial sums add up.
        let xn = rms_norm(&mut g, &x, 1, eps, &lw.post_norm)?;
        let mut mlp: Option<T> = None;
        for (k, part) in lw.ffn.iter().enumerate() {
            let wg = use_weight(&mut g, "gate_proj", &part.gate)?;
            let wu = use_weight(&mut g, "up_proj", &part.up)?;
            let wd = use_weight(&mut g, "down_proj", &part.down)?;
            let bg = stored_const(&mut g, "gate_bias", &part.gate_bias)?;
            let bu = stored_const(&mut g, "up_bias", &part.up_bias)?;
            let bd = if k == 0 {
                stored_const(&mut g, "down_bias", &lw.down_bias)?
            } else {
                None
            };
            let gt = g.conv("gate", &xn, &wg, bg.as_ref())?;
            let up = g.conv("up", &xn, &wu, bu.as_ref())?;
            let act = if cfg.gemma.is_some() {
                g.gelu_tanh(&gt)?
            } else {
                g.silu(&gt)?
            };
            let m = g.mul(&act, &up)?;
            let down = g.conv("down", &m, &wd, bd.as_ref())?;
            mlp = Some(match mlp {
                None => down,
                Some(sum) => g.add(&sum, &down)?,
            });
        }
        let mut mlp = mlp.ok_or_else(|| AneError::Graph {
            op: format!("layer {li} mlp"),
            message: "intermediate size 0".into(),
        })?;
        if let Some(n) = &lw.mlp_out_norm {
            mlp = rms_norm(&mut g, &mlp, 1, eps, n)?;
        }
        x = g.add(&x, &mlp)?;
    }
    // Gemma: a chunk declares both states and must use each (Core ML rejects an unused state):
    // one element of an untouched state, times 0, joins the residual.
    if let Some(ls) = &local_state {
        for (st, touched) in [(&state, touched_global), (ls, touched_local)] {
            if !touched {
                let all = g.read_state(st)?;
                let one = g.slice(&all, &[0, 0, 0, 0], &[1, 1, 1, 1])?;
                let zero = g.scalar_f16(0.0)?;
                let nothing = g.mul(&one, &zero)?;
                x = g.add(&x, &nothing)?;
            }
        }
    }
    if let Some(fnorm) = &w.final_norm {
        x = rms_norm(&mut g, &x, 1, eps, fnorm)?;
    }
    let x3 = g.reshape(&x, &[1, h, s])?;
    let out = g.transpose_named(&x3, &[0, 2, 1], Some("output_hidden_states"))?;
    g.b.output(&out.var)?;
    Ok(g.b.finish()?)
}

/// Replaces row `row` of `state` whole with `data` (`[1, KV, W, D]`): Gemma's rotated cache.
fn write_kv_whole_row(g: &mut G, state: &T, data: &T, row: u64) -> R<()> {
    let mut end: Vec<i32> = state.shape.iter().map(|&d| d as i32).collect();
    end[0] = row as i32 + 1;
    let begin = g.ints_const(&[row as i32, 0, 0, 0])?;
    let end = g.ints_const(&end)?;
    let kv = g.read_state(state)?;
    let kv = g.slice_update(&kv, data, &begin, &end)?;
    g.write_state(state, &kv)
}

/// Chunk `layers` (the last chunk applies the final norm): functions `infer` and `prefill`, and
/// for Gemma beyond its window `infer_rotate` and `prefill_rotate`.
pub fn build_chunk(ctx: &mut Ctx<'_>, layers: Range<usize>, last: bool) -> R<Model> {
    let w = load_chunk(ctx, layers, last)?;
    let b = ctx.opts.batch_size as u64;
    let mut functions = vec![
        (
            "infer".into(),
            chunk_function(ctx.cfg, ctx.opts, &w, 1, false)?,
        ),
        (
            "prefill".into(),
            chunk_function(ctx.cfg, ctx.opts, &w, b, false)?,
        ),
    ];
    if has_rotate(ctx.cfg, ctx.opts) {
        functions.push((
            "infer_rotate".into(),
            chunk_function(ctx.cfg, ctx.opts, &w, 1, true)?,
        ));
        functions.push((
            "prefill_rotate".into(),
            chunk_function(ctx.cfg, ctx.opts, &w, b, true)?,
        ));
    }
    Ok(Model::new(Program {
        functions,
        default_function: "infer".into(),
    }))
}
