//! A CPU interpreter of MIL programs with Core ML's op semantics, in fp32 or fp16-rounded.
//! It shares no code with the graph builder in `ane`: it is the independent check.
//!
//! The interpreter walks a function's operations in order, keeping every variable in an
//! environment; constants and `constexpr_*` weights are decoded once and cached (shared weights of
//! multi-function packages, which reference the same blob offsets, are decoded once for all
//! functions). States (the KV cache) live in a caller-owned map keyed by the state's name, updated
//! only when a run succeeds. Every op's computed output is checked against the type the program
//! declares for it, so a wrong type inference in the writer shows up here.
//!
//! Tensors are the module's own small type ([`Tensor`]: f32/i32/bool storage tagged with the MIL
//! dtype), not candle's: Core ML's dtype rules (fp16 values held exactly, int/bool results of
//! comparisons and casts, fp16 rounding after every op) read directly in plain loops.
//!
//! Semantics decisions, each from coremltools' op definitions (ops/defs/iOS15..18):
//! - `Precision::F16` rounds every fp16-typed op output to fp16 (ties to even, overflow to ±inf);
//!   ops that only move values (slices, reshapes, gather, concat, states, …) need no rounding.
//!   `Precision::F32` never rounds computed values. Decompressed fp16 weights are fp16 in both.
//! - `rsqrt` is `1/sqrt(x + epsilon)`, epsilon defaulting to 1e-12 cast to x's dtype (0 in fp16).
//! - `gather` indices must be in `[0, D)`: since iOS 17 negative indices are out of bounds
//!   (undefined without `validate_indices`), so they are an error here, as are indices ≥ D.
//! - `slice_by_index` / `slice_update` follow Python slicing (negative indices wrap, out-of-range
//!   ends clip, masks select the full range, `squeeze_mask` picks `begin`).
//! - `cast` float → int truncates toward zero (numpy `astype`); to bool is `x != 0`.
//! - `reshape` takes one `-1` and `0` = copy the input dimension.
//! - `constexpr_lut_to_dense` (iOS 18): `out[i…] = lut[i_0/b_0, …, indices[i…], v]` with
//!   contiguous blocks `b_d = indices_d / lut_d`; `constexpr_blockwise_shift_scale`:
//!   `scale[blk] · (data − offset[blk])`.

pub mod json;
mod ops;
mod tensor;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::mil::{
    Arg, ConstData, ConstValue, DType, Dim, Function, OpKind, Operation, Program, ValueType,
};

use ops::{Binary, PadType, Reduce, Unary};
pub use tensor::{round_f16, Data, Tensor, TensorError};
use tensor::{storage_of, Storage};

/// How floats are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// All math in f32; fp16-typed values are not rounded (constants stay as stored).
    F32,
    /// Every op's fp16-typed float output is rounded to fp16 (what the ANE computes in).
    F16,
}

/// What went wrong in one op.
#[derive(Debug, thiserror::Error)]
pub enum OpProblem {
    #[error("missing parameter `{0}`")]
    MissingParam(String),
    #[error("parameter `{param}` refers to `{var}`, which is not defined before this op")]
    UnboundVar { param: String, var: String },
    #[error("parameter `{param}`: expected {expected}, got {got}")]
    ParamType {
        param: String,
        expected: String,
        got: String,
    },
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("parameter `{param}`: index {index} out of range for a dimension of size {size}")]
    IndexOutOfRange {
        param: String,
        index: i64,
        size: usize,
    },
    #[error("parameter `{param}`: invalid value {value}: {why}")]
    BadValue {
        param: String,
        value: String,
        why: String,
    },
    #[error("output `{name}` is declared {declared} but computed {computed}")]
    OutputType {
        name: String,
        declared: String,
        computed: String,
    },
    #[error("state `{state}`: {problem}")]
    State { state: String, problem: String },
    #[error("constant `{param}`: {message}")]
    Const { param: String, message: String },
    #[error("internal: {0}")]
    Internal(String),
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Errors of the interpreter. Op errors name the op type, the op's name and the function.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("unknown function `{name}` (the program has: {available})")]
    UnknownFunction { name: String, available: String },
    #[error("function `{function}`: missing input `{name}`")]
    MissingInput { function: String, name: String },
    #[error("function `{function}`: `{name}` is not an input of this function")]
    UnexpectedInput { function: String, name: String },
    #[error("function `{function}`: input `{name}`: expected {expected}, got {got}")]
    InputType {
        function: String,
        name: String,
        expected: String,
        got: String,
    },
    #[error(
        "function `{function}`: missing state `{name}` (create it with Interpreter::zero_states)"
    )]
    MissingState { function: String, name: String },
    #[error("function `{function}`: state `{name}`: expected {expected}, got {got}")]
    StateType {
        function: String,
        name: String,
        expected: String,
        got: String,
    },
    #[error("function `{function}`: output `{name}` is not a tensor computed by the function")]
    MissingOutput { function: String, name: String },
    #[error("function `{function}`: {op_type} op `{op}`: {problem}")]
    Op {
        function: String,
        op_type: &'static str,
        op: String,
        problem: Box<OpProblem>,
    },
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

pub type Result<T, E = ExecError> = std::result::Result<T, E>;

