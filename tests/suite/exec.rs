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

// ------------------------------------------------------------------ one-op programs

use anec::exec::ExecError;
use anec::mil::{
    Arg, ConstValue, DType, Function, OpKind, Operation, Program, TensorType, ValueType,
};

/// Builds MIL functions by hand (independently of mil's builder), declaring output types.
#[derive(Default)]
struct G {
    inputs: Vec<(String, ValueType)>,
    ops: Vec<Operation>,
    n: usize,
}

enum A {
    V(String),
    Vs(Vec<String>),
    C(ConstValue),
}

fn v(name: &str) -> A {
    A::V(name.to_string())
}

fn c(cv: ConstValue) -> A {
    A::C(cv)
}

fn ci(vals: &[i32]) -> A {
    A::C(ConstValue::vec_i32(vals))
}

fn cs(vals: i32) -> A {
    A::C(ConstValue::scalar_i32(vals))
}

fn cb(b: bool) -> A {
    A::C(ConstValue::scalar_bool(b))
}

fn tt(dtype: DType, shape: &[usize]) -> TensorType {
    TensorType::new(dtype, &shape.iter().map(|&d| d as u64).collect::<Vec<_>>())
}

impl G {
    fn input(&mut self, name: &str, dtype: DType, shape: &[usize]) -> String {
        self.inputs
            .push((name.into(), ValueType::Tensor(tt(dtype, shape))));
        name.into()
    }

    fn state(&mut self, name: &str, shape: &[usize]) -> String {
        self.inputs
            .push((name.into(), ValueType::State(tt(DType::F16, shape))));
        name.into()
    }

    /// A const op (as coremltools materializes parameters); returns its output name.
    fn cst(&mut self, cv: ConstValue) -> String {
        self.n += 1;
        let name = format!("c{}", self.n);
        let ty = ValueType::Tensor(cv.ty.clone());
        self.ops.push(Operation {
            kind: OpKind::Const,
            name: name.clone(),
            inputs: BTreeMap::new(),
            outputs: vec![(name.clone(), ty)],
            val: Some(cv),
        });
        name
    }

    fn op_n(
        &mut self,
        kind: OpKind,
        params: Vec<(&str, A)>,
        outs: &[(DType, &[usize])],
    ) -> Vec<String> {
        self.n += 1;
        let name = format!("op{}", self.n);
        let mut inputs = BTreeMap::new();
        for (p, a) in params {
            let args = match a {
                A::V(s) => vec![Arg::Var(s)],
                A::Vs(vs) => vs.into_iter().map(Arg::Var).collect(),
                // constexprs take their constants by value; other ops get a const op
                A::C(cv)
                    if matches!(
                        kind,
                        OpKind::ConstexprLutToDense | OpKind::ConstexprBlockwiseShiftScale
                    ) =>
                {
                    vec![Arg::Value(cv)]
                }
                A::C(cv) => vec![Arg::Var(self.cst(cv))],
            };
            inputs.insert(p.to_string(), args);
        }
        let outputs: Vec<(String, ValueType)> = outs
            .iter()
            .enumerate()
            .map(|(i, (d, s))| (format!("{name}_{i}"), ValueType::Tensor(tt(*d, s))))
            .collect();
        let names = outputs.iter().map(|o| o.0.clone()).collect();
        self.ops.push(Operation {
            kind,
            name,
            inputs,
            outputs,
            val: None,
        });
        names
    }

    fn op(
        &mut self,
        kind: OpKind,
        params: Vec<(&str, A)>,
        dtype: DType,
        shape: &[usize],
    ) -> String {
        self.op_n(kind, params, &[(dtype, shape)]).remove(0)
    }

    fn write_state(&mut self, state: &str, data: &str) {
        self.n += 1;
        let mut inputs = BTreeMap::new();
        inputs.insert("input".to_string(), vec![Arg::Var(state.into())]);
        inputs.insert("data".to_string(), vec![Arg::Var(data.into())]);
        self.ops.push(Operation {
            kind: OpKind::WriteState,
            name: format!("ws{}", self.n),
            inputs,
            outputs: vec![],
            val: None,
        });
    }

