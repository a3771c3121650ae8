//! Exact weighted 1-D k-means on sorted points (LUT.md §2.3–2.4): Wu's DP over contiguous
//! segments, each layer's row minima found by divide and conquer (the squared-error segment cost
//! is concave Monge, so the leftmost argmin is monotone in the segment end), bounded below by
//! the previous layer's split.
//!
//! SMAWK would find each layer's row minima in O(n) instead of O(n log n) evaluations, but
//! measured on bf16 groups (n ≈ 2,200, k = 16 and 64) it needs about 10.6 evaluations per
//! segment end against 5–11 here (the previous layer's bound prunes the divide and conquer and
//! cannot prune SMAWK's column reduction), and each of its evaluations is dearer; so the
//! divide and conquer stays, with one cache line per candidate and no recursion.

/// Reusable buffers for [`optimal_bounds`]; one per worker thread, never shrunk.
#[derive(Debug, Default)]
pub(crate) struct Dp {
    /// Per split point `j` (`n + 1` entries), side by side so one candidate is one cache line's
    /// half: the prefix sums over the first `j` points with `d = x − μ` (Σw, Σw·d, Σw·d²), and
    /// the previous layer's best error for the first `j` points (valid inside its window).
    cells: Vec<[f64; 4]>,
    /// The current layer's best error per segment end.
    cur: Vec<f64>,
    /// `opt[(m − 1)·(n + 1) + j]`: start of the last segment in the best `m`-segment split of
    /// points `0..j`. At most 65,536 points (one per 16-bit code), so a split index fits `u16`.
    opt: Vec<u16>,
    /// Allowed range of each boundary, `k + 1` entries.
    lo: Vec<usize>,
    hi: Vec<usize>,
    prev_bounds: Vec<usize>,
}

/// Slot of [`Dp::cells`] holding the previous layer's error.
const PREV: usize = 3;

/// Squared error of points `i..j` around their weighted mean, from the prefix sums in the cells
/// of `i` and `j`. All weights are positive, so the segment weight is too; round-off is clamped
/// at zero.
#[inline(always)]
fn cost(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let w = b[0] - a[0];
    let s = b[1] - a[1];
    let c = (b[2] - a[2]) - s * s / w;
    if c > 0.0 {
        c
    } else {
        0.0
    }
}

/// Splits the sorted points `x` (strictly increasing or equal-valued neighbours, weights `w > 0`)
/// into `k` non-empty contiguous segments with the least total weighted squared error around the
/// segment means. Writes the `k + 1` boundaries `0 = b₀ < b₁ < … < b_k = n` into `bounds` and
/// returns that error. Requires `1 ≤ k ≤ n ≤ 65,536`. Ties keep the leftmost split.
pub(crate) fn optimal_bounds(
    x: &[f64],
    w: &[f64],
    k: usize,
    dp: &mut Dp,
    bounds: &mut Vec<usize>,
) -> f64 {
    let n = x.len();
    prefix_sums(x, w, dp);
    // Every boundary may sit anywhere that leaves one point per segment on either side.
    dp.lo.clear();
    dp.hi.clear();
    dp.lo.extend((0..=k).map(|m| if m == k { n } else { m }));
    dp.hi
        .extend((0..=k).map(|m| if m == 0 { 0 } else { n - (k - m) }));
    windowed(n, k, true, dp, bounds)
}

/// Improves a partition of `x` into `k` segments (`bounds`, as from [`optimal_bounds`] on
/// coarser points) by the exact DP restricted to boundaries within `radius` points of the current
/// ones, re-centred until no boundary moves (at most `rounds` times). Each round can only lower
/// the error, and the result is optimal among all partitions whose boundaries lie in the final
/// windows. Returns the error.
pub(crate) fn refine_bounds(
    x: &[f64],
    w: &[f64],
    radius: usize,
    rounds: usize,
    dp: &mut Dp,
    bounds: &mut Vec<usize>,
) -> f64 {
    let n = x.len();
    let k = bounds.len() - 1;
    prefix_sums(x, w, dp);
    let mut err = f64::INFINITY;
    for _ in 0..rounds.max(1) {
        dp.lo.clear();
        dp.hi.clear();
        for (m, &b) in bounds.iter().enumerate() {
            let lo = if m == 0 {
                0
            } else {
                // Keep room for one point in every earlier segment.
                b.saturating_sub(radius).max(m).max(dp.lo[m - 1] + 1)
            };
            let hi = if m == 0 {
                0
            } else if m == k {
                n
            } else {
                (b + radius).min(n - (k - m)).max(lo)
            };
            dp.lo.push(if m == k { n } else { lo });
            dp.hi.push(hi);
        }
        dp.prev_bounds.clear();
        dp.prev_bounds.extend_from_slice(bounds);
        err = windowed(n, k, false, dp, bounds);
        if *bounds == dp.prev_bounds {
            break;
        }
    }
    err
}

