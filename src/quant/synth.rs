//! Synthetic LLM-like weights for tests and benchmarks (LUT.md §3), reproducible from a seed:
//! `W = 0.02 · t₅ (unit variance) · row lognormal(0, 0.3) · column lognormal(0, 0.2)`, with
//! 0.01 % of entries multiplied by 8 as outliers. No RNG crate: splitmix64 + Box–Muller.

use half::f16;

use super::f16_from_f64_rne;

/// splitmix64: a tiny, well-mixed, reproducible generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller, one value per call).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Student t with 5 degrees of freedom, scaled to unit variance (var t₅ = 5/3).
    pub fn t5_unit(&mut self) -> f64 {
        let z = self.normal();
        let chi2: f64 = (0..5).map(|_| self.normal().powi(2)).sum();
        z / (chi2 / 5.0).sqrt() / (5.0f64 / 3.0).sqrt()
    }
}

/// A `[rows, cols]` row-major matrix as described in the module doc.
pub fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let row_scale: Vec<f64> = (0..rows).map(|_| (0.3 * rng.normal()).exp()).collect();
    let col_scale: Vec<f64> = (0..cols).map(|_| (0.2 * rng.normal()).exp()).collect();
    let mut out = Vec::with_capacity(rows * cols);
    for rs in &row_scale {
        for cs in &col_scale {
            let mut v = 0.02 * rng.t5_unit() * rs * cs;
            if rng.uniform() < 1e-4 {
                v *= 8.0;
            }
            out.push(v as f32);
        }
    }
    out
}

/// bfloat16 codes, round to nearest even (the usual f32 → bf16 cast). Inputs must be finite.
pub fn to_bf16_codes(v: &[f32]) -> Vec<u16> {
    v.iter()
        .map(|x| {
            let b = x.to_bits();
            ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
        })
        .collect()
}

/// fp16 codes, round to nearest even.
pub fn to_f16_codes(v: &[f32]) -> Vec<u16> {
    v.iter()
        .map(|&x| f16_from_f64_rne(x as f64).to_bits())
        .collect()
}

/// bf16 codes re-encoded as fp16 ("bf16-origin" data as an fp16 consumer sees it).
pub fn bf16_to_f16_codes(codes: &[u16]) -> Vec<u16> {
    codes
        .iter()
        .map(|&c| f16_from_f64_rne(f32::from_bits((c as u32) << 16) as f64).to_bits())
        .collect()
}

/// fp16 codes as f64 values.
pub fn f16_values(codes: &[u16]) -> Vec<f64> {
    codes.iter().map(|&c| f16::from_bits(c).to_f64()).collect()
}
