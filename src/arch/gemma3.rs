//! Gemma 3 text (`gemma3_text`): (1 + w) RMSNorms, a norm on the attention and on the MLP
//! output, GeGLU with tanh GELU, q/k norms, the embeddings scaled by √hidden, attention scaled by
//! `query_pre_attn_scalar`^−½, sliding layers (`layer_types`, else every
//! `sliding_window_pattern`-th layer global) on plain RoPE at `rope_local_base_freq`, global
//! layers on `rope_theta` with the scaling; tied. Defaults from transformers' `Gemma3TextConfig`.

use serde::Deserialize;

use super::base::{nullable, Defaults, HfBase, HfRope};
use super::{ArchError, DecoderConfig, GemmaConfig, RopeScaling};

const DEFAULTS: Defaults = Defaults {
    vocab_size: 262208,
    hidden_size: 2304,
    intermediate_size: 9216,
    num_hidden_layers: 26,
    num_attention_heads: 8,
    num_key_value_heads: Some(4),
    head_dim: Some(256),
    max_position_embeddings: 131072,
    rms_norm_eps: 1e-6,
    rope_theta: 1_000_000.0,
    bos_token_id: Some(2),
    eos_token_id: Some(1),
};
const SLIDING_WINDOW: usize = 4096;
const SLIDING_WINDOW_PATTERN: usize = 6;
const QUERY_PRE_ATTN_SCALAR: f64 = 256.0;
const LOCAL_BASE: f64 = 10000.0;

#[derive(Deserialize, Debug)]
pub(crate) struct Gemma3Config {
    #[serde(flatten)]
    base: HfBase,
    #[serde(default)]
    attention_bias: bool,
    query_pre_attn_scalar: Option<f64>,
    rope_local_base_freq: Option<f64>,
    /// transformers 5: one RoPE object per layer type (or a single one).
    rope_parameters: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "nullable")]
    sliding_window: Option<Option<usize>>,
    sliding_window_pattern: Option<usize>,
    #[serde(rename = "_sliding_window_pattern")]
    sliding_window_pattern_private: Option<usize>,
    hidden_activation: Option<String>,
    final_logit_softcapping: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    use_bidirectional_attention: bool,
}

impl Gemma3Config {
    pub(crate) fn into_decoder(self, origin: &str) -> Result<DecoderConfig, ArchError> {
        let err_origin = origin.to_string();
        let invalid =
            |field: &'static str, value: String, reason: &'static str| ArchError::Invalid {
                origin: err_origin.clone(),
                field,
                value,
                reason,
            };
        let act = self
            .hidden_activation
            .as_deref()
            .unwrap_or("gelu_pytorch_tanh");
        if act != "gelu_pytorch_tanh" {
            return Err(ArchError::Unsupported {
                origin: origin.to_string(),
                field: "hidden_activation",
                value: act.to_string(),
                supported: "gelu_pytorch_tanh",
            });
        }
        for (field, v) in [
            ("final_logit_softcapping", self.final_logit_softcapping),
            ("attn_logit_softcapping", self.attn_logit_softcapping),
        ] {
            if let Some(v) = v {
                return Err(invalid(
                    field,
                    v.to_string(),
                    "soft-capping is not supported (must be null)",
                ));
            }
        }
        if self.use_bidirectional_attention {
            return Err(invalid(
                "use_bidirectional_attention",
                "true".into(),
                "only causal attention is supported",
            ));
        }
        let cfg = self.base.to_config("gemma3_text", &DEFAULTS, origin)?;
        // Global RoPE (theta + scaling) and the sliding layers' base.
        let top_theta = self.base.rope_theta.unwrap_or(DEFAULTS.rope_theta);
        let (rope_theta, rope_scaling, local) = match &self.rope_parameters {
            Some(v) if v.get("full_attention").is_some() => {
                let read = |key: &str| -> Result<HfRope, ArchError> {
                    match v.get(key) {
                        None | Some(serde_json::Value::Null) => Ok(HfRope::default()),
                        Some(o) => {
                            serde_json::from_value(o.clone()).map_err(|source| ArchError::Json {
                                origin: origin.to_string(),
                                source,
                            })
                        }
                    }
                };
                let full = read("full_attention")?;
                let sliding = read("sliding_attention")?;
                if RopeScaling::from_hf(&sliding, origin)? != RopeScaling::None {
                    return Err(ArchError::Unsupported {
                        origin: origin.to_string(),
                        field: "rope_parameters.sliding_attention.rope_type",
                        value: sliding
                            .rope_type
                            .clone()
                            .or(sliding.legacy_type.clone())
                            .unwrap_or_default(),
                        supported: "default",
                    });
                }
                (
                    full.rope_theta.unwrap_or(top_theta),
                    RopeScaling::from_hf(&full, origin)?,
                    sliding.rope_theta.unwrap_or(LOCAL_BASE),
                )
            }
            Some(v) => {
                let one: HfRope =
                    serde_json::from_value(v.clone()).map_err(|source| ArchError::Json {
                        origin: origin.to_string(),
                        source,
                    })?;
                (
                    one.rope_theta.unwrap_or(top_theta),
                    RopeScaling::from_hf(&one, origin)?,
                    self.rope_local_base_freq.unwrap_or(LOCAL_BASE),
                )
            }
            None => (
                cfg.rope_theta,
                cfg.rope_scaling.clone(),
                self.rope_local_base_freq.unwrap_or(LOCAL_BASE),
            ),
        };
        if !(local.is_finite() && local > 1.0) {
            return Err(invalid(
                "rope_local_base_freq",
                local.to_string(),
                "must be a number > 1",
            ));
        }
        let scalar = self.query_pre_attn_scalar.unwrap_or(QUERY_PRE_ATTN_SCALAR);
        if !(scalar.is_finite() && scalar > 0.0) {
            return Err(invalid(
                "query_pre_attn_scalar",
                scalar.to_string(),
                "must be positive",
            ));
        }
        let window = self.sliding_window.unwrap_or(Some(SLIDING_WINDOW));
        let sliding_window = match &self.base.layer_types {
            Some(types) => {
                self.base
                    .windows_from_layer_types(types, cfg.num_layers, window, origin)?
            }
            None => {
                let pattern = self
                    .sliding_window_pattern
                    .or(self.sliding_window_pattern_private)
                    .unwrap_or(SLIDING_WINDOW_PATTERN);
                if pattern == 0 {
                    return Err(invalid(
                        "sliding_window_pattern",
                        "0".into(),
                        "must be positive",
                    ));
                }
                (0..cfg.num_layers)
                    .map(|i| if (i + 1) % pattern == 0 { None } else { window })
                    .collect()
            }
        };
        Ok(DecoderConfig {
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            qk_norm: true,
            tie_embeddings: self.base.tie_word_embeddings.unwrap_or(true),
            rope_theta,
            rope_scaling,
            sliding_window,
            gemma: Some(GemmaConfig {
                query_pre_attn_scalar: scalar,
                local_rope_theta: local,
            }),
            ..cfg
        })
    }
}
