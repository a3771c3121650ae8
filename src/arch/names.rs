//! The HuggingFace tensor names of a decoder checkpoint, built from scopes
//! (`layer(3).pp("self_attn").pp("q_proj").weight()` → `model.layers.3.self_attn.q_proj.weight`),
//! and the short allow-list of checkpoint extras that carry nothing the model needs.

use super::DecoderConfig;

/// A dotted name prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope(String);

impl Scope {
    /// A child scope: `self.name`.
    pub fn pp(&self, name: &str) -> Scope {
        if self.0.is_empty() {
            Scope(name.to_string())
        } else {
            Scope(format!("{}.{name}", self.0))
        }
    }
    /// `<scope>.weight`
    pub fn weight(&self) -> String {
        format!("{}.weight", self.0)
    }
    /// `<scope>.bias`
    pub fn bias(&self) -> String {
        format!("{}.bias", self.0)
    }
    /// The scope's own dotted path.
    pub fn path(&self) -> &str {
        &self.0
    }
}

/// The root scope (empty name).
pub fn root() -> Scope {
    Scope(String::new())
}
/// `model`
pub fn model() -> Scope {
    root().pp("model")
}
/// `model.layers.{i}`
pub fn layer(i: usize) -> Scope {
    model().pp("layers").pp(&i.to_string())
}
/// `model.layers.{i}.self_attn`
pub fn self_attn(i: usize) -> Scope {
    layer(i).pp("self_attn")
}
/// `model.layers.{i}.mlp`
pub fn mlp(i: usize) -> Scope {
    layer(i).pp("mlp")
}
/// `model.layers.{i}.self_attn.q_proj`
pub fn q_proj(i: usize) -> Scope {
    self_attn(i).pp("q_proj")
}
/// `model.layers.{i}.self_attn.k_proj`
pub fn k_proj(i: usize) -> Scope {
    self_attn(i).pp("k_proj")
}
/// `model.layers.{i}.self_attn.v_proj`
pub fn v_proj(i: usize) -> Scope {
    self_attn(i).pp("v_proj")
}
/// `model.layers.{i}.self_attn.o_proj`
pub fn o_proj(i: usize) -> Scope {
    self_attn(i).pp("o_proj")
}
/// `model.layers.{i}.self_attn.q_norm` (Qwen3)
pub fn q_norm(i: usize) -> Scope {
    self_attn(i).pp("q_norm")
}
/// `model.layers.{i}.self_attn.k_norm` (Qwen3)
pub fn k_norm(i: usize) -> Scope {
    self_attn(i).pp("k_norm")
}
/// `model.layers.{i}.mlp.gate_proj`
pub fn gate_proj(i: usize) -> Scope {
    mlp(i).pp("gate_proj")
}
/// `model.layers.{i}.mlp.up_proj`
pub fn up_proj(i: usize) -> Scope {
    mlp(i).pp("up_proj")
}
/// `model.layers.{i}.mlp.down_proj`
pub fn down_proj(i: usize) -> Scope {
    mlp(i).pp("down_proj")
}
/// `model.layers.{i}.input_layernorm`
pub fn input_layernorm(i: usize) -> Scope {
    layer(i).pp("input_layernorm")
}
/// `model.layers.{i}.post_attention_layernorm`
pub fn post_attention_layernorm(i: usize) -> Scope {
    layer(i).pp("post_attention_layernorm")
}
/// `model.layers.{i}.pre_feedforward_layernorm` (Gemma)
pub fn pre_feedforward_layernorm(i: usize) -> Scope {
    layer(i).pp("pre_feedforward_layernorm")
}
/// `model.layers.{i}.post_feedforward_layernorm` (Gemma)
pub fn post_feedforward_layernorm(i: usize) -> Scope {
    layer(i).pp("post_feedforward_layernorm")
}
/// `model.embed_tokens.weight`
pub fn embed_tokens() -> String {
    model().pp("embed_tokens").weight()
}
/// `model.norm.weight`
pub fn final_norm() -> String {
    model().pp("norm").weight()
}
/// `lm_head.weight`
pub fn lm_head() -> String {
    root().pp("lm_head").weight()
}

/// Checkpoint tensors that are harmless to leave unused (matched as a whole name or a dotted
/// suffix by `WeightStore::ensure_all_used`): the precomputed RoPE table some exports keep.
pub const ALLOWED_EXTRAS: &[&str] = &["rotary_emb.inv_freq"];

/// [`ALLOWED_EXTRAS`] plus, for tied embeddings, `lm_head.weight` (some tied checkpoints store
/// the copy; transformers ignores it and ties to the embedding).
pub fn allowed_extras(cfg: &DecoderConfig) -> Vec<&'static str> {
    let mut v = ALLOWED_EXTRAS.to_vec();
    if cfg.tie_embeddings {
        v.push("lm_head.weight");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_names_are_hf_names() {
        assert_eq!(
            layer(3).pp("self_attn").pp("q_proj").weight(),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(k_norm(0).weight(), "model.layers.0.self_attn.k_norm.weight");
        assert_eq!(down_proj(1).bias(), "model.layers.1.mlp.down_proj.bias");
        assert_eq!(embed_tokens(), "model.embed_tokens.weight");
        assert_eq!(final_norm(), "model.norm.weight");
        assert_eq!(lm_head(), "lm_head.weight");
        assert_eq!(
            post_attention_layernorm(2).weight(),
            "model.layers.2.post_attention_layernorm.weight"
        );
    }
}
