//! `anec lint`: checks a Core ML program against what the Apple Neural Engine is known to take,
//! so that a graph that would fall back to the GPU or CPU is caught before it reaches a device.
//!
//! Every rule names its source: Apple's documentation, a coremltools pass or issue, what
//! ANEMLL's device-tested graphs do, or a measured report. The rules read only MIL (ops, types,
//! constants) and the package's file sizes: they work on any package, ours or coremltools'.
//! A finding is a warning; `--strict` (convert and lint) turns any finding into an error.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::mil::{
    self, Arg, ConstValue, DType, Dim, Function, InputShapes, Model, OpKind, Operation, ValueType,
};

/// One rule: its id (what findings and `--json` name), what it checks, and where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub checks: &'static str,
    pub source: &'static str,
}

/// The conv channel limit on either side (the ANE's largest width/height extent).
pub const MAX_CONV_CHANNELS: u64 = 16384;
/// The largest conv kernel extent on either spatial axis.
pub const MAX_CONV_KERNEL: u64 = 13;
/// Integer tensors up to this many elements (index vectors such as a rank-4 slice begin) may be
/// computed; anything larger is tensor data the ANE cannot compute in integers.
pub const MAX_INT_ELEMENTS: u64 = 4;
/// The most rows a uint16 index can address.
pub const UINT16_ROWS: u64 = 1 << 16;
/// State dims (the last two) must be multiples of this.
pub const STATE_DIM_MULTIPLE: u64 = 32;
/// iOS refuses a model file larger than this; macOS one larger than the second.
pub const IOS_FILE_LIMIT: u64 = 1 << 30;
pub const MACOS_FILE_LIMIT: u64 = 2 << 30;

/// The rule table. Ids are stable: tests, `--json` and the README refer to them.
pub const RULES: &[Rule] = &[
    Rule {
        id: "fp16-compute",
        checks: "every computed tensor and every float input/output is fp16",
        source: "Apple, Deploying Transformers on the Apple Neural Engine (2022): the ANE \
                 computes in fp16; coremltools compute_precision=FLOAT16 (add_fp16_cast pass)",
    },
    Rule {
        id: "rank-le-4",
        checks: "no tensor outside constexpr ops has rank above 4",
        source: "Apple ml-ane-transformers: (B, C, 1, S) rank-4 layout; ANEMLL keeps every \
                 device tensor at rank <= 4",
    },
    Rule {
        id: "static-shapes",
        checks: "every dimension is fixed, except below an input with enumerated shapes",
        source: "coremltools issue #1764 (a flexible range shape runs on the CPU only); \
                 coremltools docs, Flexible Input Shapes (enumerated shapes keep the ANE)",
    },
    Rule {
        id: "conv-limits",
        checks: "conv in/out channels <= 16384 and kernel extents <= 13",
        source: "channels: measured report (ANE extents up to 16384; ANEMLL splits the LM \
                 head and wide FFNs, MLP_UP_SPLIT/MLP_DOWN_SPLIT); kernel: ane-guide ch. 17, \
                 kernel width capped at 13 (measured on M1)",
    },
    Rule {
        id: "integer-ops",
        checks: "no integer/bool arithmetic or comparison on tensors above 4 elements",
        source: "the ANE datapath is fp16 only (ane-guide ch. 17; hollance/neural-engine): \
                 integer ops on tensor data run on the CPU, one hand-off per call",
    },
    Rule {
        id: "state-shape",
        checks: "states are fp16, rank <= 4, their last two dims multiples of 32",
        source: "coremltools issue #2631 (stateful model fails on the ANE unless state dims \
                 are multiples of 32); Core ML states are fp16 (coremltools stateful models)",
    },
    Rule {
        id: "state-update",
        checks: "each write_state stores a slice_update of a read_state of the same state, no \
                 value read before a write is used after it, every state is used",
        source: "coremltools stateful models guide and its PyTorch frontend (read_state -> \
                 slice_update -> coreml_update_state); ANEMLL's device-tested KV cache",
    },
    Rule {
        id: "gather-index-dtype",
        checks: "gather indices are 16-bit when the gathered axis has at most 65536 rows",
        source: "coremltools add_int16_cast pass (casts gather indices to int16/uint16 for \
                 the ANE)",
    },
    Rule {
        id: "reduction-axes",
        checks: "norms, softmax and reductions run over one axis: the last, or the channel \
                 axis 1 of a rank-4 tensor",
        source: "ANEMLL: layer_norm and softmax on the last axis; Apple ml-ane-transformers: \
                 layer norm over the channel axis of (B, C, 1, S)",
    },
    Rule {
        id: "file-size",
        checks: "weight file <= 1 GiB (iOS) and <= 2 GiB (macOS)",
        source: "ANEMLL: chunks sized to stay under the iOS 1 GB per-file limit; macOS 2 GB",
    },
];