    fn function(self, outputs: &[&str]) -> Function {
        Function {
            inputs: self.inputs,
            operations: self.ops,
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn program(self, outputs: &[&str]) -> Program {
        Program {
            functions: vec![("main".into(), self.function(outputs))],
            default_function: "main".into(),
        }
    }
}

/// Deterministic pseudo-random values in [-1, 1).
fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn f32t(shape: &[usize], seed: u64) -> Tensor {
    Tensor::f32(shape.to_vec(), rand(shape.iter().product(), seed)).unwrap()
}

fn run_main(
    p: &Program,
    precision: Precision,
    ins: &[(&str, Tensor)],
) -> Result<BTreeMap<String, Tensor>, ExecError> {
    Interpreter::new(p, precision).run("main", &inputs(ins), &mut BTreeMap::new())
}

/// Row-major flat index of `coord` in `shape`.
fn at(shape: &[usize], coord: &[usize]) -> usize {
    coord.iter().zip(shape).fold(0, |acc, (&c, &d)| acc * d + c)
}

/// Every coordinate of `shape` in row-major order.
fn coords(shape: &[usize]) -> Vec<Vec<usize>> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|mut i| {
            let mut c = vec![0; shape.len()];
            for d in (0..shape.len()).rev() {
                c[d] = i % shape[d];
                i /= shape[d];
            }
            c
        })
        .collect()
}

/// f32 math vs naive f32 loops: only summation order differs.
const TOL_F32: f32 = 1e-5;

fn assert_close(got: &Tensor, want: &[f32], tol: f32, what: &str) {
    let g = got.to_f32_vec();
    assert_eq!(g.len(), want.len(), "{what}: element count");
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * b.abs().max(1.0),
            "{what}: element {i}: got {a}, want {b}"
        );
    }
}

#[test]
fn binary_ops_broadcast_like_numpy() {
    let (xs, ys, os) = ([2usize, 1, 3], [4usize, 1], [2usize, 4, 3]);
    let x = f32t(&xs, 1);
    let y = Tensor::f32(ys.to_vec(), vec![0.5, -2.0, 3.0, 0.25]).unwrap();
    let cases: [(OpKind, fn(f32, f32) -> f32); 6] = [
        (OpKind::Add, |a, b| a + b),
        (OpKind::Sub, |a, b| a - b),
        (OpKind::Mul, |a, b| a * b),
        (OpKind::RealDiv, |a, b| a / b),
        (OpKind::Maximum, |a, b| a.max(b)),
        (OpKind::Minimum, |a, b| a.min(b)),
    ];
    for (kind, f) in cases {
        let mut g = G::default();
        g.input("x", DType::F32, &xs);
        g.input("y", DType::F32, &ys);
        let o = g.op(kind, vec![("x", v("x")), ("y", v("y"))], DType::F32, &os);
        let out = run_main(
            &g.program(&[&o]),
            Precision::F32,
            &[("x", x.clone()), ("y", y.clone())],
        )
        .unwrap();
        let (xv, yv) = (x.to_f32_vec(), y.to_f32_vec());
        let want: Vec<f32> = coords(&os)
            .iter()
            .map(|c| f(xv[at(&xs, &[c[0], 0, c[2]])], yv[at(&ys, &[c[1], 0])]))
            .collect();
        assert_close(&out[&o], &want, 0.0, &format!("{kind:?}"));
    }
    let cmps: [(OpKind, fn(f32, f32) -> bool); 5] = [
        (OpKind::Equal, |a, b| a == b),
        (OpKind::Less, |a, b| a < b),
        (OpKind::LessEqual, |a, b| a <= b),
        (OpKind::Greater, |a, b| a > b),
        (OpKind::GreaterEqual, |a, b| a >= b),
    ];
    let x = Tensor::f32(vec![2, 1, 3], vec![0.5, 1.0, -2.0, 3.0, 0.25, 9.0]).unwrap();
    for (kind, f) in cmps {
        let mut g = G::default();
        g.input("x", DType::F32, &xs);
        g.input("y", DType::F32, &ys);
        let o = g.op(kind, vec![("x", v("x")), ("y", v("y"))], DType::Bool, &os);
        let out = run_main(
            &g.program(&[&o]),
            Precision::F32,
            &[("x", x.clone()), ("y", y.clone())],
        )
        .unwrap();
        let (xv, yv) = (x.to_f32_vec(), y.to_f32_vec());
        let want: Vec<bool> = coords(&os)
            .iter()
            .map(|c| f(xv[at(&xs, &[c[0], 0, c[2]])], yv[at(&ys, &[c[1], 0])]))
            .collect();
        assert_eq!(out[&o].as_bool().unwrap(), want.as_slice(), "{kind:?}");
    }
    // shapes that do not broadcast: an error naming the op
    let mut g = G::default();
    g.input("x", DType::F32, &[3]);
    g.input("y", DType::F32, &[4]);
    let o = g.op(
        OpKind::Add,
        vec![("x", v("x")), ("y", v("y"))],
        DType::F32,
        &[4],
    );
    let err = run_main(
        &g.program(&[&o]),
        Precision::F32,
        &[("x", f32t(&[3], 1)), ("y", f32t(&[4], 2))],
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("add op `op1`") && msg.contains("do not broadcast"),
        "{msg}"
    );
}

