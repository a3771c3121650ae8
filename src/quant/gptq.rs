//! LUT-GPTQ: error feedback with each group's fixed LUT (GPTQ, Frantar et al. 2023, with its
//! uniform grid replaced by the group's LUT), then an exact least-squares refit of the LUT.
//!
//! The layer's output error for one row `w` (a `[cols]` weight row) quantized to `ŵ` is
//! `(w − ŵ)ᵀ H (w − ŵ)` with `H = E[x xᵀ]` over the calibration inputs. GPTQ quantizes the
//! columns in order; after snapping column `j` to its nearest LUT entry it spreads the error over
//! the columns not yet quantized, through the upper Cholesky factor `U` of `H⁻¹`:
//! `w[j+1..] −= (w[j] − q) / U[j,j] · U[j, j+1..]`. Core ML's LUTs run along output rows, so
//! every row keeps one fixed table and rows are independent. With the indices fixed, the LUT that
//! minimizes the output error of its group solves a `k × k` linear system (the refit).

use half::f16;
use rayon::prelude::*;

use super::{f16_from_f64_rne, snr_db, worst_group, Palettized, QuantError};

/// `H` with `damp · mean(diag H)` added to its diagonal (GPTQ's dampening, which keeps the
/// inverse well conditioned when calibration tokens are few), and `U` with `UᵀU = H⁻¹`.
pub struct Hessian {
    pub cols: usize,
    /// Row-major `[cols, cols]`, damped.
    pub h: Vec<f64>,
    /// Row-major upper triangle of the Cholesky factor of `H⁻¹`.
    pub u: Vec<f64>,
}

impl Hessian {
    /// From `H = XᵀX / n` (row-major, symmetric).
    pub fn new(mut h: Vec<f64>, cols: usize, damp: f64) -> Result<Hessian, QuantError> {
        let mean = (0..cols).map(|i| h[i * cols + i]).sum::<f64>() / cols as f64;
        let add = (damp * mean).max(1e-12);
        for i in 0..cols {
            h[i * cols + i] += add;
        }
        let l = cholesky(&h, cols).ok_or(QuantError::NotPositiveDefinite { cols })?;
        let hinv = inverse_from_cholesky(&l, cols);
        let u = upper_cholesky(&hinv, cols).ok_or(QuantError::NotPositiveDefinite { cols })?;
        Ok(Hessian { cols, h, u })
    }
}

/// Lower `L` with `LLᵀ = a` (row-major), or `None` if `a` is not positive definite.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            let v = a[i * n + j] - s;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * n + i] = v.sqrt();
            } else {
                l[i * n + j] = v / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// `a⁻¹` from its lower Cholesky factor: `(LLᵀ)⁻¹ = L⁻ᵀL⁻¹`.
fn inverse_from_cholesky(l: &[f64], n: usize) -> Vec<f64> {
    // Column j of L⁻¹ by forward substitution; stored row-major as linv[i][j].
    let mut linv = vec![0.0; n * n];
    for j in 0..n {
        linv[j * n + j] = 1.0 / l[j * n + j];
        for i in j + 1..n {
            let s: f64 = (j..i).map(|k| l[i * n + k] * linv[k * n + j]).sum();
            linv[i * n + j] = -s / l[i * n + i];
        }
    }
    let mut inv = vec![0.0; n * n];
    inv.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, out) in row.iter_mut().enumerate() {
            // Σ_k linv[k][i] · linv[k][j], k ≥ max(i, j)
            *out = (i.max(j)..n)
                .map(|k| linv[k * n + i] * linv[k * n + j])
                .sum();
        }
    });
    inv
}

/// Upper `U` with `UᵀU = a` (row-major), or `None` if `a` is not positive definite.
fn upper_cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut u = vec![0.0; n * n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| u[k * n + i] * u[k * n + i]).sum();
        let d = a[i * n + i] - s;
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        u[i * n + i] = d;
        for j in i + 1..n {
            let s: f64 = (0..i).map(|k| u[k * n + i] * u[k * n + j]).sum();
            u[i * n + j] = (a[i * n + j] - s) / d;
        }
    }
    Some(u)
}

/// Index of the LUT entry nearest `v` (ties to the lower index).
fn nearest(lut: &[f64], v: f64) -> usize {
    let mut best = 0;
    let mut d = (v - lut[0]).abs();
    for (i, &c) in lut.iter().enumerate().skip(1) {
        let e = (v - c).abs();
        if e < d {
            best = i;
            d = e;
        }
    }
    best
}