/// The rule with id `id` (every finding names one of [`RULES`]).
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

/// One rule broken at one place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    /// The function, or empty for a package-wide finding (file size).
    pub function: String,
    /// The op (or input, state) it concerns.
    pub at: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.function.is_empty() {
            write!(f, "[{}] {}: {}", self.rule, self.at, self.message)
        } else {
            write!(
                f,
                "[{}] {}/{}: {}",
                self.rule, self.function, self.at, self.message
            )
        }
    }
}

/// The findings of one package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PackageLint {
    pub package: String,
    pub findings: Vec<Finding>,
}

impl fmt::Display for PackageLint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.findings.is_empty() {
            return writeln!(f, "{}: clean ({} rules)", self.package, RULES.len());
        }
        writeln!(f, "{}: {} finding(s)", self.package, self.findings.len())?;
        for x in &self.findings {
            writeln!(f, "  {x}")?;
        }
        Ok(())
    }
}

/// The packages `path` names: itself when it is a package (it holds a Manifest.json), else
/// the `*.mlpackage` folders directly inside it, sorted by name.
pub fn packages_in(path: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    if path.join("Manifest.json").is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "mlpackage") && p.is_dir() {
            found.push(p);
        }
    }
    found.sort();
    Ok(found)
}

/// The rule table as text: id, what it checks, its source.
pub fn rules_table() -> String {
    let mut s = String::new();
    for r in RULES {
        s.push_str(&format!(
            "{:20} {}\n{:20} source: {}\n",
            r.id, r.checks, "", r.source
        ));
    }
    s
}

/// Reads the package at `path` and lints its program and file sizes.
pub fn lint_package(path: &Path) -> Result<PackageLint, mil::MilError> {
    let (model, info) = mil::read_package_info(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok(PackageLint {
        package: name,
        findings: lint(&model, info.weight_file_bytes),
    })
}

/// Every finding of `model` whose weight file holds `weight_bytes`, in rule order per function.
pub fn lint(model: &Model, weight_bytes: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, f) in &model.program.functions {
        // Enumerated shapes compile one static graph per shape; a range does not. Unknown dims
        // below a declared flexible input are that input's finding, not each op's.
        let shapes = model.input_shapes.get(name);
        let flexible = shapes.is_some_and(|m| !m.is_empty());
        for (input, s) in shapes.into_iter().flatten() {
            if let InputShapes::Range { bounds, .. } = s {
                out.push(Finding {
                    rule: "static-shapes",
                    function: name.clone(),
                    at: input.clone(),
                    message: format!("range shape {bounds:?}: use enumerated shapes"),
                });
            }
        }
        FunctionLint::new(name, f, flexible, &mut out).run();
    }
    for (limit, os) in [(IOS_FILE_LIMIT, "iOS"), (MACOS_FILE_LIMIT, "macOS")] {
        if weight_bytes > limit {
            out.push(Finding {
                rule: "file-size",
                function: String::new(),
                at: "weight.bin".into(),
                message: format!(
                    "{weight_bytes} bytes exceed the {os} per-file limit of {limit} bytes"
                ),
            });
        }
    }
    out
}

/// The ops whose operands must not be integer tensor data.
fn is_int_arith(kind: OpKind) -> bool {
    use OpKind::*;
    matches!(
        kind,
        Add | Sub
            | Mul
            | RealDiv
            | Maximum
            | Minimum
            | Equal
            | Less
            | LessEqual
            | Greater
            | GreaterEqual
            | ReduceSum
            | ReduceMean
            | ReduceMax
            | ReduceArgmax
    )
}

