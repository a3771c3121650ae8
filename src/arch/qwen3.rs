//! Qwen3: per-head RMSNorm on q and k (`q_norm`, `k_norm`), explicit `head_dim` (default 128),
//! `attention_bias` on q/k/v/o, the same sliding-window rule as Qwen2. Defaults from
//! transformers' `Qwen3Config`.

use serde::Deserialize;

use super::base::{Defaults, HfBase, QwenWindow};
use super::{ArchError, DecoderConfig};

const DEFAULTS: Defaults = Defaults {
    vocab_size: 151936,
    hidden_size: 4096,
    intermediate_size: 22016,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: Some(32),
    head_dim: Some(128),
    max_position_embeddings: 32768,
    rms_norm_eps: 1e-6,
    rope_theta: 10000.0,
    bos_token_id: None,
    eos_token_id: None,
};

#[derive(Deserialize, Debug)]
pub(crate) struct Qwen3Config {
    #[serde(flatten)]
    base: HfBase,
    #[serde(default)]
    attention_bias: bool,
    #[serde(flatten)]
    window: QwenWindow,
}

impl Qwen3Config {
    pub(crate) fn into_decoder(self, origin: &str) -> Result<DecoderConfig, ArchError> {
        let cfg = self.base.to_config("qwen3", &DEFAULTS, origin)?;
        let sliding_window = self.window.per_layer(&self.base, cfg.num_layers, origin)?;
        Ok(DecoderConfig {
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            qk_norm: true,
            sliding_window,
            ..cfg
        })
    }
}