/// Centred prefix sums of the points into `dp.cells`.
fn prefix_sums(x: &[f64], w: &[f64], dp: &mut Dp) {
    debug_assert!(x.len() <= 1 << 16 && w.len() == x.len());
    // Centre on the weighted mean to limit cancellation in the prefix sums.
    let (sw, swx) = x
        .iter()
        .zip(w)
        .fold((0.0f64, 0.0f64), |(a, b), (&x, &w)| (a + w, b + w * x));
    let mu = swx / sw;
    dp.cells.clear();
    let (mut a0, mut a1, mut a2) = (0.0f64, 0.0f64, 0.0f64);
    dp.cells.push([a0, a1, a2, f64::INFINITY]);
    for (&x, &w) in x.iter().zip(w) {
        let d = x - mu;
        a0 += w;
        a1 += w * d;
        a2 += w * d * d;
        dp.cells.push([a0, a1, a2, f64::INFINITY]);
    }
}

/// The DP over layers `m = 1..=k`, boundary `m` restricted to `dp.lo[m]..=dp.hi[m]` (with
/// `lo[m] > lo[m − 1]`), on the prefix sums in `dp.cells`. Only cells inside the windows are
/// written or read, so the buffers need no clearing between calls.
fn windowed(n: usize, k: usize, use_lower: bool, dp: &mut Dp, bounds: &mut Vec<usize>) -> f64 {
    debug_assert!(k >= 1 && k <= n);
    if dp.cur.len() < n + 1 {
        dp.cur.resize(n + 1, f64::INFINITY);
    }
    if dp.opt.len() < k * (n + 1) {
        dp.opt.resize(k * (n + 1), 0);
    }
    let first = dp.cells[0];
    for j in dp.lo[1]..=dp.hi[1] {
        dp.cells[j][PREV] = cost(&first, &dp.cells[j]);
    }
    for m in 2..=k {
        let (done, rest) = dp.opt.split_at_mut((m - 1) * (n + 1));
        let opt = &mut rest[..n + 1];
        let lower = (use_lower && m >= 3).then(|| Lower {
            opt: &done[(m - 2) * (n + 1)..],
            lo: dp.lo[m - 1],
            hi: dp.hi[m - 1],
        });
        let (jlo, jhi) = (dp.lo[m], dp.hi[m]);
        solve(
            &dp.cells,
            &mut dp.cur,
            opt,
            lower,
            (jlo, jhi),
            (dp.lo[m - 1], dp.hi[m - 1]),
        );
        // This layer's errors become the next one's candidates (its columns are these rows).
        for j in jlo..=jhi {
            dp.cells[j][PREV] = dp.cur[j];
        }
    }
    bounds.clear();
    bounds.resize(k + 1, 0);
    bounds[k] = n;
    for m in (2..=k).rev() {
        bounds[m - 1] = dp.opt[(m - 1) * (n + 1) + bounds[m]] as usize;
    }
    dp.cells[n][PREV]
}

/// `min over i in ilo..=ihi of prev[i] + cost(i, j)`, leftmost on ties. The ranges are short
/// (a few candidates on average), so a branch-free scalar scan beats wider lanes.
#[inline(always)]
fn row_min(cells: &[[f64; 4]], j: usize, ilo: usize, ihi: usize) -> (f64, usize) {
    let cj = &cells[j];
    let (mut best, mut arg) = (f64::INFINITY, ilo);
    for (i, c) in (ilo..).zip(&cells[ilo..=ihi]) {
        let v = c[PREV] + cost(c, cj);
        let better = v < best;
        arg = if better { i } else { arg };
        best = if better { v } else { best };
    }
    (best, arg)
}

/// The row minima of one layer for the segment ends `jlo..=jhi`, whose best splits lie in
/// `ilo..=ihi`. The leftmost argmin is non-decreasing in the segment end, so once the ends `s`
/// apart are solved, each end halfway between them needs only the splits between theirs: the
/// ends are visited by halving strides (`s`, `s/2`, …, 1), a divide and conquer without the
/// recursion. The previous layer's split bounds each from below as well.
fn solve(
    cells: &[[f64; 4]],
    cur: &mut [f64],
    opt: &mut [u16],
    lower: Option<Lower<'_>>,
    (jlo, jhi): (usize, usize),
    (ilo, ihi): (usize, usize),
) {
    let rows = jhi + 1 - jlo;
    let mut stride = 1usize;
    while stride * 2 <= rows {
        stride *= 2;
    }
    loop {
        // Ends `jlo + r` with `r + 1` an odd multiple of `stride`: those `stride` away on
        // either side are solved (or lie outside, where the window's edge bounds instead).
        for r in (stride - 1..rows).step_by(2 * stride) {
            let j = jlo + r;
            let left = if r >= stride {
                opt[j - stride] as usize
            } else {
                ilo
            };
            let right = if r + stride < rows {
                opt[j + stride] as usize
            } else {
                ihi
            };
            let to = right.min(j - 1);
            // Clamped, so round-off in the bounds can never empty the range.
            let from = match lower {
                Some(l) if j >= l.lo && j <= l.hi => left.max(l.opt[j] as usize).min(to),
                _ => left.min(to),
            };
            let (best, arg) = row_min(cells, j, from, to);
            cur[j] = best;
            opt[j] = arg as u16;
        }
        if stride == 1 {
            break;
        }
        stride /= 2;
    }
}

