//! `anec inspect PKG`: what is inside a .mlpackage, for a person (Display: aligned tables, sizes
//! in MiB) or a program (Serialize: `--json`). Reads the package with [`read_package_info`], so
//! a package that does not read or type-check is an error here too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::error::Result;
use super::ir::{Arg, ConstData, ConstValue, DType, Function, OpKind, Program, ValueType};
use super::model::{InputShapes, Metadata, Model};
use super::package::read_package_info;

/// One input, output or state of a function.
#[derive(Clone, Debug, Serialize)]
pub struct FeatureReport {
    pub name: String,
    pub dtype: String,
    /// The MIL shape, `?` for a flexible dimension.
    pub shape: Vec<String>,
    /// Flexible shapes from the description, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flexible: Option<InputShapes>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FunctionReport {
    pub name: String,
    pub default: bool,
    pub inputs: Vec<FeatureReport>,
    pub outputs: Vec<FeatureReport>,
    pub states: Vec<FeatureReport>,
    pub op_count: usize,
    /// Op type → count, by type name.
    pub op_counts: BTreeMap<String, usize>,
}

/// Count and weight.bin bytes of one kind of weight.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct WeightCount {
    pub count: u64,
    pub bytes: u64,
}

/// LUT-palettized weights of one bit width and group size (indices + LUT bytes).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LutWeights {
    pub bits: u32,
    /// Output channels (rows along the first grouped axis) per LUT; `None` = one LUT per tensor.
    pub group_size: Option<u64>,
    pub count: u64,
    pub bytes: u64,
}

/// Every blob in weight.bin, counted once even when several functions share it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WeightsReport {
    pub dense_fp16: WeightCount,
    pub lut: Vec<LutWeights>,
    pub other: WeightCount,
    pub total_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct InspectReport {
    pub path: String,
    pub specification_version: i32,
    pub default_function: String,
    pub functions: Vec<FunctionReport>,
    pub weights: WeightsReport,
    pub blob_count: u32,
    pub model_file_bytes: u64,
    pub weight_file_bytes: u64,
    pub total_bytes: u64,
    pub metadata: Metadata,
}

/// Reads the package at `path` and summarizes it.
pub fn inspect(path: impl AsRef<Path>) -> Result<InspectReport> {
    let path = path.as_ref();
    let (model, info) = read_package_info(path)?;
    Ok(InspectReport {
        path: path.display().to_string(),
        specification_version: info.specification_version,
        default_function: model.program.default_function.clone(),
        functions: function_reports(&model),
        weights: weights_report(&model.program),
        blob_count: info.blob_count,
        model_file_bytes: info.model_file_bytes,
        weight_file_bytes: info.weight_file_bytes,
        total_bytes: info.model_file_bytes + info.weight_file_bytes,
        metadata: model.metadata.clone(),
    })
}

fn shape_strings(t: &super::ir::TensorType) -> Vec<String> {
    t.shape
        .iter()
        .map(|d| match d {
            super::ir::Dim::Fixed(n) => n.to_string(),
            super::ir::Dim::Unknown => "?".to_string(),
        })
        .collect()
}

fn function_reports(model: &Model) -> Vec<FunctionReport> {
    let p = &model.program;
    p.functions
        .iter()
        .map(|(name, f)| {
            let flex = model.input_shapes.get(name);
            let mut inputs = Vec::new();
            let mut states = Vec::new();
            for (n, ty) in &f.inputs {
                let (t, list) = match ty {
                    ValueType::Tensor(t) => (t, &mut inputs),
                    ValueType::State(t) => (t, &mut states),
                };
                list.push(FeatureReport {
                    name: n.clone(),
                    dtype: t.dtype.mil_name().to_string(),
                    shape: shape_strings(t),
                    flexible: flex.and_then(|m| m.get(n)).cloned(),
                });
            }
            let types: BTreeMap<&str, &ValueType> = f
                .operations
                .iter()
                .flat_map(|op| op.outputs.iter().map(|(n, t)| (n.as_str(), t)))
                .chain(f.inputs.iter().map(|(n, t)| (n.as_str(), t)))
                .collect();
            let outputs = f
                .outputs
                .iter()
                .map(|n| {
                    let (dtype, shape) = match types.get(n.as_str()) {
                        Some(ValueType::Tensor(t)) | Some(ValueType::State(t)) => {
                            (t.dtype.mil_name().to_string(), shape_strings(t))
                        }
                        None => ("?".to_string(), Vec::new()),
                    };
                    FeatureReport {
                        name: n.clone(),
                        dtype,
                        shape,
                        flexible: None,
                    }
                })
                .collect();
            let mut op_counts = BTreeMap::new();
            for op in &f.operations {
                *op_counts.entry(op.kind.mil_name().to_string()).or_insert(0) += 1;
            }
            FunctionReport {
                name: name.clone(),
                default: *name == p.default_function,
                inputs,
                outputs,
                states,
                op_count: f.operations.len(),
                op_counts,
            }
        })
        .collect()
}