/// Re-quantizes `p` (fitted to `w`, row-major `[rows, cols]`, the values the LUT was fitted
/// to) by error feedback through `hess`, then refits every LUT exactly to the new indices;
/// `rounds` times. The error metrics of `p` are recomputed for the result.
pub fn refine(p: &mut Palettized, w: &[f64], hess: &Hessian, rounds: usize) {
    let (cols, k) = (p.cols, p.entries());
    let per_group = p.group_size * cols;
    for _ in 0..rounds {
        let luts: Vec<Vec<f64>> = (0..p.groups)
            .map(|g| p.group_lut(g).iter().map(|v| v.to_f64()).collect())
            .collect();
        p.indices
            .par_chunks_mut(per_group)
            .zip(w.par_chunks(per_group))
            .zip(p.lut.par_chunks_mut(k))
            .zip(luts.par_iter())
            .for_each(|(((idx, wg), lut_out), lut)| {
                let mut row = vec![0.0; cols];
                for (ir, wr) in idx.chunks_mut(cols).zip(wg.chunks(cols)) {
                    row.copy_from_slice(wr);
                    for j in 0..cols {
                        let q = nearest(lut, row[j]);
                        ir[j] = q as u8;
                        let e = (row[j] - lut[q]) / hess.u[j * cols + j];
                        let uj = &hess.u[j * cols..(j + 1) * cols];
                        for t in j + 1..cols {
                            row[t] -= e * uj[t];
                        }
                    }
                }
                refit_group(idx, wg, lut, lut_out, hess);
            });
    }
    recompute_error(p, w);
}

/// The LUT minimizing `Σ_rows (w − ŵ)ᵀ H (w − ŵ)` for fixed indices: `A c = b` with
/// `A_kl = Σ_r Σ_ij [idx_ri = k][idx_rj = l] H_ij`, `b_k = Σ_r Σ_i [idx_ri = k] (H w_r)_i`.
/// Entries no weight uses keep their value; the result is rounded to fp16 and sorted, and the
/// indices follow their entries.
fn refit_group(idx: &mut [u8], wg: &[f64], lut: &[f64], out: &mut [f16], hess: &Hessian) {
    let (n, k) = (hess.cols, lut.len());
    let mut a = vec![0.0; k * k];
    let mut b = vec![0.0; k];
    for (ir, wr) in idx.chunks(n).zip(wg.chunks(n)) {
        for i in 0..n {
            let hi = &hess.h[i * n..(i + 1) * n];
            let ki = ir[i] as usize;
            let arow = &mut a[ki * k..(ki + 1) * k];
            let mut hw = 0.0;
            for j in 0..n {
                arow[ir[j] as usize] += hi[j];
                hw += hi[j] * wr[j];
            }
            b[ki] += hw;
        }
    }
    let used: Vec<bool> = (0..k).map(|c| a[c * k + c] > 0.0).collect();
    // Unused entries: fix them at their old value (identity row, rhs = value).
    for c in 0..k {
        if !used[c] {
            for t in 0..k {
                a[c * k + t] = 0.0;
                a[t * k + c] = 0.0;
            }
            a[c * k + c] = 1.0;
            b[c] = lut[c];
        } else {
            // The columns of fixed entries move to the right-hand side.
            for t in 0..k {
                if !used[t] {
                    b[c] -= a[c * k + t] * lut[t];
                }
            }
        }
    }
    let c = match cholesky(&a, k) {
        Some(l) => solve_cholesky(&l, &b, k),
        None => lut.to_vec(),
    };
    let mut order: Vec<usize> = (0..k).collect();
    let rounded: Vec<f16> = c
        .iter()
        .zip(lut)
        .map(|(&v, &old)| {
            if v.is_finite() {
                f16_from_f64_rne(v)
            } else {
                f16_from_f64_rne(old)
            }
        })
        .collect();
    order.sort_by(|&x, &y| rounded[x].to_f64().total_cmp(&rounded[y].to_f64()));
    let mut new_pos = vec![0u8; k];
    for (pos, &old) in order.iter().enumerate() {
        out[pos] = rounded[old];
        new_pos[old] = pos as u8;
    }
    for i in idx.iter_mut() {
        *i = new_pos[*i as usize];
    }
}

/// Solves `LLᵀ x = b`.
fn solve_cholesky(l: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * n + i];
    }
    x
}