/// Core ML's name of each op kind (this module's own table; `mil` has the writer's).
pub fn op_type(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Const => "const",
        OpKind::ConstexprLutToDense => "constexpr_lut_to_dense",
        OpKind::ConstexprBlockwiseShiftScale => "constexpr_blockwise_shift_scale",
        OpKind::Conv => "conv",
        OpKind::Linear => "linear",
        OpKind::Matmul => "matmul",
        OpKind::Add => "add",
        OpKind::Sub => "sub",
        OpKind::Mul => "mul",
        OpKind::RealDiv => "real_div",
        OpKind::Maximum => "maximum",
        OpKind::Minimum => "minimum",
        OpKind::Rsqrt => "rsqrt",
        OpKind::Sqrt => "sqrt",
        OpKind::Exp => "exp",
        OpKind::Relu => "relu",
        OpKind::Silu => "silu",
        OpKind::Gelu => "gelu",
        OpKind::LayerNorm => "layer_norm",
        OpKind::Softmax => "softmax",
        OpKind::Concat => "concat",
        OpKind::Split => "split",
        OpKind::SliceByIndex => "slice_by_index",
        OpKind::SliceUpdate => "slice_update",
        OpKind::Reshape => "reshape",
        OpKind::Transpose => "transpose",
        OpKind::ExpandDims => "expand_dims",
        OpKind::Squeeze => "squeeze",
        OpKind::Gather => "gather",
        OpKind::Cast => "cast",
        OpKind::Select => "select",
        OpKind::ReduceArgmax => "reduce_argmax",
        OpKind::ReduceMax => "reduce_max",
        OpKind::ReduceSum => "reduce_sum",
        OpKind::ReduceMean => "reduce_mean",
        OpKind::ReadState => "read_state",
        OpKind::WriteState => "write_state",
        OpKind::Equal => "equal",
        OpKind::Less => "less",
        OpKind::LessEqual => "less_equal",
        OpKind::Greater => "greater",
        OpKind::GreaterEqual => "greater_equal",
        OpKind::BandPart => "band_part",
        OpKind::Fill => "fill",
        OpKind::Tile => "tile",
    }
}

/// Anything that holds a program: a `Program`, or a whole model read from a package.
pub trait HasProgram {
    fn program(&self) -> &Program;
}

impl HasProgram for crate::mil::Model {
    fn program(&self) -> &Program {
        &self.program
    }
}

impl HasProgram for Program {
    fn program(&self) -> &Program {
        self
    }
}

/// A variable's value during a run.
#[derive(Clone, Debug)]
enum Value {
    Tensor(Tensor),
    Strings(Arc<[String]>),
    /// A state input: the name under which the caller's state map holds it.
    State(String),
}

/// Cache keys for decoded constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum CacheKey {
    /// (function index, op index)
    Op(usize, usize),
    /// A const or constexpr whose inputs are all weight.bin blobs: kind + (param, offset) list.
    Blobs(OpKind, Vec<(String, u64)>),
}

/// The CPU interpreter of one program.
pub struct Interpreter {
    program: Program,
    precision: Precision,
    cache: Mutex<HashMap<CacheKey, Arc<Vec<Value>>>>,
}

/// Named intermediate values of a run, in op order.
pub type Trace = Vec<(String, Tensor)>;

/// Which op outputs to keep, and where.
type TraceSink<'a> = (&'a dyn Fn(&str) -> bool, &'a mut Trace);

