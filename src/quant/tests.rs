//! quant's unit tests: the k-means optimum against brute force, fp16 rounding, group sizes, the
//! LUT layout, errors and the report.

use half::f16;
use proptest::prelude::*;

use super::kmeans::tests::brute_force_bounds;
use super::synth::{self, Rng};
use super::*;

fn spec(bits: u32, group: Option<usize>) -> LutSpec {
    LutSpec::new(bits, group).expect("valid spec")
}

/// Random fp16 codes for a `[rows, cols]` matrix drawing from `distinct` base values per row
/// group, so small groups have few distinct values (n ≤ 200 for the brute force).
fn small_f16(rows: usize, cols: usize, distinct: usize, seed: u64) -> Vec<u16> {
    let mut r = Rng::new(seed);
    let pool: Vec<u16> = (0..distinct)
        .map(|_| f16_from_f64_rne(0.05 * r.t5_unit()).to_bits())
        .collect();
    (0..rows * cols)
        .map(|_| pool[(r.next_u64() % distinct as u64) as usize])
        .collect()
}

/// Sorted distinct values with their counts.
fn histogram(vals: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut v = vals.to_vec();
    v.sort_by(f64::total_cmp);
    let (mut x, mut w): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for t in v {
        if x.last() == Some(&t) {
            *w.last_mut().unwrap() += 1.0;
        } else {
            x.push(t);
            w.push(1.0);
        }
    }
    (x, w)
}

/// What coremltools ends with: the optimal partition, its means cast to fp16, no reassignment.
fn coremltools_style_sse(x: &[f64], w: &[f64], bounds: &[usize]) -> f64 {
    bounds
        .windows(2)
        .map(|s| {
            let (sw, swx) = (s[0]..s[1]).fold((0.0, 0.0), |(a, b), t| (a + w[t], b + w[t] * x[t]));
            let c = f16_from_f64_rne(swx / sw).to_f64();
            (s[0]..s[1]).map(|t| w[t] * (x[t] - c).powi(2)).sum::<f64>()
        })
        .sum()
}

/// SSE of a result recomputed from its decoded weights.
fn decoded_sse(p: &Palettized, vals: &[f64]) -> f64 {
    p.decode()
        .iter()
        .zip(vals)
        .map(|(q, v)| (v - q.to_f64()).powi(2))
        .sum()
}

#[test]
fn spec_parses_bits_and_group() {
    assert_eq!(
        LutSpec::parse("6").unwrap(),
        LutSpec {
            bits: 6,
            group: Some(8)
        }
    );
    assert_eq!(
        LutSpec::parse("4,16").unwrap(),
        LutSpec {
            bits: 4,
            group: Some(16)
        }
    );
    assert_eq!(
        LutSpec::parse(" 8 , 4 ").unwrap(),
        LutSpec {
            bits: 8,
            group: Some(4)
        }
    );
    assert_eq!(
        LutSpec::parse("4,tensor").unwrap(),
        LutSpec {
            bits: 4,
            group: None
        }
    );
    assert_eq!(
        "2,1".parse::<LutSpec>().unwrap(),
        LutSpec {
            bits: 2,
            group: Some(1)
        }
    );
    assert_eq!(LutSpec::parse_optional("none").unwrap(), None);
    assert_eq!(
        LutSpec::parse_optional("3").unwrap(),
        Some(LutSpec {
            bits: 3,
            group: Some(8)
        })
    );
    for s in ["6,8", "4,tensor", "1,3"] {
        assert_eq!(LutSpec::parse(s).unwrap().to_string(), s);
    }
    for bits in SUPPORTED_BITS {
        assert_eq!(
            LutSpec::parse(&bits.to_string()).unwrap().entries(),
            1 << bits
        );
    }
}

