//! The reference's own reading of config.json: sizes, head_dim, RMSNorm eps, RoPE (base,
//! default / linear / llama3 scaling and the inverse frequencies), per-layer sliding windows and
//! the biases, read straight from the JSON with transformers' defaults for each `model_type`.
//! Written apart from `arch` on purpose: a misreading there must not be repeated here, or
//! `verify` could not see it (a test holds the two readings equal on the fixtures and on a set of
//! config variants).

use std::path::Path;

use serde_json::{Map, Value};

use super::{ReferenceError, Result};

/// RoPE frequency scaling, as the `rope_type` of `rope_scaling` / `rope_parameters` names it.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeKind {
    /// `default` (or no scaling object).
    Plain,
    /// `linear`: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// `llama3`: low frequencies divided by `factor`, high ones kept, a smooth blend between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// What the reference forward pass needs from config.json.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope: RopeKind,
    /// Bias on q/k/v; on o_proj when `o_bias`; on gate/up/down when `mlp_bias`.
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Qwen3's per-head RMSNorm of q and k.
    pub qk_norm: bool,
    pub tie_embeddings: bool,
    /// Per layer: `Some(w)` when the layer attends to its last `w` positions only.
    pub sliding_window: Vec<Option<usize>>,
    /// Gemma 3's differences from the Llama decoder; `None` for the other families.
    pub gemma: Option<Gemma>,
}

/// What Gemma 3 (`gemma3_text`) changes: the embeddings scaled by √hidden, (1 + w) RMSNorms, a
/// norm on the attention and on the MLP output, GeGLU with tanh GELU, q/k norms, attention
/// scaled by `query_pre_attn_scalar`^−½, and plain RoPE at `local_rope_theta` on the sliding
/// layers (the full-attention layers use `rope_theta` with the scaling).
#[derive(Clone, Debug, PartialEq)]
pub struct Gemma {
    pub query_pre_attn_scalar: f64,
    pub local_rope_theta: f64,
}

/// transformers' `__init__` defaults of one configuration class.
struct ClassDefaults {
    hidden: usize,
    layers: usize,
    heads: usize,
    theta: f64,
    vocab: usize,
    intermediate: usize,
    /// `None`: as many KV heads as attention heads.
    kv_heads: Option<usize>,
    /// `None`: `hidden_size / num_attention_heads`.
    head_dim: Option<usize>,
    /// `sliding_window` when absent (Qwen2/3 use it only with `use_sliding_window`).
    window: Option<usize>,
}

fn class_defaults(model_type: &str) -> Option<ClassDefaults> {
    // hidden 4096, 32 layers, 32 heads and theta 1e4 are common to the Llama-like classes;
    // eps 1e-6 to all five.
    let (vocab, intermediate, kv_heads, head_dim, window) = match model_type {
        "llama" => (32000, 11008, None, None, None),
        "mistral" => (32000, 14336, Some(8), None, Some(4096)),
        "qwen2" => (151936, 22016, Some(32), None, Some(4096)),
        "qwen3" => (151936, 22016, Some(32), Some(128), Some(4096)),
        // Gemma3TextConfig
        "gemma3_text" => {
            return Some(ClassDefaults {
                hidden: 2304,
                layers: 26,
                heads: 8,
                theta: 1e6,
                vocab: 262208,
                intermediate: 9216,
                kv_heads: Some(4),
                head_dim: Some(256),
                window: Some(4096),
            })
        }
        _ => return None,
    };
    Some(ClassDefaults {
        hidden: 4096,
        layers: 32,
        heads: 32,
        theta: 1e4,
        vocab,
        intermediate,
        kv_heads,
        head_dim,
        window,
    })
}

/// The JSON object with typed look-ups that name the file and key of a bad value.
struct Json<'a> {
    obj: &'a Map<String, Value>,
    origin: &'a str,
    /// The key of a nested object (`rope_scaling`), empty at the top level.
    prefix: &'a str,
}