impl Interpreter {
    /// An interpreter over a copy of the program (constants are reference-counted, so the copy
    /// is cheap).
    pub fn new(src: &impl HasProgram, precision: Precision) -> Interpreter {
        Interpreter {
            program: src.program().clone(),
            precision,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    fn function(&self, name: &str) -> Result<(usize, &Function)> {
        self.program
            .functions
            .iter()
            .enumerate()
            .find(|(_, (n, _))| n == name)
            .map(|(i, (_, f))| (i, f))
            .ok_or_else(|| ExecError::UnknownFunction {
                name: name.to_string(),
                available: self
                    .program
                    .functions
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Zero-filled states for every state the function declares.
    pub fn zero_states(&self, function: &str) -> Result<BTreeMap<String, Tensor>> {
        let (_, f) = self.function(function)?;
        let mut out = BTreeMap::new();
        for (name, ty) in &f.inputs {
            if let ValueType::State(tt) = ty {
                let shape = tt.static_shape().ok_or_else(|| ExecError::StateType {
                    function: function.to_string(),
                    name: name.clone(),
                    expected: "a fixed shape".into(),
                    got: format!("{:?}", tt.shape),
                })?;
                out.insert(
                    name.clone(),
                    Tensor::zeros(tt.dtype, shape.iter().map(|&d| d as usize).collect())?,
                );
            }
        }
        Ok(out)
    }

    /// Runs `function` on `inputs`; reads and (on success) updates `states`. Returns the
    /// function's outputs by name.
    pub fn run(
        &self,
        function: &str,
        inputs: &BTreeMap<String, Tensor>,
        states: &mut BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>> {
        self.run_inner(function, inputs, states, None)
    }

    /// Like [`run`](Self::run), also returning every op output whose name `keep` accepts.
    pub fn run_with_trace(
        &self,
        function: &str,
        inputs: &BTreeMap<String, Tensor>,
        states: &mut BTreeMap<String, Tensor>,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<(BTreeMap<String, Tensor>, Trace)> {
        let mut trace = Vec::new();
        let out = self.run_inner(function, inputs, states, Some((keep, &mut trace)))?;
        Ok((out, trace))
    }

    fn run_inner(
        &self,
        function: &str,
        inputs: &BTreeMap<String, Tensor>,
        states: &mut BTreeMap<String, Tensor>,
        mut trace: Option<TraceSink<'_>>,
    ) -> Result<BTreeMap<String, Tensor>> {
        let (fi, f) = self.function(function)?;
        let fname = || function.to_string();
        let mut env: HashMap<&str, Value> = HashMap::new();
        let mut local_states: BTreeMap<String, Tensor> = BTreeMap::new();
        for name in inputs.keys() {
            if !f
                .inputs
                .iter()
                .any(|(n, t)| n == name && matches!(t, ValueType::Tensor(_)))
            {
                return Err(ExecError::UnexpectedInput {
                    function: fname(),
                    name: name.clone(),
                });
            }
        }
        for (name, ty) in &f.inputs {
            match ty {
                ValueType::Tensor(tt) => {
                    let t = inputs.get(name).ok_or_else(|| ExecError::MissingInput {
                        function: fname(),
                        name: name.clone(),
                    })?;
                    let t = self.conform(tt, t).map_err(|got| ExecError::InputType {
                        function: fname(),
                        name: name.clone(),
                        expected: describe_type(tt),
                        got,
                    })?;
                    env.insert(name, Value::Tensor(t));
                }
                ValueType::State(tt) => {
                    let t = states.get(name).ok_or_else(|| ExecError::MissingState {
                        function: fname(),
                        name: name.clone(),
                    })?;
                    let t = self.conform(tt, t).map_err(|got| ExecError::StateType {
                        function: fname(),
                        name: name.clone(),
                        expected: describe_type(tt),
                        got,
                    })?;
                    local_states.insert(name.clone(), t);
                    env.insert(name, Value::State(name.clone()));
                }
            }
        }
        for (oi, op) in f.operations.iter().enumerate() {
            let wrap = |problem: OpProblem| ExecError::Op {
                function: fname(),
                op_type: op_type(op.kind),
                op: op.name.clone(),
                problem: Box::new(problem),
            };
            let values = self
                .eval(fi, oi, op, &env, &mut local_states)
                .map_err(wrap)?;
            // Constants come out of the cache already checked and rounded.
            let checked = is_weight(op.kind);
            if values.len() != op.outputs.len() {
                return Err(wrap(OpProblem::Internal(format!(
                    "{} outputs computed, {} declared",
                    values.len(),
                    op.outputs.len()
                ))));
            }
            for (v, (name, ty)) in values.into_iter().zip(&op.outputs) {
                let v = if checked {
                    v
                } else {
                    self.check_output(op, name, ty, v).map_err(wrap)?
                };
                if let (Some((keep, tr)), Value::Tensor(t)) = (trace.as_mut(), &v) {
                    if op.kind != OpKind::Const && keep(name) {
                        tr.push((name.clone(), t.clone()));
                    }
                }
                env.insert(name, v);
            }
        }
        let mut out = BTreeMap::new();
        for name in &f.outputs {
            match env.get(name.as_str()) {
                Some(Value::Tensor(t)) => {
                    out.insert(name.clone(), t.clone());
                }
                _ => {
                    return Err(ExecError::MissingOutput {
                        function: fname(),
                        name: name.clone(),
                    })
                }
            }
        }
        states.extend(local_states);
        Ok(out)
    }

    /// Checks a caller's tensor against a declared type and re-tags it with the declared dtype
    /// (floats may come as fp16 or fp32; fp16 inputs are rounded in `Precision::F16`).
    fn conform(
        &self,
        tt: &crate::mil::TensorType,
        t: &Tensor,
    ) -> std::result::Result<Tensor, String> {
        let got = || format!("{} {:?}", t.dtype().mil_name(), t.shape());
        let shape_ok = t.rank() == tt.rank()
            && tt.shape.iter().zip(t.shape()).all(|(d, &n)| match d {
                Dim::Fixed(f) => *f == n as u64,
                Dim::Unknown => true,
            });
        let dtype_ok = if tt.dtype.is_float() {
            t.dtype().is_float()
        } else {
            t.dtype() == tt.dtype
        };
        if !shape_ok || !dtype_ok {
            return Err(got());
        }
        let t = t.retagged(tt.dtype).map_err(|_| got())?;
        Ok(self.round_if(tt.dtype, t))
    }

    fn round_if(&self, dtype: DType, t: Tensor) -> Tensor {
        if dtype == DType::F16 && self.precision == Precision::F16 {
            t.rounded_f16()
        } else {
            t
        }
    }

    fn check_output(
        &self,
        op: &Operation,
        name: &str,
        ty: &ValueType,
        v: Value,
    ) -> Result<Value, OpProblem> {
        let tt = match ty {
            ValueType::Tensor(tt) => tt,
            ValueType::State(_) => {
                return Err(OpProblem::OutputType {
                    name: name.into(),
                    declared: "a state".into(),
                    computed: "a value".into(),
                })
            }
        };
        let t = match v {
            Value::Tensor(t) => t,
            Value::Strings(s) => {
                return if tt.dtype == DType::Str {
                    Ok(Value::Strings(s))
                } else {
                    Err(OpProblem::OutputType {
                        name: name.into(),
                        declared: describe_type(tt),
                        computed: "strings".into(),
                    })
                };
            }
            Value::State(_) => return Err(OpProblem::Internal("a state as op output".into())),
        };
        let shape_ok = t.rank() == tt.rank()
            && tt.shape.iter().zip(t.shape()).all(|(d, &n)| match d {
                Dim::Fixed(f) => *f == n as u64,
                Dim::Unknown => true,
            });
        if !shape_ok || storage_of(tt.dtype) != Some(t.storage()) {
            return Err(OpProblem::OutputType {
                name: name.into(),
                declared: describe_type(tt),
                computed: format!("{} {:?}", t.dtype().mil_name(), t.shape()),
            });
        }
        let t = t
            .retagged(tt.dtype)
            .map_err(|e| OpProblem::Internal(e.to_string()))?;
        // Weights are data, not math: a decompressed fp16 weight is fp16 in either precision.

        // Ops that only move or select values keep fp16 values fp16: no rounding pass needed
        // (in F16 mode every fp16-typed value is already exact).
        let moves_data = matches!(
            op.kind,
            OpKind::ReadState
                | OpKind::SliceByIndex
                | OpKind::SliceUpdate
                | OpKind::Reshape
                | OpKind::Transpose
                | OpKind::ExpandDims
                | OpKind::Squeeze
                | OpKind::Gather
                | OpKind::Concat
                | OpKind::Split
                | OpKind::Tile
                | OpKind::Select
        );
        Ok(Value::Tensor(
            if is_weight(op.kind) && tt.dtype == DType::F16 {
                t.rounded_f16()
            } else if moves_data {
                t
            } else {
                self.round_if(tt.dtype, t)
            },
        ))
    }

    fn eval(
        &self,
        fi: usize,
        oi: usize,
        op: &Operation,
        env: &HashMap<&str, Value>,
        states: &mut BTreeMap<String, Tensor>,
    ) -> Result<Vec<Value>, OpProblem> {
        let p = Params { op, env };
        let one = |t: Tensor| Ok(vec![Value::Tensor(t)]);
        match op.kind {
            OpKind::Const | OpKind::ConstexprLutToDense | OpKind::ConstexprBlockwiseShiftScale => {
                let key = blob_key(op).unwrap_or(CacheKey::Op(fi, oi));
                let lock = |c: &Mutex<HashMap<CacheKey, Arc<Vec<Value>>>>| {
                    // A poisoned cache only means another run panicked mid-insert; its
                    // entries are still whole values.
                    c.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&key)
                        .cloned()
                };
                if let Some(v) = lock(&self.cache) {
                    return Ok(v.as_ref().clone());
                }
                let v = match op.kind {
                    OpKind::Const => {
                        let val = op
                            .val
                            .as_ref()
                            .ok_or_else(|| OpProblem::MissingParam("val".into()))?;
                        vec![decode_const("val", val)?]
                    }
                    OpKind::ConstexprLutToDense => vec![Value::Tensor(lut_to_dense(&p)?)],
                    _ => vec![Value::Tensor(blockwise_shift_scale(&p)?)],
                };
                if v.len() != op.outputs.len() {
                    return Err(OpProblem::Internal(format!(
                        "{} outputs computed, {} declared",
                        v.len(),
                        op.outputs.len()
                    )));
                }
                // Checked (and rounded) once, then cached as checked.
                let v = v
                    .into_iter()
                    .zip(&op.outputs)
                    .map(|(v, (name, ty))| self.check_output(op, name, ty, v))
                    .collect::<Result<Vec<_>, _>>()?;
                self.cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, Arc::new(v.clone()));
                Ok(v)
            }
            OpKind::Conv => {
                let x = p.tensor("x")?;
                let w = p.tensor("weight")?;
                let sr = x.rank().saturating_sub(2);
                let strides = p.opt_usizes("strides")?.unwrap_or_else(|| vec![1; sr]);
                let dil = p.opt_usizes("dilations")?.unwrap_or_else(|| vec![1; sr]);
                let groups = p.opt_int("groups")?.unwrap_or(1);
                let pad_type = p.opt_string("pad_type")?.unwrap_or_else(|| "valid".into());
                let pad = match pad_type.as_str() {
                    "valid" => PadType::Valid,
                    "same" => PadType::Same,
                    "same_lower" => PadType::SameLower,
                    "custom" => {
                        PadType::Custom(p.opt_usizes("pad")?.unwrap_or_else(|| vec![0; 2 * sr]))
                    }
                    other => {
                        return Err(OpProblem::BadValue {
                            param: "pad_type".into(),
                            value: other.into(),
                            why: "expected valid, same, same_lower or custom".into(),
                        })
                    }
                };
                let bias = p.opt_tensor("bias")?;
                if groups < 1 {
                    return Err(OpProblem::BadValue {
                        param: "groups".into(),
                        value: groups.to_string(),
                        why: "must be positive".into(),
                    });
                }
                one(ops::conv(
                    &x,
                    &w,
                    bias.as_ref(),
                    &strides,
                    &pad,
                    &dil,
                    groups as usize,
                )?)
            }
            OpKind::Linear => {
                let x = p.tensor("x")?;
                let w = p.tensor("weight")?;
                let b = p.opt_tensor("bias")?;
                one(ops::linear(&x, &w, b.as_ref())?)
            }
            OpKind::Matmul => {
                let x = p.tensor("x")?;
                let y = p.tensor("y")?;
                let tx = p.opt_bool("transpose_x")?.unwrap_or(false);
                let ty = p.opt_bool("transpose_y")?.unwrap_or(false);
                one(ops::matmul(&x, &y, tx, ty)?)
            }
            OpKind::Add => p.binary(Binary::Add),
            OpKind::Sub => p.binary(Binary::Sub),
            OpKind::Mul => p.binary(Binary::Mul),
            OpKind::RealDiv => p.binary(Binary::RealDiv),
            OpKind::Maximum => p.binary(Binary::Maximum),
            OpKind::Minimum => p.binary(Binary::Minimum),
            OpKind::Equal => p.binary(Binary::Equal),
            OpKind::Less => p.binary(Binary::Less),
            OpKind::LessEqual => p.binary(Binary::LessEqual),
            OpKind::Greater => p.binary(Binary::Greater),
            OpKind::GreaterEqual => p.binary(Binary::GreaterEqual),
            OpKind::Rsqrt => {
                // coremltools: epsilon defaults to 1e-12 cast to x's dtype (0 in fp16).
                let x = p.tensor("x")?;
                let default = if x.dtype() == DType::F16 { 0.0 } else { 1e-12 };
                let eps = p.opt_float("epsilon")?.unwrap_or(default);
                one(ops::unary(Unary::Rsqrt(eps), &x)?)
            }
            OpKind::Sqrt => one(ops::unary(Unary::Sqrt, &p.tensor("x")?)?),
            OpKind::Exp => one(ops::unary(Unary::Exp, &p.tensor("x")?)?),
            OpKind::Relu => one(ops::unary(Unary::Relu, &p.tensor("x")?)?),
            OpKind::Silu => one(ops::unary(Unary::Silu, &p.tensor("x")?)?),
            OpKind::Gelu => {
                // coremltools: mode defaults to EXACT (erf), which exec does not compute.
                let mode = p.opt_string("mode")?.unwrap_or_else(|| "EXACT".into());
                if mode != "TANH_APPROXIMATION" {
                    return Err(OpProblem::BadValue {
                        param: "mode".into(),
                        value: mode,
                        why: "exec computes the TANH_APPROXIMATION gelu only".into(),
                    });
                }
                one(ops::unary(Unary::GeluTanh, &p.tensor("x")?)?)
            }
            OpKind::LayerNorm => {
                let x = p.tensor("x")?;
                let axes = p.opt_ints("axes")?;
                let g = p.opt_tensor("gamma")?;
                let b = p.opt_tensor("beta")?;
                let eps = p.opt_float("epsilon")?.unwrap_or(1e-5);
                one(ops::layer_norm(
                    &x,
                    axes.as_deref(),
                    g.as_ref(),
                    b.as_ref(),
                    eps,
                )?)
            }
            OpKind::Softmax => {
                let axis = p.opt_int("axis")?.unwrap_or(-1);
                one(ops::softmax(&p.tensor("x")?, axis)?)
            }
            OpKind::Concat => {
                let values = p.tensors("values")?;
                let axis = p.int("axis")?;
                let inter = p.opt_bool("interleave")?.unwrap_or(false);
                one(ops::concat(&values, axis, inter)?)
            }
            OpKind::Split => {
                let x = p.tensor("x")?;
                let axis = p.int("axis")?;
                let num = p.opt_int("num_splits")?;
                let sizes = p.opt_ints("split_sizes")?;
                let num = match num {
                    Some(n) if n < 1 => {
                        return Err(OpProblem::BadValue {
                            param: "num_splits".into(),
                            value: n.to_string(),
                            why: "must be positive".into(),
                        })
                    }
                    Some(n) => Some(n as usize),
                    None => None,
                };
                Ok(ops::split(&x, num, sizes.as_deref(), axis)?
                    .into_iter()
                    .map(Value::Tensor)
                    .collect())
            }
            OpKind::SliceByIndex | OpKind::SliceUpdate => {
                let x = p.tensor("x")?;
                let begin = p.ints("begin")?;
                let end = p.ints("end")?;
                let stride = p.opt_ints("stride")?;
                let bm = p.opt_bools("begin_mask")?;
                let em = p.opt_bools("end_mask")?;
                let sm = p.opt_bools("squeeze_mask")?;
                let spec = ops::SliceSpec {
                    begin: &begin,
                    end: &end,
                    stride: stride.as_deref(),
                    begin_mask: bm.as_deref(),
                    end_mask: em.as_deref(),
                    squeeze_mask: sm.as_deref(),
                };
                if op.kind == OpKind::SliceByIndex {
                    one(ops::slice_by_index(&x, &spec)?)
                } else {
                    one(ops::slice_update(&x, &p.tensor("update")?, &spec)?)
                }
            }
            OpKind::Reshape => one(ops::reshape(&p.tensor("x")?, &p.ints("shape")?)?),
            OpKind::Transpose => one(ops::transpose(&p.tensor("x")?, &p.ints("perm")?)?),
            OpKind::ExpandDims => one(ops::expand_dims(&p.tensor("x")?, &p.ints("axes")?)?),
            OpKind::Squeeze => one(ops::squeeze(
                &p.tensor("x")?,
                p.opt_ints("axes")?.as_deref(),
            )?),
            OpKind::Gather => {
                let x = p.tensor("x")?;
                let ind = p.tensor("indices")?;
                let axis = p.opt_int("axis")?.unwrap_or(0);
                let bd = p.opt_int("batch_dims")?.unwrap_or(0);
                one(ops::gather(&x, &ind, axis, bd)?)
            }
            OpKind::Cast => {
                let name = p.string("dtype")?;
                let to = parse_dtype(&name).ok_or_else(|| OpProblem::BadValue {
                    param: "dtype".into(),
                    value: name.clone(),
                    why: "not a MIL dtype name".into(),
                })?;
                one(ops::cast(&p.tensor("x")?, to)?)
            }
            OpKind::Select => {
                let c = p.tensor("cond")?;
                one(ops::select(&c, &p.tensor("a")?, &p.tensor("b")?)?)
            }
            OpKind::ReduceArgmax => {
                let x = p.tensor("x")?;
                let axis = p.opt_int("axis")?.unwrap_or(-1);
                let keep = p.opt_bool("keep_dims")?.unwrap_or(false);
                if let Some(d) = p.opt_string("output_dtype")? {
                    if d != "int32" && d != "uint16" {
                        return Err(OpProblem::BadValue {
                            param: "output_dtype".into(),
                            value: d,
                            why: "expected int32 or uint16".into(),
                        });
                    }
                }
                one(ops::argmax(&x, axis, keep)?)
            }
            OpKind::ReduceMax => p.reduce(Reduce::Max),
            OpKind::ReduceSum => p.reduce(Reduce::Sum),
            OpKind::ReduceMean => p.reduce(Reduce::Mean),
            OpKind::ReadState => {
                let s = p.state("input")?;
                let t = states.get(&s).ok_or_else(|| OpProblem::State {
                    state: s.clone(),
                    problem: "not provided".into(),
                })?;
                one(t.clone())
            }
            OpKind::WriteState => {
                let s = p.state("input")?;
                let data = p.tensor("data")?;
                let cur = states.get(&s).ok_or_else(|| OpProblem::State {
                    state: s.clone(),
                    problem: "not provided".into(),
                })?;
                if cur.shape() != data.shape() || cur.dtype() != data.dtype() {
                    return Err(OpProblem::State {
                        state: s.clone(),
                        problem: format!(
                            "write of {} {:?} does not match the declared {} {:?}",
                            data.dtype().mil_name(),
                            data.shape(),
                            cur.dtype().mil_name(),
                            cur.shape()
                        ),
                    });
                }
                states.insert(s, data);
                Ok(Vec::new())
            }
            OpKind::BandPart => {
                let x = p.tensor("x")?;
                let lower = p.opt_int("lower")?.unwrap_or(-1);
                let upper = p.opt_int("upper")?.unwrap_or(-1);
                one(ops::band_part(&x, lower, upper)?)
            }
            OpKind::Fill => {
                let shape = p.ints("shape")?;
                let value = match p.opt_tensor("value")? {
                    Some(v) => v,
                    None => Tensor::f32(vec![], vec![0.0])
                        .map_err(|e| OpProblem::Internal(e.to_string()))?,
                };
                one(ops::fill(&shape, &value)?)
            }
            OpKind::Tile => one(ops::tile(&p.tensor("x")?, &p.ints("reps")?)?),
        }
    }
}

/// Ops whose outputs are constant data (cached once per interpreter).
fn is_weight(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Const | OpKind::ConstexprLutToDense | OpKind::ConstexprBlockwiseShiftScale
    )
}

fn describe_type(tt: &crate::mil::TensorType) -> String {
    let dims: Vec<String> = tt
        .shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Unknown => "?".into(),
        })
        .collect();
    format!("{} [{}]", tt.dtype.mil_name(), dims.join(", "))
}

fn parse_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "fp16" => DType::F16,
        "fp32" => DType::F32,
        "int8" => DType::I8,
        "int16" => DType::I16,
        "int32" => DType::I32,
        "uint8" => DType::U8,
        "uint16" => DType::U16,
        "bool" => DType::Bool,
        _ => return None,
    })
}

