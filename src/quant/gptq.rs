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
/// inverse well conditioned when calibration tokens are few), its columns reordered by
/// decreasing `H_jj` (GPTQ's "act-order": the columns that matter most are quantized first,
/// while most columns are still free to absorb their error), and `U` with `UᵀU = H⁻¹`.
pub struct Hessian {
    pub cols: usize,
    /// `order[j']` is the original column at position `j'`.
    pub order: Vec<usize>,
    /// Row-major `[cols, cols]`, damped, rows and columns in `order`.
    pub h: Vec<f64>,
    /// Row-major upper triangle of the Cholesky factor of `H⁻¹`, in `order`.
    pub u: Vec<f64>,
}

impl Hessian {
    /// From `H = XᵀX / n` (row-major, symmetric).
    ///
    /// `U` comes without forming `H⁻¹`: with `J` the reversal of the index order and
    /// `JHJ = LLᵀ`, `H = RRᵀ` for the upper `R = JLJ`, so `H⁻¹ = R⁻ᵀR⁻¹` and `U = R⁻¹ = JL⁻¹J`.
    pub fn new(mut h: Vec<f64>, cols: usize, damp: f64) -> Result<Hessian, QuantError> {
        let n = cols;
        let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
        let add = (damp * mean).max(1e-12);
        for i in 0..n {
            h[i * n + i] += add;
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| h[b * n + b].total_cmp(&h[a * n + a]).then(a.cmp(&b)));
        let h: Vec<f64> = (0..n * n)
            .map(|ij| h[order[ij / n] * n + order[ij % n]])
            .collect();
        let reversed: Vec<f64> = (0..n * n)
            .map(|ij| h[(n - 1 - ij / n) * n + (n - 1 - ij % n)])
            .collect();
        let l = cholesky(&reversed, n).ok_or(QuantError::NotPositiveDefinite { cols })?;
        let linv_cols = lower_inverse_columns(&l, n);
        // U[i][j] = L⁻¹[n−1−i][n−1−j], stored by columns of L⁻¹.
        let u = (0..n * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                if j < i {
                    0.0
                } else {
                    linv_cols[(n - 1 - j) * n + (n - 1 - i)]
                }
            })
            .collect();
        Ok(Hessian { cols, order, h, u })
    }
}

/// `Σ a_i b_i` in four lanes, so that it vectorizes.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for t in 0..4 {
            acc[t] += x[t] * y[t];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Lower `L` with `LLᵀ = a` (row-major), or `None` if `a` is not positive definite.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v = a[i * n + j] - dot(&l[i * n..i * n + j], &l[j * n..j * n + j]);
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

