//! exec: the CPU interpreter against coremltools' own packages (with numpy-computed expected
//! values) and, op by op, against naive loop references.

use std::collections::BTreeMap;

use anec::exec::{Interpreter, Precision, Tensor};
use anec::mil;
use anec::verify::Converted;
use half::f16;
use safetensors::SafeTensors;

use super::util::{fixture, Expected};

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

/// An op and its naive scalar definition.
type BinCase<T> = (OpKind, fn(f32, f32) -> T);

/// An op, its extra parameters, its input and its naive definition.
type UnaryCase<'a> = (
    OpKind,
    Vec<(&'a str, A)>,
    &'a Tensor,
    Box<dyn Fn(f32) -> f32>,
);

#[test]
fn binary_ops_broadcast_like_numpy() {
    let (xs, ys, os) = ([2usize, 1, 3], [4usize, 1], [2usize, 4, 3]);
    let x = f32t(&xs, 1);
    let y = Tensor::f32(ys.to_vec(), vec![0.5, -2.0, 3.0, 0.25]).unwrap();
    let cases: [BinCase<f32>; 6] = [
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
    let cmps: [BinCase<bool>; 5] = [
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
    let cases: Vec<UnaryCase> = vec![
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

#[test]
fn concat_interleave_and_split() {
    let (a, b) = (f32t(&[2, 2, 3], 50), f32t(&[2, 1, 3], 51));
    let mut g = G::default();
    g.input("a", DType::F32, &[2, 2, 3]);
    g.input("b", DType::F32, &[2, 1, 3]);
    let o = g.op(
        OpKind::Concat,
        vec![
            ("values", A::Vs(vec!["a".into(), "b".into(), "a".into()])),
            ("axis", cs(1)),
            ("interleave", cb(false)),
        ],
        DType::F32,
        &[2, 5, 3],
    );
    let out = run_main(
        &g.program(&[&o]),
        Precision::F32,
        &[("a", a.clone()), ("b", b.clone())],
    )
    .unwrap();
    let (av, bv) = (a.to_f32_vec(), b.to_f32_vec());
    let want: Vec<f32> = coords(&[2, 5, 3])
        .iter()
        .map(|cd| match cd[1] {
            0 | 1 => av[at(&[2, 2, 3], &[cd[0], cd[1], cd[2]])],
            2 => bv[at(&[2, 1, 3], &[cd[0], 0, cd[2]])],
            j => av[at(&[2, 2, 3], &[cd[0], j - 3, cd[2]])],
        })
        .collect();
    assert_close(&out[&o], &want, 0.0, "concat");

    // interleave: out[k] along the axis = values[k % N][k / N]
    let b2 = f32t(&[2, 2, 3], 52);
    let mut g = G::default();
    g.input("a", DType::F32, &[2, 2, 3]);
    g.input("b", DType::F32, &[2, 2, 3]);
    let o = g.op(
        OpKind::Concat,
        vec![
            ("values", A::Vs(vec!["a".into(), "b".into()])),
            ("axis", cs(-2)),
            ("interleave", cb(true)),
        ],
        DType::F32,
        &[2, 4, 3],
    );
    let out = run_main(
        &g.program(&[&o]),
        Precision::F32,
        &[("a", a.clone()), ("b", b2.clone())],
    )
    .unwrap();
    let bv2 = b2.to_f32_vec();
    let want: Vec<f32> = coords(&[2, 4, 3])
        .iter()
        .map(|cd| {
            let src = [cd[0], cd[1] / 2, cd[2]];
            if cd[1] % 2 == 0 {
                av[at(&[2, 2, 3], &src)]
            } else {
                bv2[at(&[2, 2, 3], &src)]
            }
        })
        .collect();
    assert_close(&out[&o], &want, 0.0, "concat interleave");

    // split by sizes along axis 2
    let x = f32t(&[2, 2, 5], 53);
    let mut g = G::default();
    g.input("x", DType::F32, &[2, 2, 5]);
    let outs = g.op_n(
        OpKind::Split,
        vec![("x", v("x")), ("split_sizes", ci(&[2, 3])), ("axis", cs(2))],
        &[(DType::F32, &[2, 2, 2]), (DType::F32, &[2, 2, 3])],
    );
    let out = run_main(
        &g.program(&[&outs[0], &outs[1]]),
        Precision::F32,
        &[("x", x.clone())],
    )
    .unwrap();
    let xv = x.to_f32_vec();
    for (k, (start, len)) in [(0usize, 2usize), (2, 3)].into_iter().enumerate() {
        let want: Vec<f32> = coords(&[2, 2, len])
            .iter()
            .map(|cd| xv[at(&[2, 2, 5], &[cd[0], cd[1], start + cd[2]])])
            .collect();
        assert_close(&out[&outs[k]], &want, 0.0, "split");
    }
    // num_splits
    let mut g = G::default();
    g.input("x", DType::F32, &[2, 2, 5]);
    let outs = g.op_n(
        OpKind::Split,
        vec![("x", v("x")), ("num_splits", cs(2)), ("axis", cs(0))],
        &[(DType::F32, &[1, 2, 5]), (DType::F32, &[1, 2, 5])],
    );
    let out = run_main(
        &g.program(&[&outs[0], &outs[1]]),
        Precision::F32,
        &[("x", x.clone())],
    )
    .unwrap();
    assert_close(&out[&outs[1]], &xv[10..], 0.0, "split num_splits");
}

#[test]
fn slice_by_index_python_semantics_with_masks_and_runtime_begin() {
    let xs = [4usize, 6, 3];
    let x = f32t(&xs, 60);
    let xv = x.to_f32_vec();
    // begin [-3, 5, 1] end [4, 0, 99] stride [1, -2, 1], squeeze axis 2 (begin 1), end_mask on axis 0
    let mut g = G::default();
    g.input("x", DType::F32, &xs);
    g.input("b", DType::I32, &[3]);
    let o = g.op(
        OpKind::SliceByIndex,
        vec![
            ("x", v("x")),
            ("begin", v("b")),
            ("end", ci(&[0, 0, 99])),
            ("stride", ci(&[1, -2, 1])),
            (
                "begin_mask",
                c(ConstValue::vec_bool(&[false, false, false])),
            ),
            ("end_mask", c(ConstValue::vec_bool(&[true, false, false]))),
            (
                "squeeze_mask",
                c(ConstValue::vec_bool(&[false, false, true])),
            ),
        ],
        DType::F32,
        &[3, 3],
    );
    let p = g.program(&[&o]);
    let begin = Tensor::i32(vec![3], vec![-3, 5, 1]).unwrap();
    let out = run_main(&p, Precision::F32, &[("x", x.clone()), ("b", begin)]).unwrap();
    // python: x[1:4, 5:0:-2, 1]
    let mut want = Vec::new();
    for i in 1..4 {
        for j in [5, 3, 1] {
            want.push(xv[at(&xs, &[i, j, 1])]);
        }
    }
    assert_close(&out[&o], &want, 0.0, "slice_by_index");

    // a squeezed index out of range is an error naming the op
    let bad = Tensor::i32(vec![3], vec![0, 0, 3]).unwrap();
    let err = run_main(&p, Precision::F32, &[("x", x.clone()), ("b", bad)]).unwrap_err();
    assert!(err.to_string().contains("slice_by_index op"), "{err}");
}

#[test]
fn slice_update_writes_at_a_runtime_position() {
    // The KV-cache pattern: begin built from a runtime position via concat.
    let cache = f32t(&[2, 1, 8, 4], 70);
    let upd = f32t(&[1, 1, 3, 4], 71);
    let mut g = G::default();
    g.input("cache", DType::F32, &[2, 1, 8, 4]);
    g.input("upd", DType::F32, &[1, 1, 3, 4]);
    g.input("pos", DType::I32, &[1]);
    let zero = g.cst(ConstValue::vec_i32(&[0]));
    let one = g.cst(ConstValue::vec_i32(&[1]));
    let four = g.cst(ConstValue::vec_i32(&[4]));
    let three = g.cst(ConstValue::vec_i32(&[3]));
    let begin = g.op(
        OpKind::Concat,
        vec![
            (
                "values",
                A::Vs(vec![one.clone(), zero.clone(), "pos".into(), zero.clone()]),
            ),
            ("axis", cs(0)),
            ("interleave", cb(false)),
        ],
        DType::I32,
        &[4],
    );
    let endp = g.op(
        OpKind::Add,
        vec![("x", v("pos")), ("y", v(&three))],
        DType::I32,
        &[1],
    );
    let two = g.cst(ConstValue::vec_i32(&[2]));
    let end = g.op(
        OpKind::Concat,
        vec![
            ("values", A::Vs(vec![two, one, endp, four])),
            ("axis", cs(0)),
            ("interleave", cb(false)),
        ],
        DType::I32,
        &[4],
    );
    let o = g.op(
        OpKind::SliceUpdate,
        vec![
            ("x", v("cache")),
            ("update", v("upd")),
            ("begin", v(&begin)),
            ("end", v(&end)),
        ],
        DType::F32,
        &[2, 1, 8, 4],
    );
    let p = g.program(&[&o]);
    for pos in [0i32, 2, 5] {
        let out = run_main(
            &p,
            Precision::F32,
            &[
                ("cache", cache.clone()),
                ("upd", upd.clone()),
                ("pos", Tensor::i32(vec![1], vec![pos]).unwrap()),
            ],
        )
        .unwrap();
        let (cv, uv) = (cache.to_f32_vec(), upd.to_f32_vec());
        let want: Vec<f32> = coords(&[2, 1, 8, 4])
            .iter()
            .map(|cd| {
                let p = pos as usize;
                if cd[0] == 1 && cd[2] >= p && cd[2] < p + 3 {
                    uv[at(&[1, 1, 3, 4], &[0, 0, cd[2] - p, cd[3]])]
                } else {
                    cv[at(&[2, 1, 8, 4], cd)]
                }
            })
            .collect();
        assert_close(&out[&o], &want, 0.0, &format!("slice_update at {pos}"));
    }
    // at position 6 the slice [6, 9) is clipped to 2 rows: the 3-row update no longer fits
    let err = run_main(
        &p,
        Precision::F32,
        &[
            ("cache", cache),
            ("upd", upd),
            ("pos", Tensor::i32(vec![1], vec![6]).unwrap()),
        ],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("slice_update op") && err.to_string().contains("does not match"),
        "{err}"
    );
}

#[test]
fn reshape_transpose_expand_squeeze_tile() {
    let x = f32t(&[2, 3, 4], 80);
    let xv = x.to_f32_vec();
    let mut g = G::default();
    g.input("x", DType::F32, &[2, 3, 4]);
    let r = g.op(
        OpKind::Reshape,
        vec![("x", v("x")), ("shape", ci(&[0, -1, 2]))],
        DType::F32,
        &[2, 6, 2],
    );
    let t = g.op(
        OpKind::Transpose,
        vec![("x", v("x")), ("perm", ci(&[2, 0, 1]))],
        DType::F32,
        &[4, 2, 3],
    );
    let e = g.op(
        OpKind::ExpandDims,
        vec![("x", v("x")), ("axes", ci(&[0, -2]))],
        DType::F32,
        &[1, 2, 3, 1, 4],
    );
    let s = g.op(OpKind::Squeeze, vec![("x", v(&e))], DType::F32, &[2, 3, 4]);
    let s2 = g.op(
        OpKind::Squeeze,
        vec![("x", v(&e)), ("axes", ci(&[3]))],
        DType::F32,
        &[1, 2, 3, 4],
    );
    let tl = g.op(
        OpKind::Tile,
        vec![("x", v("x")), ("reps", ci(&[1, 2, 1]))],
        DType::F32,
        &[2, 6, 4],
    );
    let out = run_main(
        &g.program(&[&r, &t, &e, &s, &s2, &tl]),
        Precision::F32,
        &[("x", x.clone())],
    )
    .unwrap();
    assert_close(&out[&r], &xv, 0.0, "reshape keeps order");
    let want: Vec<f32> = coords(&[4, 2, 3])
        .iter()
        .map(|cd| xv[at(&[2, 3, 4], &[cd[1], cd[2], cd[0]])])
        .collect();
    assert_close(&out[&t], &want, 0.0, "transpose");
    assert_eq!(out[&e].shape(), [1, 2, 3, 1, 4]);
    assert_close(&out[&s], &xv, 0.0, "squeeze all");
    assert_eq!(out[&s2].shape(), [1, 2, 3, 4]);
    let want: Vec<f32> = coords(&[2, 6, 4])
        .iter()
        .map(|cd| xv[at(&[2, 3, 4], &[cd[0], cd[1] % 3, cd[2]])])
        .collect();
    assert_close(&out[&tl], &want, 0.0, "tile");
}

#[test]
fn gather_axis_batch_dims_and_out_of_range() {
    // embeddings-style: table [V, H], ids [1, S] → [1, S, H]
    let table = f32t(&[10, 4], 90);
    let tv = table.to_f32_vec();
    let mut g = G::default();
    g.input("ids", DType::I32, &[1, 3]);
    g.input("t", DType::F32, &[10, 4]);
    let o = g.op(
        OpKind::Gather,
        vec![
            ("x", v("t")),
            ("indices", v("ids")),
            ("axis", cs(0)),
            ("batch_dims", cs(0)),
        ],
        DType::F32,
        &[1, 3, 4],
    );
    let p = g.program(&[&o]);
    let out = run_main(
        &p,
        Precision::F32,
        &[
            ("t", table.clone()),
            ("ids", Tensor::i32(vec![1, 3], vec![7, 0, 9]).unwrap()),
        ],
    )
    .unwrap();
    let want: Vec<f32> = [7usize, 0, 9]
        .iter()
        .flat_map(|&i| tv[i * 4..i * 4 + 4].to_vec())
        .collect();
    assert_close(&out[&o], &want, 0.0, "gather axis 0");
    for bad in [10, -1] {
        let err = run_main(
            &p,
            Precision::F32,
            &[
                ("t", table.clone()),
                ("ids", Tensor::i32(vec![1, 3], vec![1, bad, 2]).unwrap()),
            ],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("gather op") && msg.contains(&format!("index {bad} out of range")),
            "{msg}"
        );
    }
    // axis 2 with batch_dims 1: x [2, 3, 5], indices [2, 4] → [2, 3, 4]
    let x = f32t(&[2, 3, 5], 91);
    let xv = x.to_f32_vec();
    let ind = vec![4, 0, 0, 2, 1, 3, 3, 4];
    let mut g = G::default();
    g.input("x", DType::F32, &[2, 3, 5]);
    g.input("i", DType::I32, &[2, 4]);
    let o = g.op(
        OpKind::Gather,
        vec![
            ("x", v("x")),
            ("indices", v("i")),
            ("axis", cs(2)),
            ("batch_dims", cs(1)),
        ],
        DType::F32,
        &[2, 3, 4],
    );
    let out = run_main(
        &g.program(&[&o]),
        Precision::F32,
        &[
            ("x", x),
            ("i", Tensor::i32(vec![2, 4], ind.clone()).unwrap()),
        ],
    )
    .unwrap();
    let want: Vec<f32> = coords(&[2, 3, 4])
        .iter()
        .map(|cd| xv[at(&[2, 3, 5], &[cd[0], cd[1], ind[cd[0] * 4 + cd[2]] as usize])])
        .collect();
    assert_close(&out[&o], &want, 0.0, "gather batch_dims 1");
}

#[test]
fn cast_select_band_part_fill() {
    let x = Tensor::f32(vec![2, 3], vec![-1.7, 0.0, 2.9, 70000.0, -0.2, 3.0]).unwrap();
    let mut g = G::default();
    g.input("x", DType::F32, &[2, 3]);
    let i = g.op(
        OpKind::Cast,
        vec![("x", v("x")), ("dtype", c(ConstValue::string("int32")))],
        DType::I32,
        &[2, 3],
    );
    let b = g.op(
        OpKind::Cast,
        vec![("x", v("x")), ("dtype", c(ConstValue::string("bool")))],
        DType::Bool,
        &[2, 3],
    );
    let h = g.op(
        OpKind::Cast,
        vec![("x", v("x")), ("dtype", c(ConstValue::string("fp16")))],
        DType::F16,
        &[2, 3],
    );
    let zero = g.cst(ConstValue::scalar_f32(0.0));
    let sel = g.op(
        OpKind::Select,
        vec![("cond", v(&b)), ("a", v("x")), ("b", v(&zero))],
        DType::F32,
        &[2, 3],
    );
    let bp = g.op(
        OpKind::BandPart,
        vec![("x", v("x")), ("lower", cs(0)), ("upper", cs(1))],
        DType::F32,
        &[2, 3],
    );
    let fl = g.op(
        OpKind::Fill,
        vec![
            ("shape", ci(&[2, 2])),
            ("value", c(ConstValue::scalar_f32(-3.5))),
        ],
        DType::F32,
        &[2, 2],
    );
    let out = run_main(
        &g.program(&[&i, &b, &h, &sel, &bp, &fl]),
        Precision::F16,
        &[("x", x.clone())],
    )
    .unwrap();
    assert_eq!(
        out[&i].as_i32().unwrap(),
        [-1, 0, 2, 70000, 0, 3],
        "cast truncates toward zero"
    );
    assert_eq!(
        out[&b].as_bool().unwrap(),
        [true, false, true, true, true, true]
    );
    assert_eq!(
        out[&h].to_f32_vec(),
        vec![-1.7f32, 0.0, 2.9, 70000.0, -0.2, 3.0]
            .into_iter()
            .map(|v| f16::from_f32(v).to_f32())
            .collect::<Vec<_>>()
    );
    assert!(
        out[&h].to_f32_vec()[3].is_infinite(),
        "70000 overflows fp16"
    );
    assert_eq!(
        out[&sel].to_f32_vec(),
        x.to_f32_vec()
            .into_iter()
            .map(|v| if v != 0.0 { v } else { 0.0 })
            .collect::<Vec<_>>()
    );
    // band_part lower 0, upper 1: keep (r, c) with c - r in [0, 1]
    assert_eq!(out[&bp].to_f32_vec(), vec![-1.7, 0.0, 0.0, 0.0, -0.2, 3.0]);
    assert_eq!(out[&fl].to_f32_vec(), vec![-3.5; 4]);
}

/// Per-grouped-channel palettization of a conv weight `[Cout, Cin, 1, 1]`:
/// `lut [Cout/G, 1, 1, 1, 2^bits, 1]`, rows `g·G .. g·G+G−1` use table g.
fn lut_case(bits: u32, cout: usize, cin: usize, group: usize) {
    let entries = 1usize << bits;
    let tables = cout / group;
    let lut: Vec<f16> = rand(tables * entries, 100 + bits as u64)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let idx: Vec<u8> = (0..cout * cin)
        .map(|i| ((i * 7 + i / 3) % entries) as u8)
        .collect();
    let shape = [cout as u64, cin as u64, 1, 1];
    let mut g = G::default();
    g.input("x", DType::F16, &[1, cin, 1, 3]);
    let w = g.op(
        OpKind::ConstexprLutToDense,
        vec![
            (
                "indices",
                c(ConstValue::from_indices(bits, &shape, &idx).unwrap()),
            ),
            (
                "lut",
                c(
                    ConstValue::from_f16(&[tables as u64, 1, 1, 1, entries as u64, 1], &lut)
                        .unwrap(),
                ),
            ),
        ],
        DType::F16,
        &[cout, cin, 1, 1],
    );
    let y = g.op(
        OpKind::Conv,
        vec![("x", v("x")), ("weight", v(&w))],
        DType::F16,
        &[1, cout, 1, 3],
    );
    let p = g.program(&[&w, &y]);
    let x = f32t(&[1, cin, 1, 3], 200);
    let out = run_main(&p, Precision::F32, &[("x", x.clone())]).unwrap();
    let want: Vec<f32> = (0..cout * cin)
        .map(|i| lut[(i / cin / group) * entries + idx[i] as usize].to_f32())
        .collect();
    assert_eq!(
        out[&w].to_f32_vec(),
        want,
        "{bits}-bit LUT decompression is exact"
    );
    let xv = x.to_f32_vec();
    let yw: Vec<f32> = (0..cout)
        .flat_map(|o| (0..3).map(move |s| (o, s)))
        .map(|(o, s)| (0..cin).map(|k| want[o * cin + k] * xv[k * 3 + s]).sum())
        .collect();
    assert_close(&out[&y], &yw, 1e-5, "conv over the palettized weight");
}

#[test]
fn lut_to_dense_4bit_and_6bit_per_grouped_channel() {
    lut_case(4, 64, 32, 16);
    lut_case(6, 32, 16, 8);
    lut_case(2, 8, 4, 8); // per-tensor: one table
}

#[test]
fn lut_to_dense_vector_palettization() {
    // coremltools' docstring case 2.1: indices uint1 [2,2,2], lut [1,1,1,2,3], vector_axis 1
    let idx = [0u8, 0, 1, 0, 1, 1, 0, 0];
    let lut = [10.0f32, 11.0, 12.0, 20.0, 21.0, 22.0];
    let mut g = G::default();
    let w = g.op(
        OpKind::ConstexprLutToDense,
        vec![
            (
                "indices",
                c(ConstValue::from_indices(1, &[2, 2, 2], &idx).unwrap()),
            ),
            (
                "lut",
                c(ConstValue::from_f32(&[1, 1, 1, 2, 3], &lut).unwrap()),
            ),
            ("vector_axis", cs(1)),
        ],
        DType::F32,
        &[2, 6, 2],
    );
    let out = run_main(&g.program(&[&w]), Precision::F32, &[]).unwrap();
    #[rustfmt::skip]
    let want = [10., 10., 11., 11., 12., 12., 20., 10., 21., 11., 22., 12.,
                20., 20., 21., 21., 22., 22., 10., 10., 11., 11., 12., 12.];
    assert_eq!(out[&w].to_f32_vec(), want);
}

#[test]
fn blockwise_shift_scale_with_offset() {
    // uint8 data [4, 6], scale/offset [2, 3]: blocks of 2×2
    let data: Vec<u8> = (0..24).map(|i| (i * 11 % 256) as u8).collect();
    let scale = [0.5f32, -1.0, 0.25, 2.0, 0.125, 1.0];
    let offset: Vec<u8> = vec![3, 100, 0, 255, 7, 8];
    let mut g = G::default();
    let w = g.op(
        OpKind::ConstexprBlockwiseShiftScale,
        vec![
            (
                "data",
                c(ConstValue::from_bytes(DType::U8, &[4, 6], data.clone()).unwrap()),
            ),
            ("scale", c(ConstValue::from_f32(&[2, 3], &scale).unwrap())),
            (
                "offset",
                c(ConstValue::from_bytes(DType::U8, &[2, 3], offset.clone()).unwrap()),
            ),
        ],
        DType::F32,
        &[4, 6],
    );
    let out = run_main(&g.program(&[&w]), Precision::F32, &[]).unwrap();
    let want: Vec<f32> = (0..24)
        .map(|i| {
            let (r, c) = (i / 6, i % 6);
            let b = (r / 2) * 3 + c / 2;
            scale[b] * (data[i] as f32 - offset[b] as f32)
        })
        .collect();
    assert_eq!(out[&w].to_f32_vec(), want);
}

/// A function that appends `x` (one fp16 row) to a cache state at `pos` and returns the sum of
/// the cache after the write: `read_state → slice_update → write_state → read_state`.
fn cache_function(rows: usize) -> Function {
    let mut g = G::default();
    g.input("x", DType::F16, &[1, rows, 4]);
    g.input("pos", DType::I32, &[1]);
    g.state("cache", &[1, 8, 4]);
    let cur = g.op(
        OpKind::ReadState,
        vec![("input", v("cache"))],
        DType::F16,
        &[1, 8, 4],
    );
    let z = g.cst(ConstValue::vec_i32(&[0]));
    let one = g.cst(ConstValue::vec_i32(&[1]));
    let four = g.cst(ConstValue::vec_i32(&[4]));
    let nrows = g.cst(ConstValue::vec_i32(&[rows as i32]));
    let begin = g.op(
        OpKind::Concat,
        vec![
            ("values", A::Vs(vec![z.clone(), "pos".into(), z.clone()])),
            ("axis", cs(0)),
            ("interleave", cb(false)),
        ],
        DType::I32,
        &[3],
    );
    let e = g.op(
        OpKind::Add,
        vec![("x", v("pos")), ("y", v(&nrows))],
        DType::I32,
        &[1],
    );
    let end = g.op(
        OpKind::Concat,
        vec![
            ("values", A::Vs(vec![one, e, four])),
            ("axis", cs(0)),
            ("interleave", cb(false)),
        ],
        DType::I32,
        &[3],
    );
    let upd = g.op(
        OpKind::SliceUpdate,
        vec![
            ("x", v(&cur)),
            ("update", v("x")),
            ("begin", v(&begin)),
            ("end", v(&end)),
        ],
        DType::F16,
        &[1, 8, 4],
    );
    g.write_state("cache", &upd);
    let after = g.op(
        OpKind::ReadState,
        vec![("input", v("cache"))],
        DType::F16,
        &[1, 8, 4],
    );
    let s = g.op(
        OpKind::ReduceSum,
        vec![
            ("x", v(&after)),
            ("axes", ci(&[1, 2])),
            ("keep_dims", cb(false)),
        ],
        DType::F16,
        &[1],
    );
    let mut f = g.function(&[]);
    f.outputs = vec![s];
    f
}

#[test]
fn state_persists_across_calls_and_functions_share_it() {
    let p = Program {
        functions: vec![
            ("infer".into(), cache_function(1)),
            ("prefill".into(), cache_function(3)),
        ],
        default_function: "infer".into(),
    };
    let m = Interpreter::new(&p, Precision::F16);
    let mut states = m.zero_states("infer").unwrap();
    assert_eq!(states["cache"].shape(), [1, 8, 4]);
    let rows3 = Tensor::f16_from_f32(vec![1, 3, 4], &[1.0; 12]).unwrap();
    let row = Tensor::f16_from_f32(vec![1, 1, 4], &[0.5; 4]).unwrap();
    let pos = |p: i32| Tensor::i32(vec![1], vec![p]).unwrap();
    let o = m
        .run(
            "prefill",
            &inputs(&[("x", rows3), ("pos", pos(0))]),
            &mut states,
        )
        .unwrap();
    assert_eq!(o.values().next().unwrap().to_f32_vec(), [12.0]);
    let o = m
        .run(
            "infer",
            &inputs(&[("x", row.clone()), ("pos", pos(3))]),
            &mut states,
        )
        .unwrap();
    assert_eq!(
        o.values().next().unwrap().to_f32_vec(),
        [14.0],
        "infer sees prefill's rows"
    );
    let o = m
        .run(
            "infer",
            &inputs(&[("x", row.clone()), ("pos", pos(4))]),
            &mut states,
        )
        .unwrap();
    assert_eq!(
        o.values().next().unwrap().to_f32_vec(),
        [16.0],
        "and its own earlier write"
    );
    let c = states["cache"].to_f32_vec();
    assert_eq!(&c[..12], &[1.0; 12]);
    assert_eq!(&c[12..20], &[0.5; 8]);
    assert_eq!(&c[20..], &[0.0; 12]);

    // a failed run leaves the state untouched
    let before = states["cache"].clone();
    assert!(m
        .run(
            "infer",
            &inputs(&[("x", row.clone()), ("pos", pos(8))]),
            &mut states
        )
        .is_err());
    assert_eq!(states["cache"], before);

    // missing state, unknown function, missing input: typed errors naming the thing
    let err = m
        .run(
            "infer",
            &inputs(&[("x", row.clone()), ("pos", pos(0))]),
            &mut BTreeMap::new(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, ExecError::MissingState { name, .. } if name == "cache"),
        "{err}"
    );
    let err = m.run("decode", &inputs(&[]), &mut states).unwrap_err();
    assert!(
        matches!(&err, ExecError::UnknownFunction { name, .. } if name == "decode"),
        "{err}"
    );
    let err = m
        .run("infer", &inputs(&[("x", row)]), &mut states)
        .unwrap_err();
    assert!(
        matches!(&err, ExecError::MissingInput { name, .. } if name == "pos"),
        "{err}"
    );
}

#[test]
fn write_state_must_match_the_declared_type() {
    let mut g = G::default();
    g.input("x", DType::F16, &[1, 4, 4]);
    g.state("cache", &[1, 8, 4]);
    g.write_state("cache", "x");
    let mut f = g.function(&[]);
    f.outputs = vec!["x".into()];
    let p = Program {
        functions: vec![("main".into(), f)],
        default_function: "main".into(),
    };
    let m = Interpreter::new(&p, Precision::F32);
    let mut states = m.zero_states("main").unwrap();
    let err = m
        .run(
            "main",
            &inputs(&[(
                "x",
                Tensor::f16_from_f32(vec![1, 4, 4], &[1.0; 16]).unwrap(),
            )]),
            &mut states,
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("write_state op") && msg.contains("state `cache`"),
        "{msg}"
    );
}

#[test]
fn f16_precision_rounds_every_op_output() {
    // 1 + 2^-11 is not an fp16 value: F16 rounds it (ties to even → 1), F32 keeps it.
    let mut g = G::default();
    g.input("x", DType::F16, &[2]);
    let eps = g.cst(
        ConstValue::from_f16(&[2], &[f16::from_f32(0.00048828125), f16::from_f32(0.0)]).unwrap(),
    );
    let s = g.op(
        OpKind::Add,
        vec![("x", v("x")), ("y", v(&eps))],
        DType::F16,
        &[2],
    );
    let m = g.op(
        OpKind::Mul,
        vec![("x", v(&s)), ("y", v(&s))],
        DType::F16,
        &[2],
    );
    let p = g.program(&[&s, &m]);
    let x = Tensor::f16_from_f32(vec![2], &[1.0, 300.0]).unwrap();
    let o16 = run_main(&p, Precision::F16, &[("x", x.clone())]).unwrap();
    let o32 = run_main(&p, Precision::F32, &[("x", x)]).unwrap();
    assert_eq!(o16[&s].to_f32_vec(), [1.0, 300.0]);
    assert_eq!(o32[&s].to_f32_vec(), [1.0 + 2f32.powi(-11), 300.0]);
    // 300² = 90000 overflows fp16
    assert!(o16[&m].to_f32_vec()[1].is_infinite());
    assert_eq!(o32[&m].to_f32_vec()[1], 90000.0);
}

#[test]
fn declared_output_types_are_checked() {
    let mut g = G::default();
    g.input("x", DType::F32, &[2, 3]);
    let o = g.op(
        OpKind::Transpose,
        vec![("x", v("x")), ("perm", ci(&[1, 0]))],
        DType::F32,
        &[2, 3],
    );
    let err = run_main(
        &g.program(&[&o]),
        Precision::F32,
        &[("x", f32t(&[2, 3], 1))],
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("transpose op")
            && msg.contains("declared fp32 [2, 3] but computed fp32 [3, 2]"),
        "{msg}"
    );
}

// ------------------------------------------------------------------ through mil's builder and package files

/// A chunk-like function built with mil's `FunctionBuilder`: a palettized 1×1 conv over
/// `x [1, C, 1, S]`, the result written into a cache state at `pos`, then a softmax over the
/// channels of `y` plus the cache's total.
fn chunk_like(seq: u64, indices: &ConstValue, lut: &ConstValue) -> mil::Result<Function> {
    use mil::{FunctionBuilder, SliceParams};
    let mut b = FunctionBuilder::new();
    let x = b.input("x", TensorType::new(DType::F16, &[1, 8, 1, seq]))?;
    let pos = b.input("pos", TensorType::new(DType::I32, &[1]))?;
    let kv = b.state("kv", TensorType::new(DType::F16, &[1, 8, 1, 6]))?;
    let w = b.lut_to_dense("w", indices.clone(), lut.clone())?;
    let y = b.conv("y", &x, &w, None)?;
    let cur = b.read_state("cur", &kv)?;
    let z = b.constant("z", ConstValue::vec_i32(&[0, 0, 0]))?;
    let begin = b.concat("begin", &[&z, &pos], 0)?;
    let ext = b.constant("ext", ConstValue::vec_i32(&[1, 8, 1, seq as i32]))?;
    let end = b.add("end", &begin, &ext)?;
    let upd = b.slice_update("upd", &cur, &y, &begin, &end, &SliceParams::default())?;
    b.write_state("kv_write", &kv, &upd)?;
    let after = b.read_state("after", &kv)?;
    let total = b.reduce_sum("total", &after, &[1, 2, 3], false)?;
    let probs = b.softmax("probs", &y, 1)?;
    b.output(&probs)?;
    b.output(&total)?;
    b.finish()
}

#[test]
fn builder_program_runs_the_same_before_and_after_a_package_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chunk.mlpackage");
    let lut_vals: Vec<f16> = rand(2 * 16, 300).into_iter().map(f16::from_f32).collect();
    let idx: Vec<u8> = (0..64).map(|i| ((i * 5 + 3) % 16) as u8).collect();
    let indices = ConstValue::from_indices(4, &[8, 8, 1, 1], &idx).unwrap();
    let lut = ConstValue::from_f16(&[2, 1, 1, 1, 16, 1], &lut_vals).unwrap();
    let program = |indices: &ConstValue, lut: &ConstValue| Program {
        functions: vec![
            ("infer".into(), chunk_like(1, indices, lut).unwrap()),
            ("prefill".into(), chunk_like(3, indices, lut).unwrap()),
        ],
        default_function: "infer".into(),
    };
    let in_memory = program(&indices, &lut);
    let mut w = mil::PackageWriter::create(&path, false).unwrap();
    let (si, sl) = (
        w.store(indices.clone()).unwrap(),
        w.store(lut.clone()).unwrap(),
    );
    w.finish(&mil::Model::new(program(&si, &sl))).unwrap();
    let read = mil::read_package(&path).unwrap();

    let dense: Vec<f32> = (0..64)
        .map(|i| lut_vals[(i / 8 / 4) * 16 + idx[i] as usize].to_f32())
        .collect();
    for precision in [Precision::F32, Precision::F16] {
        let a = Interpreter::new(&in_memory, precision);
        let b = Interpreter::new(&read, precision);
        let mut sa = a.zero_states("infer").unwrap();
        let mut sb = b.zero_states("infer").unwrap();
        let mut total = 0f32;
        for (f, seq, pos) in [("prefill", 3usize, 0i32), ("infer", 1, 3), ("infer", 1, 4)] {
            let x =
                Tensor::f16_from_f32(vec![1, 8, 1, seq], &rand(8 * seq, 310 + pos as u64)).unwrap();
            let ins = inputs(&[
                ("x", x.clone()),
                ("pos", Tensor::i32(vec![1], vec![pos]).unwrap()),
            ]);
            let oa = a.run(f, &ins, &mut sa).unwrap();
            let ob = b.run(f, &ins, &mut sb).unwrap();
            assert_eq!(
                oa, ob,
                "{precision:?} {f}: same outputs from memory and from the package"
            );
            assert_eq!(sa, sb);
            // naive: y = W·x per position; softmax over channels; cache total accumulates y
            let xv = x.to_f32_vec();
            let mut probs = vec![0f32; 8 * seq];
            for s in 0..seq {
                let y: Vec<f32> = (0..8)
                    .map(|o| (0..8).map(|k| dense[o * 8 + k] * xv[k * seq + s]).sum())
                    .collect();
                total += y.iter().sum::<f32>();
                let m = y.iter().cloned().fold(f32::MIN, f32::max);
                let den: f32 = y.iter().map(|v| (v - m).exp()).sum();
                for o in 0..8 {
                    probs[o * seq + s] = (y[o] - m).exp() / den;
                }
            }
            let tol = if precision == Precision::F16 {
                2e-3
            } else {
                1e-5
            };
            let probs_name = oa.keys().find(|k| k.starts_with("probs")).unwrap();
            let total_name = oa.keys().find(|k| k.starts_with("total")).unwrap();
            assert_close(
                &oa[probs_name],
                &probs,
                tol,
                &format!("{precision:?} {f} probs"),
            );
            assert_close(
                &oa[total_name],
                &[total],
                tol * 10.0,
                &format!("{precision:?} {f} cache total"),
            );
        }
    }
}

// ------------------------------------------------------------------ opt-in: anec's own output

/// Runs a converted output folder (`ANEC_EXEC_E2E_DIR`, converted from the fixture named by
/// `ANEC_EXEC_E2E_MODEL`) through the runner protocol of ANE-CONTRACT.md (`verify::Converted`:
/// full `prefill` batches, then `infer`) and compares the logits at every position with
/// transformers' reference. Opt-in (`cargo test -- --ignored`) because the converter is not part
/// of this module: it prints the numbers and checks top-1 agreement (`ANEC_EXEC_E2E_MIN_TOP1`,
/// default 0.9; `ANEC_EXEC_E2E_PRECISION=f32` for fp32 math).
#[test]
#[ignore]
fn converted_model_matches_transformers_reference() {
    let (Ok(dir), Ok(model)) = (
        std::env::var("ANEC_EXEC_E2E_DIR"),
        std::env::var("ANEC_EXEC_E2E_MODEL"),
    ) else {
        eprintln!("set ANEC_EXEC_E2E_DIR and ANEC_EXEC_E2E_MODEL");
        return;
    };
    let precision = match std::env::var("ANEC_EXEC_E2E_PRECISION").as_deref() {
        Ok("f32") => Precision::F32,
        _ => Precision::F16,
    };
    let mut conv = Converted::open(std::path::Path::new(&dir), precision).unwrap();
    let fx = Expected::open(&model);
    let t0 = std::time::Instant::now();
    let mut agree = 0;
    let mut total = 0;
    let mut max_d = 0f32;
    for s in 0..fx.count() {
        let want = fx.logits(&format!("logits_{s}"));
        let run = conv.prompt(&fx.ids(&format!("ids_{s}"))).unwrap();
        for (pos, w) in want.iter().enumerate() {
            if let Some(logits) = &run.logits {
                max_d = logits
                    .row(pos)
                    .iter()
                    .zip(w)
                    .map(|(a, b)| (a - b).abs())
                    .fold(max_d, f32::max);
            }
            agree += usize::from(run.argmax[pos] as usize == anec::reference::argmax(w));
            total += 1;
        }
    }
    println!(
        "{model} {precision:?}: top-1 {agree}/{total}, max |Δlogit| {max_d:.4}, {:.2}s",
        t0.elapsed().as_secs_f32()
    );
    // fp16 packages agree fully; LUT packages of random tiny weights are lossier (set the bar).
    let min: f64 = std::env::var("ANEC_EXEC_E2E_MIN_TOP1")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.9);
    assert!(
        agree as f64 >= min * total as f64,
        "top-1 agreement {agree}/{total} below {min}"
    );
}

#[test]
fn a_wrong_declared_type_in_a_real_package_fails_at_that_op() {
    // The reader type-checks packages; the interpreter checks again, independently, at run time.
    let mut model = mil::read_package(samples().join("decode.mlpackage")).unwrap();
    let f = &mut model.program.functions[0].1;
    let op = f.operations.iter_mut().find(|o| o.name == "fc2").unwrap();
    op.outputs[0].1 = ValueType::Tensor(TensorType::new(DType::F16, &[1, 1, 32]));
    let m = Interpreter::new(&model, Precision::F32);
    let bytes = expected_bytes();
    let e = SafeTensors::deserialize(&bytes).unwrap();
    let err = m
        .run(
            "main",
            &inputs(&[("x", st(&e, "decode_x")), ("pos", st(&e, "decode_pos"))]),
            &mut m.zero_states("main").unwrap(),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("linear op `fc2`") && msg.contains("declared fp16 [1, 1, 32] but computed"),
        "{msg}"
    );
}

#[test]
fn the_interpreter_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Interpreter>();
    assert_send_sync::<Tensor>();
}

// ------------------------------------------------------------------ properties

/// Python's `slice(b, e, s).indices(n)` and the resulting positions, written the way the
/// Python docs define it (independently of the interpreter's loop).
fn py_slice(n: i64, b: Option<i64>, e: Option<i64>, s: i64) -> Vec<i64> {
    let (lo, hi) = if s > 0 { (0, n) } else { (-1, n - 1) };
    let fix = |v: i64| {
        let v = if v < 0 { v + n } else { v };
        v.clamp(lo, hi)
    };
    let start = b.map_or(if s > 0 { 0 } else { n - 1 }, fix);
    let stop = e.map_or(if s > 0 { n } else { -1 }, fix);
    let mut out = Vec::new();
    let mut i = start;
    while (s > 0 && i < stop) || (s < 0 && i > stop) {
        out.push(i);
        i += s;
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// slice_by_index picks Python's positions; slice_update writes exactly those and nothing else.
    #[test]
    fn slices_follow_python_and_updates_touch_only_the_slice(
        shape in proptest::collection::vec(1usize..5, 1..4),
        spec in proptest::collection::vec((-6i64..6, -6i64..6, proptest::prop_oneof![-3i64..0, 1i64..4], proptest::bool::ANY, proptest::bool::ANY), 3),
    ) {
        let rank = shape.len();
        let spec = &spec[..rank];
        let x = f32t(&shape, 7);
        let pos: Vec<Vec<i64>> = shape.iter().zip(spec).map(|(&n, &(b, e, s, bm, em))| {
            py_slice(n as i64, (!bm).then_some(b), (!em).then_some(e), s)
        }).collect();
        let out_shape: Vec<usize> = pos.iter().map(|p| p.len()).collect();
        let mut g = G::default();
        g.input("x", DType::F32, &shape);
        let ints = |f: fn(&(i64, i64, i64, bool, bool)) -> i64| -> Vec<i32> { spec.iter().map(|t| f(t) as i32).collect() };
        let bools = |f: fn(&(i64, i64, i64, bool, bool)) -> bool| -> Vec<bool> { spec.iter().map(f).collect() };
        let params = || -> Vec<(&'static str, A)> {
            vec![
                ("begin", ci(&ints(|t| t.0))),
                ("end", ci(&ints(|t| t.1))),
                ("stride", ci(&ints(|t| t.2))),
                ("begin_mask", c(ConstValue::vec_bool(&bools(|t| t.3)))),
                ("end_mask", c(ConstValue::vec_bool(&bools(|t| t.4)))),
            ]
        };
        let mut sp = vec![("x", v("x"))];
        sp.extend(params());
        let sl = g.op(OpKind::SliceByIndex, sp, DType::F32, &out_shape);
        let n_out: usize = out_shape.iter().product();
        let upd = g.cst(ConstValue::from_f32(&out_shape.iter().map(|&d| d as u64).collect::<Vec<_>>(), &vec![100.0; n_out]).unwrap());
        let mut up = vec![("x", v("x")), ("update", v(&upd))];
        up.extend(params());
        let su = g.op(OpKind::SliceUpdate, up, DType::F32, &shape);
        let out = run_main(&g.program(&[&sl, &su]), Precision::F32, &[("x", x.clone())]).unwrap();
        let xv = x.to_f32_vec();
        let want: Vec<f32> = coords(&out_shape)
            .iter()
            .map(|cd| {
                let src: Vec<usize> = cd.iter().enumerate().map(|(d, &i)| pos[d][i] as usize).collect();
                xv[at(&shape, &src)]
            })
            .collect();
        proptest::prop_assert_eq!(out[&sl].to_f32_vec(), want);
        let updated = out[&su].to_f32_vec();
        for (k, cd) in coords(&shape).iter().enumerate() {
            let inside = cd.iter().enumerate().all(|(d, &i)| pos[d].contains(&(i as i64)));
            proptest::prop_assert_eq!(updated[k], if inside { 100.0 } else { xv[k] });
        }
    }
}

/// mil's type inference and exec's kernels are two implementations of every op's shape rules:
/// a program of tricky ops built (and type-inferred) by `FunctionBuilder` must run, and the
/// interpreter checks each computed type against the inferred one.
#[test]
fn builder_inferred_types_agree_with_computed_types() {
    use mil::{ConvParams, FunctionBuilder, SliceParams};
    let mut b = FunctionBuilder::new();
    let x = b
        .input("x", TensorType::new(DType::F16, &[2, 4, 5, 6]))
        .unwrap();
    let ids = b
        .input("ids", TensorType::new(DType::I32, &[2, 3]))
        .unwrap();
    let w = b
        .constant(
            "w",
            ConstValue::from_f16(&[6, 2, 3, 2], &[f16::from_f32(0.1); 72]).unwrap(),
        )
        .unwrap();
    let mut outs = Vec::new();
    let cp = ConvParams {
        strides: Some(vec![2, 3]),
        pad_type: Some("same".into()),
        groups: Some(2),
        ..Default::default()
    };
    outs.push(b.conv_with("conv", &x, &w, None, &cp).unwrap());
    let sp = SliceParams {
        stride: Some(vec![1, -2, 1, 2]),
        end_mask: Some(vec![false, true, false, false]),
        squeeze_mask: Some(vec![false, false, true, false]),
        ..Default::default()
    };
    outs.push(
        b.slice_const("slice", &x, &[-1, -1, 3, 0], &[2, 0, 4, 5], &sp)
            .unwrap(),
    );
    outs.push(b.gather("gather", &x, &ids, 2, 1).unwrap());
    let parts = b.split_sizes("split", &x, &[2, 4], 3).unwrap();
    outs.push(
        b.concat_with("inter", &[&parts[0], &parts[0]], 3, true)
            .unwrap(),
    );
    outs.push(b.expand_dims("expand", &x, &[-1, 1]).unwrap());
    outs.push(
        b.squeeze("squeeze", &outs[outs.len() - 1].clone(), None)
            .unwrap(),
    );
    outs.push(b.tile("tile", &x, &[1, 2, 1, 3]).unwrap());
    outs.push(b.reduce_sum("rsum", &x, &[1, -1], true).unwrap());
    outs.push(b.reduce_argmax("amax", &x, 2, false, DType::I32).unwrap());
    outs.push(b.band_part("band", &x, 1, 0).unwrap());
    outs.push(
        b.fill("fill", &[3, 2], ConstValue::scalar_f16(f16::from_f32(2.0)))
            .unwrap(),
    );
    outs.push(b.transpose("tr", &x, &[3, 0, 2, 1]).unwrap());
    outs.push(b.reshape("rs", &x, &[2, -1, 3]).unwrap());
    outs.push(b.matmul("mm", &x, &x, false, true).unwrap());
    outs.push(b.layer_norm("ln", &x, &[1, 3], None, None, 1e-5).unwrap());
    outs.push(b.cast("cast", &x, DType::F32).unwrap());
    let rsum = outs[7].clone(); // [2, 1, 5, 1]: broadcasts against x
    let lt = b.less("lt", &x, &rsum).unwrap();
    outs.push(b.select("sel", &lt, &x, &rsum).unwrap());
    outs.push(
        b.rsqrt("rsqrt", &outs[outs.len() - 2].clone(), 1e-3)
            .unwrap(),
    );
    for o in &outs {
        b.output(o).unwrap();
    }
    let f = b.finish().unwrap();
    let p = Program {
        functions: vec![("main".into(), f)],
        default_function: "main".into(),
    };
    let ids_t = Tensor::i32(vec![2, 3], vec![0, 4, 2, 1, 1, 3]).unwrap();
    for precision in [Precision::F32, Precision::F16] {
        let x_t = Tensor::f16_from_f32(vec![2, 4, 5, 6], &rand(240, 400)).unwrap();
        let out = Interpreter::new(&p, precision)
            .run(
                "main",
                &inputs(&[("x", x_t), ("ids", ids_t.clone())]),
                &mut BTreeMap::new(),
            )
            .unwrap_or_else(|e| panic!("{precision:?}: {e}"));
        assert_eq!(out.len(), outs.len());
    }
}