#[test]
fn spec_errors_name_the_value() {
    let e = LutSpec::parse("5").unwrap_err();
    assert_eq!(e, QuantError::Bits { value: "5".into() });
    let msg = e.to_string();
    assert!(
        msg.contains("\"5\"") && msg.contains("1, 2, 3, 4, 6, 8"),
        "{msg}"
    );
    for (s, want) in [
        ("16", QuantError::Bits { value: "16".into() }),
        ("0", QuantError::Bits { value: "0".into() }),
        (
            "four",
            QuantError::Bits {
                value: "four".into(),
            },
        ),
        ("4,0", QuantError::Group { value: "0".into() }),
        ("4,-8", QuantError::Group { value: "-8".into() }),
        ("4,x", QuantError::Group { value: "x".into() }),
        ("", QuantError::Spec { value: "".into() }),
        (
            "4,8,2",
            QuantError::Spec {
                value: "4,8,2".into(),
            },
        ),
    ] {
        assert_eq!(LutSpec::parse(s).unwrap_err(), want, "input {s:?}");
    }
    assert!(LutSpec::new(7, Some(8)).is_err());
    assert!(LutSpec::new(4, Some(0)).is_err());
}

#[test]
fn palettize_rejects_unsupported_bits() {
    let codes = small_f16(8, 16, 10, 1);
    let bad = LutSpec {
        bits: 5,
        group: Some(8),
    };
    let e = palettize(WeightView::F16Codes(&codes), 8, 16, bad).unwrap_err();
    assert_eq!(e, QuantError::Bits { value: "5".into() });
}

#[test]
fn key_orders_codes_like_their_values() {
    for fmt in [Fmt::F16, Fmt::Bf16] {
        let mut finite: Vec<u16> = (0..=u16::MAX)
            .filter(|&h| h & fmt.exp_mask() != fmt.exp_mask())
            .collect();
        finite.sort_by_key(|&h| key(h));
        for pair in finite.windows(2) {
            let (a, b) = (fmt.value(pair[0]), fmt.value(pair[1]));
            assert!(
                a < b || (a == 0.0 && b == 0.0),
                "{fmt:?}: {:#06x} {a} !< {:#06x} {b}",
                pair[0],
                pair[1]
            );
        }
    }
    for h in 0..=u16::MAX {
        assert_eq!(code_of(key(h)), h);
    }
}

#[test]
fn f16_rounding_is_nearest_even() {
    // Every f32 on a fine stride, against the single-rounding f32 → f16 conversion.
    let mut bits = 0u32;
    while bits < 0x7F80_0000 {
        for sign in [0u32, 0x8000_0000] {
            let x = f32::from_bits(bits | sign);
            let want = f16::from_f32(x);
            let ours = f16_from_f64_rne(x as f64);
            assert_eq!(ours.to_bits(), want.to_bits(), "{x:e}");
        }
        bits += 0x1235;
    }
    // Exact midpoints go to the even neighbour, in the normal and the subnormal range.
    assert_eq!(f16_from_f64_rne(1.0 + 2f64.powi(-11)).to_bits(), 0x3C00);
    assert_eq!(
        f16_from_f64_rne(1.0 + 3.0 * 2f64.powi(-11)).to_bits(),
        0x3C02
    );
    assert_eq!(f16_from_f64_rne(2f64.powi(-25)).to_bits(), 0x0000);
    assert_eq!(f16_from_f64_rne(3.0 * 2f64.powi(-25)).to_bits(), 0x0002);
    // Just above a midpoint (not representable in f32: the double rounding case).
    assert_eq!(
        f16_from_f64_rne(1.0 + 2f64.powi(-11) + 2f64.powi(-40)).to_bits(),
        0x3C01
    );
    assert_eq!(f16_from_f64_rne(65504.0).to_bits(), 0x7BFF);
    assert_eq!(f16_from_f64_rne(65519.99).to_bits(), 0x7BFF);
    assert!(f16_from_f64_rne(65520.0).is_infinite());
    assert_eq!(f16_from_f64_rne(-65520.0).to_bits(), 0xFC00);
}

#[test]
fn error_is_never_below_the_optimum_nor_above_coremltools() {
    // Small groups (n ≤ 200 distinct values): the brute-force optimum bounds our error from below
    // (no LUT can beat it) and coremltools' result (same partition, means cast to fp16, no
    // reassignment) bounds it from above.
    for seed in 0..40u64 {
        let distinct = 20 + (seed as usize * 13) % 180;
        let codes = small_f16(4, 128, distinct, seed);
        let vals = synth::f16_values(&codes);
        for bits in [1u32, 2, 3, 4, 6] {
            let p = palettize(WeightView::F16Codes(&codes), 4, 128, spec(bits, Some(4))).unwrap();
            let (x, w) = histogram(&vals);
            let k = (1usize << bits).min(x.len());
            let (opt, bounds) = brute_force_bounds(&x, &w, k);
            let cml = coremltools_style_sse(&x, &w, &bounds);
            let tol = 1e-9 * opt.max(1e-12);
            assert!(
                p.sse >= opt - tol,
                "seed {seed} bits {bits}: {} < optimum {opt}",
                p.sse
            );
            assert!(
                p.sse <= cml + tol,
                "seed {seed} bits {bits}: {} > coremltools-style {cml}",
                p.sse
            );
            assert!((p.sse - decoded_sse(&p, &vals)).abs() <= 1e-12 + 1e-9 * p.sse);
        }
    }
}