#[test]
fn unary_ops_and_rsqrt_epsilon() {
    let x = Tensor::f32(vec![5], vec![0.0, 0.25, 1.0, 4.0, 2.5]).unwrap();
    let xn = Tensor::f32(vec![5], vec![-3.0, -0.5, 0.0, 0.5, 3.0]).unwrap();
    let cases: Vec<(OpKind, Vec<(&str, A)>, &Tensor, Box<dyn Fn(f32) -> f32>)> = vec![
        (
            OpKind::Rsqrt,
            vec![("epsilon", c(ConstValue::scalar_f32(0.5)))],
            &x,
            Box::new(|a: f32| 1.0 / (a + 0.5).sqrt()),
        ),
        (OpKind::Sqrt, vec![], &x, Box::new(|a: f32| a.sqrt())),
        (OpKind::Exp, vec![], &xn, Box::new(|a: f32| a.exp())),
        (OpKind::Relu, vec![], &xn, Box::new(|a: f32| a.max(0.0))),
        (
            OpKind::Silu,
            vec![],
            &xn,
            Box::new(|a: f32| a / (1.0 + (-a).exp())),
        ),
    ];
    for (kind, extra, input, f) in cases {
        let mut g = G::default();
        g.input("x", DType::F32, &[5]);
        let mut params = vec![("x", v("x"))];
        params.extend(extra);
        let o = g.op(kind, params, DType::F32, &[5]);
        let out = run_main(&g.program(&[&o]), Precision::F32, &[("x", input.clone())]).unwrap();
        let want: Vec<f32> = input.to_f32_vec().into_iter().map(f).collect();
        assert_close(&out[&o], &want, TOL_F32, &format!("{kind:?}"));
    }
}

fn naive_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut o = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            for l in 0..k {
                o[i * n + j] += a[i * k + l] * b[l * n + j];
            }
        }
    }
    o
}

