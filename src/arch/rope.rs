//! RoPE inverse frequencies exactly as transformers computes them (`modeling_rope_utils.py`:
//! `_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`,
//! `_compute_llama3_parameters`). transformers builds `inv_freq` as a float32 tensor, every
//! step in float32 (python scalars are cast to float32, `scalar / tensor` is
//! `tensor.reciprocal() * scalar`); the same steps are replayed here in `f32`, so the returned
//! values are the float32 numbers transformers uses (up to the last bit of `pow`), widened to f64.

use super::{DecoderConfig, RopeScaling};

/// `inv_freq[i]` for `i in 0..head_dim/2`, after rope scaling.
pub fn rope_inv_freq(cfg: &DecoderConfig) -> Vec<f64> {
    inv_freq(cfg.head_dim, cfg.rope_theta, &cfg.rope_scaling)
}

/// The inverse frequencies of Gemma's sliding layers (plain RoPE at `rope_local_base_freq`);
/// [`rope_inv_freq`] for the other families.
pub fn rope_inv_freq_local(cfg: &DecoderConfig) -> Vec<f64> {
    match &cfg.gemma {
        Some(g) => inv_freq(cfg.head_dim, g.local_rope_theta, &RopeScaling::None),
        None => rope_inv_freq(cfg),
    }
}

fn inv_freq(dim: usize, theta: f64, scaling: &RopeScaling) -> Vec<f64> {
    let base = theta as f32;
    // base ** (arange(0, dim, 2).float() / dim), then 1.0 / that.
    let default: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| {
            let exponent = i as f32 / dim as f32;
            let pow = (base as f64).powf(exponent as f64) as f32;
            1.0f32 / pow
        })
        .collect();
    let scaled: Vec<f32> = match *scaling {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(theta: f64, head_dim: usize, rope_scaling: RopeScaling) -> DecoderConfig {
        let mut c = DecoderConfig::from_json_str(r#"{"model_type": "llama"}"#).unwrap();
        c.rope_theta = theta;
        c.head_dim = head_dim;
        c.rope_scaling = rope_scaling;
        c
    }

    /// Pinned against transformers' float32 steps replayed in numpy float32 (torch is not
    /// available here): `1/(theta ** (arange(0,d,2)/d))`, then the llama3 smoothing. One value
    /// differs: numpy's float32 `5e5 ** 0.75` is 18803.014, one ulp below the correctly rounded
    /// 18803.016 (exact 18803.01547) that anec uses; torch's pow kernel may land on either, a
    /// relative difference of 1e-7 in one frequency.
    #[test]
    fn matches_transformers_float32_steps() {
        let llama3 = RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        assert_eq!(
            rope_inv_freq(&cfg(5e5, 16, llama3.clone())),
            [
                1.0,
                0.193922758102417,
                0.03760603070259094,
                0.00729266507551074,
                0.000429556705057621,
                8.570255886297673e-06,
                1.6619674170215148e-06, // numpy: 1.6619676443951903e-06
                3.2229328894572973e-07
            ]
        );
        let wide: Vec<f64> = rope_inv_freq(&cfg(5e5, 64, llama3))
            .into_iter()
            .step_by(8)
            .collect();
        assert_eq!(
            wide,
            [
                1.0,
                0.03760603070259094,
                0.000429556705057621,
                1.6619674170215148e-06 // the same 5e5 ** 0.75
            ]
        );
        let d = rope_inv_freq(&cfg(1e6, 32, RopeScaling::None));
        assert_eq!(d.len(), 16);
        assert_eq!(
            [d[1], d[2], d[8], d[15]],
            [
                0.4216965138912201,
                0.17782793939113617,
                0.0010000000474974513,
                2.3713737391517498e-06
            ]
        );
    }
}