#[test]
fn as_many_entries_as_values_is_lossless() {
    let codes = small_f16(8, 64, 11, 5);
    let p = palettize(WeightView::F16Codes(&codes), 8, 64, spec(4, Some(8))).unwrap();
    assert_eq!(p.sse, 0.0);
    assert_eq!(p.snr_db, f64::INFINITY);
    assert_eq!(p.distinct.max, 11);
    let decoded: Vec<u16> = p.decode().iter().map(|v| v.to_bits()).collect();
    assert_eq!(decoded, codes);
    // Padding repeats the last (largest) value.
    let lut = p.group_lut(0);
    assert!(lut[10..].iter().all(|v| v.to_bits() == lut[10].to_bits()));
    assert!(lut.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn quantizing_the_decoded_tensor_is_idempotent() {
    for (seed, bits, group) in [
        (1u64, 4u32, Some(8)),
        (2, 2, Some(4)),
        (3, 3, None),
        (4, 6, Some(8)),
    ] {
        let f = synth::matrix(16, 512, seed);
        let codes = synth::to_f16_codes(&f);
        let p = palettize(WeightView::F16Codes(&codes), 16, 512, spec(bits, group)).unwrap();
        let dec: Vec<u16> = p.decode().iter().map(|v| v.to_bits()).collect();
        let q = palettize(WeightView::F16Codes(&dec), 16, 512, spec(bits, group)).unwrap();
        let bits_of = |l: &[f16]| l.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits_of(&q.lut), bits_of(&p.lut), "seed {seed} bits {bits}");
        assert_eq!(q.indices, p.indices, "seed {seed} bits {bits}");
        assert_eq!(q.sse, 0.0);
    }
}

#[test]
fn group_size_falls_back_to_a_divisor_of_the_rows() {
    assert_eq!(resolve_group(172, Some(8)), (4, Some((8, 4))));
    assert_eq!(resolve_group(4096, Some(8)), (8, None));
    assert_eq!(resolve_group(7, Some(8)), (7, Some((8, 7))));
    assert_eq!(resolve_group(13, Some(8)), (1, Some((8, 1))));
    assert_eq!(resolve_group(96, None), (96, None));

    let f = synth::matrix(172, 64, 9);
    let p = palettize(WeightView::F32(&f), 172, 64, spec(4, Some(8))).unwrap();
    assert_eq!(
        (p.group_size, p.groups, p.group_adjusted),
        (4, 43, Some((8, 4)))
    );
    assert_eq!(p.lut.len(), 43 * 16);
    let mut r = QuantReport::new();
    r.push("model.layers.0.mlp.down_proj.weight", "down_proj", &p);
    assert_eq!(r.tensors[0].group_requested, Some(8));
    let text = r.to_string();
    assert!(
        text.contains("note: group 8 does not divide 172 rows; used 4 in 1 tensor\n"),
        "{text}"
    );
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let f = synth::matrix(64, 1024, 11);
    let codes = synth::to_f16_codes(&f);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            palettize(WeightView::F16Codes(&codes), 64, 1024, spec(4, Some(8))).unwrap()
        })
    };
    let (a, b) = (run(1), run(3));
    assert_eq!(a.indices, b.indices);
    assert_eq!(
        a.lut.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.lut.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(a.sse.to_bits(), b.sse.to_bits());
    assert_eq!(a.group_snr_db, b.group_snr_db);
}