/// The cache key of a const whose value is a weight.bin blob, or of a constexpr whose inputs are
/// all blobs bound by value: functions sharing a weight share its decoded tensor.
fn blob_key(op: &Operation) -> Option<CacheKey> {
    if op.kind == OpKind::Const {
        return match &op.val {
            Some(ConstValue {
                data: ConstData::Stored(s),
                ty,
            }) => Some(CacheKey::Blobs(
                op.kind,
                vec![(format!("val {ty:?}"), s.offset)],
            )),
            _ => None,
        };
    }
    let mut key = Vec::new();
    for (param, args) in &op.inputs {
        match args.as_slice() {
            [Arg::Value(ConstValue {
                data: ConstData::Stored(s),
                ty,
            })] => key.push((format!("{param} {ty:?}"), s.offset)),
            _ => return None,
        }
    }
    Some(CacheKey::Blobs(op.kind, key))
}

fn const_err(param: &str, e: impl std::fmt::Display) -> OpProblem {
    OpProblem::Const {
        param: param.to_string(),
        message: e.to_string(),
    }
}

/// Decodes a constant into a value (through `mil`'s decoders).
fn decode_const(param: &str, cv: &ConstValue) -> Result<Value, OpProblem> {
    if let ConstData::Strings(s) = &cv.data {
        return Ok(Value::Strings(s.clone().into()));
    }
    let shape: Vec<usize> = cv
        .ty
        .static_shape()
        .ok_or_else(|| const_err(param, "constant with an unknown dimension"))?
        .iter()
        .map(|&d| d as usize)
        .collect();
    let data = match storage_of(cv.ty.dtype) {
        Some(Storage::Float) => {
            Data::Float(cv.to_f32_vec().map_err(|e| const_err(param, e))?.into())
        }
        Some(Storage::Int) => Data::Int(cv.to_i32_vec().map_err(|e| const_err(param, e))?.into()),
        Some(Storage::Bool) => {
            Data::Bool(cv.to_bool_vec().map_err(|e| const_err(param, e))?.into())
        }
        None => return Err(const_err(param, "string constant with byte data")),
    };
    Tensor::new(cv.ty.dtype, shape, data)
        .map(Value::Tensor)
        .map_err(|e| const_err(param, e))
}

