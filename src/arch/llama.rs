//! Llama 1/2/3.x (and checkpoints published under other names with `model_type: llama`: SmolLM,
//! TinyLlama, DeepSeek-R1-Distill-Llama): `attention_bias` (q/k/v/o), `mlp_bias`, optional
//! `head_dim`; no sliding window. Defaults from transformers' `LlamaConfig`.

use serde::Deserialize;

use super::base::{Defaults, HfBase};
use super::{ArchError, DecoderConfig};

const DEFAULTS: Defaults = Defaults {
    vocab_size: 32000,
    hidden_size: 4096,
    intermediate_size: 11008,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: None,
    head_dim: None,
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-6,
    rope_theta: 10000.0,
    bos_token_id: Some(1),
    eos_token_id: Some(2),
};

#[derive(Deserialize, Debug)]
pub(crate) struct LlamaConfig {
    #[serde(flatten)]
    base: HfBase,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
}

impl LlamaConfig {
    pub(crate) fn into_decoder(self, origin: &str) -> Result<DecoderConfig, ArchError> {
        Ok(DecoderConfig {
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            ..self.base.to_config("llama", &DEFAULTS, origin)?
        })
    }
}
