//! The config.json fields every supported architecture shares, read in both key styles
//! (transformers 4: `torch_dtype`, `rope_theta`, `rope_scaling`; transformers 5: `dtype`,
//! `rope_parameters`), and their mapping onto [`DecoderConfig`]. The per-architecture files supply
//! only their HF defaults and what differs.

use serde::{Deserialize, Deserializer};

use super::{ArchError, DecoderConfig, RopeScaling};

/// The most decoder layers a config.json may declare: far above any released decoder (Llama 3.1
/// 405B has 126); a count read from the file sizes per-layer lists, so it is bounded first.
pub const MAX_LAYERS: usize = 1024;

/// Rope types anec implements (the others change the maths and are refused).
pub const SUPPORTED_ROPE_TYPES: [&str; 3] = ["default", "linear", "llama3"];

/// The HF defaults of one architecture's configuration class (`LlamaConfig.__init__` etc.) for
/// the shared fields.
pub(crate) struct Defaults {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// `None`: equal to `num_attention_heads` (Llama, Mistral-style backward compatibility).
    pub num_key_value_heads: Option<usize>,
    /// `None`: `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

/// Deserialize a field whose explicit `null` differs from its absence:
/// absent → `None`, `null` → `Some(None)`, value → `Some(Some(v))`.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `eos_token_id` is an int, a list of ints, or null.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub(crate) enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

/// A `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5) object.
#[derive(Deserialize, Debug, Clone, Default)]
pub(crate) struct HfRope {
    pub rope_type: Option<String>,
    /// Legacy spelling of `rope_type`.
    #[serde(rename = "type")]
    pub legacy_type: Option<String>,
    /// transformers 5 keeps the base here.
    pub rope_theta: Option<f64>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<f64>,
}

/// The shared fields with HF names; every one optional so each architecture applies its own
/// defaults.
#[derive(Deserialize, Debug, Clone, Default)]
pub(crate) struct HfBase {
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    /// Absent: the architecture's default; null: `num_attention_heads` (as transformers).
    #[serde(default, deserialize_with = "nullable")]
    pub num_key_value_heads: Option<Option<usize>>,
    /// Absent: the architecture's default; null: `hidden_size / num_attention_heads`.
    #[serde(default, deserialize_with = "nullable")]
    pub head_dim: Option<Option<usize>>,
    /// RoPE on part of each head only (not used by the supported families; refused unless 1).
    pub partial_rotary_factor: Option<f64>,
    pub hidden_act: Option<String>,
    pub max_position_embeddings: Option<usize>,
    pub rms_norm_eps: Option<f64>,
    pub tie_word_embeddings: Option<bool>,
    /// transformers 4.
    pub torch_dtype: Option<String>,
    /// transformers 5.
    pub dtype: Option<String>,
    /// transformers 4.
    pub rope_theta: Option<f64>,
    /// transformers 4 (null allowed).
    pub rope_scaling: Option<HfRope>,
    /// transformers 5.
    pub rope_parameters: Option<HfRope>,
    /// transformers 5 (and late 4.x) per-layer attention kinds.
    pub layer_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub bos_token_id: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    pub eos_token_id: Option<Option<TokenIds>>,
}

impl HfBase {
    /// The shared part of the [`DecoderConfig`]; arch-specific variant fields start at their
    /// plain-Llama values (no biases, no qk-norm, no sliding window) for the arch file to override.
    pub(crate) fn to_config(
        &self,
        model_type: &str,
        d: &Defaults,
        origin: &str,
    ) -> Result<DecoderConfig, ArchError> {
        let invalid =
            |field: &'static str, value: String, reason: &'static str| ArchError::Invalid {
                origin: origin.to_string(),
                field,
                value,
                reason,
            };
        let hidden_act = self.hidden_act.as_deref().unwrap_or("silu");
        if hidden_act != "silu" {
            return Err(ArchError::Unsupported {
                origin: origin.to_string(),
                field: "hidden_act",
                value: hidden_act.to_string(),
                supported: "silu",
            });
        }
        let hidden_size = self.hidden_size.unwrap_or(d.hidden_size);
        let num_heads = self.num_attention_heads.unwrap_or(d.num_attention_heads);
        let num_kv_heads = match self.num_key_value_heads {
            Some(explicit) => explicit,
            None => d.num_key_value_heads,
        }
        .unwrap_or(num_heads);
        for (field, v) in [
            ("hidden_size", hidden_size),
            ("num_attention_heads", num_heads),
            ("num_key_value_heads", num_kv_heads),
        ] {
            if v == 0 {
                return Err(invalid(field, "0".into(), "must be positive"));
            }
        }
        if let Some(f) = self.partial_rotary_factor.filter(|&f| f != 1.0) {
            return Err(invalid(
                "partial_rotary_factor",
                f.to_string(),
                "partial rotary embeddings are not supported (only 1.0)",
            ));
        }
        let head_dim = match self.head_dim {
            Some(explicit) => explicit,
            None => d.head_dim,
        };
        let head_dim = match head_dim {
            Some(h) => h,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(invalid(
                        "hidden_size",
                        format!("{hidden_size} (num_attention_heads {num_heads})"),
                        "must be divisible by num_attention_heads when head_dim is not given",
                    ));
                }
                hidden_size / num_heads
            }
        };
        let rope = match &self.rope_parameters {
            Some(p) => p.clone(),
            None => self.rope_scaling.clone().unwrap_or_default(),
        };
        let rope_theta = rope.rope_theta.or(self.rope_theta).unwrap_or(d.rope_theta);
        let rope_scaling = RopeScaling::from_hf(&rope, origin)?;
        let num_layers = self.num_hidden_layers.unwrap_or(d.num_hidden_layers);
        // Per-layer lists are sized by the count before the weights can contradict it.
        if num_layers > MAX_LAYERS {
            return Err(invalid(
                "num_hidden_layers",
                num_layers.to_string(),
                "exceeds anec's limit of 1024 layers",
            ));
        }
        let eos_token_ids = match &self.eos_token_id {
            None => d.eos_token_id.into_iter().collect(),
            Some(None) => Vec::new(),
            Some(Some(TokenIds::One(t))) => vec![*t],
            Some(Some(TokenIds::Many(v))) => v.clone(),
        };
        Ok(DecoderConfig {
            model_type: model_type.to_string(),
            vocab_size: self.vocab_size.unwrap_or(d.vocab_size),
            hidden_size,
            intermediate_size: self.intermediate_size.unwrap_or(d.intermediate_size),
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: self.rms_norm_eps.unwrap_or(d.rms_norm_eps),
            rope_theta,
            rope_scaling,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
            tie_embeddings: self.tie_word_embeddings.unwrap_or(false),
            sliding_window: vec![None; num_layers],
            torch_dtype: self.dtype.clone().or_else(|| self.torch_dtype.clone()),
            bos_token_id: self.bos_token_id.unwrap_or(d.bos_token_id),
            eos_token_ids,
            max_position_embeddings: self
                .max_position_embeddings
                .unwrap_or(d.max_position_embeddings),
            gemma: None,
        })
    }

    /// Per-layer windows from `layer_types` (checked against the layer count and the known kinds).
    pub(crate) fn windows_from_layer_types(
        &self,
        types: &[String],
        num_layers: usize,
        window: Option<usize>,
        origin: &str,
    ) -> Result<Vec<Option<usize>>, ArchError> {
        if types.len() != num_layers {
            return Err(ArchError::Invalid {
                origin: origin.to_string(),
                field: "layer_types",
                value: format!("{} entries", types.len()),
                reason: "must have one entry per layer (num_hidden_layers)",
            });
        }
        types
            .iter()
            .map(|t| match t.as_str() {
                "full_attention" => Ok(None),
                "sliding_attention" => Ok(window),
                other => Err(ArchError::Unsupported {
                    origin: origin.to_string(),
                    field: "layer_types",
                    value: other.to_string(),
                    supported: "full_attention, sliding_attention",
                }),
            })
            .collect()
    }
}

