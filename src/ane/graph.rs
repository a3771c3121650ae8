//! A thin layer over `mil::FunctionBuilder` for the graph code: fresh op names, every optional
//! parameter bound explicitly (as coremltools does), and shapes tracked beside the variables.

use std::collections::HashMap;

use half::f16;

use crate::mil::{Arg, ConstValue, DType, FunctionBuilder, OpKind, TensorType, Var};
use crate::quant::f16_from_f64_rne;

use super::AneError;

type R<T> = Result<T, AneError>;

/// A variable with its static shape (the graphs are static except the embeddings input).
#[derive(Clone, Debug)]
pub struct T {
    pub var: Var,
    pub shape: Vec<u64>,
}

impl T {
    fn arg(&self) -> Vec<Arg> {
        vec![Arg::Var(self.var.name.clone())]
    }
}

/// Builds one function.
pub struct G {
    pub b: FunctionBuilder,
    n: usize,
    /// Parameter constants already emitted, by value: one `const` op serves every op that
    /// binds the same small value (strides, axes, flags), keeping the program small.
    params: HashMap<String, Var>,
}

fn var_arg(v: &Var) -> Vec<Arg> {
    vec![Arg::Var(v.name.clone())]
}

impl Default for G {
    fn default() -> Self {
        Self::new()
    }
}

impl G {
    pub fn new() -> Self {
        G {
            b: FunctionBuilder::new(),
            n: 0,
            params: HashMap::new(),
        }
    }

    /// A fresh op name `<p>_<n>` (deterministic: the counter follows the build order).
    pub fn fresh(&mut self, p: &str) -> String {
        self.n += 1;
        format!("{p}_{}", self.n)
    }

    pub fn input(&mut self, name: &str, dtype: DType, shape: &[u64]) -> R<T> {
        let var = self.b.input(name, TensorType::new(dtype, shape))?;
        Ok(T {
            var,
            shape: shape.to_vec(),
        })
    }

    /// A `const` op holding `v` (inline, or a reference to a stored blob).
    pub fn konst(&mut self, p: &str, v: ConstValue) -> R<T> {
        let shape = v.shape();
        let name = self.fresh(p);
        let var = self.b.constant(&name, v)?;
        Ok(T { var, shape })
    }

    fn param(&mut self, v: ConstValue) -> R<Vec<Arg>> {
        Ok(var_arg(&self.param_var(v)?))
    }

    fn param_var(&mut self, v: ConstValue) -> R<Var> {
        let key = format!("{:?}|{:?}", v.ty, v.data);
        if let Some(var) = self.params.get(&key) {
            return Ok(var.clone());
        }
        let name = self.fresh("p");
        let var = self.b.constant(&name, v)?;
        self.params.insert(key, var.clone());
        Ok(var)
    }

    fn ints(&mut self, v: &[i32]) -> R<Vec<Arg>> {
        self.param(ConstValue::vec_i32(v))
    }

    fn int(&mut self, v: i32) -> R<Vec<Arg>> {
        self.param(ConstValue::scalar_i32(v))
    }

    fn boolean(&mut self, v: bool) -> R<Vec<Arg>> {
        self.param(ConstValue::scalar_bool(v))
    }

    fn bools(&mut self, v: &[bool]) -> R<Vec<Arg>> {
        self.param(ConstValue::vec_bool(v))
    }

    /// One op with one output named `name`.
    pub fn op(
        &mut self,
        kind: OpKind,
        name: &str,
        inputs: &[(&str, Vec<Arg>)],
        shape: Vec<u64>,
    ) -> R<T> {
        let mut outs = self.b.op(kind, name, inputs)?;
        let var = outs.pop().ok_or_else(|| AneError::Graph {
            op: name.to_string(),
            message: "produced no output".into(),
        })?;
        Ok(T { var, shape })
    }

    fn binary(&mut self, kind: OpKind, p: &str, x: &T, y: &T) -> R<T> {
        let shape = broadcast(&x.shape, &y.shape);
        let name = self.fresh(p);
        self.op(kind, &name, &[("x", x.arg()), ("y", y.arg())], shape)
    }