fn usize_shape(t: &Tensor) -> Vec<usize> {
    t.shape().to_vec()
}

/// `constexpr_lut_to_dense` (iOS 18): `out[i…] = lut[block(i…), indices[i…], v]`, blocks
/// contiguous (`i_d / (indices_d / lut_d)`), vectors along `vector_axis` when VECTOR_SIZE > 1.
fn lut_to_dense(p: &Params) -> Result<Tensor, OpProblem> {
    let ind = p.tensor("indices")?;
    let lut_t = p.tensor("lut")?;
    let bits = match ind.dtype() {
        DType::U1 | DType::U2 | DType::U3 | DType::U4 | DType::U6 | DType::U8 => ind.dtype().bits(),
        other => {
            return Err(OpProblem::ParamType {
                param: "indices".into(),
                expected: "uint1/2/3/4/6/8".into(),
                got: other.mil_name().into(),
            })
        }
    };
    let idx = ind
        .as_i32()
        .ok_or_else(|| OpProblem::Internal("indices storage".into()))?;
    let ishape = usize_shape(&ind);
    let lshape = usize_shape(&lut_t);
    let k = ishape.len();
    if k == 0 || lshape.len() != k + 2 {
        return Err(OpProblem::Shape(format!(
            "lut {lshape:?} must have rank indices {ishape:?} + 2"
        )));
    }
    let palettes = lshape[k];
    let vsize = lshape[k + 1];
    if palettes != 1usize << bits {
        return Err(OpProblem::Shape(format!(
            "lut {lshape:?} has {palettes} entries per table, {} indices need {}",
            ind.dtype().mil_name(),
            1usize << bits
        )));
    }
    let mut block = Vec::with_capacity(k);
    for d in 0..k {
        if lshape[d] == 0 || ishape[d] % lshape[d] != 0 {
            return Err(OpProblem::Shape(format!(
                "lut {lshape:?} does not divide indices {ishape:?} at axis {d}"
            )));
        }
        block.push(ishape[d] / lshape[d]);
    }
    let vaxis = match p.opt_int("vector_axis")? {
        Some(a) => Some(ops::norm_axis("vector_axis", a, k)?),
        None if vsize > 1 => return Err(OpProblem::MissingParam("vector_axis".into())),
        None => None,
    };
    let mut oshape = ishape.clone();
    if let Some(a) = vaxis {
        oshape[a] *= vsize;
    }
    let ostr = tensor::strides(&oshape);
    let lstr = tensor::strides(&lshape[..k]);
    // (flat lut position) for every output element
    let mut src = vec![0usize; idx.len() * vsize];
    let mut coord = vec![0usize; k];
    for &ix in idx {
        let mut table = 0usize;
        for d in 0..k {
            table += (coord[d] / block[d]) * lstr[d];
        }
        let base = (table * palettes + ix as usize) * vsize;
        for v in 0..vsize {
            let mut o = 0usize;
            for d in 0..k {
                let c = if Some(d) == vaxis {
                    coord[d] * vsize + v
                } else {
                    coord[d]
                };
                o += c * ostr[d];
            }
            src[o] = base + v;
        }
        for d in (0..k).rev() {
            coord[d] += 1;
            if coord[d] < ishape[d] {
                break;
            }
            coord[d] = 0;
        }
    }
    Ok(lut_t.take(oshape, &src)?)
}

