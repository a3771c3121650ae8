//! config.json (transformers 4 and 5 key styles) → one normalized [`DecoderConfig`]; one small file
//! per architecture holding only what differs; the rope scaling maths.

use std::path::Path;

mod base;
mod gemma3;
mod llama;
mod mistral;
pub mod names;
mod qwen2;
mod qwen3;
mod rope;

pub use base::SUPPORTED_ROPE_TYPES;
pub use rope::{rope_inv_freq, rope_inv_freq_local};

/// The `model_type`s anec converts (checkpoints of these families published under other names
/// carry one of these).
pub const SUPPORTED_MODEL_TYPES: [&str; 5] = ["llama", "qwen2", "qwen3", "mistral", "gemma3_text"];

/// Why a config.json was refused. `origin` is the file (or `<string>`), every variant names the
/// field and the offending value.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{origin} is not a valid model config: {source}")]
    Json {
        origin: String,
        source: serde_json::Error,
    },
    #[error("{origin} has no \"model_type\" (supported: {})", SUPPORTED_MODEL_TYPES.join(", "))]
    NoModelType { origin: String },
    #[error("{origin}: model_type \"{value}\" is not supported (supported: {})", SUPPORTED_MODEL_TYPES.join(", "))]
    UnsupportedModelType { origin: String, value: String },
    #[error("{origin}: {field} \"{value}\" is not supported (supported: {supported})")]
    Unsupported {
        origin: String,
        field: &'static str,
        value: String,
        supported: &'static str,
    },
    #[error("{origin}: {field} = {value}: {reason}")]
    Invalid {
        origin: String,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// Everything the graph builders and the reference need to know about a decoder, decided once.
/// Graph code branches on these fields and never probes the checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    /// `model_type` from config.json ("llama", "qwen2", "qwen3", "mistral", "gemma3_text").
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
    pub rope_scaling: RopeScaling,
    /// q/k/v projections carry a bias (Qwen2, Llama `attention_bias`); o_proj too when `o_bias`.
    pub qkv_bias: bool,
    pub o_bias: bool,
    /// gate/up/down carry a bias (Llama `mlp_bias`).
    pub mlp_bias: bool,
    /// Per-head RMSNorm on q and k before RoPE (Qwen3).
    pub qk_norm: bool,
    /// LM head shares the embedding matrix.
    pub tie_embeddings: bool,
    /// Per-layer sliding window: `Some(w)` for a layer that attends to the last `w` positions only.
    pub sliding_window: Vec<Option<usize>>,
    /// The dtype the checkpoint declares (`torch_dtype` / `dtype`), informative.
    pub torch_dtype: Option<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// `max_position_embeddings` (informative: the context the model was trained for).
    pub max_position_embeddings: usize,
    /// Gemma 3's differences from the Llama decoder; `None` for the other families.
    pub gemma: Option<GemmaConfig>,
}

/// What Gemma 3 changes beyond the shared fields: (1 + w) norms with four per layer, GeGLU
/// (tanh GELU), embeddings × √hidden, this attention scale, and plain RoPE at `local_rope_theta`
/// on the sliding layers (`rope_theta` / `rope_scaling` serve the global ones).
#[derive(Clone, Debug, PartialEq)]
pub struct GemmaConfig {
    /// Attention scores are scaled by `query_pre_attn_scalar`^−½.
    pub query_pre_attn_scalar: f64,
    /// `rope_local_base_freq`.
    pub local_rope_theta: f64,
}

/// RoPE frequency scaling.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Llama 3.x: `factor`, `low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// Linear position interpolation.
    Linear {
        factor: f64,
    },
}

impl DecoderConfig {
    /// Read and normalize a config.json (either key style).
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<DecoderConfig, ArchError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ArchError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Normalize config.json text (errors name `<string>` as the origin).
    pub fn from_json_str(json: &str) -> Result<DecoderConfig, ArchError> {
        Self::parse(json, "<string>")
    }