    pub fn add(&mut self, x: &T, y: &T) -> R<T> {
        self.binary(OpKind::Add, "add", x, y)
    }
    pub fn sub(&mut self, x: &T, y: &T) -> R<T> {
        self.binary(OpKind::Sub, "sub", x, y)
    }
    /// `mul` with a chosen op name (a part's named output).
    pub fn mul_named(&mut self, x: &T, y: &T, name: &str) -> R<T> {
        let shape = broadcast(&x.shape, &y.shape);
        self.op(OpKind::Mul, name, &[("x", x.arg()), ("y", y.arg())], shape)
    }

    pub fn mul(&mut self, x: &T, y: &T) -> R<T> {
        self.binary(OpKind::Mul, "mul", x, y)
    }
    pub fn minimum(&mut self, x: &T, y: &T) -> R<T> {
        self.binary(OpKind::Minimum, "minimum", x, y)
    }

    pub fn scalar_f16(&mut self, v: f32) -> R<T> {
        self.konst("c", ConstValue::scalar_f16(f16::from_f32(v)))
    }

    /// A rank-1 int32 constant, shared with every other use of the same values.
    pub fn ints_const(&mut self, v: &[i32]) -> R<T> {
        let var = self.param_var(ConstValue::vec_i32(v))?;
        Ok(T {
            var,
            shape: vec![v.len() as u64],
        })
    }

    pub fn silu(&mut self, x: &T) -> R<T> {
        let name = self.fresh("silu");
        self.op(OpKind::Silu, &name, &[("x", x.arg())], x.shape.clone())
    }

    /// `gelu(x, mode = TANH_APPROXIMATION)` (transformers' `gelu_pytorch_tanh`).
    pub fn gelu_tanh(&mut self, x: &T) -> R<T> {
        let mode = self.param(ConstValue::string("TANH_APPROXIMATION"))?;
        let name = self.fresh("gelu");
        self.op(
            OpKind::Gelu,
            &name,
            &[("x", x.arg()), ("mode", mode)],
            x.shape.clone(),
        )
    }

    /// 1×1 convolution, weight `[Cout, Cin, 1, 1]`, optional bias `[Cout]`.
    pub fn conv(&mut self, p: &str, x: &T, weight: &T, bias: Option<&T>) -> R<T> {
        let mut shape = x.shape.clone();
        shape[1] = weight.shape[0];
        let strides = self.ints(&[1, 1])?;
        let pad_type = self.param(ConstValue::string("valid"))?;
        let pad = self.ints(&[0, 0, 0, 0])?;
        let dilations = self.ints(&[1, 1])?;
        let groups = self.int(1)?;
        let mut inputs = vec![
            ("x", x.arg()),
            ("weight", weight.arg()),
            ("strides", strides),
            ("pad_type", pad_type),
            ("pad", pad),
            ("dilations", dilations),
            ("groups", groups),
        ];
        if let Some(b) = bias {
            inputs.push(("bias", b.arg()));
        }
        let name = self.fresh(p);
        self.op(OpKind::Conv, &name, &inputs, shape)
    }

    pub fn reshape(&mut self, x: &T, shape: &[u64]) -> R<T> {
        self.reshape_named(x, shape, None)
    }

    pub fn reshape_named(&mut self, x: &T, shape: &[u64], name: Option<&str>) -> R<T> {
        let s: Vec<i32> = shape.iter().map(|&d| d as i32).collect();
        let sh = self.ints(&s)?;
        let name = match name {
            Some(n) => n.to_string(),
            None => self.fresh("reshape"),
        };
        self.op(
            OpKind::Reshape,
            &name,
            &[("x", x.arg()), ("shape", sh)],
            shape.to_vec(),
        )
    }

    pub fn transpose(&mut self, x: &T, perm: &[usize]) -> R<T> {
        self.transpose_named(x, perm, None)
    }

    pub fn transpose_named(&mut self, x: &T, perm: &[usize], name: Option<&str>) -> R<T> {
        let shape: Vec<u64> = perm.iter().map(|&p| x.shape[p]).collect();
        let p: Vec<i32> = perm.iter().map(|&p| p as i32).collect();
        let perm = self.ints(&p)?;
        let name = match name {
            Some(n) => n.to_string(),
            None => self.fresh("transpose"),
        };
        self.op(
            OpKind::Transpose,
            &name,
            &[("x", x.arg()), ("perm", perm)],
            shape,
        )
    }

    pub fn concat(&mut self, xs: &[&T], axis: usize) -> R<T> {
        self.concat_named(xs, axis, None)
    }

