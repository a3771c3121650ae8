//! Type inference for every [`OpKind`], with Core ML iOS 18 semantics (coremltools' op definitions
//! in `converters/mil/mil/ops/defs/iOS1{5,6,7,8}` are the authority; docs/coreml-format.md §5).
//!
//! One schema per op (parameter names, required or optional, compile-time-constant or not,
//! variadic or not) and one inference arm per op. The builder runs it as each op is added;
//! [`check_function`] re-runs it over a function read from disk and compares the declared output
//! types with the inferred ones, as coremltools' loader does.
//!
//! Unknown dimensions follow coremltools' symbols: an unknown dim is compatible with any dim. A
//! `slice_by_index` whose `begin`/`end` are runtime values gets unknown output dims except where
//! a full begin+end mask or an input dim of 1 fixes them (`solve_slice_by_index_shape`); the
//! KV-cache pattern (`slice_update` with runtime begin/end) keeps `x`'s full type. Values are
//! not propagated through ops: a parameter whose value shapes the output (slice begin/end,
//! reshape shape, tile reps, fill shape) gives fixed dims only when bound to a `const` op or a
//! value, so compute such index constants on the host.
//!
//! Constness follows coremltools' `is_descendant_of_const`: `const` outputs, `constexpr_*`
//! outputs and outputs of ops whose inputs are all constant may feed parameters Core ML requires
//! to be compile-time (`linear.weight`, `layer_norm.gamma`, ...).
//!
//! Checked against coremltools 9.0 with `tools/mil_infer_vs_coremltools.py` (every inferred
//! type agrees).
//! Deliberately stricter than coremltools, which accepts these invalid models: a softmax
//! axis out of range, split_sizes not summing to the dim, band_part on rank < 2, a non-scalar
//! fill value, squeeze of an axis whose size is not 1, a rank-1 matmul x with a batched y (where
//! coremltools and numpy disagree on the shape), a select cond wider than a/b.

use std::collections::{BTreeMap, HashMap};

use super::error::{MilError, Result};
use super::ir::{
    Arg, ConstValue, DType, Dim, Function, OpKind, Operation, Program, TensorType, ValueType,
    MAX_RANK,
};

/// What a variable of a function is, as far as inference is concerned.
#[derive(Clone, Debug)]
pub(crate) struct VarInfo {
    pub ty: ValueType,
    pub konst: Konst,
}

/// Whether a variable is a compile-time constant, and its value when known.
#[derive(Clone, Debug)]
pub(crate) enum Konst {
    /// A function input or a runtime op output.
    No,
    /// The output of a `const` op: the value is known.
    Const(ConstValue),
    /// A `constexpr_*` output, or an op output computed from constants only: constant, value
    /// not known here.
    Constexpr,
}

/// The variables visible at a point of a function.
pub(crate) type Env = HashMap<String, VarInfo>;

/// One parameter of an op's schema.
struct P {
    name: &'static str,
    required: bool,
    /// Core ML requires a compile-time value (const op, constexpr output or bound value).
    konst: bool,
    variadic: bool,
}

const fn req(name: &'static str) -> P {
    P {
        name,
        required: true,
        konst: false,
        variadic: false,
    }
}
const fn req_c(name: &'static str) -> P {
    P {
        name,
        required: true,
        konst: true,
        variadic: false,
    }
}
const fn opt_c(name: &'static str) -> P {
    P {
        name,
        required: false,
        konst: true,
        variadic: false,
    }
}
const fn opt(name: &'static str) -> P {
    P {
        name,
        required: false,
        konst: false,
        variadic: false,
    }
}

const SLICE_OPTS: [P; 4] = [
    opt_c("stride"),
    opt_c("begin_mask"),
    opt_c("end_mask"),
    opt_c("squeeze_mask"),
];

/// The parameters of each op in the iOS 18 opset (coremltools `input_spec`).
fn schema(kind: OpKind) -> Vec<P> {
    use OpKind::*;
    match kind {
        Const => vec![],
        ConstexprLutToDense => vec![req_c("indices"), req_c("lut"), opt_c("vector_axis")],
        ConstexprBlockwiseShiftScale => vec![req_c("data"), req_c("scale"), opt_c("offset")],
        Conv => vec![
            req("x"),
            req("weight"),
            opt("bias"),
            opt_c("strides"),
            opt_c("pad_type"),
            opt_c("pad"),
            opt_c("dilations"),
            opt_c("groups"),
        ],
        Linear => vec![req("x"), req_c("weight"), opt_c("bias")],
        Matmul => vec![
            req("x"),
            req("y"),
            opt_c("transpose_x"),
            opt_c("transpose_y"),
        ],
        Add | Sub | Mul | RealDiv | Maximum | Minimum | Equal | Less | LessEqual | Greater
        | GreaterEqual => {
            vec![req("x"), req("y")]
        }
        Rsqrt => vec![req("x"), opt_c("epsilon")],
        Sqrt | Exp | Relu | Silu => vec![req("x")],
        Gelu => vec![req("x"), opt_c("mode")],
        LayerNorm => vec![
            req("x"),
            opt_c("axes"),
            opt_c("gamma"),
            opt_c("beta"),
            opt_c("epsilon"),
        ],
        Softmax => vec![req("x"), opt_c("axis")],
        Concat => vec![
            P {
                name: "values",
                required: true,
                konst: false,
                variadic: true,
            },
            req_c("axis"),
            opt_c("interleave"),
        ],
        Split => vec![
            req("x"),
            opt_c("num_splits"),
            opt_c("split_sizes"),
            req_c("axis"),
        ],
        SliceByIndex => {
            let mut v = vec![req("x"), req("begin"), req("end")];
            v.extend(SLICE_OPTS);
            v
        }
        SliceUpdate => {
            let mut v = vec![req("x"), req("update"), req("begin"), req("end")];
            v.extend(SLICE_OPTS);
            v
        }
        Reshape => vec![req("x"), req("shape")],
        Transpose => vec![req("x"), req_c("perm")],
        ExpandDims => vec![req("x"), req_c("axes")],
        Squeeze => vec![req("x"), opt_c("axes")],
        Gather => vec![
            req("x"),
            req("indices"),
            opt_c("axis"),
            opt_c("batch_dims"),
            opt_c("validate_indices"),
        ],
        Cast => vec![req("x"), req_c("dtype")],
        Select => vec![req("cond"), req("a"), req("b")],
        ReduceArgmax => vec![
            req("x"),
            opt_c("axis"),
            opt_c("keep_dims"),
            opt_c("output_dtype"),
        ],
        ReduceMax | ReduceSum | ReduceMean => vec![req("x"), opt_c("axes"), opt_c("keep_dims")],
        ReadState => vec![req("input")],
        WriteState => vec![req("input"), req("data")],
        BandPart => vec![req("x"), opt_c("lower"), opt_c("upper")],
        Fill => vec![req("shape"), opt_c("value")],
        Tile => vec![req("x"), req("reps")],
    }
}

/// Whether the op's outputs are compile-time constants.
pub(crate) fn is_constexpr(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::ConstexprLutToDense | OpKind::ConstexprBlockwiseShiftScale
    )
}

/// A type for messages: `fp16[1, 64, 1, Unknown]`, `state<fp16[...]>`.
pub fn type_string(ty: &ValueType) -> String {
    match ty {
        ValueType::Tensor(t) => tensor_string(t),
        ValueType::State(t) => format!("state<{}>", tensor_string(t)),
    }
}

pub fn tensor_string(t: &TensorType) -> String {
    let dims: Vec<String> = t
        .shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Unknown => "?".to_string(),
        })
        .collect();
    format!("{}[{}]", t.dtype.mil_name(), dims.join(", "))
}

/// Whether a declared type agrees with an inferred one: same kind, dtype and rank, and every
/// dim equal or unknown on either side (coremltools' `is_compatible_type`).
pub fn types_compatible(declared: &ValueType, inferred: &ValueType) -> bool {
    let (a, b) = match (declared, inferred) {
        (ValueType::Tensor(a), ValueType::Tensor(b))
        | (ValueType::State(a), ValueType::State(b)) => (a, b),
        _ => return false,
    };
    a.dtype == b.dtype
        && a.rank() == b.rank()
        && a.shape.iter().zip(&b.shape).all(|(x, y)| match (x, y) {
            (Dim::Fixed(p), Dim::Fixed(q)) => p == q,
            _ => true,
        })
}

/// One resolved binding.
struct Bound {
    ty: ValueType,
    konst: Konst,
    /// The variable name, or `<value>` for a bound value.
    label: String,
}

