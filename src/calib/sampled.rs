//! Calibration text that the model writes itself (`--calibration self`): sequences started from
//! a random ordinary token and continued by sampling the f32 reference model.
//!
//! This is the data-free recipe of LLM-QAT (Liu et al. 2023, "Data-free quantization aware
//! training"): text the model finds likely, in whatever mix of domains it was trained on, with
//! no corpus to choose. Sampling is at temperature 1 from the full distribution, with a fixed
//! seed, so a conversion stays reproducible.

use super::data::{self, CalibrationSet};
use super::{CalibError, Result};
use crate::quant::synth::Rng;
use crate::reference::{self, Reference};
use crate::source::ModelFiles;

/// The sampler's seed ("anec" in ASCII).
const SEED: u64 = 0x616e_6563;

/// Up to `max_tokens` tokens in sequences of `seq_len`, written by the model in `files`. A
/// sequence ends early at a token of `eos` (which it keeps). The reference holds the model's
/// weights in f32: four bytes a parameter.
pub fn generate(
    files: &ModelFiles,
    eos: &[u32],
    max_tokens: usize,
    seq_len: usize,
) -> Result<CalibrationSet> {
    let starts = data::ordinary_ids(&files.dir)?;
    let cfg = reference::Config::from_file(&files.config).map_err(reference_error)?;
    let model = Reference::load(&cfg, files).map_err(reference_error)?;
    let mut rng = Rng::new(SEED);
    let mut sequences = Vec::new();
    let mut tokens = 0;
    while tokens < max_tokens && !starts.is_empty() {
        let len = seq_len.min(max_tokens - tokens);
        let mut ids = vec![starts[(rng.uniform() * starts.len() as f64) as usize]];
        let mut cache = model.new_cache();
        let mut logits = model.forward(&ids, &mut cache).map_err(reference_error)?;
        while ids.len() < len {
            let next = sample(logits.row(logits.rows - 1), rng.uniform()) as u32;
            ids.push(next);
            if eos.contains(&next) || ids.len() == len {
                break;
            }
            logits = model
                .forward(&[next], &mut cache)
                .map_err(reference_error)?;
        }
        tokens += ids.len();
        sequences.push(ids);
    }
    if tokens == 0 {
        return Err(CalibError::Empty);
    }
    Ok(CalibrationSet {
        description: format!(
            "text sampled from the model (temperature 1, seed {SEED:#x}), {tokens} tokens in {} sequences of at most {seq_len}",
            sequences.len()
        ),
        sequences,
        tokens,
    })
}

fn reference_error(e: reference::ReferenceError) -> CalibError {
    CalibError::Reference(Box::new(e))
}

/// The index at which the softmax of `logits` reaches cumulative probability `u` ∈ (0, 1).
fn sample(logits: &[f32], u: f64) -> usize {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let weights: Vec<f64> = logits.iter().map(|&z| (z as f64 - max).exp()).collect();
    let target = u * weights.iter().sum::<f64>();
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if acc > target {
            return i;
        }
    }
    logits.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn sampling_follows_the_softmax() {
        // Probabilities 1/7, 2/7, 4/7.
        let logits = [0.0f32, 2f32.ln(), 4f32.ln()];
        assert_eq!(sample(&logits, 0.0), 0);
        assert_eq!(sample(&logits, 0.99 / 7.0), 0);
        assert_eq!(sample(&logits, 1.01 / 7.0), 1);
        assert_eq!(sample(&logits, 2.99 / 7.0), 1);
        assert_eq!(sample(&logits, 3.01 / 7.0), 2);
        assert_eq!(sample(&logits, 0.999_999), 2);
    }

    #[test]
    fn model_text_is_reproducible_and_sized() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama");
        let files = crate::source::resolve(&crate::source::ModelSpec {
            model: dir.display().to_string(),
            revision: None,
            offline: true,
        })
        .unwrap();
        let a = generate(&files, &[], 100, 32).unwrap();
        let b = generate(&files, &[], 100, 32).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.tokens, 100);
        let lens: Vec<usize> = a.sequences.iter().map(Vec::len).collect();
        assert_eq!(lens, [32, 32, 32, 4]);
        let starts = data::ordinary_ids(&files.dir).unwrap();
        assert!(a.sequences.iter().all(|s| starts.contains(&s[0])));
        // Stopping at an end token: every sequence ends at its first one, or is full.
        let eos = a.sequences[0][5];
        let c = generate(&files, &[eos], 100, 32).unwrap();
        for s in &c.sequences {
            let first = s[1..].iter().position(|&t| t == eos).map(|p| p + 2);
            assert!(first.is_none_or(|end| end == s.len()), "{s:?}");
        }
    }
}