/// `constexpr_blockwise_shift_scale` (iOS 18): `scale[blk] · (data − offset[blk])`, blocks
/// `data_d / scale_d` per axis (coremltools iOS18/compression.py).
fn blockwise_shift_scale(p: &Params) -> Result<Tensor, OpProblem> {
    let data_t = p.tensor("data")?;
    let scale_t = p.tensor("scale")?;
    let offset_t = p.opt_tensor("offset")?;
    let data = data_t.to_f32_vec();
    let scale = scale_t.as_f32().ok_or_else(|| OpProblem::ParamType {
        param: "scale".into(),
        expected: "fp16 or fp32".into(),
        got: scale_t.dtype().mil_name().into(),
    })?;
    let offset = offset_t.as_ref().map(|o| o.to_f32_vec());
    let dshape = usize_shape(&data_t);
    let sshape = usize_shape(&scale_t);
    if dshape.len() != sshape.len() || dshape.is_empty() {
        return Err(OpProblem::Shape(format!(
            "data {dshape:?} and scale {sshape:?} need the same rank >= 1"
        )));
    }
    if let Some(o) = &offset_t {
        if o.shape() != scale_t.shape() {
            return Err(OpProblem::Shape(format!(
                "offset {:?} must have scale's shape {sshape:?}",
                o.shape()
            )));
        }
    }
    let mut block = Vec::new();
    for d in 0..dshape.len() {
        if sshape[d] == 0 || dshape[d] % sshape[d] != 0 {
            return Err(OpProblem::Shape(format!(
                "scale {sshape:?} does not divide data {dshape:?} at axis {d}"
            )));
        }
        block.push(dshape[d] / sshape[d]);
    }
    let sstr = tensor::strides(&sshape);
    let k = dshape.len();
    let mut coord = vec![0usize; k];
    let mut out = Vec::with_capacity(data.len());
    for &v in &data {
        let mut s = 0usize;
        for d in 0..k {
            s += (coord[d] / block[d]) * sstr[d];
        }
        let shifted = match &offset {
            Some(o) => v - o[s],
            None => v,
        };
        out.push(scale[s] * shifted);
        for d in (0..k).rev() {
            coord[d] += 1;
            if coord[d] < dshape[d] {
                break;
            }
            coord[d] = 0;
        }
    }
    Tensor::new(scale_t.dtype(), dshape, Data::Float(out.into()))
        .map_err(|e| OpProblem::Internal(e.to_string()))
}