#[test]
fn matmul_transposes_and_broadcasts_batches() {
    // x [2,1,3,4] (transpose_x → [.., 4, 3]); y [5,4] with transpose_y → [4,5]... use x·yᵀ
    let x = f32t(&[2, 1, 3, 4], 3);
    let y = f32t(&[2, 5, 4], 4);
    let mut g = G::default();
    g.input("x", DType::F32, &[2, 1, 3, 4]);
    g.input("y", DType::F32, &[2, 5, 4]);
    let o = g.op(
        OpKind::Matmul,
        vec![
            ("x", v("x")),
            ("y", v("y")),
            ("transpose_x", cb(false)),
            ("transpose_y", cb(true)),
        ],
        DType::F32,
        &[2, 2, 3, 5],
    );
    let out = run_main(
        &g.program(&[&o]),
        Precision::F32,
        &[("x", x.clone()), ("y", y.clone())],
    )
    .unwrap();
    let (xv, yv) = (x.to_f32_vec(), y.to_f32_vec());
    let mut want = Vec::new();
    for bx in 0..2 {
        for by in 0..2 {
            let a = &xv[bx * 12..(bx + 1) * 12];
            // yᵀ of batch by: [4,5]
            let yt: Vec<f32> = (0..4)
                .flat_map(|k| (0..5).map(move |j| (k, j)))
                .map(|(k, j)| yv[by * 20 + j * 4 + k])
                .collect();
            want.extend(naive_matmul(a, &yt, 3, 4, 5));
        }
    }
    assert_close(&out[&o], &want, TOL_F32, "matmul");

    // transpose_x, rank-2
    let mut g = G::default();
    g.input("x", DType::F32, &[4, 3]);
    g.input("y", DType::F32, &[4, 2]);
    let o = g.op(
        OpKind::Matmul,
        vec![
            ("x", v("x")),
            ("y", v("y")),
            ("transpose_x", cb(true)),
            ("transpose_y", cb(false)),
        ],
        DType::F32,
        &[3, 2],
    );
    let (x, y) = (f32t(&[4, 3], 5), f32t(&[4, 2], 6));
    let out = run_main(
        &g.program(&[&o]),
        Precision::F32,
        &[("x", x.clone()), ("y", y.clone())],
    )
    .unwrap();
    let xv = x.to_f32_vec();
    let xt: Vec<f32> = (0..3)
        .flat_map(|i| (0..4).map(move |k| (i, k)))
        .map(|(i, k)| xv[k * 3 + i])
        .collect();
    assert_close(
        &out[&o],
        &naive_matmul(&xt, &y.to_f32_vec(), 3, 4, 2),
        TOL_F32,
        "matmul tx",
    );
}

#[test]
fn linear_is_x_wt_plus_b() {
    let (x, w, b) = (f32t(&[2, 3, 6], 7), rand(5 * 6, 8), rand(5, 9));
    let mut g = G::default();
    g.input("x", DType::F32, &[2, 3, 6]);
    let o = g.op(
        OpKind::Linear,
        vec![
            ("x", v("x")),
            ("weight", c(ConstValue::from_f32(&[5, 6], &w).unwrap())),
            ("bias", c(ConstValue::from_f32(&[5], &b).unwrap())),
        ],
        DType::F32,
        &[2, 3, 5],
    );
    let out = run_main(&g.program(&[&o]), Precision::F32, &[("x", x.clone())]).unwrap();
    let xv = x.to_f32_vec();
    let want: Vec<f32> = (0..6)
        .flat_map(|r| (0..5).map(move |o| (r, o)))
        .map(|(r, o)| b[o] + (0..6).map(|k| xv[r * 6 + k] * w[o * 6 + k]).sum::<f32>())
        .collect();
    assert_close(&out[&o], &want, TOL_F32, "linear");
}

/// Naive NCHW conv with explicit padding before each spatial dim.
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    bias: &[f32],
    st: [usize; 2],
    dl: [usize; 2],
    pb: [usize; 2],
    os: [usize; 2],
    groups: usize,
) -> Vec<f32> {
    let [n, cin, h, wi] = xs;
    let [cout, cg, kh, kw] = ws;
    let cog = cout / groups;
    let mut out = Vec::new();
    for b in 0..n {
        for co in 0..cout {
            let g = co / cog;
            for oy in 0..os[0] {
                for ox in 0..os[1] {
                    let mut s = bias[co];
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * st[0] + ky * dl[0]) as isize - pb[0] as isize;
                                let ix = (ox * st[1] + kx * dl[1]) as isize - pb[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wi as isize {
                                    continue;
                                }
                                s += w[((co * cg + ci) * kh + ky) * kw + kx]
                                    * x[((b * cin + g * cg + ci) * h + iy as usize) * wi
                                        + ix as usize];
                            }
                        }
                    }
                    out.push(s);
                }
            }
        }
    }
    out
}

