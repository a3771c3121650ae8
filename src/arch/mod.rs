//! config.json (transformers 4 and 5 key styles) → one normalized [`DecoderConfig`]; one small file
//! per architecture holding only what differs; the rope scaling maths.

/// Everything the graph builders and the reference need to know about a decoder, decided once.
/// Graph code branches on these fields and never probes the checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    /// `model_type` from config.json ("llama", "qwen2", "qwen3", "mistral").
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