#[test]
fn bf16_codes_give_the_same_result_as_their_fp16_values() {
    // No values in fp16's subnormal range, where bf16 has more precision than fp16.
    let f: Vec<f32> = synth::matrix(16, 256, 21)
        .into_iter()
        .map(|v| if v.abs() < 1e-4 { 0.0 } else { v })
        .collect();
    let bf = synth::to_bf16_codes(&f);
    let h = synth::bf16_to_f16_codes(&bf);
    let bf_vals: Vec<f64> = bf
        .iter()
        .map(|&c| f32::from_bits((c as u32) << 16) as f64)
        .collect();
    assert!(
        synth::f16_values(&h) == bf_vals,
        "same values in both encodings"
    );
    let a = palettize(WeightView::Bf16Codes(&bf), 16, 256, spec(4, Some(8))).unwrap();
    let b = palettize(WeightView::F16Codes(&h), 16, 256, spec(4, Some(8))).unwrap();
    assert_eq!(a.indices, b.indices);
    assert_eq!(a.lut, b.lut);
    assert_eq!(a.sse, b.sse);
}

#[test]
fn f32_input_is_rounded_to_fp16_first() {
    let f = synth::matrix(8, 300, 4);
    let a = palettize(WeightView::F32(&f), 8, 300, spec(3, Some(8))).unwrap();
    let b = palettize(
        WeightView::F16Codes(&synth::to_f16_codes(&f)),
        8,
        300,
        spec(3, Some(8)),
    )
    .unwrap();
    assert_eq!(a.indices, b.indices);
    assert_eq!(a.lut, b.lut);
}

#[test]
fn default_is_exact_and_coarsening_is_near_exact() {
    // fp16-native 8×4096 groups: ~12k distinct values each. By default the DP runs on the fine
    // bins: the LUT is optimal, never worse than coremltools' exact kmeans1d. With
    // `Options::coarsen` the DP runs on bf16-resolution bins and is then refined on the fine bins.
    let (rows, cols) = (32, 4096);
    let f = synth::matrix(rows, cols, 31);
    let codes = synth::to_f16_codes(&f);
    let vals = synth::f16_values(&codes);
    for bits in [4u32, 6, 8] {
        let exact = palettize(
            WeightView::F16Codes(&codes),
            rows,
            cols,
            spec(bits, Some(8)),
        )
        .unwrap();
        let opts = Options { coarsen: true };
        let coarse = palettize_with(
            WeightView::F16Codes(&codes),
            rows,
            cols,
            spec(bits, Some(8)),
            opts,
        )
        .unwrap();
        assert_eq!(exact.coarsened_groups, 0);
        // LUT8 is never coarsened: 256 narrow segments need boundary moves too long for the
        // windowed refinement.
        assert_eq!(coarse.coarsened_groups, if bits == 8 { 0 } else { 4 });
        let (de, dc) = (exact.decode(), coarse.decode());
        for g in 0..exact.groups {
            let span = g * 8 * cols..(g + 1) * 8 * cols;
            let (x, w) = histogram(&vals[span.clone()]);
            assert!(x.len() > COARSEN_ABOVE);
            let mut dp = kmeans::Dp::default();
            let mut b = Vec::new();
            let opt = kmeans::optimal_bounds(&x, &w, 1 << bits, &mut dp, &mut b);
            let cml = coremltools_style_sse(&x, &w, &b);
            let sse = |dec: &[f16]| -> f64 {
                vals[span.clone()]
                    .iter()
                    .zip(&dec[span.clone()])
                    .map(|(v, q)| (v - q.to_f64()).powi(2))
                    .sum()
            };
            let (e, c) = (sse(&de), sse(&dc));
            assert!(e >= opt * (1.0 - 1e-9), "bits {bits} group {g}");
            assert!(
                e <= cml * (1.0 + 1e-12),
                "bits {bits} group {g}: {e} vs coremltools {cml}"
            );
            // Coarsened: within 0.001 dB of the exact result.
            assert!(
                c <= e * 10f64.powf(0.0001),
                "bits {bits} group {g}: coarse {c} vs exact {e}"
            );
        }
    }
}