impl RopeScaling {
    /// From a `rope_scaling` / `rope_parameters` object (`rope_type`, legacy `type`).
    pub(crate) fn from_hf(r: &HfRope, origin: &str) -> Result<RopeScaling, ArchError> {
        let kind = r
            .rope_type
            .as_deref()
            .or(r.legacy_type.as_deref())
            .unwrap_or("default");
        let need = |field: &'static str, v: Option<f64>| {
            v.ok_or_else(|| ArchError::Invalid {
                origin: origin.to_string(),
                field,
                value: "missing".into(),
                reason: "required by this rope type",
            })
        };
        match kind {
            "default" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear {
                factor: need("rope_scaling.factor", r.factor)?,
            }),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: need("rope_scaling.factor", r.factor)?,
                low_freq_factor: need("rope_scaling.low_freq_factor", r.low_freq_factor)?,
                high_freq_factor: need("rope_scaling.high_freq_factor", r.high_freq_factor)?,
                original_max_position_embeddings: need(
                    "rope_scaling.original_max_position_embeddings",
                    r.original_max_position_embeddings,
                )?,
            }),
            other => Err(ArchError::Unsupported {
                origin: origin.to_string(),
                field: "rope_type",
                value: other.to_string(),
                supported: "default, linear, llama3",
            }),
        }
    }
}

/// Qwen2/Qwen3's sliding-window keys, with transformers' defaults (the same for both).
#[derive(Deserialize, Debug)]
pub(crate) struct QwenWindow {
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default, deserialize_with = "nullable")]
    sliding_window: Option<Option<usize>>,
    max_window_layers: Option<usize>,
}

impl QwenWindow {
    const SLIDING_WINDOW: Option<usize> = Some(4096);
    const MAX_WINDOW_LAYERS: usize = 28;

    /// The rule of configuration_qwen2.py: the window applies only when `use_sliding_window`;
    /// `layer_types`, when absent, makes the layers from `max_window_layers` on slide; a layer
    /// slides iff its type is `sliding_attention`.
    pub(crate) fn per_layer(
        &self,
        base: &HfBase,
        num_layers: usize,
        origin: &str,
    ) -> Result<Vec<Option<usize>>, ArchError> {
        let window = if self.use_sliding_window {
            self.sliding_window.unwrap_or(Self::SLIDING_WINDOW)
        } else {
            None
        };
        let max_window_layers = self.max_window_layers.unwrap_or(Self::MAX_WINDOW_LAYERS);
        let types: Vec<String> = match &base.layer_types {
            Some(t) => t.clone(),
            None => (0..num_layers)
                .map(|i| {
                    if window.is_some() && i >= max_window_layers {
                        "sliding_attention".to_string()
                    } else {
                        "full_attention".to_string()
                    }
                })
                .collect(),
        };
        base.windows_from_layer_types(&types, num_layers, window, origin)
    }
}
