//! The calibration forward pass: the decoder in f32, one layer at a time and within a layer one
//! linear input ([`Site`]) at a time, reading weights from the `WeightStore` only while they
//! are used.
//!
//! It computes what `reference` computes (transformers' semantics: RMSNorm in f32, rotate-half
//! RoPE from `arch::rope_inv_freq`, GQA attention with causal and sliding-window masks,
//! SwiGLU), but holds one layer's weights instead of the whole model, so calibrating an 8B
//! checkpoint needs memory for one layer. A test holds its hidden states equal to `reference`'s.

use std::collections::HashMap;

use candle_core::{Device, Tensor, D};

use crate::arch::{names, DecoderConfig};
use crate::weights::WeightStore;

use super::{CalibError, Result};

/// The input of a group of linear layers that read the same activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// q_proj, k_proj, v_proj of a layer: the input-norm output.
    Qkv,
    /// o_proj: the attention output before the projection.
    O,
    /// gate_proj, up_proj: the post-attention-norm output.
    GateUp,
    /// down_proj: `silu(gate) * up`.
    Down,
}

impl Site {
    /// The site a layer weight reads, from its checkpoint name, with the layer index.
    pub fn of(name: &str) -> Option<(usize, Site)> {
        let rest = name.strip_prefix("model.layers.")?;
        let (layer, rest) = rest.split_once('.')?;
        let layer = layer.parse().ok()?;
        let site = match rest {
            "self_attn.q_proj.weight" | "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => {
                Site::Qkv
            }
            "self_attn.o_proj.weight" => Site::O,
            "mlp.gate_proj.weight" | "mlp.up_proj.weight" => Site::GateUp,
            "mlp.down_proj.weight" => Site::Down,
            _ => return None,
        };
        Some((layer, site))
    }
}

/// `[n, in]` → `[n, out]` with weight `[out, in]` and optional bias.
struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.w.t()?)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let var = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (var + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(w)?)
}

/// Reads checkpoint tensors as f32 candle tensors.
fn tensor(ws: &WeightStore, name: &str, shape: &[usize]) -> Result<Tensor> {
    let raw = ws.get(name, shape)?;
    Ok(Tensor::from_vec(raw.to_f32(), shape, &Device::Cpu)?)
}

/// Where a layer's linear weights come from: the quantized values the builder reported
/// (checkpoint name → `[out, in]`), else the checkpoint.
pub struct Weights<'a> {
    pub cfg: &'a DecoderConfig,
    pub ws: &'a WeightStore,
    pub replace: &'a HashMap<String, Tensor>,
}

impl Weights<'_> {
    fn linear(&self, scope: names::Scope, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let name = scope.weight();
        let w = match self.replace.get(&name) {
            Some(w) => w.clone(),
            None => tensor(self.ws, &name, &[out, inp])?,
        };
        let b = if bias {
            Some(tensor(self.ws, &scope.bias(), &[out])?)
        } else {
            None
        };
        Ok(Linear { w, b })
    }

    fn norm(&self, name: String, dim: usize) -> Result<Tensor> {
        tensor(self.ws, &name, &[dim])
    }
}

/// Layer `i`'s input norm: the input of q/k/v ([`Site::Qkv`]).
pub fn input_norm(w: &Weights, i: usize, x: &[Tensor]) -> Result<Vec<Tensor>> {
    let g = w.norm(names::input_layernorm(i).weight(), w.cfg.hidden_size)?;
    x.iter()
        .map(|x| rms_norm(x, &g, w.cfg.rms_norm_eps))
        .collect()
}

/// Layer `i`'s attention up to o_proj from the normed inputs `h`: the input of o_proj
/// ([`Site::O`]).
pub fn attention(w: &Weights, rope: &Rope, i: usize, h: &[Tensor]) -> Result<Vec<Tensor>> {
    let cfg = w.cfg;
    let (nh, nkv, hd, hid) = (
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.hidden_size,
    );
    let q_lin = w.linear(names::q_proj(i), cfg.q_dim(), hid, cfg.qkv_bias)?;
    let k_lin = w.linear(names::k_proj(i), cfg.kv_dim(), hid, cfg.qkv_bias)?;
    let v_lin = w.linear(names::v_proj(i), cfg.kv_dim(), hid, cfg.qkv_bias)?;
    let qk_norm = if cfg.qk_norm {
        Some((
            w.norm(names::q_norm(i).weight(), hd)?,
            w.norm(names::k_norm(i).weight(), hd)?,
        ))
    } else {
        None
    };
    let window = cfg.sliding_window.get(i).copied().flatten();
    h.iter()
        .map(|h| {
            let n = h.dim(0)?;
            let mut q = q_lin.forward(h)?.reshape((n, nh, hd))?;
            let mut k = k_lin.forward(h)?.reshape((n, nkv, hd))?;
            let v = v_lin.forward(h)?.reshape((n, nkv, hd))?;
            if let Some((qn, kn)) = &qk_norm {
                q = rms_norm(&q, qn, cfg.rms_norm_eps)?;
                k = rms_norm(&k, kn, cfg.rms_norm_eps)?;
            }
            let (cos, sin) = rope.tables(n)?;
            let q = rotate(&q.transpose(0, 1)?.contiguous()?, &cos, &sin)?; // [nh, n, D]
            let k = rotate(&k.transpose(0, 1)?.contiguous()?, &cos, &sin)?; // [nkv, n, D]
            let v = v.transpose(0, 1)?.contiguous()?;
            let groups = nh / nkv;
            let k = k
                .unsqueeze(1)?
                .expand((nkv, groups, n, hd))?
                .reshape((nh, n, hd))?;
            let v = v
                .unsqueeze(1)?
                .expand((nkv, groups, n, hd))?
                .reshape((nh, n, hd))?;
            let scores =
                (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?.broadcast_add(&mask(n, window)?)?;
            let max = scores.max_keepdim(D::Minus1)?;
            let e = scores.broadcast_sub(&max)?.exp()?;
            let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
            Ok(p.matmul(&v)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((n, nh * hd))?)
        })
        .collect()
}

/// The residual after attention (`x + o_proj(a)`) and its post-attention norm, the input of
/// gate/up ([`Site::GateUp`]).
pub fn post_attention(
    w: &Weights,
    i: usize,
    x: &[Tensor],
    a: &[Tensor],
) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    let cfg = w.cfg;
    let o = w.linear(names::o_proj(i), cfg.hidden_size, cfg.q_dim(), cfg.o_bias)?;
    let g = w.norm(names::post_attention_layernorm(i).weight(), cfg.hidden_size)?;
    let mut res = Vec::with_capacity(x.len());
    let mut normed = Vec::with_capacity(x.len());
    for (x, a) in x.iter().zip(a) {
        let r = (x + o.forward(a)?)?;
        normed.push(rms_norm(&r, &g, cfg.rms_norm_eps)?);
        res.push(r);
    }
    Ok((res, normed))
}