/// Recomputes `sse`, `signal`, SNR and the worst group of `p` against `w`.
fn recompute_error(p: &mut Palettized, w: &[f64]) {
    let per_group = p.group_size * p.cols;
    let k = p.entries();
    let stats: Vec<(f64, f64)> = p
        .indices
        .par_chunks(per_group)
        .zip(w.par_chunks(per_group))
        .zip(p.lut.par_chunks(k))
        .map(|((idx, wg), lut)| {
            idx.iter().zip(wg).fold((0.0, 0.0), |(e, s), (&i, &v)| {
                let d = v - lut[i as usize].to_f64();
                (e + d * d, s + v * v)
            })
        })
        .collect();
    p.sse = stats.iter().map(|s| s.0).sum();
    p.signal = stats.iter().map(|s| s.1).sum();
    p.snr_db = snr_db(p.signal, p.sse);
    p.group_snr_db = stats.iter().map(|&(e, s)| snr_db(s, e)).collect();
    p.worst_group = worst_group(&p.group_snr_db);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::synth::{self, Rng};
    use crate::quant::{palettize_weighted, LutSpec, WeightView};

    /// Output error `Σ_r (w − ŵ)ᵀ H (w − ŵ)` with the undamped `H`.
    fn output_error(p: &Palettized, w: &[f64], h: &[f64]) -> f64 {
        let n = p.cols;
        let d = p.decode();
        w.chunks(n)
            .zip(d.chunks(n))
            .map(|(wr, qr)| {
                let e: Vec<f64> = wr.iter().zip(qr).map(|(a, b)| a - b.to_f64()).collect();
                (0..n)
                    .map(|i| (0..n).map(|j| e[i] * h[i * n + j] * e[j]).sum::<f64>())
                    .sum::<f64>()
            })
            .sum()
    }

    #[test]
    fn cholesky_factors_invert() {
        let n = 5;
        let mut r = Rng::new(3);
        let x: Vec<f64> = (0..n * 20).map(|_| r.normal()).collect();
        let h: Vec<f64> = (0..n * n)
            .map(|ij| (0..20).map(|t| x[t * n + ij / n] * x[t * n + ij % n]).sum())
            .collect();
        let hs = Hessian::new(h.clone(), n, 0.0).unwrap();
        // UᵀU · H = I
        for i in 0..n {
            for j in 0..n {
                let uu = |a: usize, b: usize| {
                    (0..n)
                        .map(|k| hs.u[k * n + a] * hs.u[k * n + b])
                        .sum::<f64>()
                };
                let v: f64 = (0..n).map(|k| uu(i, k) * hs.h[k * n + j]).sum();
                assert!(
                    (v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9,
                    "{i},{j}: {v}"
                );
            }
        }
    }

    /// On correlated inputs, error feedback and the refit lower the output error below the
    /// activation-weighted LUT's, which only sees the diagonal of H.
    #[test]
    fn feedback_lowers_the_output_error() {
        let (rows, cols, tokens) = (16, 32, 256);
        let w: Vec<f64> = synth::matrix(rows, cols, 9)
            .iter()
            .map(|&v| f16_from_f64_rne(v as f64).to_f64())
            .collect();
        let codes: Vec<u16> = w.iter().map(|&v| f16_from_f64_rne(v).to_bits()).collect();
        // Inputs with strongly correlated neighbouring channels.
        let mut r = Rng::new(4);
        let mut x = vec![0.0; tokens * cols];
        for t in 0..tokens {
            let base = r.normal();
            for j in 0..cols {
                x[t * cols + j] = base + 0.3 * r.normal();
            }
        }
        let h: Vec<f64> = (0..cols * cols)
            .map(|ij| {
                (0..tokens)
                    .map(|t| x[t * cols + ij / cols] * x[t * cols + ij % cols])
                    .sum::<f64>()
                    / tokens as f64
            })
            .collect();
        let diag: Vec<f64> = (0..cols).map(|j| h[j * cols + j]).collect();
        let spec = LutSpec::new(3, Some(8)).unwrap();
        let weighted =
            palettize_weighted(WeightView::F16Codes(&codes), rows, cols, spec, &diag).unwrap();
        let mut refined = weighted.clone();
        refine(
            &mut refined,
            &w,
            &Hessian::new(h.clone(), cols, 0.01).unwrap(),
            2,
        );
        let before = output_error(&weighted, &w, &h);
        let after = output_error(&refined, &w, &h);
        assert!(after < 0.8 * before, "output error {before} -> {after}");
        assert!(
            refined
                .lut
                .chunks(8)
                .all(|l| l.windows(2).all(|p| p[0] <= p[1])),
            "sorted LUTs"
        );
        assert!(refined.indices.iter().all(|&i| i < 8));
    }
}