    pub fn concat_named(&mut self, xs: &[&T], axis: usize, name: Option<&str>) -> R<T> {
        let mut shape = xs[0].shape.clone();
        shape[axis] = xs.iter().map(|x| x.shape[axis]).sum();
        let values: Vec<Arg> = xs.iter().flat_map(|x| x.arg()).collect();
        let ax = self.int(axis as i32)?;
        let il = self.boolean(false)?;
        let name = match name {
            Some(n) => n.to_string(),
            None => self.fresh("concat"),
        };
        self.op(
            OpKind::Concat,
            &name,
            &[("values", values), ("axis", ax), ("interleave", il)],
            shape,
        )
    }

    fn slice_params(&mut self, rank: usize) -> R<[Vec<Arg>; 4]> {
        let stride = self.ints(&vec![1; rank])?;
        let bm = self.bools(&vec![false; rank])?;
        let em = self.bools(&vec![false; rank])?;
        let sm = self.bools(&vec![false; rank])?;
        Ok([stride, bm, em, sm])
    }

    /// Static slice `[begin, end)` per axis.
    pub fn slice(&mut self, x: &T, begin: &[u64], end: &[u64]) -> R<T> {
        let shape: Vec<u64> = begin.iter().zip(end).map(|(b, e)| e - b).collect();
        let b: Vec<i32> = begin.iter().map(|&v| v as i32).collect();
        let e: Vec<i32> = end.iter().map(|&v| v as i32).collect();
        let b = self.ints(&b)?;
        let e = self.ints(&e)?;
        let [stride, bm, em, sm] = self.slice_params(x.shape.len())?;
        let name = self.fresh("slice");
        self.op(
            OpKind::SliceByIndex,
            &name,
            &[
                ("x", x.arg()),
                ("begin", b),
                ("end", e),
                ("stride", stride),
                ("begin_mask", bm),
                ("end_mask", em),
                ("squeeze_mask", sm),
            ],
            shape,
        )
    }

    /// `x` with `update` written at the dynamic `begin`..`end` (int32 `[rank]`), in the form
    /// coremltools' PyTorch frontend gives `x[a:b, :, p:q, :] = update`: explicit begin and
    /// end, `end_mask` set on the axes the update covers whole, stride 1.
    pub fn slice_update(&mut self, x: &T, update: &T, begin: &T, end: &T) -> R<T> {
        let whole: Vec<bool> = x
            .shape
            .iter()
            .zip(&update.shape)
            .map(|(a, b)| a == b)
            .collect();
        let [stride, bm, _, sm] = self.slice_params(x.shape.len())?;
        let em = self.bools(&whole)?;
        let name = self.fresh("slice_update");
        self.op(
            OpKind::SliceUpdate,
            &name,
            &[
                ("x", x.arg()),
                ("update", update.arg()),
                ("begin", begin.arg()),
                ("end", end.arg()),
                ("stride", stride),
                ("begin_mask", bm),
                ("end_mask", em),
                ("squeeze_mask", sm),
            ],
            x.shape.clone(),
        )
    }

    /// `cast(x, dtype)`.
    pub fn cast(&mut self, x: &T, dtype: DType) -> R<T> {
        let d = self.param(ConstValue::string(dtype.mil_name()))?;
        let name = self.fresh("cast");
        self.op(
            OpKind::Cast,
            &name,
            &[("x", x.arg()), ("dtype", d)],
            x.shape.clone(),
        )
    }

    pub fn layer_norm(&mut self, x: &T, axis: i32, eps: f64) -> R<T> {
        let axes = self.ints(&[axis])?;
        let eps = self.param(ConstValue::scalar_f16(f16_from_f64_rne(eps)))?;
        let name = self.fresh("layer_norm");
        self.op(
            OpKind::LayerNorm,
            &name,
            &[("x", x.arg()), ("axes", axes), ("epsilon", eps)],
            x.shape.clone(),
        )
    }

    pub fn softmax(&mut self, x: &T, axis: i32) -> R<T> {
        let ax = self.int(axis)?;
        let name = self.fresh("softmax");
        self.op(
            OpKind::Softmax,
            &name,
            &[("x", x.arg()), ("axis", ax)],
            x.shape.clone(),
        )
    }

