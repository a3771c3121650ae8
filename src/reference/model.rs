//! The decoder itself: weights as f32 candle tensors and the HF-semantics forward pass.

use candle_core::{DType, Device, Tensor, D};

use super::{Config, Loader, Matrix, Result, Trace};

/// The KV cache: per layer, keys and values `[kv_heads, len, head_dim]` (keys after RoPE) of
/// every position seen so far. Sliding-window layers keep everything and mask instead.
#[derive(Clone, Debug)]
pub struct Cache {
    pub(super) layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl Cache {
    pub(super) fn new(num_layers: usize) -> Cache {
        Cache {
            layers: vec![None; num_layers],
            len: 0,
        }
    }

    /// The number of positions already in the cache (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `y = x Wᵀ (+ b)` as `torch.nn.functional.linear`.
struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    /// `{module}.weight` `[out, in]` and, with `bias`, `{module}.bias` `[out]`.
    fn load(
        ld: &Loader<'_>,
        module: &str,
        out_dim: usize,
        in_dim: usize,
        bias: bool,
    ) -> Result<Linear> {
        let w = ld.get(&format!("{module}.weight"), &[out_dim, in_dim])?;
        let b = if bias {
            Some(ld.get(&format!("{module}.bias"), &[out_dim])?)
        } else {
            None
        };
        Ok(Linear { w, b })
    }

    /// `x`: `[n, in]` → `[n, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.w.t()?)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// `weight * (x * rsqrt(mean(x²) + eps))` over the last dimension, in f32 (Gemma's gain is
/// `1 + weight`, formed in f32 as transformers' `Gemma3RMSNorm` does).
struct RmsNorm {
    w: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// `{module}.weight` `[dim]`; `one_plus`: the gain is `1 + weight` (Gemma).
    fn load(
        ld: &Loader<'_>,
        module: &str,
        dim: usize,
        eps: f64,
        one_plus: bool,
    ) -> Result<RmsNorm> {
        let w = ld.get(&format!("{module}.weight"), &[dim])?;
        Ok(RmsNorm {
            w: if one_plus { (w + 1.0)? } else { w },
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (var + self.eps)?.sqrt()?.recip()?;
        Ok(x.broadcast_mul(&inv)?.broadcast_mul(&self.w)?)
    }
}

struct Layer {
    input_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    /// Gemma: `post_attention_layernorm` on the attention output, before the residual add.
    attn_out_norm: Option<RmsNorm>,
    /// The norm before the MLP (`post_attention_layernorm`; Gemma's `pre_feedforward_layernorm`).
    mlp_norm: RmsNorm,
    /// Gemma: `post_feedforward_layernorm` on the MLP output, before the residual add.
    mlp_out_norm: Option<RmsNorm>,
    gate: Linear,
    up: Linear,
    down: Linear,
    window: Option<usize>,
}

pub(super) struct Model {
    embed: Tensor,
    /// Gemma: the embedding output is multiplied by `√hidden` (a float32 scalar: the reference
    /// runs the weights in float32, so transformers' cast to the weight dtype keeps it).
    embed_scale: Option<f64>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    /// `None` when tied: the embedding matrix is the LM head.
    lm_head: Option<Tensor>,
    /// HF's `inv_freq`, `[head_dim / 2]`.
    inv_freq: Vec<f32>,
    /// Gemma's sliding layers' `inv_freq` (plain RoPE at the local base).
    inv_freq_local: Option<Vec<f32>>,
    /// Scores multiplier: `head_dim`^−½ (Gemma: `query_pre_attn_scalar`^−½).
    attn_scale: f64,
    /// GeGLU with tanh GELU (Gemma) instead of SiLU.
    gelu: bool,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
}

impl Model {
    /// The weights, by the names transformers' `LlamaForCausalLM` / `Qwen2ForCausalLM` /
    /// `Qwen3ForCausalLM` / `MistralForCausalLM` modules give them (`model.layers.{i}.…`).
    pub(super) fn load(cfg: &Config, ld: &Loader<'_>) -> Result<Model> {
        let h = cfg.hidden_size;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let eps = cfg.rms_norm_eps;
        let embed = ld.get("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let inter = cfg.intermediate_size;
        let gemma = cfg.gemma.is_some();
        let norm = |module: &str, dim| RmsNorm::load(ld, module, dim, eps, gemma);
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let at = |module: &str| format!("model.layers.{i}.{module}");
            let (q_norm, k_norm) = if cfg.qk_norm {
                (
                    Some(norm(&at("self_attn.q_norm"), hd)?),
                    Some(norm(&at("self_attn.k_norm"), hd)?),
                )
            } else {
                (None, None)
            };
            let (qkv_b, o_b, mlp_b) = (cfg.qkv_bias, cfg.o_bias, cfg.mlp_bias);
            let (attn_out_norm, mlp_norm, mlp_out_norm) = if gemma {
                (
                    Some(norm(&at("post_attention_layernorm"), h)?),
                    norm(&at("pre_feedforward_layernorm"), h)?,
                    Some(norm(&at("post_feedforward_layernorm"), h)?),
                )
            } else {
                (None, norm(&at("post_attention_layernorm"), h)?, None)
            };
            layers.push(Layer {
                input_norm: norm(&at("input_layernorm"), h)?,
                q: Linear::load(ld, &at("self_attn.q_proj"), nh * hd, h, qkv_b)?,
                k: Linear::load(ld, &at("self_attn.k_proj"), nkv * hd, h, qkv_b)?,
                v: Linear::load(ld, &at("self_attn.v_proj"), nkv * hd, h, qkv_b)?,
                o: Linear::load(ld, &at("self_attn.o_proj"), h, nh * hd, o_b)?,
                q_norm,
                k_norm,
                attn_out_norm,
                mlp_norm,
                mlp_out_norm,
                gate: Linear::load(ld, &at("mlp.gate_proj"), inter, h, mlp_b)?,
                up: Linear::load(ld, &at("mlp.up_proj"), inter, h, mlp_b)?,
                down: Linear::load(ld, &at("mlp.down_proj"), h, inter, mlp_b)?,
                window: cfg.sliding_window[i],
            });
        }
        let norm = norm("model.norm", h)?;
        // Tied: transformers uses the embedding matrix (a stored `lm_head.weight` copy is ignored).
        let lm_head = if cfg.tie_embeddings {
            None
        } else {
            Some(ld.get("lm_head.weight", &[cfg.vocab_size, h])?)
        };
        let inv_freq = cfg.inv_freq();
        Ok(Model {
            embed,
            embed_scale: gemma.then(|| f64::from((h as f64).sqrt() as f32)),
            layers,
            norm,
            lm_head,
            inv_freq,
            inv_freq_local: gemma.then(|| cfg.inv_freq_local()),
            attn_scale: match &cfg.gemma {
                Some(g) => g.query_pre_attn_scalar.powf(-0.5),
                None => (hd as f64).powf(-0.5),
            },
            gelu: gemma,
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
            vocab: cfg.vocab_size,
        })
    }

    pub(super) fn forward(&self, tokens: &[u32], cache: &mut Cache, trace: bool) -> Result<Trace> {
        let n = tokens.len();
        let start = cache.len;
        let hidden = self.embed.dim(1)?;
        if n == 0 {
            let empty = |cols| Matrix {
                rows: 0,
                cols,
                data: vec![],
            };
            return Ok(Trace {
                logits: empty(self.vocab),
                layers: vec![empty(hidden); if trace { self.layers.len() } else { 0 }],
                final_norm: empty(hidden),
            });
        }
        let dev = Device::Cpu;
        let ids = Tensor::from_vec(tokens.to_vec(), n, &dev)?;
        let mut x = self.embed.index_select(&ids, 0)?; // [n, H]
        if let Some(s) = self.embed_scale {
            x = (x * s)?;
        }
        let global = self.rope_tables(&self.inv_freq, start, n)?;
        let local = match &self.inv_freq_local {
            Some(f) => Some(self.rope_tables(f, start, n)?),
            None => None,
        };
        let total = start + n;
        let mut traced = Vec::new();
        for (li, layer) in self.layers.iter().enumerate() {
            let mask = causal_mask(start, n, total, layer.window)?;
            // Gemma: sliding layers rotate with the local tables.
            let (cos, sin) = match (&local, layer.window) {
                (Some(l), Some(_)) => l,
                _ => &global,
            };
            let h = layer.input_norm.forward(&x)?;
            let mut attn = self.attention(layer, &h, cos, sin, &mask, &mut cache.layers[li])?;
            if let Some(n) = &layer.attn_out_norm {
                attn = n.forward(&attn)?;
            }
            x = (x + attn)?;
            let h = layer.mlp_norm.forward(&x)?;
            let g = layer.gate.forward(&h)?;
            let g = if self.gelu { g.gelu()? } else { g.silu()? };
            let u = layer.up.forward(&h)?;
            let mut mlp = layer.down.forward(&(g * u)?)?;
            if let Some(n) = &layer.mlp_out_norm {
                mlp = n.forward(&mlp)?;
            }
            x = (x + mlp)?;
            if trace {
                traced.push(Matrix::from_tensor(&x)?);
            }
        }
        cache.len = total;
        let normed = self.norm.forward(&x)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let logits = normed.matmul(&head.t()?)?;
        Ok(Trace {
            logits: Matrix::from_tensor(&logits)?,
            layers: traced,
            final_norm: if trace {
                Matrix::from_tensor(&normed)?
            } else {
                Matrix {
                    rows: 0,
                    cols: hidden,
                    data: vec![],
                }
            },
        })
    }

    /// cos/sin `[n, head_dim]` for positions `start..start+n`: `emb = cat(freqs, freqs)` with
    /// `freqs = pos * inv_freq` in f32, as HF's rotary embedding computes them.
    fn rope_tables(&self, inv_freq: &[f32], start: usize, n: usize) -> Result<(Tensor, Tensor)> {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(n * 2 * half);
        let mut sin = Vec::with_capacity(n * 2 * half);
        for p in start..start + n {
            let freqs: Vec<f32> = inv_freq.iter().map(|&f| f * p as f32).collect();
            for _ in 0..2 {
                cos.extend(freqs.iter().map(|f| f.cos()));
                sin.extend(freqs.iter().map(|f| f.sin()));
            }
        }
        let dev = Device::Cpu;
        Ok((
            Tensor::from_vec(cos, (n, 2 * half), &dev)?,
            Tensor::from_vec(sin, (n, 2 * half), &dev)?,
        ))
    }

    fn attention(
        &self,
        layer: &Layer,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        slot: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let n = h.dim(0)?;
        let (nh, nkv, hd) = (self.heads, self.kv_heads, self.head_dim);
        // [n, heads*D] → [n, heads, D] (per-head norm here, as HF does before the transpose)
        let mut q = layer.q.forward(h)?.reshape((n, nh, hd))?;
        let mut k = layer.k.forward(h)?.reshape((n, nkv, hd))?;
        let v = layer.v.forward(h)?.reshape((n, nkv, hd))?;
        if let Some(qn) = &layer.q_norm {
            q = qn.forward(&q)?;
        }
        if let Some(kn) = &layer.k_norm {
            k = kn.forward(&k)?;
        }
        let q = rope(&q.transpose(0, 1)?.contiguous()?, cos, sin)?; // [nh, n, D]
        let k = rope(&k.transpose(0, 1)?.contiguous()?, cos, sin)?; // [nkv, n, D]
        let v = v.transpose(0, 1)?.contiguous()?;
        let (k, v) = match slot.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
            None => (k, v),
        };
        *slot = Some((k.clone(), v.clone()));
        let t = k.dim(1)?;
        // repeat_kv: query head i reads KV head i / (nh / nkv)
        let groups = nh / nkv;
        let k = k
            .unsqueeze(1)?
            .expand((nkv, groups, t, hd))?
            .reshape((nh, t, hd))?;
        let v = v
            .unsqueeze(1)?
            .expand((nkv, groups, t, hd))?
            .reshape((nh, t, hd))?;
        let scale = self.attn_scale;
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?; // [nh, n, t]
        let max = scores.max_keepdim(D::Minus1)?;
        let e = scores.broadcast_sub(&max)?.exp()?;
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
        let out = p.matmul(&v)?; // [nh, n, D]
        let out = out.transpose(0, 1)?.contiguous()?.reshape((n, nh * hd))?;
        layer.o.forward(&out)
    }
}

/// `x * cos + rotate_half(x) * sin` with `rotate_half(x) = cat(-x[D/2..], x[..D/2])`;
/// `x`: `[heads, n, D]`, `cos`/`sin`: `[n, D]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rot.broadcast_mul(sin)?)?)
}

/// `[n, total]` additive mask for queries at `start..start+n` over keys `0..total`: 0 where key
/// `j` is visible from query position `p` (`j <= p`, and `j > p - window` on a sliding layer, as
/// transformers' `sliding_window_overlay`), -inf elsewhere.
fn causal_mask(start: usize, n: usize, total: usize, window: Option<usize>) -> Result<Tensor> {
    let mut m = Vec::with_capacity(n * total);
    for p in start..start + n {
        for j in 0..total {
            let causal = j <= p;
            let inside = window.is_none_or(|w| j + w > p);
            m.push(if causal && inside {
                0f32
            } else {
                f32::NEG_INFINITY
            });
        }
    }
    Ok(Tensor::from_vec(m, (n, total), &Device::Cpu)?.to_dtype(DType::F32)?)
}