impl Bound {
    fn value(&self) -> Option<&ConstValue> {
        match &self.konst {
            Konst::Const(v) => Some(v),
            _ => None,
        }
    }
    fn is_const(&self) -> bool {
        !matches!(self.konst, Konst::No)
    }
}

/// Inference context for one op.
struct Cx<'a> {
    kind: OpKind,
    op: &'a str,
    args: BTreeMap<&'a str, Vec<Bound>>,
}

type Shape = Vec<Dim>;

fn dims_of(shape: &[u64]) -> Shape {
    shape.iter().map(|&d| Dim::Fixed(d)).collect()
}

fn dtypes(list: &[DType]) -> String {
    list.iter()
        .map(|d| d.mil_name())
        .collect::<Vec<_>>()
        .join("/")
}

fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

impl<'a> Cx<'a> {
    fn shape_err(&self, detail: impl Into<String>) -> MilError {
        MilError::Shape {
            op: self.op.to_string(),
            kind: self.kind,
            detail: detail.into(),
        }
    }

    fn type_err(
        &self,
        param: &str,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> MilError {
        MilError::ParamType {
            op: self.op.to_string(),
            kind: self.kind,
            param: param.to_string(),
            expected: expected.into(),
            found: found.into(),
        }
    }

    fn get(&self, param: &str) -> Option<&Bound> {
        self.args.get(param).and_then(|v| v.first())
    }

    fn has(&self, param: &str) -> bool {
        self.args.contains_key(param)
    }

    /// The tensor bound to `param` (a state is an error).
    fn tensor_of<'b>(&self, param: &str, b: &'b Bound) -> Result<&'b TensorType> {
        match &b.ty {
            ValueType::Tensor(t) => Ok(t),
            s @ ValueType::State(_) => Err(self.type_err(param, "a tensor", type_string(s))),
        }
    }

    fn t(&self, param: &'static str) -> Result<&TensorType> {
        let b = self.get(param).ok_or(MilError::MissingParam {
            op: self.op.to_string(),
            kind: self.kind,
            param,
        })?;
        self.tensor_of(param, b)
    }

    /// The tensor of `param`, with its dtype checked against `domain`.
    fn td(&self, param: &'static str, domain: &[DType]) -> Result<&TensorType> {
        let t = self.t(param)?;
        if !domain.contains(&t.dtype) {
            return Err(self.type_err(param, dtypes(domain), tensor_string(t)));
        }
        Ok(t)
    }

    fn opt_td(&self, param: &'static str, domain: &[DType]) -> Result<Option<&TensorType>> {
        if self.has(param) {
            self.td(param, domain).map(Some)
        } else {
            Ok(None)
        }
    }

    fn static_shape(&self, param: &str, t: &TensorType) -> Result<Vec<u64>> {
        t.static_shape()
            .ok_or_else(|| self.type_err(param, "a tensor of static shape", tensor_string(t)))
    }

    /// The length of a rank-1 runtime `shape`: the rank of the tensor it describes, at most
    /// [`MAX_RANK`].
    fn runtime_rank(&self, shape: &TensorType) -> Result<usize> {
        match shape.shape.first() {
            Some(&Dim::Fixed(n)) if n <= MAX_RANK => Ok(n as usize),
            Some(&Dim::Fixed(n)) => Err(self.shape_err(format!(
                "a runtime shape of {n} values: the output rank would exceed {MAX_RANK}"
            ))),
            _ => {
                Err(self
                    .shape_err("the output rank is unknown (a runtime shape of unknown length)"))
            }
        }
    }

    /// The integer values of `param` when they are known at compile time.
    fn ints_known(&self, param: &'static str) -> Result<Option<Vec<i64>>> {
        let Some(b) = self.get(param) else {
            return Ok(None);
        };
        let t = self.tensor_of(param, b)?;
        // slice begin/end/stride and reshape's shape take int8/16/32; every other integer
        // parameter is int32 (coremltools type domains)
        let domain: &[DType] = match (self.kind, param) {
            (OpKind::SliceByIndex | OpKind::SliceUpdate, "begin" | "end" | "stride")
            | (OpKind::Reshape, "shape") => &INT_U,
            _ => &[DType::I32],
        };
        if !domain.contains(&t.dtype) {
            return Err(self.type_err(param, dtypes(domain), tensor_string(t)));
        }
        match b.value() {
            Some(v) => v
                .to_i32_vec()
                .map(|v| Some(v.into_iter().map(i64::from).collect()))
                .map_err(|e| self.type_err(param, "a readable integer constant", e.to_string())),
            None => Ok(None),
        }
    }

    /// The integer values of a constant parameter; they must be known. `None` when absent.
    fn ints(&self, param: &'static str) -> Result<Option<Vec<i64>>> {
        match self.ints_known(param)? {
            Some(v) => Ok(Some(v)),
            None if self.has(param) => Err(self.type_err(
                param,
                "a constant with a known value",
                format!(
                    "{} (value not known at build time)",
                    self.get(param).map(|b| b.label.as_str()).unwrap_or("?")
                ),
            )),
            None => Ok(None),
        }
    }

    fn int_scalar(&self, param: &'static str) -> Result<Option<i64>> {
        match self.ints(param)? {
            None => Ok(None),
            Some(v) if v.len() == 1 => Ok(Some(v[0])),
            Some(v) => Err(self.type_err(param, "a single int32", format!("{} values", v.len()))),
        }
    }

    fn bools(&self, param: &'static str) -> Result<Option<Vec<bool>>> {
        let Some(b) = self.get(param) else {
            return Ok(None);
        };
        let t = self.tensor_of(param, b)?;
        if t.dtype != DType::Bool {
            return Err(self.type_err(param, "bool", tensor_string(t)));
        }
        match b.value() {
            Some(v) => v
                .to_bool_vec()
                .map(Some)
                .map_err(|e| self.type_err(param, "a readable bool constant", e.to_string())),
            None => Err(self.type_err(param, "a constant with a known value", b.label.clone())),
        }
    }

    fn bool_scalar(&self, param: &'static str) -> Result<Option<bool>> {
        match self.bools(param)? {
            None => Ok(None),
            Some(v) if v.len() == 1 => Ok(Some(v[0])),
            Some(v) => Err(self.type_err(param, "a single bool", format!("{} values", v.len()))),
        }
    }

    fn string(&self, param: &'static str) -> Result<Option<String>> {
        let Some(b) = self.get(param) else {
            return Ok(None);
        };
        let t = self.tensor_of(param, b)?;
        if t.dtype != DType::Str {
            return Err(self.type_err(param, "string", tensor_string(t)));
        }
        match b.value().and_then(|v| v.as_str()) {
            Some(s) => Ok(Some(s.to_string())),
            None => Err(self.type_err(param, "a constant string", b.label.clone())),
        }
    }

    /// A float scalar parameter (epsilon): fp16 or fp32, one element.
    fn float_scalar(&self, param: &'static str) -> Result<()> {
        if let Some(t) = self.opt_td(param, &[DType::F16, DType::F32])? {
            if t.num_elements() != Some(1) {
                return Err(self.type_err(param, "a scalar", tensor_string(t)));
            }
        }
        Ok(())
    }

    fn axis(&self, param: &str, axis: i64, rank: usize) -> Result<usize> {
        norm_axis(axis, rank).ok_or_else(|| {
            self.shape_err(format!("{param} {axis} is out of range for rank {rank}"))
        })
    }

    fn broadcast(&self, a: &TensorType, b: &TensorType) -> Result<Shape> {
        broadcast_shapes(&a.shape, &b.shape).ok_or_else(|| {
            self.shape_err(format!(
                "shapes {} and {} do not broadcast",
                tensor_string(a),
                tensor_string(b)
            ))
        })
    }
}

/// numpy broadcasting; unknown dims behave like coremltools symbols.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Option<Shape> {
    let n = a.len().max(b.len());
    let mut out = vec![Dim::Fixed(1); n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            Dim::Fixed(1)
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            Dim::Fixed(1)
        };
        out[i] = match (da, db) {
            (Dim::Fixed(x), Dim::Fixed(y)) if x == y => Dim::Fixed(x),
            (Dim::Fixed(1), d) | (d, Dim::Fixed(1)) => d,
            (Dim::Fixed(_), Dim::Fixed(_)) => return None,
            (Dim::Unknown, Dim::Fixed(y)) | (Dim::Fixed(y), Dim::Unknown) => Dim::Fixed(y),
            (Dim::Unknown, Dim::Unknown) => Dim::Unknown,
        };
    }
    Some(out)
}

fn tensor(dtype: DType, shape: Shape) -> ValueType {
    ValueType::Tensor(TensorType { dtype, shape })
}

