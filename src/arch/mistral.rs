//! Mistral: every layer attends through `sliding_window` (null: full attention); no biases.
//! Defaults from transformers' `MistralConfig`.

use serde::Deserialize;

use super::base::{nullable, Defaults, HfBase};
use super::{ArchError, DecoderConfig};

const DEFAULTS: Defaults = Defaults {
    vocab_size: 32000,
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: Some(8),
    head_dim: None,
    max_position_embeddings: 4096 * 32,
    rms_norm_eps: 1e-6,
    rope_theta: 10000.0,
    bos_token_id: Some(1),
    eos_token_id: Some(2),
};
const SLIDING_WINDOW: Option<usize> = Some(4096);

#[derive(Deserialize, Debug)]
pub(crate) struct MistralConfig {
    #[serde(flatten)]
    base: HfBase,
    #[serde(default, deserialize_with = "nullable")]
    sliding_window: Option<Option<usize>>,
}

impl MistralConfig {
    pub(crate) fn into_decoder(self, origin: &str) -> Result<DecoderConfig, ArchError> {
        let cfg = self.base.to_config("mistral", &DEFAULTS, origin)?;
        let window = self.sliding_window.unwrap_or(SLIDING_WINDOW);
        let sliding_window = match &self.base.layer_types {
            Some(types) => {
                self.base
                    .windows_from_layer_types(types, cfg.num_layers, window, origin)?
            }
            None => vec![window; cfg.num_layers],
        };
        Ok(DecoderConfig {
            sliding_window,
            ..cfg
        })
    }
}
