//! Qwen2 / Qwen2.5 (and DeepSeek-R1-Distill-Qwen): q/k/v carry a bias, o_proj does not;
//! `use_sliding_window` + `max_window_layers` decide which layers slide. Defaults from
//! transformers' `Qwen2Config`.

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
    head_dim: None,
    max_position_embeddings: 32768,
    rms_norm_eps: 1e-6,
    rope_theta: 10000.0,
    bos_token_id: None,
    eos_token_id: None,
};

#[derive(Deserialize, Debug)]
pub(crate) struct Qwen2Config {
    #[serde(flatten)]
    base: HfBase,
    #[serde(flatten)]
    window: QwenWindow,
}

impl Qwen2Config {
    pub(crate) fn into_decoder(self, origin: &str) -> Result<DecoderConfig, ArchError> {
        let cfg = self.base.to_config("qwen2", &DEFAULTS, origin)?;
        let sliding_window = self.window.per_layer(&self.base, cfg.num_layers, origin)?;
        Ok(DecoderConfig {
            qkv_bias: true,
            o_bias: false,
            sliding_window,
            ..cfg
        })
    }
}