const F: [DType; 2] = [DType::F16, DType::F32];
const FI: [DType; 3] = [DType::F16, DType::F32, DType::I32];
const SLICE_T: [DType; 8] = [
    DType::F16,
    DType::F32,
    DType::I8,
    DType::I16,
    DType::I32,
    DType::U8,
    DType::U16,
    DType::Bool,
];
const INT_U: [DType; 3] = [DType::I8, DType::I16, DType::I32];
const CAST_T: [DType; 8] = [
    DType::F16,
    DType::F32,
    DType::I8,
    DType::U8,
    DType::I16,
    DType::U16,
    DType::I32,
    DType::Bool,
];

/// Checks the bindings of an op against its schema and the environment, and infers its
/// output types. `const` ops are handled by the caller (their type is their value's).
pub(crate) fn infer(
    kind: OpKind,
    op: &str,
    inputs: &BTreeMap<String, Vec<Arg>>,
    env: &Env,
) -> Result<Vec<ValueType>> {
    let schema = schema(kind);
    let mut args: BTreeMap<&str, Vec<Bound>> = BTreeMap::new();
    for (param, bindings) in inputs {
        let Some(p) = schema.iter().find(|p| p.name == param) else {
            return Err(MilError::UnknownParam {
                op: op.to_string(),
                kind,
                param: param.clone(),
            });
        };
        if bindings.is_empty() || (!p.variadic && bindings.len() != 1) {
            return Err(MilError::Arity {
                op: op.to_string(),
                kind,
                param: param.clone(),
                expected: if p.variadic {
                    "one or more"
                } else {
                    "exactly one"
                },
                got: bindings.len(),
            });
        }
        let mut bound = Vec::with_capacity(bindings.len());
        for arg in bindings {
            let b = match arg {
                Arg::Var(name) => {
                    let info = env.get(name).ok_or_else(|| MilError::UnknownVar {
                        op: op.to_string(),
                        kind,
                        param: param.clone(),
                        var: name.clone(),
                    })?;
                    Bound {
                        ty: info.ty.clone(),
                        konst: info.konst.clone(),
                        label: name.clone(),
                    }
                }
                Arg::Value(v) => Bound {
                    ty: ValueType::Tensor(v.ty.clone()),
                    konst: Konst::Const(v.clone()),
                    label: "<value>".to_string(),
                },
            };
            if p.konst && !b.is_const() {
                return Err(MilError::NotConst {
                    op: op.to_string(),
                    kind,
                    param: param.clone(),
                    var: b.label,
                });
            }
            bound.push(b);
        }
        args.insert(p.name, bound);
    }
    for p in &schema {
        if p.required && !args.contains_key(p.name) {
            return Err(MilError::MissingParam {
                op: op.to_string(),
                kind,
                param: p.name,
            });
        }
    }
    let cx = Cx { kind, op, args };
    infer_kind(&cx)
}

