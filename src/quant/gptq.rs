//! LUT-GPTQ: error feedback with each group's fixed LUT (GPTQ, Frantar et al. 2023, with its
//! uniform grid replaced by the group's LUT).
//!
//! The layer's output error for one row `w` (a `[cols]` weight row) quantized to `ŵ` is
//! `(w − ŵ)ᵀ H (w − ŵ)` with `H = E[x xᵀ]` over the calibration inputs. GPTQ quantizes the
//! columns in order and, after each, moves the columns not yet quantized to where they best
//! make up for its error. Core ML's LUTs run along output rows, so every row keeps one fixed
//! table and rows are independent. (A least-squares refit of each LUT to the indices that the
//! feedback chose was measured on SmolLM2 and changed nothing; see docs/quantization.md.)

use rayon::prelude::*;

use super::{snr_db, worst_group, Palettized, QuantError};

/// Columns per block of the feedback and of the Cholesky factorization: within a block the
/// updates run row by row; between blocks they are one matrix product (GPTQ's lazy batch).
const BLOCK: usize = 128;

/// Rows quantized together by one task: the matrix products of the feedback run over this
/// many rows.
const CHUNK_ROWS: usize = 128;

/// `H` with `damp · mean(diag H)` added to its diagonal (GPTQ's dampening, which keeps the
/// factorization well conditioned when calibration tokens are few), its columns reordered by
/// decreasing `H_jj` (GPTQ's "act-order": the columns that matter most are quantized first,
/// while most columns are still free to absorb their error), and factored as `H = R Rᵀ` with
/// `R` upper triangular.
///
/// The output error of a row is then `‖Rᵀ(w − ŵ)‖²`, whose component `j` involves columns
/// `≤ j` only: `R_jj (x_j − ŵ_j)` with `x_j = w_j + Σ_{i<j} (R_ij / R_jj)(w_i − ŵ_i)`. Rounding
/// `x_j` to the nearest LUT entry, column after column, is GPTQ (Babai's nearest plane; Chen et
/// al. 2025 show the two are the same algorithm), and needs no inverse of `H`.
pub struct Hessian {
    pub cols: usize,
    /// `order[j']` is the original column at position `j'`.
    pub order: Vec<usize>,
    /// `R_ij / R_jj` for `i < j` (row-major `[cols, cols]`, in `order`; the rest unused).
    feed: Vec<f32>,
}

impl Hessian {
    /// From `H = XᵀX / n` (row-major `[cols, cols]`, symmetric).
    ///
    /// With `J` the reversal of the index order and `JHJ = LLᵀ` (Cholesky, `L` lower),
    /// `H = RRᵀ` for the upper `R = JLJ`; in row-major storage `JLJ` is `L` read backwards.
    pub fn new(mut h: Vec<f32>, cols: usize, damp: f64) -> Result<Hessian, QuantError> {
        let n = cols;
        let mean = (0..n).map(|i| h[i * n + i] as f64).sum::<f64>() / n as f64;
        let add = (damp * mean).max(1e-12);
        for i in 0..n {
            h[i * n + i] = (h[i * n + i] as f64 + add) as f32;
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| h[b * n + b].total_cmp(&h[a * n + a]).then(a.cmp(&b)));
        // JHJ in `order`: entry (i, j) is H[order[n−1−i]][order[n−1−j]].
        let mut a: Vec<f32> = vec![0.0; n * n];
        a.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            let src = &h[order[n - 1 - i] * n..][..n];
            for (j, v) in row.iter_mut().enumerate() {
                *v = src[order[n - 1 - j]];
            }
        });
        drop(h);
        cholesky_in_place(&mut a, n).map_err(|_| QuantError::NotPositiveDefinite { cols })?;
        a.reverse();
        let diag: Vec<f32> = (0..n).map(|j| a[j * n + j]).collect();
        a.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            for (v, d) in row[i + 1..].iter_mut().zip(&diag[i + 1..]) {
                *v /= d;
            }
        });
        Ok(Hessian {
            cols,
            order,
            feed: a,
        })
    }
}