/// `silu(gate(h)) * up(h)`, the input of down_proj ([`Site::Down`]).
pub fn mlp_inner(w: &Weights, i: usize, h: &[Tensor]) -> Result<Vec<Tensor>> {
    let cfg = w.cfg;
    let (hid, inter) = (cfg.hidden_size, cfg.intermediate_size);
    let gate = w.linear(names::gate_proj(i), inter, hid, cfg.mlp_bias)?;
    let up = w.linear(names::up_proj(i), inter, hid, cfg.mlp_bias)?;
    h.iter()
        .map(|h| Ok((gate.forward(h)?.silu()? * up.forward(h)?)?))
        .collect()
}

/// The layer's output `r + down(m)`.
pub fn output(w: &Weights, i: usize, r: &[Tensor], m: &[Tensor]) -> Result<Vec<Tensor>> {
    let cfg = w.cfg;
    let down = w.linear(
        names::down_proj(i),
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.mlp_bias,
    )?;
    r.iter()
        .zip(m)
        .map(|(r, m)| {
            let y = (r + down.forward(m)?)?;
            finite(&y, || format!("the output of layer {i}"))?;
            Ok(y)
        })
        .collect()
}

/// An error naming `what` when `t` holds a NaN or an infinity.
pub fn finite(t: &Tensor, what: impl FnOnce() -> String) -> Result<()> {
    let s = t.abs()?.sum_all()?.to_scalar::<f32>()?;
    if s.is_finite() {
        Ok(())
    } else {
        Err(CalibError::NonFinite { site: what() })
    }
}

/// The RoPE cos/sin tables for positions `0..max_len`, `[max_len, head_dim]`.
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub fn new(cfg: &DecoderConfig, max_len: usize) -> Result<Rope> {
        let inv: Vec<f32> = crate::arch::rope_inv_freq(cfg)
            .into_iter()
            .map(|f| f as f32)
            .collect();
        let mut cos = Vec::with_capacity(max_len * 2 * inv.len());
        let mut sin = Vec::with_capacity(max_len * 2 * inv.len());
        for p in 0..max_len {
            for _ in 0..2 {
                cos.extend(inv.iter().map(|f| (f * p as f32).cos()));
                sin.extend(inv.iter().map(|f| (f * p as f32).sin()));
            }
        }
        let shape = (max_len, 2 * inv.len());
        Ok(Rope {
            cos: Tensor::from_vec(cos, shape, &Device::Cpu)?,
            sin: Tensor::from_vec(sin, shape, &Device::Cpu)?,
        })
    }

    fn tables(&self, n: usize) -> Result<(Tensor, Tensor)> {
        Ok((self.cos.narrow(0, 0, n)?, self.sin.narrow(0, 0, n)?))
    }
}

fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rot.broadcast_mul(sin)?)?)
}

/// `[n, n]` additive mask: key `j` is visible from query `p` when `j <= p` and, on a sliding
/// layer, `j > p - window`.
fn mask(n: usize, window: Option<usize>) -> Result<Tensor> {
    let m: Vec<f32> = (0..n)
        .flat_map(|p| {
            (0..n).map(move |j| {
                if j <= p && window.is_none_or(|w| j + w > p) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(m, (n, n), &Device::Cpu)?)
}

/// The embeddings of `ids` (`[n, H]`), read from the table one row at a time.
pub fn embed(cfg: &DecoderConfig, ws: &WeightStore, ids: &[u32]) -> Result<Tensor> {
    let h = cfg.hidden_size;
    let raw = ws.get(&names::embed_tokens(), &[cfg.vocab_size, h])?;
    let mut out = Vec::with_capacity(ids.len() * h);
    for &id in ids {
        let id = id as usize;
        if id >= cfg.vocab_size {
            return Err(CalibError::Token {
                id,
                vocab: cfg.vocab_size,
            });
        }
        out.extend(raw.rows(id..id + 1).to_f32());
    }
    Ok(Tensor::from_vec(out, (ids.len(), h), &Device::Cpu)?)
}

/// The final RMSNorm of hidden states `x` (the LM head's input).
pub fn final_norm(cfg: &DecoderConfig, ws: &WeightStore, x: &Tensor) -> Result<Tensor> {
    let w = tensor(ws, &names::final_norm(), &[cfg.hidden_size])?;
    rms_norm(x, &w, cfg.rms_norm_eps)
}