/// The columns of `L⁻¹` for a lower-triangular `L`, each stored as a row (`out[j·n + i] =
/// L⁻¹[i][j]`), by forward substitution, columns in parallel.
fn lower_inverse_columns(l: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    out.par_chunks_mut(n).enumerate().for_each(|(j, col)| {
        col[j] = 1.0 / l[j * n + j];
        for i in j + 1..n {
            col[i] = -dot(&l[i * n + j..i * n + i], &col[j..i]) / l[i * n + i];
        }
    });
    out
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
                // The group in the Hessian's column order.
                let ordered = |r: usize, j: usize| r * cols + hess.order[j];
                let wp: Vec<f64> = (0..wg.len())
                    .map(|rj| wg[ordered(rj / cols, rj % cols)])
                    .collect();
                let mut ip = vec![0u8; idx.len()];
                let mut row = vec![0.0; cols];
                for (ir, wr) in ip.chunks_mut(cols).zip(wp.chunks(cols)) {
                    row.copy_from_slice(wr);
                    for j in 0..cols {
                        let q = nearest(lut, row[j]);
                        ir[j] = q as u8;
                        let e = (row[j] - lut[q]) / hess.u[j * cols + j];
                        let uj = &hess.u[j * cols + j + 1..(j + 1) * cols];
                        for (r, &u) in row[j + 1..].iter_mut().zip(uj) {
                            *r -= e * u;
                        }
                    }
                }
                refit_group(&mut ip, &wp, lut, lut_out, hess);
                for (rj, &q) in ip.iter().enumerate() {
                    idx[ordered(rj / cols, rj % cols)] = q;
                }
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
    // Per row: `HP` (`P` the row's one-hot index matrix) as `k` rows of `n`, one axpy of a row
    // of `H` per column; then `A += PᵀHP` and `b += Pᵀ H w`.
    let mut hp = vec![0.0; k * n];
    for (ir, wr) in idx.chunks(n).zip(wg.chunks(n)) {
        hp.fill(0.0);
        for (j, &l) in ir.iter().enumerate() {
            let dst = &mut hp[l as usize * n..(l as usize + 1) * n];
            for (d, &v) in dst.iter_mut().zip(&hess.h[j * n..(j + 1) * n]) {
                *d += v;
            }
        }
        for (i, &ki) in ir.iter().enumerate() {
            let arow = &mut a[ki as usize * k..(ki as usize + 1) * k];
            for (l, v) in arow.iter_mut().enumerate() {
                *v += hp[l * n + i];
            }
            b[ki as usize] += dot(&hess.h[i * n..(i + 1) * n], wr);
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

    /// A synthetic `[rows, cols]` matrix rounded to fp16 values.
    fn fp16_matrix(rows: usize, cols: usize, seed: u64) -> Vec<f64> {
        synth::matrix(rows, cols, seed)
            .iter()
            .map(|&v| f16_from_f64_rne(v as f64).to_f64())
            .collect()
    }

    /// `XᵀX / tokens` for `x` row-major `[tokens, cols]`.
    fn gram(x: &[f64], cols: usize) -> Vec<f64> {
        let tokens = x.len() / cols;
        (0..cols * cols)
            .map(|ij| {
                (0..tokens)
                    .map(|t| x[t * cols + ij / cols] * x[t * cols + ij % cols])
                    .sum::<f64>()
                    / tokens as f64
            })
            .collect()
    }

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
        let hs = Hessian::new(gram(&x, n), n, 0.0).unwrap();
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

    /// Act-order makes the result independent of how the input columns are numbered:
    /// permuting the columns of `W` and of `H` permutes the indices and keeps every LUT.
    #[test]
    fn feedback_follows_the_columns_not_their_numbering() {
        let (rows, cols, tokens) = (8, 12, 64);
        let w = fp16_matrix(rows, cols, 5);
        let mut r = Rng::new(6);
        let x: Vec<f64> = (0..tokens * cols)
            .map(|i| r.normal() * (1.0 + (i % cols) as f64))
            .collect();
        let perm: Vec<usize> = (0..cols).map(|j| (j * 5 + 3) % cols).collect();
        let permute = |m: &[f64], width: usize| -> Vec<f64> {
            (0..m.len())
                .map(|i| m[i / cols * width + perm[i % cols]])
                .collect()
        };
        let xp: Vec<f64> = (0..tokens * cols)
            .map(|i| x[i / cols * cols + perm[i % cols]])
            .collect();
        let wp = permute(&w, cols);
        let run = |w: &[f64], h: Vec<f64>| {
            let codes: Vec<u16> = w.iter().map(|&v| f16_from_f64_rne(v).to_bits()).collect();
            let diag: Vec<f64> = (0..cols).map(|j| h[j * cols + j]).collect();
            let spec = LutSpec::new(2, Some(4)).unwrap();
            let mut p =
                palettize_weighted(WeightView::F16Codes(&codes), rows, cols, spec, &diag).unwrap();
            refine(&mut p, w, &Hessian::new(h, cols, 0.01).unwrap(), 1);
            p
        };
        let a = run(&w, gram(&x, cols));
        let b = run(&wp, gram(&xp, cols));
        assert_eq!(a.lut, b.lut);
        let a_idx: Vec<u8> = (0..a.indices.len())
            .map(|i| a.indices[i / cols * cols + perm[i % cols]])
            .collect();
        assert_eq!(a_idx, b.indices);
    }

    /// On correlated inputs, error feedback and the refit lower the output error below the
    /// activation-weighted LUT's, which only sees the diagonal of H.
    #[test]
    fn feedback_lowers_the_output_error() {
        let (rows, cols, tokens) = (16, 32, 256);
        let w = fp16_matrix(rows, cols, 9);
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
        let h = gram(&x, cols);
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