fn bad(origin: &str, field: String, value: impl ToString, reason: &'static str) -> ReferenceError {
    ReferenceError::BadConfig {
        origin: origin.to_string(),
        field,
        value: value.to_string(),
        reason,
    }
}

impl<'a> Json<'a> {
    fn bad(&self, key: &str, value: impl ToString, reason: &'static str) -> ReferenceError {
        let field = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        };
        bad(self.origin, field, value, reason)
    }

    /// Absent → `None`; `null` → `Some(None)`; a value → `Some(Some(v))`.
    fn raw(&self, key: &str) -> Option<Option<&'a Value>> {
        self.obj.get(key).map(|v| (!v.is_null()).then_some(v))
    }

    fn count(&self, key: &str) -> Result<Option<Option<usize>>> {
        match self.raw(key) {
            None => Ok(None),
            Some(None) => Ok(Some(None)),
            Some(Some(v)) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) => Ok(Some(Some(n))),
                None => Err(self.bad(key, v, "must be a non-negative integer")),
            },
        }
    }

    /// A count that must be present or defaulted (null is refused).
    fn count_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.count(key)? {
            None => Ok(default),
            Some(Some(n)) => Ok(n),
            Some(None) => Err(self.bad(key, "null", "must be a non-negative integer")),
        }
    }

    fn number(&self, key: &str) -> Result<Option<f64>> {
        match self.raw(key).flatten() {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(key, v, "must be a number")),
        }
    }

    fn flag(&self, key: &str) -> Result<bool> {
        match self.raw(key).flatten() {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.bad(key, v, "must be true or false")),
        }
    }

    fn text(&self, key: &str) -> Result<Option<&'a str>> {
        match self.raw(key).flatten() {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.bad(key, v, "must be a string")),
        }
    }

    fn object(&self, key: &'a str) -> Result<Option<Json<'a>>> {
        match self.raw(key).flatten() {
            None => Ok(None),
            Some(Value::Object(obj)) => Ok(Some(Json {
                obj,
                origin: self.origin,
                prefix: key,
            })),
            Some(v) => Err(self.bad(key, v, "must be an object")),
        }
    }
}