    /// Batched matmul of rank-3 tensors with equal batch dims.
    pub fn matmul(&mut self, x: &T, y: &T, transpose_y: bool) -> R<T> {
        let m = x.shape[x.shape.len() - 2];
        let n = if transpose_y {
            y.shape[y.shape.len() - 2]
        } else {
            y.shape[y.shape.len() - 1]
        };
        let mut shape = x.shape.clone();
        let r = shape.len();
        shape[r - 2] = m;
        shape[r - 1] = n;
        let tx = self.boolean(false)?;
        let ty = self.boolean(transpose_y)?;
        let name = self.fresh("matmul");
        self.op(
            OpKind::Matmul,
            &name,
            &[
                ("x", x.arg()),
                ("y", y.arg()),
                ("transpose_x", tx),
                ("transpose_y", ty),
            ],
            shape,
        )
    }

    /// `gather(x, indices, axis)`; `shape` is the output shape.
    pub fn gather(
        &mut self,
        x: &T,
        indices: &T,
        axis: i32,
        shape: Vec<u64>,
        name: Option<&str>,
    ) -> R<T> {
        let ax = self.int(axis)?;
        let bd = self.int(0)?;
        let vi = self.boolean(false)?;
        let name = match name {
            Some(n) => n.to_string(),
            None => self.fresh("gather"),
        };
        self.op(
            OpKind::Gather,
            &name,
            &[
                ("x", x.arg()),
                ("indices", indices.arg()),
                ("axis", ax),
                ("batch_dims", bd),
                ("validate_indices", vi),
            ],
            shape,
        )
    }

    pub fn select(&mut self, cond: &T, a: &T, b: &T) -> R<T> {
        let shape = broadcast(&broadcast(&cond.shape, &a.shape), &b.shape);
        let name = self.fresh("select");
        self.op(
            OpKind::Select,
            &name,
            &[("cond", cond.arg()), ("a", a.arg()), ("b", b.arg())],
            shape,
        )
    }

    pub fn reduce_argmax(&mut self, x: &T, axis: i32) -> R<T> {
        let mut shape = x.shape.clone();
        shape.remove(norm_axis(axis, shape.len()));
        let ax = self.int(axis)?;
        let kd = self.boolean(false)?;
        let odt = self.param(ConstValue::string("int32"))?;
        let name = self.fresh("argmax");
        self.op(
            OpKind::ReduceArgmax,
            &name,
            &[
                ("x", x.arg()),
                ("axis", ax),
                ("keep_dims", kd),
                ("output_dtype", odt),
            ],
            shape,
        )
    }

    pub fn reduce_max(&mut self, x: &T, axis: i32) -> R<T> {
        let mut shape = x.shape.clone();
        shape.remove(norm_axis(axis, shape.len()));
        let ax = self.ints(&[axis])?;
        let kd = self.boolean(false)?;
        let name = self.fresh("reduce_max");
        self.op(
            OpKind::ReduceMax,
            &name,
            &[("x", x.arg()), ("axes", ax), ("keep_dims", kd)],
            shape,
        )
    }

    pub fn read_state(&mut self, state: &T) -> R<T> {
        let name = self.fresh("read_state");
        self.op(
            OpKind::ReadState,
            &name,
            &[("input", state.arg())],
            state.shape.clone(),
        )
    }

    pub fn write_state(&mut self, state: &T, data: &T) -> R<()> {
        let name = self.fresh("write_state");
        self.b.op(
            OpKind::WriteState,
            &name,
            &[("input", state.arg()), ("data", data.arg())],
        )?;
        Ok(())
    }

    /// `constexpr_lut_to_dense` with indices and LUT bound by value.
    pub fn lut_to_dense(&mut self, p: &str, indices: ConstValue, lut: ConstValue) -> R<T> {
        let shape = indices.shape();
        let name = self.fresh(p);
        self.op(
            OpKind::ConstexprLutToDense,
            &name,
            &[
                ("indices", vec![Arg::Value(indices)]),
                ("lut", vec![Arg::Value(lut)]),
            ],
            shape,
        )
    }
}

fn norm_axis(axis: i32, rank: usize) -> usize {
    if axis < 0 {
        (rank as i32 + axis) as usize
    } else {
        axis as usize
    }
}

/// NumPy broadcasting of two static shapes.
pub fn broadcast(a: &[u64], b: &[u64]) -> Vec<u64> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            da.max(db)
        })
        .collect()
}