#[test]
fn conv_groups_strides_padding_dilation_and_pointwise() {
    struct Case {
        xs: [usize; 4],
        ws: [usize; 4],
        groups: usize,
        st: [usize; 2],
        dl: [usize; 2],
        pad_type: &'static str,
        pad: [usize; 4],
        // expected pad-before and output size
        pb: [usize; 2],
        os: [usize; 2],
    }
    let cases = [
        // 1×1 pointwise (the fast path), as the ANE graphs use it: [1, C, 1, S]
        Case {
            xs: [1, 8, 1, 5],
            ws: [6, 8, 1, 1],
            groups: 1,
            st: [1, 1],
            dl: [1, 1],
            pad_type: "valid",
            pad: [0; 4],
            pb: [0, 0],
            os: [1, 5],
        },
        // grouped 3×3, stride 2, same: out = ceil(7/2) = 4, total pad = 3·2+3−7 = 2 → 1 before
        Case {
            xs: [2, 4, 7, 7],
            ws: [6, 2, 3, 3],
            groups: 2,
            st: [2, 2],
            dl: [1, 1],
            pad_type: "same",
            pad: [0; 4],
            pb: [1, 1],
            os: [4, 4],
        },
        // dilated 3×2, custom pad
        Case {
            xs: [1, 3, 6, 5],
            ws: [2, 3, 3, 2],
            groups: 1,
            st: [1, 2],
            dl: [2, 1],
            pad_type: "custom",
            pad: [1, 0, 2, 1],
            pb: [1, 2],
            os: [3, 4],
        },
        // valid, no padding
        Case {
            xs: [1, 2, 5, 5],
            ws: [3, 2, 2, 3],
            groups: 1,
            st: [1, 1],
            dl: [1, 1],
            pad_type: "valid",
            pad: [0; 4],
            pb: [0, 0],
            os: [4, 3],
        },
    ];
    for (i, cs_) in cases.iter().enumerate() {
        let x = f32t(&cs_.xs, 10 + i as u64);
        let w = rand(cs_.ws.iter().product(), 20 + i as u64);
        let b = rand(cs_.ws[0], 30 + i as u64);
        let mut g = G::default();
        g.input("x", DType::F32, &cs_.xs);
        let os = [cs_.xs[0], cs_.ws[0], cs_.os[0], cs_.os[1]];
        let o = g.op(
            OpKind::Conv,
            vec![
                ("x", v("x")),
                (
                    "weight",
                    c(ConstValue::from_f32(&cs_.ws.map(|d| d as u64), &w).unwrap()),
                ),
                (
                    "bias",
                    c(ConstValue::from_f32(&[cs_.ws[0] as u64], &b).unwrap()),
                ),
                ("strides", ci(&cs_.st.map(|d| d as i32))),
                ("dilations", ci(&cs_.dl.map(|d| d as i32))),
                ("pad_type", c(ConstValue::string(cs_.pad_type))),
                ("pad", ci(&cs_.pad.map(|d| d as i32))),
                ("groups", cs(cs_.groups as i32)),
            ],
            DType::F32,
            &os,
        );
        let out = run_main(&g.program(&[&o]), Precision::F32, &[("x", x.clone())]).unwrap();
        let want = naive_conv(
            &x.to_f32_vec(),
            cs_.xs,
            &w,
            cs_.ws,
            &b,
            cs_.st,
            cs_.dl,
            cs_.pb,
            cs_.os,
            cs_.groups,
        );
        assert_close(&out[&o], &want, TOL_F32, &format!("conv case {i}"));
    }
}