/// The constant bound to `param` of an op: by value, or through a `const` op's output.
fn bound_const<'a>(
    consts: &BTreeMap<&str, &'a ConstValue>,
    args: Option<&'a Vec<Arg>>,
) -> Option<&'a ConstValue> {
    match args?.first()? {
        Arg::Value(c) => Some(c),
        Arg::Var(n) => consts.get(n.as_str()).copied(),
    }
}

fn stored(c: &ConstValue) -> Option<(u64, u64)> {
    match &c.data {
        ConstData::Stored(s) => Some((s.offset, s.size_in_bytes)),
        ConstData::Bytes(_) | ConstData::Strings(_) => None,
    }
}

fn const_map(f: &Function) -> BTreeMap<&str, &ConstValue> {
    f.operations
        .iter()
        .filter_map(|op| match (&op.val, op.outputs.first()) {
            (Some(v), Some((n, _))) => Some((n.as_str(), v)),
            _ => None,
        })
        .collect()
}

fn weights_report(p: &Program) -> WeightsReport {
    let mut seen = BTreeSet::new();
    let mut luts: BTreeMap<(u32, Option<u64>), (u64, u64)> = BTreeMap::new();
    // LUT weights first, so their indices and tables are not counted as dense or other.
    for (_, f) in &p.functions {
        let consts = const_map(f);
        for op in f
            .operations
            .iter()
            .filter(|op| op.kind == OpKind::ConstexprLutToDense)
        {
            let (Some(idx), Some(lut)) = (
                bound_const(&consts, op.inputs.get("indices")),
                bound_const(&consts, op.inputs.get("lut")),
            ) else {
                continue;
            };
            let Some((ioff, isize)) = stored(idx) else {
                continue;
            };
            if !seen.insert(ioff) {
                continue;
            }
            let mut bytes = isize;
            match stored(lut) {
                Some((loff, lsize)) => {
                    if seen.insert(loff) {
                        bytes += lsize;
                    }
                }
                None => bytes += lut.bytes().map_or(0, |b| b.len() as u64),
            }
            let ishape = idx.shape();
            let lshape = lut.shape();
            let group = ishape
                .iter()
                .zip(&lshape)
                .find(|(_, &l)| l > 1)
                .map(|(&i, &l)| i / l);
            let e = luts.entry((idx.ty.dtype.bits(), group)).or_default();
            e.0 += 1;
            e.1 += bytes;
        }
    }
    let mut r = WeightsReport::default();
    // Block-quantized weights (data + scale + offset) count once, as "other".
    for (_, f) in &p.functions {
        let consts = const_map(f);
        for op in f
            .operations
            .iter()
            .filter(|op| op.kind == OpKind::ConstexprBlockwiseShiftScale)
        {
            let mut bytes = 0;
            for param in ["data", "scale", "offset"] {
                if let Some((off, size)) =
                    bound_const(&consts, op.inputs.get(param)).and_then(stored)
                {
                    if seen.insert(off) {
                        bytes += size;
                    }
                }
            }
            if bytes > 0 {
                r.other.count += 1;
                r.other.bytes += bytes;
            }
        }
    }
    for (_, f) in &p.functions {
        for c in f.operations.iter().flat_map(|op| op.constants()) {
            let Some((off, size)) = stored(c) else {
                continue;
            };
            if !seen.insert(off) {
                continue;
            }
            let slot = if c.ty.dtype == DType::F16 {
                &mut r.dense_fp16
            } else {
                &mut r.other
            };
            slot.count += 1;
            slot.bytes += size;
        }
    }
    r.lut = luts
        .into_iter()
        .map(|((bits, group_size), (count, bytes))| LutWeights {
            bits,
            group_size,
            count,
            bytes,
        })
        .collect();
    r.total_bytes = r.dense_fp16.bytes + r.other.bytes + r.lut.iter().map(|l| l.bytes).sum::<u64>();
    r
}