/// `dst += sign · a · b` for an `m × k` matrix `a` and a `k × n` matrix `b`, all given by a
/// pointer to their first element and (row, column) strides in elements.
///
/// # Safety
/// Every addressed element must lie inside a live allocation, and `dst` must not overlap `a`
/// or `b`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_acc(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, isize, isize),
    a: (*const f32, isize, isize),
    b: (*const f32, isize, isize),
    sign: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        dst.2,
        dst.1,
        true,
        a.0,
        a.2,
        a.1,
        b.0,
        b.2,
        b.1,
        1.0,
        sign,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// A pointer that may cross threads: the tasks holding it address disjoint rows.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// Overwrites the lower triangle of `a` (row-major `[n, n]`, symmetric) with `L`, `LLᵀ = a`,
/// by blocks of [`BLOCK`] columns (left-looking: each block column is first updated with one
/// matrix product from the columns already factored). `Err(j)` names the first column whose
/// pivot is not positive.
fn cholesky_in_place(a: &mut [f32], n: usize) -> Result<(), usize> {
    assert_eq!(a.len(), n * n);
    let base = Shared(a.as_mut_ptr());
    for j0 in (0..n).step_by(BLOCK) {
        let jb = BLOCK.min(n - j0);
        // A[j0.., j0..j0+jb] −= L[j0.., ..j0] · L[j0..j0+jb, ..j0]ᵀ, in row slabs.
        if j0 > 0 {
            let rows: Vec<usize> = (j0..n).step_by(CHUNK_ROWS).collect();
            rows.par_iter().for_each(|&r0| {
                let p = base;
                let m = CHUNK_ROWS.min(n - r0);
                let ni = n as isize;
                // SAFETY: the slab writes rows r0..r0+m of columns j0..j0+jb and reads
                // columns < j0 only; slabs are disjoint, and all indices are below n².
                unsafe {
                    gemm_acc(
                        (m, jb, j0),
                        (p.0.add(r0 * n + j0), ni, 1),
                        (p.0.add(r0 * n), ni, 1),
                        (p.0.add(j0 * n), 1, ni),
                        -1.0,
                    );
                }
            });
        }
        // The diagonal block, unblocked, in f64.
        let mut d = vec![0f64; jb * jb];
        for i in 0..jb {
            for j in 0..=i {
                let mut v = a[(j0 + i) * n + j0 + j] as f64;
                for t in 0..j {
                    v -= d[i * jb + t] * d[j * jb + t];
                }
                if i == j {
                    if v <= 0.0 || !v.is_finite() {
                        return Err(j0 + i);
                    }
                    d[i * jb + i] = v.sqrt();
                } else {
                    d[i * jb + j] = v / d[j * jb + j];
                }
            }
        }
        for i in 0..jb {
            for j in 0..=i {
                a[(j0 + i) * n + j0 + j] = d[i * jb + j] as f32;
            }
        }
        // The rows below: L[r, j0..j0+jb] = A[r, j0..j0+jb] · L11⁻ᵀ, by forward substitution.
        a[(j0 + jb) * n..].par_chunks_mut(n).for_each(|row| {
            let x = &mut row[j0..j0 + jb];
            for c in 0..jb {
                let mut v = x[c] as f64;
                for t in 0..c {
                    v -= x[t] as f64 * d[c * jb + t];
                }
                x[c] = (v / d[c * jb + c]) as f32;
            }
        });
    }
    Ok(())
}

/// Index of the entry of the ascending `lut` nearest `v` (ties, and repeated entries, to the
/// lowest index).
fn nearest(lut: &[f32], v: f32) -> usize {
    let hi = lut.partition_point(|&c| c < v);
    if hi == 0 {
        return 0;
    }
    if hi == lut.len() || v - lut[hi - 1] <= lut[hi] - v {
        let lo = lut[hi - 1];
        return lut.partition_point(|&c| c < lo);
    }
    hi
}

/// Re-quantizes `p` (fitted to `w`, row-major `[rows, cols]`, the values the LUT was fitted
/// to) by error feedback through `hess`, each row rounding to its group's LUT, which stays as
/// fitted. The error metrics of `p` are recomputed for the result.
pub fn refine(p: &mut Palettized, w: &[f64], hess: &Hessian) {
    let (cols, k, gs) = (p.cols, p.entries(), p.group_size);
    let luts: Vec<f32> = p.lut.iter().map(|v| v.to_f32()).collect();
    p.indices
        .par_chunks_mut(CHUNK_ROWS * cols)
        .zip(w.par_chunks(CHUNK_ROWS * cols))
        .enumerate()
        .for_each(|(c, (idx, wc))| {
            let first = c * CHUNK_ROWS;
            feedback(idx, wc, |r| &luts[(first + r) / gs * k..][..k], hess);
        });
    recompute_error(p, w);
}