#[test]
fn layer_norm_softmax_and_reductions() {
    let xs = [2usize, 3, 4];
    let x = f32t(&xs, 40);
    let xv = x.to_f32_vec();
    // layer_norm over the last axis with gamma/beta
    let (gm, bt) = (rand(4, 41), rand(4, 42));
    let mut g = G::default();
    g.input("x", DType::F32, &xs);
    let o = g.op(
        OpKind::LayerNorm,
        vec![
            ("x", v("x")),
            ("axes", ci(&[-1])),
            ("gamma", c(ConstValue::from_f32(&[4], &gm).unwrap())),
            ("beta", c(ConstValue::from_f32(&[4], &bt).unwrap())),
            ("epsilon", c(ConstValue::scalar_f32(1e-3))),
        ],
        DType::F32,
        &xs,
    );
    let out = run_main(&g.program(&[&o]), Precision::F32, &[("x", x.clone())]).unwrap();
    let mut want = Vec::new();
    for r in 0..6 {
        let row = &xv[r * 4..r * 4 + 4];
        let m = row.iter().sum::<f32>() / 4.0;
        let var = row.iter().map(|a| (a - m) * (a - m)).sum::<f32>() / 4.0;
        for k in 0..4 {
            want.push((row[k] - m) / (var + 1e-3).sqrt() * gm[k] + bt[k]);
        }
    }
    assert_close(&out[&o], &want, 1e-4, "layer_norm last axis");

    // layer_norm over axes [0, 2] (non-contiguous), no gamma/beta
    let mut g = G::default();
    g.input("x", DType::F32, &xs);
    let o = g.op(
        OpKind::LayerNorm,
        vec![
            ("x", v("x")),
            ("axes", ci(&[0, 2])),
            ("epsilon", c(ConstValue::scalar_f32(1e-5))),
        ],
        DType::F32,
        &xs,
    );
    let out = run_main(&g.program(&[&o]), Precision::F32, &[("x", x.clone())]).unwrap();
    let mut want = vec![0.0; 24];
    for j in 0..3 {
        let idx: Vec<usize> = (0..2)
            .flat_map(|i| (0..4).map(move |k| at(&xs, &[i, j, k])))
            .collect();
        let m = idx.iter().map(|&i| xv[i]).sum::<f32>() / 8.0;
        let var = idx.iter().map(|&i| (xv[i] - m).powi(2)).sum::<f32>() / 8.0;
        for &i in &idx {
            want[i] = (xv[i] - m) / (var + 1e-5).sqrt();
        }
    }
    assert_close(&out[&o], &want, 1e-4, "layer_norm axes [0,2]");

    // softmax over axis 1
    let mut g = G::default();
    g.input("x", DType::F32, &xs);
    let o = g.op(
        OpKind::Softmax,
        vec![("x", v("x")), ("axis", cs(1))],
        DType::F32,
        &xs,
    );
    let out = run_main(&g.program(&[&o]), Precision::F32, &[("x", x.clone())]).unwrap();
    let want: Vec<f32> = coords(&xs)
        .iter()
        .map(|cd| {
            let den: f32 = (0..3).map(|j| xv[at(&xs, &[cd[0], j, cd[2]])].exp()).sum();
            xv[at(&xs, cd)].exp() / den
        })
        .collect();
    assert_close(&out[&o], &want, 1e-5, "softmax");

    // reductions over axes [0, 2], keep_dims both ways; argmax along 2
    for (kind, keep) in [
        (OpKind::ReduceSum, true),
        (OpKind::ReduceMean, false),
        (OpKind::ReduceMax, false),
    ] {
        let mut g = G::default();
        g.input("x", DType::F32, &xs);
        let shape: &[usize] = if keep { &[1, 3, 1] } else { &[3] };
        let o = g.op(
            kind,
            vec![
                ("x", v("x")),
                ("axes", ci(&[0, -1])),
                ("keep_dims", cb(keep)),
            ],
            DType::F32,
            shape,
        );
        let out = run_main(&g.program(&[&o]), Precision::F32, &[("x", x.clone())]).unwrap();
        let want: Vec<f32> = (0..3)
            .map(|j| {
                let vals: Vec<f32> = (0..2)
                    .flat_map(|i| (0..4).map(move |k| (i, k)))
                    .map(|(i, k)| xv[at(&xs, &[i, j, k])])
                    .collect();
                match kind {
                    OpKind::ReduceSum => vals.iter().sum(),
                    OpKind::ReduceMean => vals.iter().sum::<f32>() / 8.0,
                    _ => vals.iter().cloned().fold(f32::MIN, f32::max),
                }
            })
            .collect();
        assert_close(&out[&o], &want, TOL_F32, &format!("{kind:?}"));
    }
    let mut g = G::default();
    g.input("x", DType::F32, &[2, 4]);
    let o = g.op(
        OpKind::ReduceArgmax,
        vec![("x", v("x")), ("axis", cs(-1)), ("keep_dims", cb(false))],
        DType::I32,
        &[2],
    );
    let t = Tensor::f32(vec![2, 4], vec![1.0, 5.0, 5.0, 2.0, -1.0, -3.0, -0.5, -9.0]).unwrap();
    let out = run_main(&g.program(&[&o]), Precision::F32, &[("x", t)]).unwrap();
    assert_eq!(
        out[&o].as_i32().unwrap(),
        [1, 2],
        "argmax takes the first maximum"
    );
}