fn mib(bytes: u64) -> String {
    format!("{:.3}", bytes as f64 / (1024.0 * 1024.0))
}

fn shape_text(f: &FeatureReport) -> String {
    let mut s = format!("[{}]", f.shape.join(", "));
    match &f.flexible {
        Some(InputShapes::Enumerated(list)) => {
            let l: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
            s.push_str(&format!("  enumerated {}", l.join(" ")));
        }
        Some(InputShapes::Range { bounds, .. }) => {
            let l: Vec<String> = bounds.iter().map(|(a, b)| format!("{a}..{b}")).collect();
            s.push_str(&format!("  range [{}]", l.join(", ")));
        }
        None => {}
    }
    s
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "package        {}", self.path)?;
        writeln!(
            f,
            "spec version   {}{}",
            self.specification_version,
            if self.specification_version == 9 {
                " (iOS 18 / macOS 15)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "size           {} MiB total (model.mlmodel {} bytes, weight.bin {} bytes, {} blobs)",
            mib(self.total_bytes),
            self.model_file_bytes,
            self.weight_file_bytes,
            self.blob_count
        )?;

        writeln!(f, "\nfunctions")?;
        for func in &self.functions {
            let mark = if func.default { "*" } else { " " };
            let def = if func.default { " (default)" } else { "" };
            writeln!(f, "{mark} {}{def}", func.name)?;
            let rows: Vec<(&str, &FeatureReport)> = func
                .inputs
                .iter()
                .map(|x| ("input", x))
                .chain(func.states.iter().map(|x| ("state", x)))
                .chain(func.outputs.iter().map(|x| ("output", x)))
                .collect();
            let nw = rows.iter().map(|(_, x)| x.name.len()).max().unwrap_or(0);
            let dw = rows.iter().map(|(_, x)| x.dtype.len()).max().unwrap_or(0);
            for (kind, x) in &rows {
                writeln!(
                    f,
                    "    {kind:<7} {:<nw$}  {:<dw$}  {}",
                    x.name,
                    x.dtype,
                    shape_text(x)
                )?;
            }
            let counts: Vec<String> = func
                .op_counts
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(
                f,
                "    {:<7} {} ({})",
                "ops",
                func.op_count,
                counts.join(", ")
            )?;
        }

        writeln!(f, "\nweights (each blob once)")?;
        let mut rows: Vec<(String, u64, u64)> = Vec::new();
        rows.push((
            "dense fp16".to_string(),
            self.weights.dense_fp16.count,
            self.weights.dense_fp16.bytes,
        ));
        for l in &self.weights.lut {
            let g = match l.group_size {
                Some(g) => format!("group {g}"),
                None => "per tensor".to_string(),
            };
            rows.push((format!("LUT {}-bit, {g}", l.bits), l.count, l.bytes));
        }
        rows.push((
            "other".to_string(),
            self.weights.other.count,
            self.weights.other.bytes,
        ));
        let total_count = rows.iter().map(|r| r.1).sum();
        rows.push(("total".to_string(), total_count, self.weights.total_bytes));
        let kw = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(4);
        let bw = rows
            .iter()
            .map(|r| r.2.to_string().len())
            .max()
            .unwrap_or(0)
            .max(5);
        writeln!(
            f,
            "    {:<kw$}  {:>5}  {:>bw$}  {:>8}",
            "kind", "count", "bytes", "MiB"
        )?;
        for (k, c, b) in &rows {
            writeln!(f, "    {k:<kw$}  {c:>5}  {b:>bw$}  {:>8}", mib(*b))?;
        }

        let m = &self.metadata;
        if !m.is_empty() {
            writeln!(f, "\nmetadata")?;
            let mut rows: Vec<(String, &str)> = Vec::new();
            for (k, v) in [
                ("author", &m.author),
                ("version", &m.version),
                ("description", &m.short_description),
                ("license", &m.license),
            ] {
                if !v.is_empty() {
                    rows.push((k.to_string(), v));
                }
            }
            for (k, v) in &m.user_defined {
                rows.push((k.clone(), v));
            }
            let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
            for (k, v) in rows {
                writeln!(f, "    {k:<w$}  {v}")?;
            }
        }
        Ok(())
    }
}