/// The previous layer's split points, valid for segment ends `lo..=hi`: with one segment more,
/// the last segment of an optimal split of the same prefix starts no earlier
/// (`opt[m − 1][j] ≤ opt[m][j]`, from the same quadrangle inequality).
#[derive(Clone, Copy)]
struct Lower<'a> {
    opt: &'a [u16],
    lo: usize,
    hi: usize,
}

/// Weighted mean of each segment `bounds[m]..bounds[m + 1]`, into `out`.
pub(crate) fn segment_means(x: &[f64], w: &[f64], bounds: &[usize], out: &mut Vec<f64>) {
    out.clear();
    for s in bounds.windows(2) {
        let (sw, swx) =
            (s[0]..s[1]).fold((0.0f64, 0.0f64), |(a, b), t| (a + w[t], b + w[t] * x[t]));
        out.push(swx / sw);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Textbook O(k·n²) DP on the raw sums (no centring, no monotonicity): the optimal error
    /// and the cluster boundaries.
    pub(crate) fn brute_force_bounds(x: &[f64], w: &[f64], k: usize) -> (f64, Vec<usize>) {
        let n = x.len();
        let seg = |i: usize, j: usize| {
            let (sw, swx) = (i..j).fold((0.0, 0.0), |(a, b), t| (a + w[t], b + w[t] * x[t]));
            let mean = swx / sw;
            (i..j).map(|t| w[t] * (x[t] - mean).powi(2)).sum::<f64>()
        };
        let mut d = vec![vec![f64::INFINITY; n + 1]; k + 1];
        let mut arg = vec![vec![0usize; n + 1]; k + 1];
        d[0][0] = 0.0;
        for m in 1..=k {
            for j in m..=n {
                for i in (m - 1)..j {
                    let v = d[m - 1][i] + seg(i, j);
                    if v < d[m][j] {
                        d[m][j] = v;
                        arg[m][j] = i;
                    }
                }
            }
        }
        let mut b = vec![0; k + 1];
        b[k] = n;
        for m in (1..=k).rev() {
            b[m - 1] = arg[m][b[m]];
        }
        (d[k][n], b)
    }

    fn brute_force(x: &[f64], w: &[f64], k: usize) -> f64 {
        brute_force_bounds(x, w, k).0
    }

    fn lcg(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64) / ((1u64 << 53) as f64)
        }
    }

    fn sorted_points(seed: u64, n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut r = lcg(seed);
        let mut x: Vec<f64> = (0..n)
            .map(|_| (r() - 0.5) * (1.0 + 10.0 * r().powi(4)))
            .collect();
        x.sort_by(f64::total_cmp);
        x.dedup();
        let w = x.iter().map(|_| 1.0 + (r() * 50.0).floor()).collect();
        (x, w)
    }

    #[test]
    fn dp_matches_brute_force_on_random_inputs() {
        let mut dp = Dp::default();
        let mut b = Vec::new();
        for seed in 0..60u64 {
            let n = 2 + (seed as usize * 37) % 199;
            let (x, w) = sorted_points(seed, n);
            for k in [1usize, 2, 3, 4, 8, 16, 64] {
                if k > x.len() {
                    continue;
                }
                let ours = optimal_bounds(&x, &w, k, &mut dp, &mut b);
                let want = brute_force(&x, &w, k);
                // The DP's error comes from prefix-sum differences: exact to round-off of the
                // total variance.
                let total = brute_force(&x, &w, 1);
                assert!(
                    (ours - want).abs() <= 1e-12 * total + 1e-9 * want,
                    "seed {seed} n {} k {k}: dp {ours} vs brute force {want}",
                    x.len()
                );
                // The boundaries realise the reported error.
                let mut means = Vec::new();
                segment_means(&x, &w, &b, &mut means);
                let sse: f64 = b
                    .windows(2)
                    .zip(&means)
                    .map(|(s, &c)| (s[0]..s[1]).map(|t| w[t] * (x[t] - c).powi(2)).sum::<f64>())
                    .sum();
                assert!(
                    (sse - want).abs() <= 1e-12 * total + 1e-9 * want,
                    "seed {seed} k {k}: partition error {sse} vs {want}"
                );
                assert!(b.windows(2).all(|s| s[0] < s[1]), "empty segment: {b:?}");
            }
        }
    }

    /// Every layer's row minima equal, bit for bit, a plain leftmost scan of the whole window
    /// with the same arithmetic: the monotone bounds the divide and conquer relies on (its own
    /// and the previous layer's) never change an argmin or an error. Inputs include bf16-like
    /// grids (many close values, integer counts) where near-ties are common.
    #[test]
    fn row_minima_equal_the_plain_scan() {
        let mut dp = Dp::default();
        let mut b = Vec::new();
        let mut cases: Vec<(Vec<f64>, Vec<f64>)> = (0..80u64)
            .map(|seed| sorted_points(seed, 2 + (seed as usize * 53) % 400))
            .collect();
        for seed in 0..4u64 {
            // Distinct bf16 values of 4096 Gaussian-ish draws, weighted by their counts.
            let mut r = lcg(1000 + seed);
            let mut v: Vec<f64> = (0..4096)
                .map(|_| {
                    let g = (0..4).map(|_| r()).sum::<f64>() - 2.0;
                    half::bf16::from_f64(0.02 * g).to_f64()
                })
                .collect();
            v.sort_by(f64::total_cmp);
            let (mut x, mut w) = (Vec::new(), Vec::<f64>::new());
            for t in v {
                if x.last() == Some(&t) {
                    *w.last_mut().unwrap() += 1.0;
                } else {
                    x.push(t);
                    w.push(1.0);
                }
            }
            cases.push((x, w));
        }
        for (case, (x, w)) in cases.iter().enumerate() {
            let n = x.len();
            for k in [2usize, 3, 5, 16, 64] {
                if k > n {
                    continue;
                }
                let err = optimal_bounds(x, w, k, &mut dp, &mut b);
                let table = dp.opt[..k * (n + 1)].to_vec();
                // The plain DP: every row scans its whole window, leftmost minimum kept.
                let mut plain = Dp::default();
                prefix_sums(x, w, &mut plain);
                let c = &plain.cells;
                let mut d: Vec<f64> = (0..=n).map(|j| cost(&c[0], &c[j])).collect();
                for m in 2..=k {
                    let mut next = vec![f64::INFINITY; n + 1];
                    let rows = if m == k { n..=n } else { m..=n - (k - m) };
                    for j in rows {
                        let mut arg = 0;
                        for i in m - 1..j.min(n - (k - m)) {
                            let v = d[i] + cost(&c[i], &c[j]);
                            if v < next[j] {
                                next[j] = v;
                                arg = i;
                            }
                        }
                        assert_eq!(
                            table[(m - 1) * (n + 1) + j] as usize,
                            arg,
                            "case {case} n {n} k {k}: layer {m}, segment end {j}"
                        );
                    }
                    d = next;
                }
                assert_eq!(err.to_bits(), d[n].to_bits(), "case {case} n {n} k {k}");
            }
        }
    }

    #[test]
    fn k_equal_n_is_exact() {
        let (x, w) = sorted_points(7, 50);
        let mut dp = Dp::default();
        let mut b = Vec::new();
        let e = optimal_bounds(&x, &w, x.len(), &mut dp, &mut b);
        assert!(e <= 1e-12 * brute_force(&x, &w, 1), "{e}");
        assert_eq!(b, (0..=x.len()).collect::<Vec<_>>());
    }

    #[test]
    fn refining_a_coarse_partition_reaches_the_optimum() {
        let mut dp = Dp::default();
        let (mut b, mut exact) = (Vec::new(), Vec::new());
        for seed in 0..30u64 {
            let (x, w) = sorted_points(100 + seed, 200);
            for k in [2usize, 5, 16] {
                let want = optimal_bounds(&x, &w, k, &mut dp, &mut exact);
                // A deliberately poor start: equal-count segments.
                b.clear();
                b.extend((0..=k).map(|m| m * x.len() / k));
                let got = refine_bounds(&x, &w, 8, 64, &mut dp, &mut b);
                let total = brute_force(&x, &w, 1);
                assert!(
                    got >= want - 1e-12 * total,
                    "seed {seed} k {k}: {got} < optimum {want}"
                );
                // With a window as wide as the data it is the exact DP.
                b.clear();
                b.extend((0..=k).map(|m| m * x.len() / k));
                let full = refine_bounds(&x, &w, x.len(), 1, &mut dp, &mut b);
                assert!((full - want).abs() <= 1e-12 * total, "seed {seed} k {k}");
                assert_eq!(b, exact);
            }
        }
    }
}