/// Parameters that share one type variable in coremltools' schema must have one dtype.
fn check_shared_domains(cx: &Cx) -> Result<()> {
    use OpKind::*;
    let groups: &[&[&str]] = match cx.kind {
        Conv | Linear => &[&["weight", "bias"]],
        LayerNorm => &[&["gamma", "beta", "epsilon"]],
        SliceByIndex | SliceUpdate => &[&["begin", "end", "stride"]],
        _ => &[],
    };
    for group in groups {
        let mut first: Option<(&str, DType)> = None;
        for &p in group.iter() {
            let Some(b) = cx.get(p) else { continue };
            let t = cx.tensor_of(p, b)?;
            match first {
                None => first = Some((p, t.dtype)),
                Some((q, d)) if d != t.dtype => {
                    return Err(cx.type_err(
                        p,
                        format!("the dtype of {q} ({})", d.mil_name()),
                        tensor_string(t),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

fn infer_kind(cx: &Cx) -> Result<Vec<ValueType>> {
    check_shared_domains(cx)?;
    use OpKind::*;
    let one = |dtype: DType, shape: Shape| Ok(vec![tensor(dtype, shape)]);
    match cx.kind {
        Const => Err(MilError::MissingVal {
            op: cx.op.to_string(),
        }),
        ConstexprLutToDense => infer_lut(cx),
        ConstexprBlockwiseShiftScale => infer_shift_scale(cx),
        Conv => infer_conv(cx),
        Linear => {
            let x = cx.td("x", &FI)?;
            let w = cx.td("weight", &FI)?;
            if x.rank() < 1 || w.rank() != 2 {
                return Err(cx.shape_err(format!(
                    "linear needs x of rank >= 1 and a rank-2 weight, got x {} and weight {}",
                    tensor_string(x),
                    tensor_string(w)
                )));
            }
            if let (Dim::Fixed(a), Dim::Fixed(b)) = (x.shape[x.rank() - 1], w.shape[1]) {
                if a != b {
                    return Err(cx.shape_err(format!(
                        "last dim of x {} does not match weight {} [Dout, Din]",
                        tensor_string(x),
                        tensor_string(w)
                    )));
                }
            }
            if let Some(b) = cx.opt_td("bias", &FI)? {
                if b.rank() != 1 || b.shape[0] != w.shape[0] {
                    return Err(cx.shape_err(format!(
                        "bias {} must be [Dout] for weight {}",
                        tensor_string(b),
                        tensor_string(w)
                    )));
                }
            }
            let mut shape = x.shape.clone();
            let last = shape.len() - 1;
            shape[last] = w.shape[0];
            one(x.dtype, shape)
        }
        Matmul => infer_matmul(cx),
        Add | Sub | Mul | RealDiv | Maximum | Minimum | Equal | Less | LessEqual | Greater
        | GreaterEqual => {
            let x = cx.td("x", &FI)?;
            let y = cx.td("y", &FI)?;
            if x.dtype != y.dtype {
                return Err(cx.type_err(
                    "y",
                    format!("the dtype of x ({})", x.dtype.mil_name()),
                    tensor_string(y),
                ));
            }
            let shape = cx.broadcast(x, y)?;
            let comparison = matches!(cx.kind, Equal | Less | LessEqual | Greater | GreaterEqual);
            one(if comparison { DType::Bool } else { x.dtype }, shape)
        }
        Rsqrt => {
            let x = cx.td("x", &F)?;
            cx.float_scalar("epsilon")?;
            one(x.dtype, x.shape.clone())
        }
        Sqrt | Exp | Relu | Silu => {
            let x = cx.td("x", &F)?;
            one(x.dtype, x.shape.clone())
        }
        Gelu => {
            let x = cx.td("x", &F)?;
            if let Some(mode) = cx.string("mode")? {
                if !["EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION"]
                    .contains(&mode.as_str())
                {
                    return Err(cx.type_err(
                        "mode",
                        "EXACT, TANH_APPROXIMATION or SIGMOID_APPROXIMATION",
                        mode,
                    ));
                }
            }
            one(x.dtype, x.shape.clone())
        }
        LayerNorm => {
            let x = cx.td("x", &F)?;
            let rank = x.rank();
            let axes: Vec<usize> = match cx.ints("axes")? {
                Some(a) => a
                    .iter()
                    .map(|&a| cx.axis("axes", a, rank))
                    .collect::<Result<_>>()?,
                None => (0..rank).collect(),
            };
            let normalized: Shape = (0..rank)
                .filter(|i| axes.contains(i))
                .map(|i| x.shape[i])
                .collect();
            for p in ["gamma", "beta"] {
                if let Some(g) = cx.opt_td(p, &F)? {
                    let ok = g.rank() == normalized.len()
                        && g.shape.iter().zip(&normalized).all(|(a, b)| match (a, b) {
                            (Dim::Fixed(a), Dim::Fixed(b)) => a == b,
                            _ => true,
                        });
                    if !ok {
                        let want = TensorType {
                            dtype: g.dtype,
                            shape: normalized.clone(),
                        };
                        return Err(cx.shape_err(format!(
                            "{p} must have the normalized shape {}, got {}",
                            tensor_string(&want),
                            tensor_string(g)
                        )));
                    }
                }
            }
            cx.float_scalar("epsilon")?;
            one(x.dtype, x.shape.clone())
        }
        Softmax => {
            let x = cx.td("x", &F)?;
            if let Some(a) = cx.int_scalar("axis")? {
                cx.axis("axis", a, x.rank())?;
            }
            one(x.dtype, x.shape.clone())
        }
        Concat => infer_concat(cx),
        Split => infer_split(cx),
        SliceByIndex => {
            let x = cx.td("x", &SLICE_T)?;
            let shape = slice_shape(cx, x)?;
            one(x.dtype, shape)
        }
        SliceUpdate => {
            let x = cx.td("x", &SLICE_T)?;
            let u = cx.td("update", &SLICE_T)?;
            if u.dtype != x.dtype {
                return Err(cx.type_err(
                    "update",
                    format!("the dtype of x ({})", x.dtype.mil_name()),
                    tensor_string(u),
                ));
            }
            if u.rank() == 0 {
                return Err(cx.shape_err("a rank-0 update is not supported"));
            }
            let slice = slice_shape(cx, x)?;
            let ok = slice.len() == u.rank()
                && slice.iter().zip(&u.shape).all(|(a, b)| match (a, b) {
                    (Dim::Fixed(a), Dim::Fixed(b)) => a == b,
                    _ => true,
                });
            if !ok {
                let want = TensorType {
                    dtype: x.dtype,
                    shape: slice,
                };
                return Err(cx.shape_err(format!(
                    "update must have the slice's shape {}, got {}",
                    tensor_string(&want),
                    tensor_string(u)
                )));
            }
            one(x.dtype, x.shape.clone())
        }
        Reshape => infer_reshape(cx),
        Transpose => {
            let x = cx.td("x", &SLICE_T)?;
            let perm = cx.ints("perm")?.unwrap_or_default();
            let mut seen = vec![false; x.rank()];
            let mut shape = Vec::with_capacity(x.rank());
            if perm.len() != x.rank() {
                return Err(cx.shape_err(format!(
                    "perm {perm:?} must have length rank(x) = {}",
                    x.rank()
                )));
            }
            for &p in &perm {
                let a = cx.axis("perm", p, x.rank())?;
                if std::mem::replace(&mut seen[a], true) {
                    return Err(cx.shape_err(format!("perm {perm:?} is not a permutation")));
                }
                shape.push(x.shape[a]);
            }
            one(x.dtype, shape)
        }
        ExpandDims => {
            let x = cx.td("x", &SLICE_T)?;
            let axes = cx.ints("axes")?.unwrap_or_default();
            let out_rank = x.rank() + axes.len();
            let mut norm = axes
                .iter()
                .map(|&a| cx.axis("axes", a, out_rank))
                .collect::<Result<Vec<_>>>()?;
            norm.sort_unstable();
            if norm.is_empty() || norm.windows(2).any(|w| w[0] == w[1]) {
                return Err(cx.shape_err(format!("axes {axes:?} must be non-empty and distinct")));
            }
            let mut shape = x.shape.clone();
            for a in norm {
                shape.insert(a, Dim::Fixed(1));
            }
            one(x.dtype, shape)
        }
        Squeeze => {
            let x = cx.td("x", &SLICE_T)?;
            let shape = match cx.ints("axes")? {
                None => x
                    .shape
                    .iter()
                    .copied()
                    .filter(|d| *d != Dim::Fixed(1))
                    .collect(),
                Some(axes) => {
                    let mut norm = axes
                        .iter()
                        .map(|&a| cx.axis("axes", a, x.rank()))
                        .collect::<Result<Vec<_>>>()?;
                    norm.sort_unstable();
                    norm.dedup();
                    for &a in &norm {
                        if x.shape[a] != Dim::Fixed(1) {
                            return Err(cx.shape_err(format!(
                                "cannot squeeze axis {a} of {}: its size is not 1",
                                tensor_string(x)
                            )));
                        }
                    }
                    (0..x.rank())
                        .filter(|i| !norm.contains(i))
                        .map(|i| x.shape[i])
                        .collect()
                }
            };
            one(x.dtype, shape)
        }
        Gather => {
            let x = cx.td(
                "x",
                &[
                    DType::F16,
                    DType::F32,
                    DType::I32,
                    DType::I16,
                    DType::U16,
                    DType::I8,
                    DType::U8,
                ],
            )?;
            let idx = cx.td(
                "indices",
                &[DType::I32, DType::I16, DType::U16, DType::I8, DType::U8],
            )?;
            let axis = cx.axis("axis", cx.int_scalar("axis")?.unwrap_or(0), x.rank())?;
            let batch_dims = cx.int_scalar("batch_dims")?.unwrap_or(0);
            if batch_dims < 0 || batch_dims as usize >= x.rank() || batch_dims as usize > idx.rank()
            {
                return Err(cx.shape_err(format!(
                    "batch_dims {batch_dims} must be in [0, rank(x) = {}) and <= rank(indices) = {}",
                    x.rank(),
                    idx.rank()
                )));
            }
            if let Some(v) = cx.bool_scalar("validate_indices")? {
                let _ = v;
            }
            let mut shape: Shape = x.shape[..axis].to_vec();
            shape.extend_from_slice(&idx.shape[batch_dims as usize..]);
            shape.extend_from_slice(&x.shape[axis + 1..]);
            one(x.dtype, shape)
        }
        Cast => {
            let x = cx.td("x", &CAST_T)?;
            let name = cx.string("dtype")?.unwrap_or_default();
            let Some(d) = CAST_T.iter().copied().find(|d| d.mil_name() == name) else {
                return Err(cx.type_err(
                    "dtype",
                    format!("one of {}", dtypes(&CAST_T)),
                    format!("{name:?}"),
                ));
            };
            one(d, x.shape.clone())
        }
        Select => {
            let c = cx.td("cond", &[DType::Bool])?;
            let a = cx.td("a", &[DType::F16, DType::F32, DType::Bool, DType::I32])?;
            let b = cx.td("b", &[DType::F16, DType::F32, DType::Bool, DType::I32])?;
            if a.dtype != b.dtype {
                return Err(cx.type_err(
                    "b",
                    format!("the dtype of a ({})", a.dtype.mil_name()),
                    tensor_string(b),
                ));
            }
            let shape = cx.broadcast(a, b)?;
            let out = TensorType {
                dtype: a.dtype,
                shape,
            };
            match broadcast_shapes(&c.shape, &out.shape) {
                Some(s)
                    if s.len() == out.rank()
                        && types_compatible(
                            &tensor(a.dtype, s.clone()),
                            &tensor(a.dtype, out.shape.clone()),
                        ) => {}
                _ => {
                    return Err(cx.shape_err(format!(
                        "cond {} must broadcast to the output shape {}",
                        tensor_string(c),
                        tensor_string(&out)
                    )))
                }
            }
            Ok(vec![ValueType::Tensor(out)])
        }
        ReduceArgmax => {
            let x = cx.td("x", &FI)?;
            let axis = cx.axis("axis", cx.int_scalar("axis")?.unwrap_or(-1), x.rank())?;
            let keep = cx.bool_scalar("keep_dims")?.unwrap_or(false);
            let dt = cx
                .string("output_dtype")?
                .unwrap_or_else(|| "int32".to_string());
            let dtype = match dt.to_lowercase().as_str() {
                "int32" => DType::I32,
                "uint16" => DType::U16,
                _ => {
                    return Err(cx.type_err(
                        "output_dtype",
                        "\"int32\" or \"uint16\"",
                        format!("{dt:?}"),
                    ))
                }
            };
            let mut shape = x.shape.clone();
            if keep {
                shape[axis] = Dim::Fixed(1);
            } else {
                shape.remove(axis);
            }
            one(dtype, shape)
        }
        ReduceMax | ReduceSum | ReduceMean => {
            let x = cx.td("x", &FI)?;
            let keep = cx.bool_scalar("keep_dims")?.unwrap_or(false);
            let axes: Vec<usize> = match cx.ints("axes")? {
                Some(a) => a
                    .iter()
                    .map(|&a| cx.axis("axes", a, x.rank()))
                    .collect::<Result<_>>()?,
                None => (0..x.rank()).collect(),
            };
            let shape = if keep {
                (0..x.rank())
                    .map(|i| {
                        if axes.contains(&i) {
                            Dim::Fixed(1)
                        } else {
                            x.shape[i]
                        }
                    })
                    .collect()
            } else {
                (0..x.rank())
                    .filter(|i| !axes.contains(i))
                    .map(|i| x.shape[i])
                    .collect()
            };
            one(x.dtype, shape)
        }
        ReadState => match cx.get("input").map(|b| &b.ty) {
            Some(ValueType::State(t)) => Ok(vec![ValueType::Tensor(t.clone())]),
            Some(other) => Err(cx.type_err("input", "a state", type_string(other))),
            None => unreachable_missing(cx, "input"),
        },
        WriteState => {
            let st = match cx.get("input").map(|b| &b.ty) {
                Some(ValueType::State(t)) => t.clone(),
                Some(other) => return Err(cx.type_err("input", "a state", type_string(other))),
                None => return unreachable_missing(cx, "input"),
            };
            let data = cx.t("data")?;
            if *data != st {
                return Err(cx.type_err(
                    "data",
                    format!("the state's type {}", tensor_string(&st)),
                    tensor_string(data),
                ));
            }
            Ok(vec![])
        }
        BandPart => {
            let x = cx.td("x", &[DType::F16, DType::F32, DType::I32, DType::Bool])?;
            cx.int_scalar("lower")?;
            cx.int_scalar("upper")?;
            if x.rank() < 2 {
                return Err(cx.shape_err(format!("x {} must have rank >= 2", tensor_string(x))));
            }
            one(x.dtype, x.shape.clone())
        }
        Fill => {
            let s = cx.td("shape", &[DType::I32])?;
            let dtype =
                match cx.opt_td("value", &[DType::F16, DType::F32, DType::I32, DType::Bool])? {
                    Some(v) if v.num_elements() != Some(1) => {
                        return Err(cx.type_err("value", "a scalar", tensor_string(v)));
                    }
                    Some(v) => v.dtype,
                    None => DType::F32,
                };
            if s.rank() != 1 {
                return Err(cx.shape_err(format!("shape {} must be rank 1", tensor_string(s))));
            }
            let shape = match cx.ints_known("shape")? {
                Some(v) => {
                    if let Some(bad) = v.iter().find(|&&d| d <= 0) {
                        return Err(
                            cx.shape_err(format!("shape {v:?} has a non-positive dim {bad}"))
                        );
                    }
                    v.iter().map(|&d| Dim::Fixed(d as u64)).collect()
                }
                None => vec![Dim::Unknown; cx.runtime_rank(s)?],
            };
            one(dtype, shape)
        }
        Tile => {
            let x = cx.td("x", &[DType::F16, DType::F32, DType::I32, DType::Bool])?;
            let r = cx.td("reps", &[DType::I32])?;
            if r.rank() != 1 {
                return Err(cx.shape_err(format!("reps {} must be rank 1", tensor_string(r))));
            }
            let shape = match cx.ints_known("reps")? {
                None => vec![Dim::Unknown; x.rank()],
                Some(reps) => {
                    if reps.len() != x.rank() || reps.iter().any(|&r| r <= 0) {
                        return Err(cx.shape_err(format!(
                            "reps {reps:?} must be positive, one per dim of x {}",
                            tensor_string(x)
                        )));
                    }
                    x.shape
                        .iter()
                        .zip(&reps)
                        .map(|(d, &r)| match d {
                            Dim::Fixed(n) => {
                                n.checked_mul(r as u64).map(Dim::Fixed).ok_or_else(|| {
                                    cx.shape_err(format!(
                                        "reps {reps:?} times x {} overflows",
                                        tensor_string(x)
                                    ))
                                })
                            }
                            Dim::Unknown => Ok(Dim::Unknown),
                        })
                        .collect::<Result<_>>()?
                }
            };
            one(x.dtype, shape)
        }
    }
}

fn unreachable_missing(cx: &Cx, param: &'static str) -> Result<Vec<ValueType>> {
    Err(MilError::MissingParam {
        op: cx.op.to_string(),
        kind: cx.kind,
        param,
    })
}

fn infer_lut(cx: &Cx) -> Result<Vec<ValueType>> {
    let idx_t = cx.td(
        "indices",
        &[
            DType::U1,
            DType::U2,
            DType::U3,
            DType::U4,
            DType::U6,
            DType::U8,
        ],
    )?;
    let lut_t = cx.td("lut", &[DType::I8, DType::U8, DType::F16, DType::F32])?;
    let idx = cx.static_shape("indices", idx_t)?;
    let lut = cx.static_shape("lut", lut_t)?;
    if idx.is_empty() {
        return Err(cx.shape_err("indices must have rank >= 1"));
    }
    if lut.len() != idx.len() + 2 {
        return Err(cx.shape_err(format!(
            "lut {} must have rank indices rank + 2 = {} (indices {})",
            tensor_string(lut_t),
            idx.len() + 2,
            tensor_string(idx_t)
        )));
    }
    for (i, (&n, &l)) in idx.iter().zip(&lut).enumerate() {
        if l == 0 || n % l != 0 {
            return Err(cx.shape_err(format!(
                "lut dim {i} ({l}) must divide indices dim {i} ({n}): lut {}, indices {}",
                tensor_string(lut_t),
                tensor_string(idx_t)
            )));
        }
    }
    let palettes = lut[lut.len() - 2];
    let bits = idx_t.dtype.bits();
    if palettes != 1u64 << bits {
        return Err(cx.shape_err(format!(
            "lut.shape[-2] = {palettes} must be 2^{bits} for {} indices",
            idx_t.dtype.mil_name()
        )));
    }
    let vector = lut[lut.len() - 1];
    let mut shape = idx.clone();
    match cx.int_scalar("vector_axis")? {
        Some(a) => {
            let a = cx.axis("vector_axis", a, idx.len())?;
            shape[a] *= vector;
        }
        None if vector > 1 => {
            return Err(cx.shape_err(format!("lut's vector size {vector} > 1 needs vector_axis")));
        }
        None => {}
    }
    Ok(vec![tensor(lut_t.dtype, dims_of(&shape))])
}

fn infer_shift_scale(cx: &Cx) -> Result<Vec<ValueType>> {
    let data_t = cx.td(
        "data",
        &[
            DType::I4,
            DType::U4,
            DType::I8,
            DType::U8,
            DType::F16,
            DType::F32,
        ],
    )?;
    let scale_t = cx.td("scale", &F)?;
    let data = cx.static_shape("data", data_t)?;
    let scale = cx.static_shape("scale", scale_t)?;
    if data.is_empty() || data.len() != scale.len() {
        return Err(cx.shape_err(format!(
            "data {} and scale {} must have the same rank >= 1",
            tensor_string(data_t),
            tensor_string(scale_t)
        )));
    }
    for (i, (&d, &s)) in data.iter().zip(&scale).enumerate() {
        if s == 0 || d % s != 0 {
            return Err(cx.shape_err(format!(
                "scale dim {i} ({s}) must divide data dim {i} ({d})"
            )));
        }
    }
    if let Some(off) = cx.opt_td(
        "offset",
        &[
            DType::I4,
            DType::U4,
            DType::I8,
            DType::U8,
            DType::F16,
            DType::F32,
        ],
    )? {
        if off.shape != scale_t.shape {
            return Err(cx.shape_err(format!(
                "offset {} must have the shape of scale {}",
                tensor_string(off),
                tensor_string(scale_t)
            )));
        }
        if !off.dtype.is_float() && off.dtype != data_t.dtype {
            return Err(cx.type_err(
                "offset",
                format!("a float or the dtype of data ({})", data_t.dtype.mil_name()),
                tensor_string(off),
            ));
        }
    }
    Ok(vec![tensor(scale_t.dtype, dims_of(&data))])
}

fn infer_conv(cx: &Cx) -> Result<Vec<ValueType>> {
    let x = cx.td("x", &F)?;
    let w = cx.td("weight", &F)?;
    if x.rank() < 3 || w.rank() != x.rank() {
        return Err(cx.shape_err(format!(
            "conv needs x [N, C, spatial...] and weight [Cout, Cin/groups, k...] of the same rank, got x {} and weight {}",
            tensor_string(x),
            tensor_string(w)
        )));
    }
    let ns = x.rank() - 2;
    let wshape = cx.static_shape("weight", w)?;
    let cout = wshape[0];
    if let Some(b) = cx.opt_td("bias", &F)? {
        if b.rank() != 1 || b.shape[0] != Dim::Fixed(cout) {
            return Err(cx.shape_err(format!("bias {} must be [{cout}] (Cout)", tensor_string(b))));
        }
    }
    let groups = cx.int_scalar("groups")?.unwrap_or(1);
    if groups < 1 {
        return Err(cx.shape_err(format!("groups {groups} must be >= 1")));
    }
    if let Dim::Fixed(cin) = x.shape[1] {
        if cin % groups as u64 != 0 || cin / groups as u64 != wshape[1] {
            return Err(cx.shape_err(format!(
                "input channels {cin} / groups {groups} must equal weight dim 1 ({}); x {}, weight {}",
                wshape[1],
                tensor_string(x),
                tensor_string(w)
            )));
        }
    }
    if wshape[0] % groups as u64 != 0 {
        return Err(cx.shape_err(format!(
            "output channels {cout} not divisible by groups {groups}"
        )));
    }
    let list = |param: &'static str, len: usize, default: i64| -> Result<Vec<i64>> {
        match cx.ints(param)? {
            None => Ok(vec![default; len]),
            Some(v) if v.len() == len => Ok(v),
            Some(v) => Err(cx.shape_err(format!("{param} {v:?} must have {len} values"))),
        }
    };
    let strides = list("strides", ns, 1)?;
    let dilations = list("dilations", ns, 1)?;
    let pad = list("pad", 2 * ns, 0)?;
    if strides.iter().chain(&dilations).any(|&v| v < 1) || pad.iter().any(|&p| p < 0) {
        return Err(cx.shape_err(format!(
            "strides {strides:?} and dilations {dilations:?} must be >= 1, pad {pad:?} >= 0"
        )));
    }
    let pad_type = cx
        .string("pad_type")?
        .unwrap_or_else(|| "valid".to_string());
    if !matches!(
        pad_type.as_str(),
        "valid" | "same" | "custom" | "same_lower"
    ) {
        return Err(cx.type_err(
            "pad_type",
            "\"valid\", \"same\", \"custom\" or \"same_lower\"",
            format!("{pad_type:?}"),
        ));
    }
    if !cx.get("weight").is_some_and(|b| b.is_const()) && dilations.iter().any(|&d| d > 1) {
        return Err(cx.shape_err("conv with a runtime weight does not support dilations > 1"));
    }
    let mut shape = vec![x.shape[0], Dim::Fixed(cout)];
    for r in 0..ns {
        let Dim::Fixed(i) = x.shape[2 + r] else {
            shape.push(Dim::Unknown);
            continue;
        };
        // i128: sizes and parameters read from a file stay exact (u64 × i64 fits).
        let (i, k, s, d) = (
            i128::from(i),
            i128::from(wshape[2 + r]),
            i128::from(strides[r]),
            i128::from(dilations[r]),
        );
        let ek = (k - 1) * d + 1;
        let total_pad = match pad_type.as_str() {
            "valid" => 0,
            "custom" => i128::from(pad[2 * r]) + i128::from(pad[2 * r + 1]),
            _ => (s * ((i + s - 1) / s) - i + ek - s).max(0),
        };
        let out = (i + total_pad - ek).div_euclid(s) + 1;
        let out = match u64::try_from(out) {
            Ok(o) if o > 0 => o,
            _ => return Err(cx.shape_err(format!(
                "spatial dim {r} has invalid output size {out} (input {i}, kernel {k}, dilation {d}, stride {s}, pad {total_pad})"
            ))),
        };
        shape.push(Dim::Fixed(out));
    }
    Ok(vec![tensor(x.dtype, shape)])
}

fn infer_matmul(cx: &Cx) -> Result<Vec<ValueType>> {
    let x = cx.td("x", &FI)?;
    let y = cx.td("y", &FI)?;
    let tx = cx.bool_scalar("transpose_x")?.unwrap_or(false);
    let ty = cx.bool_scalar("transpose_y")?.unwrap_or(false);
    // iOS 17: a const operand may differ in dtype; the output takes the runtime operand's dtype.
    let x_const = cx.get("x").is_some_and(|b| b.value().is_some());
    let y_const = cx.get("y").is_some_and(|b| b.value().is_some());
    if x_const == y_const && x.dtype != y.dtype {
        return Err(cx.type_err(
            "y",
            format!("the dtype of x ({})", x.dtype.mil_name()),
            tensor_string(y),
        ));
    }
    let dtype = if x_const && !y_const {
        y.dtype
    } else {
        x.dtype
    };
    // A rank-1 x with a batched y: coremltools infers [..batch, 1, N][1:], numpy [..batch, N];
    // refuse rather than pick one.
    if x.rank() < 1 || y.rank() < 2 || (x.rank() == 1 && (tx || y.rank() > 2)) {
        return Err(cx.shape_err(format!(
            "matmul needs x of rank >= 1 (>= 2 when transposed or when y is batched) and y of rank >= 2, got x {} and y {}",
            tensor_string(x),
            tensor_string(y)
        )));
    }
    let mut xs = x.shape.clone();
    let mut ys = y.shape.clone();
    let (xr, yr) = (xs.len(), ys.len());
    if tx {
        xs.swap(xr - 1, xr - 2);
    }
    if ty {
        ys.swap(yr - 1, yr - 2);
    }
    if let (Dim::Fixed(a), Dim::Fixed(b)) = (xs[xr - 1], ys[yr - 2]) {
        if a != b {
            return Err(cx.shape_err(format!(
                "inner dims differ: x {} (transpose_x {tx}) and y {} (transpose_y {ty})",
                tensor_string(x),
                tensor_string(y)
            )));
        }
    }
    if xr == 1 {
        xs.insert(0, Dim::Fixed(1));
    }
    let batch = broadcast_shapes(&xs[..xs.len() - 2], &ys[..yr - 2]).ok_or_else(|| {
        cx.shape_err(format!(
            "batch dims of x {} and y {} do not broadcast",
            tensor_string(x),
            tensor_string(y)
        ))
    })?;
    let mut shape = batch;
    if xr > 1 {
        shape.push(xs[xs.len() - 2]);
    }
    shape.push(ys[yr - 1]);
    Ok(vec![tensor(dtype, shape)])
}

fn infer_concat(cx: &Cx) -> Result<Vec<ValueType>> {
    let values = cx
        .args
        .get("values")
        .map(|v| v.as_slice())
        .unwrap_or_default();
    let mut ts = Vec::with_capacity(values.len());
    for b in values {
        let t = cx.tensor_of("values", b)?;
        if t.dtype == DType::Str {
            return Err(cx.type_err("values", "numeric or bool tensors", tensor_string(t)));
        }
        ts.push(t);
    }
    let first = ts[0];
    let rank = first.rank();
    for t in &ts[1..] {
        if t.dtype != first.dtype || t.rank() != rank {
            return Err(cx.type_err(
                "values",
                format!(
                    "tensors of one dtype and rank like {}",
                    tensor_string(first)
                ),
                tensor_string(t),
            ));
        }
    }
    let axis = cx.int_scalar("axis")?.unwrap_or(0);
    let interleave = cx.bool_scalar("interleave")?.unwrap_or(false);
    if rank == 0 {
        return Ok(vec![tensor(first.dtype, vec![Dim::Fixed(ts.len() as u64)])]);
    }
    let axis = cx.axis("axis", axis, rank)?;
    let mut shape = first.shape.clone();
    for t in &ts[1..] {
        for (i, (&da, &db)) in shape.iter().zip(&t.shape).enumerate() {
            if let (Dim::Fixed(a), Dim::Fixed(b)) = (da, db) {
                if a != b && (i != axis || interleave) {
                    return Err(cx.shape_err(format!(
                        "values {} and {} differ outside the concat axis {axis}{}",
                        tensor_string(first),
                        tensor_string(t),
                        if interleave {
                            " (interleave needs equal shapes)"
                        } else {
                            ""
                        }
                    )));
                }
            }
        }
    }
    let mut total = Some(0u64);
    for t in &ts {
        total = match (total, t.shape[axis]) {
            (Some(s), Dim::Fixed(n)) => Some(s.checked_add(n).ok_or_else(|| {
                cx.shape_err(format!("the concat axis {axis} sums to more than 2^64"))
            })?),
            _ => None,
        };
    }
    shape[axis] = total.map_or(Dim::Unknown, Dim::Fixed);
    Ok(vec![tensor(first.dtype, shape)])
}

/// The most outputs a `split` may have. Each output is declared one by one in the file, and
/// anec splits into at most a few dozen (LM-head parts); the count sizes a list before the
/// declared outputs are compared with it.
const MAX_SPLITS: i64 = 1 << 12;

fn infer_split(cx: &Cx) -> Result<Vec<ValueType>> {
    let x = cx.td("x", &[DType::F16, DType::F32, DType::I32, DType::Bool])?;
    let axis = cx.axis("axis", cx.int_scalar("axis")?.unwrap_or(0), x.rank())?;
    let num = cx.int_scalar("num_splits")?;
    let sizes = cx.ints("split_sizes")?;
    let dims: Vec<Dim> = match (num, sizes) {
        (None, None) => {
            return Err(cx.shape_err("one of num_splits and split_sizes is required"));
        }
        (_, Some(sizes)) => {
            if num.is_some_and(|n| n != sizes.len() as i64)
                || sizes.is_empty()
                || sizes.iter().any(|&s| s <= 0)
            {
                return Err(cx.shape_err(format!(
                    "split_sizes {sizes:?} must be positive and agree with num_splits {num:?}"
                )));
            }
            if let Dim::Fixed(n) = x.shape[axis] {
                if sizes.iter().sum::<i64>() != n as i64 {
                    return Err(cx.shape_err(format!(
                        "split_sizes {sizes:?} must sum to dim {axis} of x {}",
                        tensor_string(x)
                    )));
                }
            }
            sizes.iter().map(|&s| Dim::Fixed(s as u64)).collect()
        }
        (Some(n), None) => {
            if !(1..=MAX_SPLITS).contains(&n) {
                return Err(
                    cx.shape_err(format!("num_splits {n} must be between 1 and {MAX_SPLITS}"))
                );
            }
            match x.shape[axis] {
                Dim::Fixed(d) if d % n as u64 != 0 => {
                    return Err(cx.shape_err(format!(
                        "num_splits {n} does not divide dim {axis} of x {}",
                        tensor_string(x)
                    )));
                }
                Dim::Fixed(d) => vec![Dim::Fixed(d / n as u64); n as usize],
                Dim::Unknown => vec![Dim::Unknown; n as usize],
            }
        }
    };
    Ok(dims
        .into_iter()
        .map(|d| {
            let mut s = x.shape.clone();
            s[axis] = d;
            tensor(x.dtype, s)
        })
        .collect())
}

/// coremltools' `solve_slice_by_index_shape`, with unknown begin/end when they are runtime values.
fn slice_shape(cx: &Cx, x: &TensorType) -> Result<Shape> {
    let rank = x.rank();
    for p in ["begin", "end"] {
        let t = cx.td(if p == "begin" { "begin" } else { "end" }, &INT_U)?;
        if t.rank() != 1 || (t.shape[0] != Dim::Fixed(rank as u64) && t.shape[0] != Dim::Unknown) {
            return Err(cx.shape_err(format!(
                "{p} {} must be [rank(x)] = [{rank}]",
                tensor_string(t)
            )));
        }
    }
    let begin = cx.ints_known("begin")?;
    let end = cx.ints_known("end")?;
    let stride = cx.ints("stride")?.unwrap_or_else(|| vec![1; rank]);
    let begin_mask = cx.bools("begin_mask")?.unwrap_or_else(|| vec![false; rank]);
    let end_mask = cx.bools("end_mask")?.unwrap_or_else(|| vec![false; rank]);
    let squeeze_mask = cx
        .bools("squeeze_mask")?
        .unwrap_or_else(|| vec![false; rank]);
    for (p, n) in [
        ("begin", begin.as_ref().map(|v| v.len())),
        ("end", end.as_ref().map(|v| v.len())),
        ("stride", Some(stride.len())),
        ("begin_mask", Some(begin_mask.len())),
        ("end_mask", Some(end_mask.len())),
        ("squeeze_mask", Some(squeeze_mask.len())),
    ] {
        if let Some(n) = n {
            if n != rank {
                return Err(cx.shape_err(format!("{p} has {n} values, rank(x) is {rank}")));
            }
        }
    }
    if let Some(i) = stride.iter().position(|&s| s == 0) {
        return Err(cx.shape_err(format!("stride {stride:?} is 0 at dim {i}")));
    }
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        if squeeze_mask[i] {
            continue;
        }
        let (b, e, s) = (
            begin.as_ref().map(|v| v[i]),
            end.as_ref().map(|v| v[i]),
            stride[i],
        );
        let (bm, em) = (begin_mask[i], end_mask[i]);
        if bm && em {
            out.push(match x.shape[i] {
                Dim::Fixed(n) => Dim::Fixed(n.div_ceil(s.unsigned_abs())),
                Dim::Unknown => Dim::Unknown,
            });
            continue;
        }
        if let (false, false, Some(b), Some(e)) = (bm, em, b, e) {
            let mut fixed = None;
            if b >= 0 && e >= 0 && s > 0 {
                if e < b {
                    return Err(cx.shape_err(format!(
                        "dim {i}: end {e} < begin {b} with stride {s} is not supported"
                    )));
                }
                fixed = Some((e - b + s - 1) / s);
            }
            if b < 0 && e < 0 && s < 0 {
                if b < e {
                    return Err(cx.shape_err(format!(
                        "dim {i}: begin {b} < end {e} with stride {s} is not supported"
                    )));
                }
                fixed = Some((b - e - s - 1).div_euclid(-s));
            }
            if let Some(n @ (0 | 1)) = fixed {
                out.push(Dim::Fixed(n as u64));
                continue;
            }
        }
        if let (false, true, Some(b)) = (bm, em, b) {
            if (b == 0 && s < 0) || (b == -1 && s > 0) {
                out.push(Dim::Fixed(1));
                continue;
            }
        }
        let n = match x.shape[i] {
            Dim::Unknown => {
                out.push(Dim::Unknown);
                continue;
            }
            Dim::Fixed(n) => i64::try_from(n).map_err(|_| {
                cx.shape_err(format!("dim {i} of x {} is beyond int64", tensor_string(x)))
            })?,
        };
        if n == 1 {
            out.push(Dim::Fixed(1));
            continue;
        }
        if (b.is_none() && !bm) || (e.is_none() && !em) {
            out.push(Dim::Unknown);
            continue;
        }
        let b = b.map(|b| if b < 0 { (b + n).max(0) } else { b });
        let e = e.map(|e| if e < 0 { (e + n).max(0) } else { e });
        let (low, high) = if s > 0 { (0, n) } else { (-1, n - 1) };
        let (bi, ei, is_bm, is_em) = if s > 0 {
            (b, e, bm, em)
        } else {
            (e, b, em, bm)
        };
        let bi = if is_bm { low } else { bi.unwrap_or(low) };
        let ei = if is_em {
            high
        } else {
            ei.unwrap_or(high).min(high)
        };
        let num = ((ei - bi) as f64 / s.unsigned_abs() as f64).ceil() as i64;
        out.push(Dim::Fixed(num.max(0) as u64));
    }
    Ok(out)
}

fn infer_reshape(cx: &Cx) -> Result<Vec<ValueType>> {
    let x = cx.td("x", &SLICE_T)?;
    let s = cx.td("shape", &INT_U)?;
    if s.rank() != 1 {
        return Err(cx.shape_err(format!("shape {} must be rank 1", tensor_string(s))));
    }
    let Some(target) = cx.ints_known("shape")? else {
        return Ok(vec![tensor(
            x.dtype,
            vec![Dim::Unknown; cx.runtime_rank(s)?],
        )]);
    };
    if target.iter().filter(|&&d| d == -1).count() > 1 || target.iter().any(|&d| d < -1) {
        return Err(cx.shape_err(format!(
            "shape {target:?} may hold at most one -1 and no other negative value"
        )));
    }
    if target.contains(&0) && target.len() != x.rank() {
        return Err(cx.shape_err(format!(
            "shape {target:?} holds 0 (copy the input dim), so it must have rank(x) = {} values",
            x.rank()
        )));
    }
    let mut out: Shape = target
        .iter()
        .enumerate()
        .map(|(i, &d)| match d {
            0 => x.shape[i],
            -1 => Dim::Unknown,
            d => Dim::Fixed(d as u64),
        })
        .collect();
    let total = x.num_elements();
    let neg = target.iter().position(|&d| d == -1);
    // The product of the dims other than -1; None with an unknown dim.
    let mut known = Some(1u64);
    for (i, d) in out.iter().enumerate() {
        if Some(i) == neg {
            continue;
        }
        known = match (known, d) {
            (Some(k), Dim::Fixed(n)) => Some(k.checked_mul(*n).ok_or_else(|| {
                cx.shape_err(format!(
                    "shape {target:?} describes more than 2^64 elements"
                ))
            })?),
            _ => None,
        };
    }
    match (total, known, neg) {
        (Some(t), Some(k), Some(i)) => {
            if k == 0 || t % k != 0 {
                return Err(cx.shape_err(format!(
                    "cannot reshape {} into {target:?}",
                    tensor_string(x)
                )));
            }
            out[i] = Dim::Fixed(t / k);
        }
        (Some(t), Some(k), None) if t != k => {
            return Err(cx.shape_err(format!(
                "cannot reshape {} ({t} elements) into {target:?} ({k} elements)",
                tensor_string(x)
            )));
        }
        _ => {}
    }
    Ok(vec![tensor(x.dtype, out)])
}

/// Infers a `const` op's output: its value's type. The op must have a value and no inputs.
fn const_output(op: &Operation) -> Result<ValueType> {
    let val = op.val.as_ref().ok_or_else(|| MilError::MissingVal {
        op: op.name.clone(),
    })?;
    if let Some(p) = op.inputs.keys().next() {
        return Err(MilError::UnknownParam {
            op: op.name.clone(),
            kind: OpKind::Const,
            param: p.clone(),
        });
    }
    Ok(ValueType::Tensor(val.ty.clone()))
}

/// The constness of an op's outputs, as coremltools' `is_descendant_of_const`: a `const` op's
/// value, a `constexpr_*` output, or the output of an op whose every input is constant
/// (e.g. a `transpose` of a LUT-decompressed weight). Values are not propagated.
pub(crate) fn output_konst(
    kind: OpKind,
    val: Option<&ConstValue>,
    inputs: &BTreeMap<String, Vec<Arg>>,
    env: &Env,
) -> Konst {
    match (kind, val) {
        (OpKind::Const, Some(v)) => Konst::Const(v.clone()),
        (k, _) if is_constexpr(k) => Konst::Constexpr,
        _ => {
            let all_const = inputs.values().flatten().all(|a| match a {
                Arg::Value(_) => true,
                Arg::Var(n) => env.get(n).is_some_and(|i| !matches!(i.konst, Konst::No)),
            });
            if all_const && kind != OpKind::WriteState {
                Konst::Constexpr
            } else {
                Konst::No
            }
        }
    }
}

/// Re-runs type inference over a built or read function: every op's bindings must check, and
/// every declared output type must agree with the inferred one (error names the op and both
/// types). Names must be valid and unique; function outputs must name tensors.
pub fn check_function(f: &Function) -> Result<()> {
    let mut env: Env = HashMap::new();
    let define = |env: &mut Env, name: &str, info: VarInfo| -> Result<()> {
        super::builder::check_identifier(name)?;
        if env.insert(name.to_string(), info).is_some() {
            return Err(MilError::DuplicateName {
                name: name.to_string(),
            });
        }
        Ok(())
    };
    for (name, ty) in &f.inputs {
        define(
            &mut env,
            name,
            VarInfo {
                ty: ty.clone(),
                konst: Konst::No,
            },
        )?;
    }
    let mut op_names = std::collections::HashSet::new();
    for op in &f.operations {
        super::builder::check_identifier(&op.name)?;
        if !op_names.insert(op.name.as_str()) {
            return Err(MilError::DuplicateName {
                name: op.name.clone(),
            });
        }
        let inferred = if op.kind == OpKind::Const {
            vec![const_output(op)?]
        } else {
            if op.val.is_some() {
                return Err(MilError::UnknownParam {
                    op: op.name.clone(),
                    kind: op.kind,
                    param: "val".to_string(),
                });
            }
            infer(op.kind, &op.name, &op.inputs, &env)?
        };
        if inferred.len() != op.outputs.len() {
            return Err(MilError::OutputCount {
                op: op.name.clone(),
                kind: op.kind,
                declared: op.outputs.len(),
                inferred: inferred.len(),
            });
        }
        for ((out, declared), inf) in op.outputs.iter().zip(inferred) {
            if !types_compatible(declared, &inf) {
                return Err(MilError::OutputMismatch {
                    op: op.name.clone(),
                    kind: op.kind,
                    output: out.clone(),
                    declared: type_string(declared),
                    inferred: type_string(&inf),
                });
            }
            // Like coremltools, later ops see the inferred type.
            let konst = output_konst(op.kind, op.val.as_ref(), &op.inputs, &env);
            define(&mut env, out, VarInfo { ty: inf, konst })?;
        }
    }
    if f.outputs.is_empty() {
        return Err(MilError::NoOutputs);
    }
    for name in &f.outputs {
        match env.get(name) {
            None => {
                return Err(MilError::BadOutput {
                    name: name.clone(),
                    detail: "no variable of that name".to_string(),
                })
            }
            Some(VarInfo {
                ty: ValueType::State(_),
                ..
            }) => {
                return Err(MilError::BadOutput {
                    name: name.clone(),
                    detail: "a state cannot be a function output".to_string(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Inputs (tensors and states) that no op reads and no output names. Core ML rejects a
/// function with an unused state (ANEMLL's experience, consistent with coremltools inserting
/// identity ops for unused inputs), so a builder of multi-function models should check this.
pub fn unused_inputs(f: &Function) -> Vec<&str> {
    let used: std::collections::HashSet<&str> = f
        .operations
        .iter()
        .flat_map(|op| op.inputs.values().flatten())
        .filter_map(|a| match a {
            Arg::Var(n) => Some(n.as_str()),
            Arg::Value(_) => None,
        })
        .chain(f.outputs.iter().map(String::as_str))
        .collect();
    f.inputs
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !used.contains(n))
        .collect()
}

/// [`check_function`] for every function of a program; also checks that the function names are
/// valid and unique and that the default function is one of them.
pub fn check_program(p: &Program) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for (name, f) in &p.functions {
        super::builder::check_identifier(name)?;
        if !seen.insert(name.as_str()) {
            return Err(MilError::BadProgram {
                detail: format!("function {name:?} is defined twice"),
            });
        }
        check_function(f).map_err(|e| match e {
            MilError::BadProgram { .. } => e,
            other => MilError::InFunction {
                function: name.clone(),
                source: Box::new(other),
            },
        })?;
    }
    if !seen.contains(p.default_function.as_str()) {
        return Err(MilError::BadProgram {
            detail: format!(
                "default function {:?} is not one of {:?}",
                p.default_function,
                p.functions.iter().map(|(n, _)| n).collect::<Vec<_>>()
            ),
        });
    }
    Ok(())
}

/// Re-infers the type of every op output of `f` from its inputs' declared types, in order, and
/// stores them: after an input's type changed (a flexible input fixed to one shape), the ops
/// below it get the types that follow. Then checks the function like [`check_function`].
pub fn retype(f: &mut Function) -> Result<()> {
    let mut env: Env = HashMap::new();
    for (name, ty) in &f.inputs {
        env.insert(
            name.clone(),
            VarInfo {
                ty: ty.clone(),
                konst: Konst::No,
            },
        );
    }
    for op in &mut f.operations {
        let inferred = if op.kind == OpKind::Const {
            vec![const_output(op)?]
        } else {
            infer(op.kind, &op.name, &op.inputs, &env)?
        };
        if inferred.len() != op.outputs.len() {
            return Err(MilError::OutputCount {
                op: op.name.clone(),
                kind: op.kind,
                declared: op.outputs.len(),
                inferred: inferred.len(),
            });
        }
        for ((out, declared), inf) in op.outputs.iter_mut().zip(inferred) {
            let konst = output_konst(op.kind, op.val.as_ref(), &op.inputs, &env);
            *declared = inf.clone();
            env.insert(out.clone(), VarInfo { ty: inf, konst });
        }
    }
    check_function(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        let f = |v: &[u64]| v.iter().map(|&d| Dim::Fixed(d)).collect::<Vec<_>>();
        assert_eq!(
            broadcast_shapes(&f(&[1, 4, 1]), &f(&[3, 1, 5])),
            Some(f(&[3, 4, 5]))
        );
        assert_eq!(broadcast_shapes(&f(&[8]), &f(&[2, 1])), Some(f(&[2, 8])));
        assert_eq!(broadcast_shapes(&f(&[]), &f(&[2])), Some(f(&[2])));
        assert_eq!(broadcast_shapes(&f(&[3]), &f(&[4])), None);
        assert_eq!(
            broadcast_shapes(&[Dim::Unknown], &f(&[1])),
            Some(vec![Dim::Unknown])
        );
        assert_eq!(broadcast_shapes(&[Dim::Unknown], &f(&[5])), Some(f(&[5])));
    }

    #[test]
    fn compatibility_treats_unknown_as_wildcard() {
        let a = ValueType::Tensor(TensorType::new(DType::F16, &[1, 4]));
        let u = ValueType::Tensor(TensorType {
            dtype: DType::F16,
            shape: vec![Dim::Fixed(1), Dim::Unknown],
        });
        assert!(types_compatible(&a, &u) && types_compatible(&u, &a));
        let b = ValueType::Tensor(TensorType::new(DType::F16, &[1, 5]));
        assert!(!types_compatible(&a, &b));
        let c = ValueType::Tensor(TensorType::new(DType::F32, &[1, 4]));
        assert!(!types_compatible(&a, &c));
        let s = ValueType::State(TensorType::new(DType::F16, &[1, 4]));
        assert!(!types_compatible(&a, &s));
    }

    #[test]
    fn op_names_round_trip() {
        let mut names = std::collections::HashSet::new();
        for &k in OpKind::ALL {
            let n = k.mil_name();
            assert!(names.insert(n), "duplicate name {n}");
            assert_eq!(OpKind::from_mil_name(n), Some(k));
        }
        assert_eq!(OpKind::from_mil_name("rms_norm"), None);
    }

    #[test]
    fn type_strings_are_readable() {
        let t = ValueType::State(TensorType {
            dtype: DType::F16,
            shape: vec![Dim::Fixed(2), Dim::Unknown],
        });
        assert_eq!(type_string(&t), "state<fp16[2, ?]>");
    }
}