/// Error feedback for a few whole rows (`idx` and `w` row-major `[m, cols]`, original column
/// order), each rounding to `lut_of(row)`.
fn feedback<'a>(idx: &mut [u8], w: &[f64], lut_of: impl Fn(usize) -> &'a [f32], hess: &Hessian) {
    let n = hess.cols;
    let m = idx.len() / n;
    let wo: Vec<f32> = (0..m * n)
        .map(|rj| w[rj / n * n + hess.order[rj % n]] as f32)
        .collect();
    // `x − w` accumulated so far, and the final errors `w − ŵ`.
    let mut corr = vec![0f32; m * n];
    let mut err = vec![0f32; m * n];
    let mut q = vec![0u8; m * n];
    for a in (0..n).step_by(BLOCK) {
        let b = (a + BLOCK).min(n);
        for r in 0..m {
            let lut = lut_of(r);
            let (wr, cr, er) = (
                &wo[r * n..][..n],
                &mut corr[r * n..][..n],
                &mut err[r * n..][..n],
            );
            for j in a..b {
                let l = nearest(lut, wr[j] + cr[j]);
                q[r * n + j] = l as u8;
                let e = wr[j] - lut[l];
                er[j] = e;
                for (c, &f) in cr[j + 1..b]
                    .iter_mut()
                    .zip(&hess.feed[j * n + j + 1..j * n + b])
                {
                    *c += e * f;
                }
            }
        }
        if b < n {
            let ni = n as isize;
            // SAFETY: `corr`, `err` and `feed` are separate allocations of `m·n`, `m·n` and
            // `n·n` elements; the product reads err[.., a..b] and feed[a..b, b..] and writes
            // corr[.., b..].
            unsafe {
                gemm_acc(
                    (m, n - b, b - a),
                    (corr.as_mut_ptr().add(b), ni, 1),
                    (err.as_ptr().add(a), ni, 1),
                    (hess.feed.as_ptr().add(a * n + b), ni, 1),
                    1.0,
                );
            }
        }
    }
    for (rj, &l) in q.iter().enumerate() {
        idx[rj / n * n + hess.order[rj % n]] = l;
    }
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
    use crate::quant::f16_from_f64_rne;
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

    fn f32s(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&x| x as f32).collect()
    }

    /// Inputs whose neighbouring channels are correlated, with channel scales that differ.
    fn correlated(tokens: usize, cols: usize, seed: u64) -> Vec<f64> {
        let mut r = Rng::new(seed);
        let mut x = vec![0.0; tokens * cols];
        for t in 0..tokens {
            let base = r.normal();
            for j in 0..cols {
                x[t * cols + j] = (base + 0.5 * r.normal()) * (1.0 + (j % 7) as f64 / 3.0);
            }
        }
        x
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

    /// The blocked f32 factorization (three blocks and a partial one) gives the feedback
    /// coefficients `R_ij / R_jj` of an unblocked f64 Cholesky factorization of the damped,
    /// act-ordered `H`, and the act-order sorts the diagonal.
    #[test]
    fn factor_matches_an_unblocked_factorization() {
        let n = 3 * BLOCK + 17;
        let h = gram(&correlated(2 * n, n, 3), n);
        let hs = Hessian::new(f32s(&h), n, 0.01).unwrap();
        let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
        let diag: Vec<f64> = hs.order.iter().map(|&j| h[j * n + j]).collect();
        // (ordered on the f32 values: equal to f32 rounding here)
        assert!(
            diag.windows(2).all(|p| p[0] >= p[1] * (1.0 - 1e-6)),
            "act-order"
        );
        // H = R Rᵀ with R upper: factor from the last row and column backwards.
        let ho = |i: usize, j: usize| {
            h[hs.order[i] * n + hs.order[j]] + if i == j { 0.01 * mean } else { 0.0 }
        };
        let mut r = vec![0.0f64; n * n];
        for j in (0..n).rev() {
            for i in (0..=j).rev() {
                let v = ho(i, j) - (j + 1..n).map(|t| r[i * n + t] * r[j * n + t]).sum::<f64>();
                r[i * n + j] = if i == j { v.sqrt() } else { v / r[j * n + j] };
            }
        }
        let worst = (0..n)
            .flat_map(|j| (0..j).map(move |i| (i, j)))
            .map(|(i, j)| (hs.feed[i * n + j] as f64 - r[i * n + j] / r[j * n + j]).abs())
            .fold(0f64, f64::max);
        assert!(worst < 1e-4, "max |feed − R_ij/R_jj| = {worst}");
    }

    /// Classic GPTQ in f64: `U` upper with `UᵀU = H⁻¹` formed explicitly, the error of column
    /// `j` spread over the later columns through row `j` of `U`. Columns in `hs.order`.
    fn classic_gptq(
        w: &[f64],
        luts: &[f32],
        k: usize,
        gs: usize,
        h: &[f64],
        hs: &Hessian,
    ) -> Vec<u8> {
        let n = hs.cols;
        let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
        let ho: Vec<f64> = (0..n * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                h[hs.order[i] * n + hs.order[j]] + if i == j { 0.01 * mean } else { 0.0 }
            })
            .collect();
        // H⁻¹ by Gauss-Jordan, then its upper Cholesky factor U (H⁻¹ = UᵀU).
        let mut aug = ho.clone();
        let mut inv: Vec<f64> = (0..n * n)
            .map(|ij| (ij / n == ij % n) as u8 as f64)
            .collect();
        for c in 0..n {
            let p = aug[c * n + c];
            for t in 0..n {
                aug[c * n + t] /= p;
                inv[c * n + t] /= p;
            }
            for r in 0..n {
                if r != c {
                    let f = aug[r * n + c];
                    for t in 0..n {
                        aug[r * n + t] -= f * aug[c * n + t];
                        inv[r * n + t] -= f * inv[c * n + t];
                    }
                }
            }
        }
        let mut u = vec![0.0; n * n];
        for i in 0..n {
            for j in i..n {
                let v = inv[i * n + j] - (0..i).map(|t| u[t * n + i] * u[t * n + j]).sum::<f64>();
                u[i * n + j] = if i == j { v.sqrt() } else { v / u[i * n + i] };
            }
        }
        let rows = w.len() / n;
        let mut out = vec![0u8; rows * n];
        for r in 0..rows {
            let lut = &luts[r / gs * k..][..k];
            let mut row: Vec<f64> = (0..n).map(|j| w[r * n + hs.order[j]]).collect();
            for j in 0..n {
                let q = nearest(lut, row[j] as f32);
                out[r * n + hs.order[j]] = q as u8;
                let e = (row[j] - lut[q] as f64) / u[j * n + j];
                for t in j + 1..n {
                    row[t] -= e * u[j * n + t];
                }
            }
        }
        out
    }

    /// The nearest-plane form with blocked products chooses the same entries as GPTQ's
    /// explicit-inverse form, across block boundaries.
    #[test]
    fn feedback_chooses_what_classic_gptq_chooses() {
        let (rows, n, k, gs) = (16, BLOCK + 40, 8, 8);
        let w = fp16_matrix(rows, n, 11);
        let h = gram(&correlated(3 * n, n, 12), n);
        let hs = Hessian::new(f32s(&h), n, 0.01).unwrap();
        let luts: Vec<f32> = (0..rows / gs)
            .flat_map(|g| (0..k).map(move |i| (i as f32 - 3.5) * 0.011 + g as f32 * 1e-3))
            .collect();
        let mut idx = vec![0u8; rows * n];
        feedback(&mut idx, &w, |r| &luts[r / gs * k..][..k], &hs);
        let want = classic_gptq(&w, &luts, k, gs, &h, &hs);
        let differ = idx.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert!(
            differ <= rows * n / 500,
            "{differ} of {} choices differ",
            rows * n
        );
    }

    #[test]
    fn nearest_takes_the_lowest_of_ties_and_repeats() {
        let lut = [-1.0f32, 0.0, 1.0, 1.0, 1.0];
        assert_eq!(nearest(&lut, -5.0), 0);
        assert_eq!(nearest(&lut, -0.5), 0);
        assert_eq!(nearest(&lut, -0.25), 1);
        assert_eq!(nearest(&lut, 0.5), 1);
        assert_eq!(nearest(&lut, 0.75), 2);
        assert_eq!(nearest(&lut, 7.0), 2);
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
            refine(&mut p, w, &Hessian::new(f32s(&h), cols, 0.01).unwrap());
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

    /// On correlated inputs, error feedback lowers the output error below the
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
            &Hessian::new(f32s(&h), cols, 0.01).unwrap(),
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
