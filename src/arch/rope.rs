//! RoPE inverse frequencies exactly as transformers computes them (`modeling_rope_utils.py`:
//! `_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`,
//! `_compute_llama3_parameters`). transformers builds `inv_freq` as a float32 tensor, every
//! step in float32 (python scalars are cast to float32, `scalar / tensor` is
//! `tensor.reciprocal() * scalar`); the same steps are replayed here in `f32`, so the returned
//! values are the float32 numbers transformers uses (up to the last bit of `pow`), widened to f64.

use super::{DecoderConfig, RopeScaling};

/// `inv_freq[i]` for `i in 0..head_dim/2`, after rope scaling.
pub fn rope_inv_freq(cfg: &DecoderConfig) -> Vec<f64> {
    let dim = cfg.head_dim;
    let base = cfg.rope_theta as f32;
    // base ** (arange(0, dim, 2).float() / dim), then 1.0 / that.
    let default: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| {
            let exponent = i as f32 / dim as f32;
            let pow = (base as f64).powf(exponent as f64) as f32;
            1.0f32 / pow
        })
        .collect();
    let scaled: Vec<f32> = match cfg.rope_scaling {
        RopeScaling::None => default,
        RopeScaling::Linear { factor } => default.iter().map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old_context_len,
        } => {
            let low_freq_wavelen = (old_context_len / low_freq_factor) as f32;
            let high_freq_wavelen = (old_context_len / high_freq_factor) as f32;
            let two_pi = (2.0 * std::f64::consts::PI) as f32;
            let factor32 = factor as f32;
            default
                .iter()
                .map(|&inv_freq| {
                    let wavelen = (1.0f32 / inv_freq) * two_pi;
                    let inv_freq_llama = if wavelen > low_freq_wavelen {
                        inv_freq / factor32
                    } else {
                        inv_freq
                    };
                    let smooth_factor = ((1.0f32 / wavelen) * old_context_len as f32
                        - low_freq_factor as f32)
                        / (high_freq_factor - low_freq_factor) as f32;
                    let smoothed = (1.0f32 - smooth_factor) * inv_freq_llama / factor32
                        + smooth_factor * inv_freq_llama;
                    // ~(wavelen < high) * ~(wavelen > low); wavelen is never NaN (theta > 1).
                    let is_medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                    if is_medium {
                        smoothed
                    } else {
                        inv_freq_llama
                    }
                })
                .collect()
        }
    };
    scaled.into_iter().map(f64::from).collect()
}
