//! exec: the CPU interpreter against coremltools' own packages (with numpy-computed expected
//! values) and, op by op, against naive loop references.

use std::collections::BTreeMap;

use anec::exec::{Interpreter, Precision, Tensor};
use anec::mil;
use half::f16;
use safetensors::SafeTensors;

use super::util::fixture;

// ------------------------------------------------------------------ helpers

fn samples() -> std::path::PathBuf {
    fixture("coreml-samples")
}

fn expected_bytes() -> Vec<u8> {
    std::fs::read(samples().join("expected.safetensors")).expect("expected.safetensors")
}

/// A safetensors entry as an exec tensor (F16/F32 → float, I32 → int32).
fn st(st: &SafeTensors, name: &str) -> Tensor {
    let v = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let shape = v.shape().to_vec();
    let b = v.data();
    match v.dtype() {
        safetensors::Dtype::F16 => {
            let h: Vec<f16> = b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect();
            Tensor::f16(shape, &h).unwrap()
        }
        safetensors::Dtype::F32 => Tensor::f32(
            shape,
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
        .unwrap(),
        safetensors::Dtype::I32 => Tensor::i32(
            shape,
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
        .unwrap(),
        safetensors::Dtype::I8 => {
            Tensor::i32(shape, b.iter().map(|&x| x as i8 as i32).collect()).unwrap()
        }
        safetensors::Dtype::U8 => {
            Tensor::i32(shape, b.iter().map(|&x| x as i32).collect()).unwrap()
        }
        other => panic!("{name}: unexpected dtype {other:?}"),
    }
}

/// max |a − b| over two tensors of the same shape.
fn max_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    a.to_f32_vec()
        .iter()
        .zip(b.to_f32_vec())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs(a: &Tensor) -> f32 {
    a.to_f32_vec().iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn inputs(pairs: &[(&str, Tensor)]) -> BTreeMap<String, Tensor> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

// ------------------------------------------------------------------ coremltools' packages

/// Tolerance against numpy's expected values (relative to max(|expected|, 1)): measured max errors are
/// 3.8e-4 (F32) and 8.5e-4 (F16) on values up to 1.9; one fp16 ulp there is 1e-3, so a wrong
/// block, row or position (errors of O(0.1)) cannot pass.
const SAMPLE_TOL_REL: f32 = 2e-3;

fn check(name: &str, got: &Tensor, want: &Tensor) -> f32 {
    let e = max_err(got, want);
    let scale = max_abs(want).max(1.0);
    println!(
        "{name}: max |Δ| = {e:.3e} (max |expected| = {:.3})",
        max_abs(want)
    );
    assert!(
        e <= SAMPLE_TOL_REL * scale,
        "{name}: max error {e} above {} (scale {scale})",
        SAMPLE_TOL_REL * scale
    );
    e
}

/// prefill (8 rows at prefill_pos) then decode (1 row at decode_pos) on one state, through the
/// given (package, function) pairs; compares outputs and the cache after each step.
fn run_prefill_decode(
    prefill: (&Interpreter, &str),
    decode: (&Interpreter, &str),
    precision: &str,
) {
    let bytes = expected_bytes();
    let e = SafeTensors::deserialize(&bytes).unwrap();
    let mut states = prefill.0.zero_states(prefill.1).unwrap();
    let out = prefill
        .0
        .run(
            prefill.1,
            &inputs(&[("x", st(&e, "prefill_x")), ("pos", st(&e, "prefill_pos"))]),
            &mut states,
        )
        .unwrap();
    check(
        &format!("{precision} prefill y"),
        &out["y"],
        &st(&e, "prefill_y"),
    );
    check(
        &format!("{precision} kv after prefill"),
        &states["kv"],
        &st(&e, "kv_after_prefill"),
    );
    let out = decode
        .0
        .run(
            decode.1,
            &inputs(&[("x", st(&e, "decode_x")), ("pos", st(&e, "decode_pos"))]),
            &mut states,
        )
        .unwrap();
    check(
        &format!("{precision} decode y"),
        &out["y"],
        &st(&e, "decode_y"),
    );
    check(
        &format!("{precision} kv after decode"),
        &states["kv"],
        &st(&e, "kv_after_decode"),
    );
}

#[test]
fn coremltools_single_function_packages_match_numpy() {
    let prefill = mil::read_package(samples().join("prefill.mlpackage")).unwrap();
    let decode = mil::read_package(samples().join("decode.mlpackage")).unwrap();
    for precision in [Precision::F32, Precision::F16] {
        let p = Interpreter::new(&prefill, precision);
        let d = Interpreter::new(&decode, precision);
        let pf = p.program().default_function.clone();
        let df = d.program().default_function.clone();
        run_prefill_decode((&p, &pf), (&d, &df), &format!("{precision:?}"));
    }
}

#[test]
fn coremltools_multifunction_package_shares_state_and_matches_numpy() {
    let model = mil::read_package(samples().join("multifunction.mlpackage")).unwrap();
    for precision in [Precision::F32, Precision::F16] {
        let m = Interpreter::new(&model, precision);
        assert_eq!(m.program().default_function, "decode");
        run_prefill_decode(
            (&m, "prefill"),
            (&m, "decode"),
            &format!("{precision:?} multifunction"),
        );
    }
}

#[test]
fn coremltools_palettized_and_blockwise_weights_decompress_exactly() {
    // The interpreter's constexpr outputs vs the weights the sample was built from.
    let bytes = expected_bytes();
    let e = SafeTensors::deserialize(&bytes).unwrap();
    let model = mil::read_package(samples().join("decode.mlpackage")).unwrap();
    let m = Interpreter::new(&model, Precision::F32);
    let mut states = m.zero_states("main").unwrap();
    let (_, trace) = m
        .run_with_trace(
            "main",
            &inputs(&[("x", st(&e, "decode_x")), ("pos", st(&e, "decode_pos"))]),
            &mut states,
            &|n| n == "w1_palettized" || n == "w2_int4",
        )
        .unwrap();
    let get = |n: &str| trace.iter().find(|(k, _)| k == n).unwrap().1.clone();

    // naive LUT: lut [8,1,16,1], indices [128,64]: row r uses table r / 16
    let lut = st(&e, "w_lut").to_f32_vec();
    let idx = st(&e, "w_lut_indices");
    let (rows, cols) = (idx.shape()[0], idx.shape()[1]);
    let idx = idx.as_i32().unwrap().to_vec();
    let group = rows / 8;
    let naive: Vec<f32> = (0..rows * cols)
        .map(|i| lut[(i / cols / group) * 16 + idx[i] as usize])
        .collect();
    let w1 = get("w1_palettized");
    assert_eq!(w1.shape(), [rows, cols]);
    assert_eq!(w1.to_f32_vec(), naive, "LUT decompression is bit-exact");

    // naive blockwise: data [64,128] int4 values, scale [64,4]: block 32 along columns
    let data = st(&e, "w_q_data");
    let scale = st(&e, "w_q_scale").to_f32_vec();
    let (r2, c2) = (data.shape()[0], data.shape()[1]);
    let data = data.as_i32().unwrap().to_vec();
    let naive: Vec<f32> = (0..r2 * c2)
        .map(|i| f16::from_f32(scale[(i / c2) * 4 + (i % c2) / 32] * data[i] as f32).to_f32())
        .collect();
    let w2 = get("w2_int4");
    assert_eq!(
        w2.to_f32_vec(),
        naive,
        "blockwise shift-scale is exact up to fp16 rounding"
    );
}

#[test]
fn coremltools_flexible_package_runs_every_length() {
    // linear + silu between casts; reference from the package's own weight constants.
    let model = mil::read_package(samples().join("flexible.mlpackage")).unwrap();
    let f = &model.program.functions[0].1;
    let const_f32 = |name: &str| -> (Vec<u64>, Vec<f32>) {
        let op = f.operations.iter().find(|o| o.name == name).unwrap();
        let v = op.val.as_ref().unwrap();
        (v.ty.static_shape().unwrap(), v.to_f32_vec().unwrap())
    };
    let (ws, w) = const_f32("lin_weight_0");
    let (_, b) = const_f32("lin_bias_0");
    let (dout, din) = (ws[0] as usize, ws[1] as usize);
    let fname = model.program.default_function.clone();
    for precision in [Precision::F32, Precision::F16] {
        let m = Interpreter::new(&model, precision);
        for s in [1usize, 5, 16] {
            let x: Vec<f32> = (0..s * din)
                .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                .collect();
            let out = m
                .run(
                    &fname,
                    &inputs(&[("x", Tensor::f32(vec![1, s, din], x.clone()).unwrap())]),
                    &mut BTreeMap::new(),
                )
                .unwrap();
            let y = &out["y"];
            assert_eq!(y.shape(), [1, s, dout]);
            let mut want = Vec::new();
            for r in 0..s {
                for o in 0..dout {
                    let xr = |k: usize| f16::from_f32(x[r * din + k]).to_f32();
                    let z: f32 = (0..din).map(|k| xr(k) * w[o * din + k]).sum::<f32>() + b[o];
                    want.push(z / (1.0 + (-z).exp()));
                }
            }
            let want = Tensor::f32(vec![1, s, dout], want).unwrap();
            check(&format!("{precision:?} flexible S={s}"), y, &want);
        }
    }
}