    fn parse(json: &str, origin: &str) -> Result<DecoderConfig, ArchError> {
        let json_err = |source| ArchError::Json {
            origin: origin.to_string(),
            source,
        };
        let value: serde_json::Value = serde_json::from_str(json).map_err(json_err)?;
        let model_type = match value.get("model_type") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(ArchError::UnsupportedModelType {
                    origin: origin.to_string(),
                    value: other.to_string(),
                })
            }
            None => {
                return Err(ArchError::NoModelType {
                    origin: origin.to_string(),
                })
            }
        };
        let cfg = match model_type.as_str() {
            "llama" => serde_json::from_value::<llama::LlamaConfig>(value)
                .map_err(json_err)?
                .into_decoder(origin)?,
            "qwen2" => serde_json::from_value::<qwen2::Qwen2Config>(value)
                .map_err(json_err)?
                .into_decoder(origin)?,
            "qwen3" => serde_json::from_value::<qwen3::Qwen3Config>(value)
                .map_err(json_err)?
                .into_decoder(origin)?,
            "mistral" => serde_json::from_value::<mistral::MistralConfig>(value)
                .map_err(json_err)?
                .into_decoder(origin)?,
            "gemma3_text" => serde_json::from_value::<gemma3::Gemma3Config>(value)
                .map_err(json_err)?
                .into_decoder(origin)?,
            _ => {
                return Err(ArchError::UnsupportedModelType {
                    origin: origin.to_string(),
                    value: model_type,
                })
            }
        };
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Consistency checks every architecture shares: positive sizes, heads divisible into KV
    /// groups, even head_dim (RoPE rotates pairs), sane eps/theta/scaling, positive windows.
    pub fn validate(&self, origin: &str) -> Result<(), ArchError> {
        let invalid = |field: &'static str, value: String, reason: &'static str| {
            Err(ArchError::Invalid {
                origin: origin.to_string(),
                field,
                value,
                reason,
            })
        };
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ] {
            if v == 0 {
                return invalid(field, "0".into(), "must be positive");
            }
        }
        // Products the graph and the weight checks form must fit (a lying config must not overflow).
        for (field, a, b) in [
            ("num_attention_heads", self.num_heads, self.head_dim),
            ("vocab_size", self.vocab_size, self.hidden_size),
            (
                "intermediate_size",
                self.intermediate_size,
                self.hidden_size,
            ),
        ] {
            if a.checked_mul(b).is_none_or(|p| p > (1usize << 40)) {
                return invalid(field, a.to_string(), "too large (tensor size overflows)");
            }
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return invalid(
                "num_key_value_heads",
                format!(
                    "{} (num_attention_heads {})",
                    self.num_kv_heads, self.num_heads
                ),
                "num_attention_heads must be a multiple of num_key_value_heads",
            );
        }
        if self.head_dim % 2 != 0 {
            return invalid(
                "head_dim",
                self.head_dim.to_string(),
                "must be even (RoPE rotates pairs)",
            );
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return invalid(
                "rms_norm_eps",
                self.rms_norm_eps.to_string(),
                "must be a positive number",
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return invalid(
                "rope_theta",
                self.rope_theta.to_string(),
                "must be a number > 1",
            );
        }
        match self.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => {
                if !(factor.is_finite() && factor > 0.0) {
                    return invalid(
                        "rope_scaling.factor",
                        factor.to_string(),
                        "must be positive",
                    );
                }
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                if !(factor.is_finite() && factor > 0.0) {
                    return invalid(
                        "rope_scaling.factor",
                        factor.to_string(),
                        "must be positive",
                    );
                }
                if !(low_freq_factor > 0.0 && high_freq_factor > low_freq_factor) {
                    return invalid(
                        "rope_scaling.high_freq_factor",
                        format!("{high_freq_factor} (low_freq_factor {low_freq_factor})"),
                        "llama3 scaling needs 0 < low_freq_factor < high_freq_factor",
                    );
                }
                if original_max_position_embeddings.is_nan()
                    || original_max_position_embeddings <= 0.0
                {
                    return invalid(
                        "rope_scaling.original_max_position_embeddings",
                        original_max_position_embeddings.to_string(),
                        "must be positive",
                    );
                }
            }
        }
        if self.sliding_window.len() != self.num_layers {
            return invalid(
                "sliding_window",
                format!("{} layers", self.sliding_window.len()),
                "must have one entry per layer",
            );
        }
        if self.sliding_window.contains(&Some(0)) {
            return invalid("sliding_window", "0".into(), "must be positive or null");
        }
        Ok(())
    }

    /// Width of the q projection output: `num_heads * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the k and v projection outputs: `num_kv_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str, file: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
            .join(file)
    }

    fn both(name: &str) -> DecoderConfig {
        let a = DecoderConfig::from_config_file(fixture(name, "config.json")).unwrap();
        let b =
            DecoderConfig::from_config_file(fixture(name, "config.transformers5.json")).unwrap();
        assert_eq!(a, b, "{name}: the two key styles disagree");
        a
    }

    #[test]
    fn tiny_llama_both_key_styles() {
        let c = both("tiny-llama");
        assert_eq!(c.model_type, "llama");
        assert_eq!(
            (
                c.vocab_size,
                c.hidden_size,
                c.intermediate_size,
                c.num_layers
            ),
            (512, 64, 172, 4)
        );
        assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 2, 16));
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(
            c.rope_scaling,
            RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0
            }
        );
        assert!(!c.qkv_bias && !c.o_bias && !c.mlp_bias && !c.qk_norm && !c.tie_embeddings);
        assert_eq!(c.sliding_window, vec![None; 4]);
        assert_eq!(c.torch_dtype.as_deref(), Some("float32"));
        assert_eq!(
            (c.bos_token_id, c.eos_token_ids.clone()),
            (Some(507), vec![508])
        );
        assert_eq!(c.rms_norm_eps, 1e-5);
        assert_eq!(c.max_position_embeddings, 131072);
    }

    #[test]
    fn tiny_qwen2_both_key_styles() {
        let c = both("tiny-qwen2");
        assert_eq!(c.model_type, "qwen2");
        assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 2, 16));
        assert!(c.qkv_bias && !c.o_bias && !c.mlp_bias && !c.qk_norm && c.tie_embeddings);
        assert_eq!(c.rope_scaling, RopeScaling::None);
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(c.sliding_window, vec![None; 3]);
        assert_eq!((c.bos_token_id, c.eos_token_ids.clone()), (None, vec![499]));
        assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
    }

    #[test]
    fn tiny_qwen3_both_key_styles() {
        let c = both("tiny-qwen3");
        assert_eq!(c.model_type, "qwen3");
        assert_eq!(
            (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim),
            (64, 4, 2, 32)
        );
        assert!(c.qk_norm && c.tie_embeddings && !c.qkv_bias && !c.o_bias);
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(c.intermediate_size, 192);
    }

    #[test]
    fn tiny_gemma3_both_key_styles() {
        let c = both("tiny-gemma3");
        assert_eq!(c.model_type, "gemma3_text");
        assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 2, 16));
        assert!(c.qk_norm && c.tie_embeddings && !c.qkv_bias);
        let local = Some(16);
        assert_eq!(
            c.sliding_window,
            vec![local, local, local, local, local, None, local]
        );
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 8.0 });
        assert_eq!(
            c.gemma,
            Some(GemmaConfig {
                query_pre_attn_scalar: 24.0,
                local_rope_theta: 10000.0
            })
        );
        assert_eq!(
            (c.bos_token_id, c.eos_token_ids.clone()),
            (Some(509), vec![508])
        );
    }

    #[test]
    fn tiny_mistral_both_key_styles() {
        let c = both("tiny-mistral");
        assert_eq!(c.model_type, "mistral");
        assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 1, 16));
        assert_eq!(c.sliding_window, vec![Some(16); 3]);
        assert!(!c.qkv_bias && !c.tie_embeddings && !c.qk_norm);
        assert_eq!(c.torch_dtype.as_deref(), Some("float16"));
        assert_eq!(
            (c.bos_token_id, c.eos_token_ids.clone()),
            (Some(1), vec![2])
        );
    }
}