#[test]
fn bad_values_are_rejected_with_their_position() {
    let mut bf = synth::to_bf16_codes(&synth::matrix(16, 32, 2));
    bf[3 * 32 + 5] = 0x7FC0; // NaN
    let e = palettize(WeightView::Bf16Codes(&bf), 16, 32, spec(4, Some(8))).unwrap_err();
    assert!(
        matches!(e, QuantError::NonFinite { row: 3, col: 5, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("row 3, col 5"));

    bf[3 * 32 + 5] = 0x0000;
    bf[9 * 32 + 1] = 0x47C3; // 99,840: a finite bf16 beyond fp16's range
    let e = palettize(WeightView::Bf16Codes(&bf), 16, 32, spec(4, Some(8))).unwrap_err();
    assert!(
        matches!(e, QuantError::Overflow { row: 9, col: 1, .. }),
        "{e}"
    );

    let mut h = synth::to_f16_codes(&synth::matrix(8, 8, 3));
    h[63] = 0xFC00; // -inf
    let e = palettize(WeightView::F16Codes(&h), 8, 8, spec(2, None)).unwrap_err();
    assert!(
        matches!(e, QuantError::NonFinite { row: 7, col: 7, .. }),
        "{e}"
    );

    let mut f = synth::matrix(4, 4, 3);
    f[6] = f32::INFINITY;
    f[13] = 1e6;
    let e = palettize(WeightView::F32(&f), 4, 4, spec(2, None)).unwrap_err();
    assert_eq!(
        e,
        QuantError::NonFinite {
            row: 1,
            col: 2,
            value: f32::INFINITY
        }
    );
    f[6] = 0.0;
    let e = palettize(WeightView::F32(&f), 4, 4, spec(2, None)).unwrap_err();
    assert_eq!(
        e,
        QuantError::Overflow {
            row: 3,
            col: 1,
            value: 1e6
        }
    );
}

#[test]
fn shape_mismatches_are_rejected() {
    let f = vec![0.0f32; 12];
    let e = palettize(WeightView::F32(&f), 4, 4, spec(2, None)).unwrap_err();
    assert_eq!(
        e,
        QuantError::Shape {
            rows: 4,
            cols: 4,
            len: 12,
            expected: 16
        }
    );
    let e = palettize(WeightView::F32(&[]), 0, 4, spec(2, None)).unwrap_err();
    assert_eq!(e, QuantError::Empty { rows: 0, cols: 4 });
}

#[test]
fn per_tensor_lut_has_one_group() {
    let f = synth::matrix(24, 100, 8);
    let p = palettize(WeightView::F32(&f), 24, 100, spec(4, None)).unwrap();
    assert_eq!(
        (p.groups, p.group_size, p.group_adjusted, p.lut.len()),
        (1, 24, None, 16)
    );
    // Finer groups can only help.
    let g = palettize(WeightView::F32(&f), 24, 100, spec(4, Some(8))).unwrap();
    assert!(g.snr_db > p.snr_db);
}

#[test]
fn report_flags_tensors_far_below_their_role() {
    let mut r = QuantReport::new();
    let row = |name: &str, role: &str, snr: f64| TensorSummary {
        name: name.into(),
        role: role.into(),
        rows: 8,
        cols: 8,
        bits: 4,
        group_size: 8,
        group_requested: None,
        groups: 1,
        distinct_mean: 60.0,
        distinct_max: 60,
        snr_db: snr,
        worst_group: 0,
        worst_group_snr_db: snr,
        output_error: None,
        seconds: 0.5,
    };
    for (i, snr) in [16.0, 16.5, 17.0, 12.9].into_iter().enumerate() {
        r.add(row(
            &format!("model.layers.{i}.mlp.down_proj.weight"),
            "down_proj",
            snr,
        ));
    }
    r.add(row(
        "model.layers.0.self_attn.q_proj.weight",
        "q_proj",
        14.0,
    ));
    r.add(row("lm_head.weight", "lm_head", f64::INFINITY));
    assert_eq!(r.role_median("down_proj"), Some(16.25));
    assert_eq!(r.flagged.len(), 1);
    assert_eq!(r.flagged[0].name, "model.layers.3.mlp.down_proj.weight");
    assert!((r.flagged[0].below_median_db - 3.35).abs() < 1e-9);
    assert_eq!(
        r.roles.iter().map(|x| x.role.as_str()).collect::<Vec<_>>(),
        ["down_proj", "lm_head", "q_proj"]
    );
    assert_eq!(r.seconds, 3.0);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["flagged"][0]["role"], "down_proj");
    assert_eq!(json["tensors"][5]["snr_db"], serde_json::Value::Null);
    let text = r.to_string();
    assert!(text.contains("flagged: model.layers.3.mlp.down_proj.weight"));
    // Roles, then flags; no per-tensor rows (they are in --json and the CSV); the last line ends.
    assert!(text.ends_with('\n'), "{text:?}");
    let at = |s: &str| {
        text.find(s)
            .unwrap_or_else(|| panic!("{s:?} missing in\n{text}"))
    };
    assert!(
        at("palettized 6 tensors in 3.00 s") < at("  down_proj"),
        "{text}"
    );
    assert!(at("  down_proj") < at("flagged: model.layers.3"), "{text}");
    assert!(
        !text.contains("model.layers.0.mlp.down_proj.weight"),
        "{text}"
    );
    let csv = r.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines.len(),
        1 + 6,
        "a header and one row per tensor:\n{csv}"
    );
    assert!(lines[0].starts_with("name,role,rows,cols,bits,"), "{csv}");
    assert!(
        lines[4].starts_with("model.layers.3.mlp.down_proj.weight,down_proj,8,8,4,8,,1,"),
        "{csv}"
    );
    assert!(lines[6].contains(",inf,"), "lossless lm_head: {csv}");
    let mut none = QuantReport::new();
    none.add(row("lm_head.weight", "lm_head", 20.0));
    assert!(none.to_string().contains("flagged: none"), "{none}");

    assert_eq!(
        QuantReport::role_of("model.layers.3.self_attn.k_proj.weight"),
        "k_proj"
    );
    assert_eq!(QuantReport::role_of("lm_head.weight"), "lm_head");
    assert_eq!(
        QuantReport::role_of("model.embed_tokens.weight"),
        "embed_tokens"
    );
    assert_eq!(QuantReport::role_of("model.norm.weight"), "other");
}