/// Parameter access for one op.
struct Params<'a> {
    op: &'a Operation,
    env: &'a HashMap<&'a str, Value>,
}

impl Params<'_> {
    fn args(&self, name: &str) -> Option<&[Arg]> {
        self.op.inputs.get(name).map(|v| v.as_slice())
    }

    fn resolve(&self, name: &str, arg: &Arg) -> Result<Value, OpProblem> {
        match arg {
            Arg::Var(v) => self
                .env
                .get(v.as_str())
                .cloned()
                .ok_or_else(|| OpProblem::UnboundVar {
                    param: name.into(),
                    var: v.clone(),
                }),
            Arg::Value(cv) => decode_const(name, cv),
        }
    }

    fn opt_value(&self, name: &str) -> Result<Option<Value>, OpProblem> {
        match self.args(name) {
            None | Some([]) => Ok(None),
            Some([a]) => self.resolve(name, a).map(Some),
            Some(many) => Err(OpProblem::BadValue {
                param: name.into(),
                value: format!("{} bindings", many.len()),
                why: "expected one".into(),
            }),
        }
    }

    fn opt_tensor(&self, name: &str) -> Result<Option<Tensor>, OpProblem> {
        match self.opt_value(name)? {
            None => Ok(None),
            Some(Value::Tensor(t)) => Ok(Some(t)),
            Some(Value::Strings(_)) => Err(OpProblem::ParamType {
                param: name.into(),
                expected: "a tensor".into(),
                got: "a string".into(),
            }),
            Some(Value::State(_)) => Err(OpProblem::ParamType {
                param: name.into(),
                expected: "a tensor".into(),
                got: "a state (use read_state)".into(),
            }),
        }
    }

    fn tensor(&self, name: &str) -> Result<Tensor, OpProblem> {
        self.opt_tensor(name)?
            .ok_or_else(|| OpProblem::MissingParam(name.into()))
    }

    fn tensors(&self, name: &str) -> Result<Vec<Tensor>, OpProblem> {
        let args = self
            .args(name)
            .ok_or_else(|| OpProblem::MissingParam(name.into()))?;
        args.iter()
            .map(|a| match self.resolve(name, a)? {
                Value::Tensor(t) => Ok(t),
                _ => Err(OpProblem::ParamType {
                    param: name.into(),
                    expected: "tensors".into(),
                    got: "a string or state".into(),
                }),
            })
            .collect()
    }

    fn state(&self, name: &str) -> Result<String, OpProblem> {
        match self.opt_value(name)? {
            Some(Value::State(s)) => Ok(s),
            Some(_) => Err(OpProblem::ParamType {
                param: name.into(),
                expected: "a state input".into(),
                got: "a tensor".into(),
            }),
            None => Err(OpProblem::MissingParam(name.into())),
        }
    }

    fn opt_string(&self, name: &str) -> Result<Option<String>, OpProblem> {
        match self.opt_value(name)? {
            None => Ok(None),
            Some(Value::Strings(s)) if s.len() == 1 => Ok(Some(s[0].clone())),
            Some(_) => Err(OpProblem::ParamType {
                param: name.into(),
                expected: "a string".into(),
                got: "another value".into(),
            }),
        }
    }

    fn string(&self, name: &str) -> Result<String, OpProblem> {
        self.opt_string(name)?
            .ok_or_else(|| OpProblem::MissingParam(name.into()))
    }

    fn opt_ints(&self, name: &str) -> Result<Option<Vec<i64>>, OpProblem> {
        match self.opt_tensor(name)? {
            None => Ok(None),
            Some(t) => match t.as_i32() {
                Some(v) => Ok(Some(v.iter().map(|&x| x as i64).collect())),
                None => Err(OpProblem::ParamType {
                    param: name.into(),
                    expected: "integers".into(),
                    got: t.dtype().mil_name().into(),
                }),
            },
        }
    }

    fn ints(&self, name: &str) -> Result<Vec<i64>, OpProblem> {
        self.opt_ints(name)?
            .ok_or_else(|| OpProblem::MissingParam(name.into()))
    }

    fn opt_usizes(&self, name: &str) -> Result<Option<Vec<usize>>, OpProblem> {
        match self.opt_ints(name)? {
            None => Ok(None),
            Some(v) if v.iter().all(|&x| x >= 0) => {
                Ok(Some(v.iter().map(|&x| x as usize).collect()))
            }
            Some(v) => Err(OpProblem::BadValue {
                param: name.into(),
                value: format!("{v:?}"),
                why: "must be non-negative".into(),
            }),
        }
    }

    fn opt_int(&self, name: &str) -> Result<Option<i64>, OpProblem> {
        match self.opt_ints(name)? {
            None => Ok(None),
            Some(v) if v.len() == 1 => Ok(Some(v[0])),
            Some(v) => Err(OpProblem::BadValue {
                param: name.into(),
                value: format!("{v:?}"),
                why: "expected a scalar".into(),
            }),
        }
    }

    fn int(&self, name: &str) -> Result<i64, OpProblem> {
        self.opt_int(name)?
            .ok_or_else(|| OpProblem::MissingParam(name.into()))
    }

    fn opt_bools(&self, name: &str) -> Result<Option<Vec<bool>>, OpProblem> {
        match self.opt_tensor(name)? {
            None => Ok(None),
            Some(t) => match t.as_bool() {
                Some(v) => Ok(Some(v.to_vec())),
                None => Err(OpProblem::ParamType {
                    param: name.into(),
                    expected: "bools".into(),
                    got: t.dtype().mil_name().into(),
                }),
            },
        }
    }

    fn opt_bool(&self, name: &str) -> Result<Option<bool>, OpProblem> {
        match self.opt_bools(name)? {
            None => Ok(None),
            Some(v) if v.len() == 1 => Ok(Some(v[0])),
            Some(v) => Err(OpProblem::BadValue {
                param: name.into(),
                value: format!("{v:?}"),
                why: "expected a scalar".into(),
            }),
        }
    }

    fn opt_float(&self, name: &str) -> Result<Option<f32>, OpProblem> {
        match self.opt_tensor(name)? {
            None => Ok(None),
            Some(t) if t.len() == 1 && t.as_f32().is_some() => Ok(Some(t.to_f32_vec()[0])),
            Some(t) => Err(OpProblem::ParamType {
                param: name.into(),
                expected: "a float scalar".into(),
                got: format!("{} {:?}", t.dtype().mil_name(), t.shape()),
            }),
        }
    }

    fn binary(&self, op: Binary) -> Result<Vec<Value>, OpProblem> {
        let x = self.tensor("x")?;
        let y = self.tensor("y")?;
        Ok(vec![Value::Tensor(ops::binary(op, &x, &y)?)])
    }

    fn reduce(&self, op: Reduce) -> Result<Vec<Value>, OpProblem> {
        let x = self.tensor("x")?;
        let axes = self.opt_ints("axes")?;
        let keep = self.opt_bool("keep_dims")?.unwrap_or(false);
        Ok(vec![Value::Tensor(ops::reduce(
            op,
            &x,
            axes.as_deref(),
            keep,
        )?)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Functions that reference the same weight.bin blobs share one decoded tensor.
    #[test]
    fn shared_blobs_are_decoded_once() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/coreml-samples/multifunction.mlpackage");
        let model = crate::mil::read_package(path).expect("the coremltools sample reads");
        let m = Interpreter::new(&model, Precision::F32);
        for f in ["prefill", "decode"] {
            let (_, func) = m.function(f).unwrap();
            let mut inputs = BTreeMap::new();
            for (name, ty) in &func.inputs {
                if let ValueType::Tensor(tt) = ty {
                    let shape = tt
                        .static_shape()
                        .unwrap()
                        .iter()
                        .map(|&d| d as usize)
                        .collect();
                    inputs.insert(name.clone(), Tensor::zeros(tt.dtype, shape).unwrap());
                }
            }
            let mut states = m.zero_states(f).unwrap();
            m.run(f, &inputs, &mut states).unwrap();
        }
        let cache = m.cache.lock().unwrap();
        let blobs = cache
            .keys()
            .filter(|k| matches!(k, CacheKey::Blobs(..)))
            .count();
        let per_op = cache
            .keys()
            .filter(|k| matches!(k, CacheKey::Op(..)))
            .count();
        // The package's 6 blob-backed weights (LUT, blockwise, plain fp16, 3 biases), each decoded
        // once for both functions (12 if unshared); small inline consts stay per function.
        assert_eq!(blobs, 6, "{:?}", cache.keys().collect::<Vec<_>>());
        assert!(per_op > 0);
    }
}