fn is_constexpr(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Const | OpKind::ConstexprLutToDense | OpKind::ConstexprBlockwiseShiftScale
    )
}

fn tensor_of(t: &ValueType) -> &mil::TensorType {
    match t {
        ValueType::Tensor(t) | ValueType::State(t) => t,
    }
}

/// One function's walk: the types and constants of its variables, and the findings so far.
struct FunctionLint<'a> {
    name: &'a str,
    f: &'a Function,
    flexible: bool,
    types: HashMap<&'a str, &'a ValueType>,
    consts: HashMap<&'a str, &'a ConstValue>,
    producer: HashMap<&'a str, &'a Operation>,
    out: &'a mut Vec<Finding>,
}

impl<'a> FunctionLint<'a> {
    fn new(name: &'a str, f: &'a Function, flexible: bool, out: &'a mut Vec<Finding>) -> Self {
        let mut types = HashMap::new();
        let mut consts = HashMap::new();
        let mut producer = HashMap::new();
        for (n, t) in &f.inputs {
            types.insert(n.as_str(), t);
        }
        for op in &f.operations {
            for (n, t) in &op.outputs {
                types.insert(n.as_str(), t);
                producer.insert(n.as_str(), op);
            }
            if let (OpKind::Const, Some(v), Some((n, _))) = (op.kind, &op.val, op.outputs.first()) {
                consts.insert(n.as_str(), v);
            }
        }
        FunctionLint {
            name,
            f,
            flexible,
            types,
            consts,
            producer,
            out,
        }
    }

    fn push(&mut self, rule: &'static str, at: &str, message: String) {
        self.out.push(Finding {
            rule,
            function: self.name.to_string(),
            at: at.to_string(),
            message,
        });
    }