#[test]
fn group_size_notes_are_grouped_by_shape() {
    let mut r = QuantReport::new();
    let row = |name: String, rows: usize, used: usize, requested: Option<usize>| TensorSummary {
        name,
        role: "other".into(),
        rows,
        cols: 8,
        bits: 4,
        group_size: used,
        group_requested: requested,
        groups: rows / used,
        distinct_mean: 16.0,
        distinct_max: 16,
        snr_db: 20.0,
        worst_group: 0,
        worst_group_snr_db: 20.0,
        output_error: None,
        seconds: 0.0,
    };
    for l in 0..8 {
        r.add(row(
            format!("model.layers.{l}.mlp.up_proj.weight"),
            172,
            4,
            Some(8),
        ));
        r.add(row(
            format!("model.layers.{l}.mlp.gate_proj.weight"),
            64,
            8,
            None,
        ));
    }
    r.add(row("lm_head.weight".into(), 90, 6, Some(8)));
    assert_eq!(
        r.notes(),
        [
            "group 8 does not divide 90 rows; used 6 in 1 tensor",
            "group 8 does not divide 172 rows; used 4 in 8 tensors",
        ]
    );
    let text = r.to_string();
    assert_eq!(text.matches("note: ").count(), 2, "{text}");
    assert!(
        !text.contains("up_proj"),
        "no tensor names in the notes:\n{text}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Structural invariants on random small tensors: indices in range, ascending LUTs, every
    /// weight on its nearest entry (ties to the lower), and the SSE it reports.
    #[test]
    fn every_weight_sits_on_its_nearest_entry(
        seed in 0u64..1_000_000,
        bits_i in 0usize..5,
        rows_g in prop::sample::select(vec![(4usize, Some(4usize)), (6, Some(3)), (5, None), (8, Some(2))]),
        cols in 1usize..80,
        distinct in 1usize..300,
    ) {
        let bits = [1u32, 2, 3, 4, 6][bits_i];
        let (rows, group) = rows_g;
        let codes = small_f16(rows, cols, distinct, seed);
        let vals = synth::f16_values(&codes);
        let p = palettize(WeightView::F16Codes(&codes), rows, cols, spec(bits, group)).unwrap();
        let k = 1usize << bits;
        prop_assert_eq!(p.lut.len(), p.groups * k);
        prop_assert!(p.indices.iter().all(|&i| (i as usize) < k));
        for g in 0..p.groups {
            let lut = p.group_lut(g);
            prop_assert!(lut.windows(2).all(|w| w[0] <= w[1]));
            let per = p.group_size * cols;
            let span = g * per..(g + 1) * per;
            for (&v, &i) in vals[span.clone()].iter().zip(&p.indices[span]) {
                let i = i as usize;
                let d = (v - lut[i].to_f64()).abs();
                for (j, e) in lut.iter().enumerate() {
                    let dj = (v - e.to_f64()).abs();
                    prop_assert!(d < dj || (d == dj && i <= j) || (d == dj && lut[i] == lut[j]));
                }
            }
        }
        prop_assert!((p.sse - decoded_sse(&p, &vals)).abs() <= 1e-12 + 1e-9 * p.sse);
    }
}

#[test]
fn unit_importance_gives_the_plain_lut_bit_for_bit() {
    let (rows, cols) = (32, 96);
    let codes = synth::to_bf16_codes(&synth::matrix(rows, cols, 11));
    for bits in [2, 4, 6] {
        let plain = palettize(
            WeightView::Bf16Codes(&codes),
            rows,
            cols,
            spec(bits, Some(8)),
        )
        .unwrap();
        let ones = vec![1.0; cols];
        let w = palettize_weighted(
            WeightView::Bf16Codes(&codes),
            rows,
            cols,
            spec(bits, Some(8)),
            &ones,
        )
        .unwrap();
        assert_eq!(plain.lut, w.lut, "{bits} bits");
        assert_eq!(plain.indices, w.indices, "{bits} bits");
        assert_eq!(plain.sse, w.sse, "{bits} bits");
    }
}

/// The weighted LUT is the exact optimum of Σ s_j·(w − c)² (checked against brute force on
/// a small group), and it trades plain error for error in the important columns.
#[test]
fn weighted_lut_minimizes_the_importance_weighted_error() {
    let (rows, cols) = (4, 40);
    let codes = small_f16(rows, cols, 30, 5);
    let vals: Vec<f64> = codes.iter().map(|&c| f16::from_bits(c).to_f64()).collect();
    // Columns 0..8 matter 100× more than the rest.
    let imp: Vec<f64> = (0..cols).map(|j| if j < 8 { 100.0 } else { 1.0 }).collect();
    let weighted_err = |p: &Palettized| -> f64 {
        let d = p.decode();
        vals.iter()
            .zip(&d)
            .enumerate()
            .map(|(i, (&v, q))| imp[i % cols] * (v - q.to_f64()).powi(2))
            .sum()
    };
    let k = 4;
    let plain = palettize(WeightView::F16Codes(&codes), rows, cols, spec(2, None)).unwrap();
    let w = palettize_weighted(
        WeightView::F16Codes(&codes),
        rows,
        cols,
        spec(2, None),
        &imp,
    )
    .unwrap();
    assert!(
        weighted_err(&w) < weighted_err(&plain),
        "weighting lowers the weighted error"
    );
    assert!(
        w.sse >= plain.sse,
        "and the plain error cannot be lower than the plain optimum"
    );
    // Brute force over the sorted distinct values with summed importance as weights.
    let mut pts: std::collections::BTreeMap<u64, (f64, f64)> = Default::default();
    for (i, &v) in vals.iter().enumerate() {
        let e = pts.entry(v.to_bits() ^ (1 << 63)).or_insert((v, 0.0));
        e.1 += imp[i % cols];
    }
    let mut pts: Vec<(f64, f64)> = pts.into_values().collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (x, ww): (Vec<f64>, Vec<f64>) = pts.into_iter().unzip();
    let (best, _) = brute_force_bounds(&x, &ww, k);
    // The LUT is rounded to fp16 and values re-snapped, so allow fp16 rounding slack.
    assert!(
        weighted_err(&w) <= best * 1.01 + 1e-9,
        "{} vs optimum {best}",
        weighted_err(&w)
    );
}

#[test]
fn importance_must_match_the_columns_and_be_positive() {
    let codes = small_f16(8, 16, 10, 1);
    for imp in [
        vec![1.0; 15],
        {
            let mut v = vec![1.0; 16];
            v[3] = 0.0;
            v
        },
        {
            let mut v = vec![1.0; 16];
            v[0] = f64::NAN;
            v
        },
    ] {
        let err = palettize_weighted(WeightView::F16Codes(&codes), 8, 16, spec(4, Some(8)), &imp)
            .unwrap_err();
        assert!(
            matches!(err, QuantError::Importance { cols: 16, .. }),
            "{err}"
        );
    }
}