impl Config {
    /// Reads `path` (a model's config.json).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ReferenceError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Reads config.json text; errors name `origin` as the file.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let value: Value =
            serde_json::from_str(text).map_err(|source| ReferenceError::ConfigJson {
                origin: origin.to_string(),
                source,
            })?;
        let Some(obj) = value.as_object() else {
            return Err(ReferenceError::BadConfig {
                origin: origin.to_string(),
                field: "(top level)".into(),
                value: abbreviated(&value),
                reason: "must be a JSON object",
            });
        };
        let j = Json {
            obj,
            origin,
            prefix: "",
        };
        let model_type = j.text("model_type")?.unwrap_or("(none)").to_string();
        let d = class_defaults(&model_type).ok_or_else(|| {
            j.bad(
                "model_type",
                &model_type,
                "the reference runs llama, mistral, qwen2, qwen3 and gemma3_text",
            )
        })?;
        let is_gemma = model_type == "gemma3_text";
        if is_gemma {
            let act = j.text("hidden_activation")?.unwrap_or("gelu_pytorch_tanh");
            if act != "gelu_pytorch_tanh" {
                return Err(j.bad(
                    "hidden_activation",
                    act,
                    "the reference runs Gemma's tanh-GELU MLP only",
                ));
            }
            for key in ["final_logit_softcapping", "attn_logit_softcapping"] {
                if let Some(v) = j.number(key)? {
                    return Err(j.bad(key, v, "soft-capping is not implemented (must be null)"));
                }
            }
            if j.flag("use_bidirectional_attention")? {
                return Err(j.bad(
                    "use_bidirectional_attention",
                    true,
                    "the reference runs causal attention only",
                ));
            }
        } else if let Some(act) = j.text("hidden_act")? {
            if act != "silu" {
                return Err(j.bad("hidden_act", act, "the reference runs SiLU MLPs only"));
            }
        }
        if let Some(f) = j.number("partial_rotary_factor")? {
            if f != 1.0 {
                return Err(j.bad("partial_rotary_factor", f, "RoPE must cover the whole head"));
            }
        }
        let hidden_size = j.count_or("hidden_size", d.hidden)?;
        let num_heads = j.count_or("num_attention_heads", d.heads)?;
        let num_layers = j.count_or("num_hidden_layers", d.layers)?;
        // Absent: the class default; null: derived (all heads; hidden_size / heads).
        let num_kv_heads = (j.count("num_key_value_heads")?)
            .unwrap_or(d.kv_heads)
            .unwrap_or(num_heads);
        let head_dim = match j.count("head_dim")?.unwrap_or(d.head_dim) {
            Some(n) => n,
            None if num_heads > 0 && hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(j.bad(
                    "hidden_size",
                    format!("{hidden_size} over {num_heads} heads"),
                    "no head_dim given and hidden_size does not split evenly into the heads",
                ))
            }
        };
        let (rope_theta, rope, local_theta) = read_rope(&j, d.theta, is_gemma)?;
        let attention_bias = j.flag("attention_bias")?;
        let (qkv_bias, o_bias, qk_norm) = match model_type.as_str() {
            "qwen2" => (true, false, false),
            "qwen3" | "gemma3_text" => (attention_bias, attention_bias, true),
            "llama" => (attention_bias, attention_bias, false),
            _ => (false, false, false),
        };
        let gemma = if is_gemma {
            let scalar = j.number("query_pre_attn_scalar")?.unwrap_or(256.0);
            if !(scalar > 0.0 && scalar.is_finite()) {
                return Err(j.bad("query_pre_attn_scalar", scalar, "must be a positive number"));
            }
            Some(Gemma {
                query_pre_attn_scalar: scalar,
                local_rope_theta: local_theta,
            })
        } else {
            None
        };
        let sliding_window = read_windows(&j, &model_type, d.window, num_layers)?;
        let cfg = Config {
            vocab_size: j.count_or("vocab_size", d.vocab)?,
            hidden_size,
            intermediate_size: j.count_or("intermediate_size", d.intermediate)?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: j.number("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope,
            qkv_bias,
            o_bias,
            mlp_bias: model_type == "llama" && j.flag("mlp_bias")?,
            qk_norm,
            tie_embeddings: match j.raw("tie_word_embeddings").flatten() {
                None => is_gemma,
                Some(_) => j.flag("tie_word_embeddings")?,
            },
            sliding_window,
            gemma,
            model_type,
        };
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// The consistency the forward pass relies on (sizes, head grouping, even head_dim, eps,
    /// base, windows); `origin` names the file in the error.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |key: &str, value: &dyn ToString, reason| {
            bad(origin, key.into(), value.to_string(), reason)
        };
        for (key, n) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ] {
            if n == 0 {
                return Err(bad(key, &0, "must be at least 1"));
            }
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(bad(
                "num_key_value_heads",
                &format!("{} for {} heads", self.num_kv_heads, self.num_heads),
                "each KV head must serve the same number of query heads",
            ));
        }
        if self.head_dim % 2 == 1 {
            return Err(bad(
                "head_dim",
                &self.head_dim,
                "rotate-half RoPE needs an even head_dim",
            ));
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return Err(bad(
                "rms_norm_eps",
                &self.rms_norm_eps,
                "must be a positive number",
            ));
        }
        if !(self.rope_theta > 1.0 && self.rope_theta.is_finite()) {
            return Err(bad(
                "rope_theta",
                &self.rope_theta,
                "must be a number above 1",
            ));
        }
        if let Some(g) = &self.gemma {
            if !(g.local_rope_theta > 1.0 && g.local_rope_theta.is_finite()) {
                return Err(bad(
                    "rope_local_base_freq",
                    &g.local_rope_theta,
                    "must be a number above 1",
                ));
            }
        }
        if self.sliding_window.len() != self.num_layers {
            return Err(bad(
                "sliding_window",
                &format!(
                    "{} entries for {} layers",
                    self.sliding_window.len(),
                    self.num_layers
                ),
                "needs one entry per layer",
            ));
        }
        if self.sliding_window.contains(&Some(0)) {
            return Err(bad(
                "sliding_window",
                &0,
                "a window must hold at least 1 position",
            ));
        }
        Ok(())
    }

    /// HF's rotary `inv_freq` (`[head_dim / 2]`, after scaling), step by step in f32 as
    /// transformers' `_compute_*_parameters` run them on a float32 tensor.
    pub fn inv_freq(&self) -> Vec<f32> {
        self.inv_freq_of(self.rope_theta, &self.rope)
    }

    /// The inverse frequencies of Gemma's sliding layers (plain RoPE at the local base); the
    /// same as [`Config::inv_freq`] for the other families.
    pub fn inv_freq_local(&self) -> Vec<f32> {
        match &self.gemma {
            Some(g) => self.inv_freq_of(g.local_rope_theta, &RopeKind::Plain),
            None => self.inv_freq(),
        }
    }

    fn inv_freq_of(&self, theta: f64, rope: &RopeKind) -> Vec<f32> {
        let d = self.head_dim as f32;
        let base = theta as f32;
        let plain = (0..self.head_dim / 2).map(|k| 1.0 / base.powf((2 * k) as f32 / d));
        match *rope {
            RopeKind::Plain => plain.collect(),
            RopeKind::Linear { factor } => plain.map(|f| f / factor as f32).collect(),
            RopeKind::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                );
                let old_len = original_max_position_embeddings as f32;
                // Wavelengths longer than old_len / low are scaled down fully, shorter than
                // old_len / high kept, the band between blended.
                let (long, short) = (old_len / low, old_len / high);
                plain
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen > long {
                            f / factor
                        } else if wavelen < short {
                            f
                        } else {
                            let smooth = (old_len / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

/// `rope_parameters` (transformers 5) wins over `rope_scaling` (transformers 4); the base is
/// `rope_parameters.rope_theta`, else the top-level `rope_theta`, else the class default.
/// Gemma 3 also gives its sliding layers' base (the third value): transformers 5 keys
/// `rope_parameters` by layer type (`full_attention`, `sliding_attention`), transformers 4 names
/// it `rope_local_base_freq` (default 10000). Other families return `rope_theta` there.
fn read_rope(j: &Json<'_>, default_theta: f64, gemma: bool) -> Result<(f64, RopeKind, f64)> {
    let params = match j.object("rope_parameters")? {
        Some(p) => Some(p),
        None => j.object("rope_scaling")?,
    };
    let top_theta = j.number("rope_theta")?.unwrap_or(default_theta);
    if gemma {
        if let Some(p) = params
            .as_ref()
            .filter(|p| p.obj.contains_key("full_attention"))
        {
            let full = p
                .object("full_attention")?
                .ok_or_else(|| p.bad("full_attention", "null", "must be an object"))?;
            let (theta, rope) = rope_object(Some(&full), top_theta)?;
            let local = match p.object("sliding_attention")? {
                Some(l) => {
                    let (t, kind) = rope_object(Some(&l), 10000.0)?;
                    if kind != RopeKind::Plain {
                        return Err(l.bad(
                            "rope_type",
                            format!("{kind:?}"),
                            "Gemma's sliding layers use default RoPE",
                        ));
                    }
                    t
                }
                None => 10000.0,
            };
            return Ok((theta, rope, local));
        }
        let (theta, rope) = rope_object(params.as_ref(), top_theta)?;
        let local = j.number("rope_local_base_freq")?.unwrap_or(10000.0);
        return Ok((theta, rope, local));
    }
    let (theta, rope) = rope_object(params.as_ref(), top_theta)?;
    Ok((theta, rope, theta))
}

/// One RoPE object (`rope_type` or legacy `type`, its factors, an optional nested base that
/// wins over `theta`).
fn rope_object(params: Option<&Json<'_>>, theta: f64) -> Result<(f64, RopeKind)> {
    let nested_theta = match &params {
        Some(p) => p.number("rope_theta")?,
        None => None,
    };
    let theta = nested_theta.unwrap_or(theta);
    let Some(p) = params else {
        return Ok((theta, RopeKind::Plain));
    };
    let kind = match p.text("rope_type")? {
        Some(k) => Some(k),
        None => p.text("type")?,
    };
    let required = |key: &str| -> Result<f64> {
        p.number(key)?
            .ok_or_else(|| p.bad(key, "missing", "this rope type needs it"))
    };
    let positive = |key: &str| -> Result<f64> {
        let v = required(key)?;
        if v > 0.0 && v.is_finite() {
            Ok(v)
        } else {
            Err(p.bad(key, v, "must be a positive number"))
        }
    };
    let rope = match kind.unwrap_or("default") {
        "default" => RopeKind::Plain,
        "linear" => RopeKind::Linear {
            factor: positive("factor")?,
        },
        "llama3" => {
            let (low, high) = (positive("low_freq_factor")?, positive("high_freq_factor")?);
            if high <= low {
                return Err(p.bad(
                    "high_freq_factor",
                    format!("{high} (low_freq_factor {low})"),
                    "must exceed low_freq_factor",
                ));
            }
            RopeKind::Llama3 {
                factor: positive("factor")?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: positive("original_max_position_embeddings")?,
            }
        }
        other => {
            return Err(p.bad(
                "rope_type",
                other,
                "the reference computes default, linear and llama3 RoPE",
            ))
        }
    };
    Ok((theta, rope))
}

/// Which layers slide, and by how much. Mistral: every layer, by `sliding_window` (null: none).
/// Qwen2/3: the window exists only with `use_sliding_window`, and then the layers from
/// `max_window_layers` (default 28) on use it. Llama: none, whatever else the file says. For
/// Mistral and Qwen an explicit `layer_types` list (transformers 5) decides per layer instead.
fn read_windows(
    j: &Json<'_>,
    model_type: &str,
    default_window: Option<usize>,
    layers: usize,
) -> Result<Vec<Option<usize>>> {
    let window = j.count("sliding_window")?.unwrap_or(default_window);
    let (window, first_sliding) = match model_type {
        "llama" => return Ok(vec![None; layers]),
        "mistral" => (window, 0),
        // Gemma 3 without layer_types: every `sliding_window_pattern`-th layer (6, the last of
        // each group) is global, the others slide (configuration_gemma3.py).
        "gemma3_text" if j.raw("layer_types").flatten().is_none() => {
            let pattern = match j.count("sliding_window_pattern")?.flatten() {
                Some(n) => n,
                None => j.count_or("_sliding_window_pattern", 6)?,
            };
            if pattern == 0 {
                return Err(j.bad("sliding_window_pattern", 0, "must be at least 1"));
            }
            return Ok((0..layers)
                .map(|i| if (i + 1) % pattern == 0 { None } else { window })
                .collect());
        }
        "gemma3_text" => (window, 0),
        _ if j.flag("use_sliding_window")? => (window, j.count_or("max_window_layers", 28)?),
        _ => (None, layers),
    };
    let Some(types) = j.raw("layer_types").flatten() else {
        return Ok((0..layers)
            .map(|i| if i >= first_sliding { window } else { None })
            .collect());
    };
    let types = types
        .as_array()
        .ok_or_else(|| j.bad("layer_types", abbreviated(types), "must be a list"))?;
    if types.len() != layers {
        return Err(j.bad(
            "layer_types",
            format!("{} entries for {layers} layers", types.len()),
            "needs one entry per layer",
        ));
    }
    types
        .iter()
        .map(|t| match t.as_str() {
            Some("full_attention") => Ok(None),
            Some("sliding_attention") => Ok(window),
            _ => Err(j.bad(
                "layer_types",
                t,
                "entries must be full_attention or sliding_attention",
            )),
        })
        .collect()
}

/// A JSON value cut to 60 characters for a message.
fn abbreviated(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}