    /// The tensor type bound to `param` (its first binding).
    fn input_type(&self, op: &Operation, param: &str) -> Option<&'a mil::TensorType> {
        match op.inputs.get(param)?.first()? {
            Arg::Var(v) => self.types.get(v.as_str()).map(|t| tensor_of(t)),
            Arg::Value(_) => None,
        }
    }

    /// The constant bound to `param`, inline or through a `const` op.
    fn input_const(&self, op: &Operation, param: &str) -> Option<&'a ConstValue> {
        match op.inputs.get(param)?.first()? {
            Arg::Var(v) => self.consts.get(v.as_str()).copied(),
            Arg::Value(_) => None,
        }
    }

    fn input_ints(&self, op: &Operation, param: &str) -> Option<Vec<i64>> {
        let c = self.input_const(op, param)?;
        c.to_i32_vec()
            .ok()
            .map(|v| v.into_iter().map(i64::from).collect())
    }

    fn run(mut self) {
        self.io_types();
        self.ops();
        self.states();
    }

    fn io_types(&mut self) {
        for (n, t) in &self.f.inputs {
            let t = tensor_of(t);
            if t.dtype == DType::F32 {
                self.push(
                    "fp16-compute",
                    n,
                    format!("input is {}", mil::tensor_string(t)),
                );
            }
            if !self.flexible && t.static_shape().is_none() {
                self.push(
                    "static-shapes",
                    n,
                    format!("input {} has an unknown dimension", mil::tensor_string(t)),
                );
            }
        }
    }

    fn ops(&mut self) {
        for op in &self.f.operations {
            let at = op.name.as_str();
            for (out_name, t) in &op.outputs {
                let t = tensor_of(t);
                if is_constexpr(op.kind) {
                    continue;
                }
                if t.dtype == DType::F32 {
                    self.push(
                        "fp16-compute",
                        at,
                        format!(
                            "{} output {out_name} is {}",
                            op.kind.mil_name(),
                            mil::tensor_string(t)
                        ),
                    );
                }
                if t.rank() > 4 {
                    self.push(
                        "rank-le-4",
                        at,
                        format!(
                            "{} output {out_name} is {}",
                            op.kind.mil_name(),
                            mil::tensor_string(t)
                        ),
                    );
                }
                if !self.flexible && t.static_shape().is_none() {
                    self.push(
                        "static-shapes",
                        at,
                        format!("output {out_name} is {}", mil::tensor_string(t)),
                    );
                }
            }
            match op.kind {
                OpKind::Conv => self.conv(op),
                OpKind::Gather => self.gather(op),
                OpKind::LayerNorm | OpKind::ReduceSum | OpKind::ReduceMean | OpKind::ReduceMax => {
                    self.axes(op, "axes")
                }
                OpKind::Softmax | OpKind::ReduceArgmax => self.axes(op, "axis"),
                _ => {}
            }
            if is_int_arith(op.kind) {
                self.integer(op);
            }
        }
    }

    fn conv(&mut self, op: &Operation) {
        let Some(w) = self.input_type(op, "weight").and_then(|t| t.static_shape()) else {
            return;
        };
        let groups = self
            .input_ints(op, "groups")
            .and_then(|g| g.first().copied())
            .unwrap_or(1)
            .max(1) as u64;
        if w.len() < 2 {
            return;
        }
        let (cout, cin) = (w[0], w[1] * groups);
        for (side, n) in [("output", cout), ("input", cin)] {
            if n > MAX_CONV_CHANNELS {
                self.push(
                    "conv-limits",
                    &op.name,
                    format!("{n} {side} channels exceed {MAX_CONV_CHANNELS}: split the conv"),
                );
            }
        }
        if let Some(k) = w[2..].iter().find(|&&k| k > MAX_CONV_KERNEL) {
            self.push(
                "conv-limits",
                &op.name,
                format!(
                    "kernel {:?} has an extent {k} above {MAX_CONV_KERNEL}",
                    &w[2..]
                ),
            );
        }
    }

    fn gather(&mut self, op: &Operation) {
        let (Some(idx), Some(x)) = (self.input_type(op, "indices"), self.input_type(op, "x"))
        else {
            return;
        };
        if !matches!(idx.dtype, DType::I32 | DType::I64) {
            return;
        }
        let axis = self
            .input_ints(op, "axis")
            .and_then(|a| a.first().copied())
            .unwrap_or(0);
        let rank = x.rank() as i64;
        let a = if axis < 0 { axis + rank } else { axis };
        if let Some(Dim::Fixed(rows)) = usize::try_from(a).ok().and_then(|a| x.shape.get(a)) {
            if *rows <= UINT16_ROWS {
                self.push(
                    "gather-index-dtype",
                    &op.name,
                    format!(
                        "indices are {} for an axis of {rows} rows: cast them to uint16",
                        idx.dtype.mil_name()
                    ),
                );
            }
        }
    }

    fn axes(&mut self, op: &Operation, param: &str) {
        let Some(x) = self.input_type(op, "x") else {
            return;
        };
        let rank = x.rank() as i64;
        let axes: Vec<i64> = match self.input_ints(op, param) {
            Some(a) => a
                .iter()
                .map(|&a| if a < 0 { a + rank } else { a })
                .collect(),
            // softmax and reduce_argmax default to the last axis.
            None if param == "axis" => vec![rank - 1],
            None => return,
        };
        let ok = match axes.as_slice() {
            [a] => *a == rank - 1 || (rank == 4 && *a == 1),
            _ => false,
        };
        if !ok {
            self.push(
                "reduction-axes",
                &op.name,
                format!(
                    "{} over axes {axes:?} of {}: use the last axis (or axis 1 of a rank-4 tensor)",
                    op.kind.mil_name(),
                    mil::tensor_string(x)
                ),
            );
        }
    }

    fn integer(&mut self, op: &Operation) {
        let operands: Vec<&mil::TensorType> = op
            .inputs
            .iter()
            .filter(|(p, _)| matches!(p.as_str(), "x" | "y"))
            .filter_map(|(p, _)| self.input_type(op, p))
            .collect();
        let int = operands
            .iter()
            .any(|t| !t.dtype.is_float() && t.dtype != DType::Str);
        let outputs = op.outputs.iter().map(|(_, t)| tensor_of(t));
        let big = operands
            .iter()
            .copied()
            .chain(outputs)
            .filter_map(|t| t.num_elements())
            .max()
            .unwrap_or(0);
        if int && big > MAX_INT_ELEMENTS {
            let types: Vec<String> = operands.iter().map(|t| mil::tensor_string(t)).collect();
            self.push(
                "integer-ops",
                &op.name,
                format!(
                    "{} on {} ({big} elements): integer tensor work leaves the ANE",
                    op.kind.mil_name(),
                    types.join(", ")
                ),
            );
        }
    }

    fn states(&mut self) {
        let states: Vec<(&str, &mil::TensorType)> = self
            .f
            .inputs
            .iter()
            .filter_map(|(n, t)| match t {
                ValueType::State(t) => Some((n.as_str(), t)),
                ValueType::Tensor(_) => None,
            })
            .collect();
        for (name, t) in &states {
            let shape = t.static_shape().unwrap_or_default();
            let tail = &shape[shape.len().saturating_sub(2)..];
            if t.dtype != DType::F16
                || t.rank() > 4
                || tail.iter().any(|d| d % STATE_DIM_MULTIPLE != 0)
            {
                self.push(
                    "state-shape",
                    name,
                    format!(
                        "state {} must be fp16, rank <= 4, last two dims multiples of \
                         {STATE_DIM_MULTIPLE}",
                        mil::tensor_string(t)
                    ),
                );
            }
            self.state_updates(name);
        }
    }

    /// The read/update/write discipline of state `state`.
    fn state_updates(&mut self, state: &str) {
        let uses_state = |op: &Operation| {
            op.inputs
                .get("input")
                .and_then(|a| a.first())
                .is_some_and(|a| matches!(a, Arg::Var(v) if v == state))
        };
        // Values read from the state, with the write count at their read.
        let mut reads: HashMap<&str, usize> = HashMap::new();
        let mut writes = 0usize;
        let mut used = false;
        let mut findings = Vec::new();
        for op in &self.f.operations {
            for (p, args) in &op.inputs {
                for a in args {
                    if let Arg::Var(v) = a {
                        if reads.get(v.as_str()).is_some_and(|&w| w < writes) {
                            findings.push((
                                op.name.clone(),
                                format!(
                                    "{p} uses {v}, read from {state} before a later write_state"
                                ),
                            ));
                        }
                    }
                }
            }
            match op.kind {
                OpKind::ReadState if uses_state(op) => {
                    used = true;
                    if let Some((n, _)) = op.outputs.first() {
                        reads.insert(n.as_str(), writes);
                    }
                }
                OpKind::WriteState if uses_state(op) => {
                    used = true;
                    if !self.is_state_update(op, state) {
                        findings.push((
                            op.name.clone(),
                            format!(
                                "writes a value that is not a slice_update of a read_state of \
                                 {state}"
                            ),
                        ));
                    }
                    writes += 1;
                }
                _ => {}
            }
        }
        if !used {
            findings.push((
                state.to_string(),
                "declared but never read or written (Core ML rejects it)".to_string(),
            ));
        }
        for (at, msg) in findings {
            self.push("state-update", &at, msg);
        }
    }

    fn is_state_update(&self, write: &Operation, state: &str) -> bool {
        let producer_of = |op: &Operation, p: &str| match op.inputs.get(p)?.first()? {
            Arg::Var(v) => self.producer.get(v.as_str()).copied(),
            Arg::Value(_) => None,
        };
        let Some(update) = producer_of(write, "data") else {
            return false;
        };
        if update.kind != OpKind::SliceUpdate {
            return false;
        }
        producer_of(update, "x").is_some_and(|r| {
            r.kind == OpKind::ReadState
                && r.inputs
                    .get("input")
                    .and_then(|a| a.first())
                    .is_some_and(|a| matches!(a, Arg::Var(v) if v == state))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_a_distinct_id_and_a_source() {
        for (i, r) in RULES.iter().enumerate() {
            assert!(!r.source.is_empty() && !r.checks.is_empty(), "{}", r.id);
            assert!(RULES[..i].iter().all(|o| o.id != r.id), "{} twice", r.id);
        }
        assert_eq!(rule("file-size").map(|r| r.id), Some("file-size"));
        assert!(rule("nope").is_none());
    }
}
