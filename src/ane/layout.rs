//! How a model is cut into parts: balanced layer ranges per chunk, the LM head's vocabulary
//! split, and the file names ANEMLL's runners expect (ANE-CONTRACT.md "Files in the output folder").

use std::ops::Range;

/// The most channels the ANE takes on either side of a conv (reported limit; ANEMLL splits
/// its LM head and, with `MLP_UP_SPLIT`/`MLP_DOWN_SPLIT`, wide FFNs below it).
pub const MAX_CONV_CHANNELS: usize = 16384;

/// The widest LM head output part.
pub const MAX_LM_HEAD_PART: usize = MAX_CONV_CHANNELS;

/// The KV-cache state every chunk declares.
pub const STATE_NAME: &str = "model_model_kv_cache_0";

/// Gemma 3's two states (ANE-CONTRACT.md, "Gemma 3 as ANEMLL 0.3.5 lays it out"): the sliding
/// layers' cache `[2·L_local, KV, W, D]` and the global layers' `[2·L_global, KV, C, D]`.
pub const LOCAL_STATE_NAME: &str = "model_model_kv_cache_local";
pub const GLOBAL_STATE_NAME: &str = "model_model_kv_cache_global";

/// Layer ranges of `chunks` chunks over `layers` layers: balanced, the first `layers % chunks`
/// chunks get one more layer. `None` when `chunks` is 0 or larger than `layers`.
pub fn layer_ranges(layers: usize, chunks: usize) -> Option<Vec<Range<usize>>> {
    if chunks == 0 || chunks > layers {
        return None;
    }
    let base = layers / chunks;
    let extra = layers % chunks;
    let mut start = 0;
    Some(
        (0..chunks)
            .map(|k| {
                let len = base + usize::from(k < extra);
                let r = start..start + len;
                start += len;
                r
            })
            .collect(),
    )
}

/// `channels` cut into the fewest parts of at most [`MAX_CONV_CHANNELS`], sizes as equal as
/// possible (the first `channels % n` parts one larger). Empty for no channels.
pub fn channel_split(channels: usize) -> Vec<usize> {
    if channels == 0 {
        return Vec::new();
    }
    let n = channels.div_ceil(MAX_CONV_CHANNELS);
    let base = channels / n;
    let extra = channels % n;
    (0..n).map(|i| base + usize::from(i < extra)).collect()
}

/// The LM head's vocabulary parts ([`channel_split`] of the vocabulary).
pub fn lm_head_split(vocab: usize) -> Vec<usize> {
    channel_split(vocab)
}

/// File names (without directory) of every part, derived from the prefix and LUT bit widths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartNames {
    pub embeddings: String,
    pub lm_head: String,
    /// One per chunk, 1-based `chunk_NNofMM`.
    pub chunks: Vec<String>,
}

fn with_prefix(prefix: &str, stem: String) -> String {
    if prefix.is_empty() {
        stem
    } else {
        format!("{prefix}_{stem}")
    }
}

fn lut_suffix(bits: Option<u32>) -> String {
    bits.map(|b| format!("_lut{b}")).unwrap_or_default()
}

impl PartNames {
    /// Base names (no `.mlpackage`): `[P_]embeddings[_lutB]`, `[P_]lm_head[_lutB]`,
    /// `[P_]combined[_lutB]_chunk_NNofMM`.
    pub fn new(
        prefix: &str,
        lut_embed: Option<u32>,
        lut_lmhead: Option<u32>,
        lut_ffn: Option<u32>,
        chunks: usize,
    ) -> Self {
        PartNames {
            embeddings: with_prefix(prefix, format!("embeddings{}", lut_suffix(lut_embed))),
            lm_head: with_prefix(prefix, format!("lm_head{}", lut_suffix(lut_lmhead))),
            chunks: (1..=chunks)
                .map(|k| {
                    with_prefix(
                        prefix,
                        format!("combined{}_chunk_{k:02}of{chunks:02}", lut_suffix(lut_ffn)),
                    )
                })
                .collect(),
        }
    }

    /// Every base name in pipeline order: embeddings, chunks, lm_head.
    pub fn all(&self) -> Vec<&str> {
        let mut v = vec![self.embeddings.as_str()];
        v.extend(self.chunks.iter().map(String::as_str));
        v.push(self.lm_head.as_str());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_ranges_give_the_first_chunks_the_extra_layers() {
        assert_eq!(layer_ranges(4, 2), Some(vec![0..2, 2..4]));
        assert_eq!(layer_ranges(3, 2), Some(vec![0..2, 2..3]));
        assert_eq!(layer_ranges(16, 3), Some(vec![0..6, 6..11, 11..16]));
        assert_eq!(layer_ranges(3, 3), Some(vec![0..1, 1..2, 2..3]));
        assert_eq!(layer_ranges(3, 4), None);
        assert_eq!(layer_ranges(3, 0), None);
    }

    #[test]
    fn lm_head_split_is_at_most_16384_and_balanced() {
        assert_eq!(lm_head_split(128256), vec![16032; 8]);
        assert_eq!(lm_head_split(512), vec![512]);
        assert_eq!(lm_head_split(16384), vec![16384]);
        assert_eq!(lm_head_split(16385), vec![8193, 8192]);
        let qwen = lm_head_split(151936);
        assert_eq!(qwen.len(), 10);
        assert_eq!(qwen.iter().sum::<usize>(), 151936);
        assert!(qwen.iter().all(|&s| s <= MAX_LM_HEAD_PART));
        assert!(qwen.iter().max().unwrap() - qwen.iter().min().unwrap() <= 1);
    }

    #[test]
    fn wide_ffns_split_below_the_conv_limit() {
        assert_eq!(channel_split(8192), vec![8192]);
        assert_eq!(channel_split(18944), vec![9472, 9472]);
        assert_eq!(channel_split(17408), vec![8704, 8704]);
        assert_eq!(channel_split(32769), vec![10923, 10923, 10923]);
        assert!(channel_split(0).is_empty());
    }

    #[test]
    fn names_follow_the_contract() {
        let n = PartNames::new("", None, Some(6), Some(6), 2);
        assert_eq!(n.embeddings, "embeddings");
        assert_eq!(n.lm_head, "lm_head_lut6");
        assert_eq!(
            n.chunks,
            ["combined_lut6_chunk_01of02", "combined_lut6_chunk_02of02"]
        );
        let p = PartNames::new("llama", Some(4), None, None, 1);
        assert_eq!(p.embeddings, "llama_embeddings_lut4");
        assert_eq!(p.lm_head, "llama_lm_head");
        assert_eq!(p.chunks, ["llama_combined_chunk_01of01"]);
        assert_eq!(p.all().len(), 3);
    }
}
