//! The one table between the IR and Core ML's protobuf, both directions (docs/coreml-format.md §3–§4):
//! dtypes, value types, immediates per dtype, blob references, ops and their bindings, functions,
//! and the model description (single function top-level, several as `functions`).
//!
//! Writing: constants of ≥ 10 elements whose dtype weight.bin can hold go to the blob (through a
//! [`BlobSink`]); everything else is inline. Reading: every blob reference is checked against
//! weight.bin by [`BlobReader::read`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use super::blob::{BlobDataType, BlobReader};
use super::error::{MilError, Result};
use super::ir::{
    Arg, ConstData, ConstValue, DType, Dim, Function, OpKind, Operation, Program, StoredBlob,
    TensorType, ValueType, MAX_RANK,
};
use super::model::{InputShapes, Metadata, Model, OPSET, SPEC_VERSION};
use super::proto::spec as pb;
use super::proto::spec::mil_spec as mil;
use super::value::byte_len;

use mil::argument::binding::Binding as PbBinding;
use mil::tensor_value::Value as TV;
use mil::value::immediate_value::Value as Imm;
use mil::value::Value as ValueKind;
use mil::value_type::Type as VT;
use pb::array_feature_type::{ArrayDataType, ShapeFlexibility};
use pb::feature_type::Type as FeatureKind;
use pb::state_feature_type::Type as StateKind;

/// What the proto's `BlobFileValue.fileName` holds for anec's single weight file.
pub const WEIGHT_FILE_REF: &str = "@model_path/weights/weight.bin";
/// Constants with at least this many elements go to weight.bin (coremltools'
/// `should_use_weight_file`).
pub const BLOB_MIN_ELEMENTS: u64 = 10;
/// The program version the loader accepts.
const PROGRAM_VERSION: i64 = 1;
/// The single-function name Core ML looks up when the description lists no functions.
pub const MAIN: &str = "main";

/// Where the encoder puts constants that belong in weight.bin.
pub trait BlobSink {
    fn store(&mut self, value: &ConstValue) -> Result<StoredBlob>;
}

// ---------------------------------------------------------------- dtypes

fn dtype_to_proto(d: DType) -> mil::DataType {
    match d {
        DType::Bool => mil::DataType::Bool,
        DType::Str => mil::DataType::String,
        DType::F16 => mil::DataType::Float16,
        DType::F32 => mil::DataType::Float32,
        DType::I8 => mil::DataType::Int8,
        DType::I16 => mil::DataType::Int16,
        DType::I32 => mil::DataType::Int32,
        DType::I64 => mil::DataType::Int64,
        DType::U8 => mil::DataType::Uint8,
        DType::U16 => mil::DataType::Uint16,
        DType::U1 => mil::DataType::Uint1,
        DType::U2 => mil::DataType::Uint2,
        DType::U3 => mil::DataType::Uint3,
        DType::U4 => mil::DataType::Uint4,
        DType::U6 => mil::DataType::Uint6,
        DType::I4 => mil::DataType::Int4,
    }
}

fn dtype_from_proto(code: i32) -> Option<DType> {
    use mil::DataType as P;
    Some(match P::try_from(code).ok()? {
        P::Bool => DType::Bool,
        P::String => DType::Str,
        P::Float16 => DType::F16,
        P::Float32 => DType::F32,
        P::Int8 => DType::I8,
        P::Int16 => DType::I16,
        P::Int32 => DType::I32,
        P::Int64 => DType::I64,
        P::Uint8 => DType::U8,
        P::Uint16 => DType::U16,
        P::Uint1 => DType::U1,
        P::Uint2 => DType::U2,
        P::Uint3 => DType::U3,
        P::Uint4 => DType::U4,
        P::Uint6 => DType::U6,
        P::Int4 => DType::I4,
        P::UnusedType
        | P::Float64
        | P::Bfloat16
        | P::Uint32
        | P::Uint64
        | P::Float8e4m3fn
        | P::Float8e5m2 => return None,
    })
}

/// ArrayFeatureType data types an ML Program's inputs, outputs and states may use.
fn array_dtype(d: DType) -> Option<ArrayDataType> {
    match d {
        DType::F32 => Some(ArrayDataType::Float32),
        DType::F16 => Some(ArrayDataType::Float16),
        DType::I32 => Some(ArrayDataType::Int32),
        DType::Bool
        | DType::Str
        | DType::I8
        | DType::I16
        | DType::I64
        | DType::U8
        | DType::U16
        | DType::U1
        | DType::U2
        | DType::U3
        | DType::U4
        | DType::U6
        | DType::I4 => None,
    }
}

fn array_dtype_from_proto(code: i32) -> Option<DType> {
    match ArrayDataType::try_from(code).ok()? {
        ArrayDataType::Float32 => Some(DType::F32),
        ArrayDataType::Float16 => Some(DType::F16),
        ArrayDataType::Int32 => Some(DType::I32),
        ArrayDataType::InvalidArrayDataType | ArrayDataType::Double | ArrayDataType::Int8 => None,
    }
}

/// Which `TensorValue` field holds an immediate of each dtype (docs/coreml-format.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ImmField {
    Floats,
    Ints,
    Bools,
    Strings,
    LongInts,
    Bytes,
}

fn immediate_field(d: DType) -> ImmField {
    match d {
        DType::F32 => ImmField::Floats,
        DType::F16
        | DType::I8
        | DType::U8
        | DType::I4
        | DType::U1
        | DType::U2
        | DType::U3
        | DType::U4
        | DType::U6 => ImmField::Bytes,
        DType::I16 | DType::U16 | DType::I32 => ImmField::Ints,
        DType::I64 => ImmField::LongInts,
        DType::Bool => ImmField::Bools,
        DType::Str => ImmField::Strings,
    }
}

// ---------------------------------------------------------------- types

fn tensor_type_to_proto(t: &TensorType) -> mil::TensorType {
    mil::TensorType {
        data_type: dtype_to_proto(t.dtype) as i32,
        rank: t.rank() as i64,
        dimensions: t
            .shape
            .iter()
            .map(|d| mil::Dimension {
                dimension: Some(match d {
                    Dim::Fixed(n) => {
                        mil::dimension::Dimension::Constant(mil::dimension::ConstantDimension {
                            size: *n,
                        })
                    }
                    Dim::Unknown => {
                        mil::dimension::Dimension::Unknown(mil::dimension::UnknownDimension {
                            variadic: false,
                        })
                    }
                }),
            })
            .collect(),
        attributes: BTreeMap::new(),
    }
}

fn value_type_to_proto(t: &ValueType) -> mil::ValueType {
    let ty = match t {
        ValueType::Tensor(t) => VT::TensorType(tensor_type_to_proto(t)),
        ValueType::State(t) => VT::StateType(Box::new(mil::StateType {
            wrapped_type: Some(Box::new(mil::ValueType {
                r#type: Some(VT::TensorType(tensor_type_to_proto(t))),
            })),
        })),
    };
    mil::ValueType { r#type: Some(ty) }
}

// ---------------------------------------------------------------- encoding

fn le_chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    b.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

fn immediate_to_proto(c: &ConstValue, context: &str) -> Result<TV> {
    let enc = |detail: String| MilError::Encode {
        context: context.to_string(),
        detail,
    };
    if let ConstData::Strings(s) = &c.data {
        if c.ty.dtype != DType::Str {
            return Err(enc(format!(
                "strings in a {} constant",
                c.ty.dtype.mil_name()
            )));
        }
        return Ok(TV::Strings(mil::tensor_value::RepeatedStrings {
            values: s.clone(),
        }));
    }
    let b = c
        .bytes()
        .ok_or_else(|| enc("constant bytes are not loaded".to_string()))?;
    let n = c.num_elements();
    let expected = byte_len(c.ty.dtype, n).unwrap_or(0);
    if b.len() as u64 != expected {
        return Err(enc(format!(
            "{} bytes for {n} elements of {}, expected {expected}",
            b.len(),
            c.ty.dtype.mil_name()
        )));
    }
    Ok(match immediate_field(c.ty.dtype) {
        ImmField::Floats => TV::Floats(mil::tensor_value::RepeatedFloats {
            values: le_chunks::<4>(b).map(f32::from_le_bytes).collect(),
        }),
        ImmField::Ints => TV::Ints(mil::tensor_value::RepeatedInts {
            values: match c.ty.dtype {
                DType::I16 => le_chunks::<2>(b)
                    .map(|a| i16::from_le_bytes(a) as i32)
                    .collect(),
                DType::U16 => le_chunks::<2>(b)
                    .map(|a| u16::from_le_bytes(a) as i32)
                    .collect(),
                _ => le_chunks::<4>(b).map(i32::from_le_bytes).collect(),
            },
        }),
        ImmField::LongInts => TV::LongInts(mil::tensor_value::RepeatedLongInts {
            values: le_chunks::<8>(b).map(i64::from_le_bytes).collect(),
        }),
        ImmField::Bools => TV::Bools(mil::tensor_value::RepeatedBools {
            values: b.iter().map(|&x| x != 0).collect(),
        }),
        ImmField::Bytes => TV::Bytes(mil::tensor_value::RepeatedBytes { values: b.to_vec() }),
        ImmField::Strings => return Err(enc("a string constant without strings".to_string())),
    })
}

fn blob_ref(ty: &TensorType, offset: u64) -> mil::Value {
    mil::Value {
        doc_string: String::new(),
        r#type: Some(value_type_to_proto(&ValueType::Tensor(ty.clone()))),
        value: Some(ValueKind::BlobFileValue(mil::value::BlobFileValue {
            file_name: WEIGHT_FILE_REF.to_string(),
            offset,
        })),
    }
}

/// Whether a constant goes to weight.bin (coremltools' `should_use_weight_file`).
pub fn belongs_in_blob(c: &ConstValue) -> bool {
    matches!(c.data, ConstData::Bytes(_))
        && c.num_elements() >= BLOB_MIN_ELEMENTS
        && BlobDataType::from_dtype(c.ty.dtype).is_some()
}

fn value_to_proto(c: &ConstValue, sink: &mut dyn BlobSink, context: &str) -> Result<mil::Value> {
    if c.ty.static_shape().is_none() {
        return Err(MilError::Encode {
            context: context.to_string(),
            detail: "a constant with an unknown dimension".to_string(),
        });
    }
    if let ConstData::Stored(s) = &c.data {
        if s.bytes.is_none() {
            // Streamed by this package's writer: its offset is final.
            return Ok(blob_ref(&c.ty, s.offset));
        }
        // Read from some package: store its bytes again here (deduplicated).
    }
    if belongs_in_blob(c) || matches!(c.data, ConstData::Stored(_)) {
        let s = sink.store(c)?;
        return Ok(blob_ref(&c.ty, s.offset));
    }
    Ok(mil::Value {
        doc_string: String::new(),
        r#type: Some(value_type_to_proto(&ValueType::Tensor(c.ty.clone()))),
        value: Some(ValueKind::ImmediateValue(mil::value::ImmediateValue {
            value: Some(Imm::Tensor(mil::TensorValue {
                value: Some(immediate_to_proto(c, context)?),
            })),
        })),
    })
}

fn string_value(s: &str) -> mil::Value {
    mil::Value {
        doc_string: String::new(),
        r#type: Some(value_type_to_proto(&ValueType::Tensor(TensorType::scalar(
            DType::Str,
        )))),
        value: Some(ValueKind::ImmediateValue(mil::value::ImmediateValue {
            value: Some(Imm::Tensor(mil::TensorValue {
                value: Some(TV::Strings(mil::tensor_value::RepeatedStrings {
                    values: vec![s.to_string()],
                })),
            })),
        })),
    }
}

fn op_to_proto(fname: &str, op: &Operation, sink: &mut dyn BlobSink) -> Result<mil::Operation> {
    let context = |param: &str| format!("function {fname:?}, op {:?}, {param}", op.name);
    let mut inputs = BTreeMap::new();
    for (param, args) in &op.inputs {
        let mut arguments = Vec::with_capacity(args.len());
        for arg in args {
            let binding = match arg {
                Arg::Var(name) => PbBinding::Name(name.clone()),
                Arg::Value(c) => PbBinding::Value(value_to_proto(c, sink, &context(param))?),
            };
            arguments.push(mil::argument::Binding {
                binding: Some(binding),
            });
        }
        inputs.insert(param.clone(), mil::Argument { arguments });
    }
    let mut attributes = BTreeMap::new();
    attributes.insert("name".to_string(), string_value(&op.name));
    match (op.kind, &op.val) {
        (OpKind::Const, Some(v)) => {
            attributes.insert("val".to_string(), value_to_proto(v, sink, &context("val"))?);
        }
        (OpKind::Const, None) => {
            return Err(MilError::MissingVal {
                op: op.name.clone(),
            })
        }
        (_, Some(_)) => {
            return Err(MilError::Encode {
                context: context("val"),
                detail: format!("a {} op has no `val`", op.kind.mil_name()),
            })
        }
        (_, None) => {}
    }
    Ok(mil::Operation {
        r#type: op.kind.mil_name().to_string(),
        inputs,
        outputs: op
            .outputs
            .iter()
            .map(|(name, ty)| mil::NamedValueType {
                name: name.clone(),
                r#type: Some(value_type_to_proto(ty)),
            })
            .collect(),
        blocks: Vec::new(),
        attributes,
    })
}

fn function_to_proto(name: &str, f: &Function, sink: &mut dyn BlobSink) -> Result<mil::Function> {
    let operations = f
        .operations
        .iter()
        .map(|op| op_to_proto(name, op, sink))
        .collect::<Result<Vec<_>>>()?;
    let block = mil::Block {
        inputs: Vec::new(),
        outputs: f.outputs.clone(),
        operations,
        attributes: BTreeMap::new(),
    };
    Ok(mil::Function {
        inputs: f
            .inputs
            .iter()
            .map(|(n, t)| mil::NamedValueType {
                name: n.clone(),
                r#type: Some(value_type_to_proto(t)),
            })
            .collect(),
        opset: OPSET.to_string(),
        block_specializations: BTreeMap::from([(OPSET.to_string(), block)]),
        attributes: BTreeMap::new(),
    })
}

/// The type of every variable of a function (inputs and op outputs).
fn var_types(f: &Function) -> BTreeMap<&str, &ValueType> {
    let mut m: BTreeMap<&str, &ValueType> = f.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    for op in &f.operations {
        for (n, t) in &op.outputs {
            m.insert(n.as_str(), t);
        }
    }
    m
}

fn feature(name: &str, kind: FeatureKind) -> pb::FeatureDescription {
    pb::FeatureDescription {
        name: name.to_string(),
        short_description: String::new(),
        r#type: Some(pb::FeatureType {
            is_optional: false,
            r#type: Some(kind),
        }),
    }
}

fn io_array(ctx: &str, t: &TensorType) -> Result<pb::ArrayFeatureType> {
    let dt = array_dtype(t.dtype).ok_or_else(|| MilError::Encode {
        context: ctx.to_string(),
        detail: format!(
            "{} is not an ML Program input/output type (fp32, fp16, int32)",
            t.dtype.mil_name()
        ),
    })?;
    Ok(pb::ArrayFeatureType {
        shape: Vec::new(),
        data_type: dt as i32,
        shape_flexibility: None,
        default_optional_value: None,
    })
}

fn to_i64s(ctx: &str, s: &[u64]) -> Result<Vec<i64>> {
    s.iter()
        .map(|&d| {
            i64::try_from(d).map_err(|_| MilError::Encode {
                context: ctx.to_string(),
                detail: format!("dimension {d} does not fit in int64"),
            })
        })
        .collect()
}

fn check_flexible(ctx: &str, t: &TensorType, shapes: &InputShapes) -> Result<()> {
    let bad = |detail: String| MilError::Encode {
        context: ctx.to_string(),
        detail,
    };
    let list: Vec<&[u64]> = match shapes {
        InputShapes::Enumerated(s) if s.is_empty() => {
            return Err(bad("no enumerated shapes".to_string()))
        }
        InputShapes::Enumerated(s) => s.iter().map(Vec::as_slice).collect(),
        InputShapes::Range { default, bounds } => {
            if bounds.len() != t.rank() {
                return Err(bad(format!(
                    "{} ranges for rank {}",
                    bounds.len(),
                    t.rank()
                )));
            }
            vec![default.as_slice()]
        }
    };
    for s in list {
        let fits = s.len() == t.rank()
            && s.iter().zip(&t.shape).all(|(a, d)| match d {
                Dim::Fixed(n) => n == a,
                Dim::Unknown => true,
            });
        if !fits {
            return Err(bad(format!(
                "shape {s:?} does not fit the MIL type {}",
                super::infer::tensor_string(t)
            )));
        }
    }
    Ok(())
}

fn input_feature(
    ctx: &str,
    name: &str,
    t: &TensorType,
    flex: Option<&InputShapes>,
) -> Result<pb::FeatureDescription> {
    let mut a = io_array(ctx, t)?;
    match (t.static_shape(), flex) {
        (Some(_), Some(_)) => {
            return Err(MilError::Encode {
                context: ctx.to_string(),
                detail: "flexible shapes given for an input whose MIL type is fully fixed"
                    .to_string(),
            })
        }
        (Some(s), None) => {
            // A rank-0 scalar input is described as shape [1] (coremltools).
            a.shape = if s.is_empty() {
                vec![1]
            } else {
                to_i64s(ctx, &s)?
            };
        }
        (None, None) => {
            return Err(MilError::Encode {
                context: ctx.to_string(),
                detail: format!(
                    "type {} has an unknown dimension but no enumerated shapes",
                    super::infer::tensor_string(t)
                ),
            })
        }
        (None, Some(flex)) => {
            check_flexible(ctx, t, flex)?;
            a.shape = to_i64s(ctx, flex.default_shape())?;
            a.shape_flexibility = Some(match flex {
                InputShapes::Enumerated(list) => {
                    ShapeFlexibility::EnumeratedShapes(pb::array_feature_type::EnumeratedShapes {
                        shapes: list
                            .iter()
                            .map(|s| {
                                Ok(pb::array_feature_type::Shape {
                                    shape: to_i64s(ctx, s)?,
                                })
                            })
                            .collect::<Result<_>>()?,
                    })
                }
                InputShapes::Range { bounds, .. } => {
                    ShapeFlexibility::ShapeRange(pb::array_feature_type::ShapeRange {
                        size_ranges: bounds
                            .iter()
                            .map(|&(lower_bound, upper_bound)| pb::SizeRange {
                                lower_bound,
                                upper_bound,
                            })
                            .collect(),
                    })
                }
            });
        }
    }
    Ok(feature(name, FeatureKind::MultiArrayType(a)))
}

/// (inputs, outputs, states) of one function's description.
type FunctionIo = (
    Vec<pb::FeatureDescription>,
    Vec<pb::FeatureDescription>,
    Vec<pb::FeatureDescription>,
);

fn describe_function(model: &Model, fname: &str, f: &Function) -> Result<FunctionIo> {
    let flex = model.input_shapes.get(fname);
    if let Some(flex) = flex {
        for input in flex.keys() {
            if !f.inputs.iter().any(|(n, _)| n == input) {
                return Err(MilError::Encode {
                    context: format!("function {fname:?}"),
                    detail: format!("flexible shapes for {input:?}, which is not an input"),
                });
            }
        }
    }
    let (mut inputs, mut states) = (Vec::new(), Vec::new());
    for (name, ty) in &f.inputs {
        let ctx = format!("function {fname:?}, input {name:?}");
        match ty {
            ValueType::Tensor(t) => inputs.push(input_feature(
                &ctx,
                name,
                t,
                flex.and_then(|m| m.get(name)),
            )?),
            ValueType::State(t) => {
                if t.dtype != DType::F16 {
                    return Err(MilError::Encode {
                        context: ctx,
                        detail: format!("states must be fp16, got {}", t.dtype.mil_name()),
                    });
                }
                let mut a = io_array(&ctx, t)?;
                let s = t.static_shape().ok_or_else(|| MilError::Encode {
                    context: ctx.clone(),
                    detail: "a state must have a fixed shape".to_string(),
                })?;
                a.shape = to_i64s(&ctx, &s)?;
                states.push(feature(
                    name,
                    FeatureKind::StateType(pb::StateFeatureType {
                        r#type: Some(StateKind::ArrayType(a)),
                    }),
                ));
            }
        }
    }
    let types = var_types(f);
    let mut outputs = Vec::new();
    for name in &f.outputs {
        let ctx = format!("function {fname:?}, output {name:?}");
        let t = match types.get(name.as_str()) {
            Some(ValueType::Tensor(t)) => t,
            Some(ValueType::State(_)) | None => {
                return Err(MilError::Encode {
                    context: ctx,
                    detail: "not a tensor variable of the function".to_string(),
                })
            }
        };
        let mut a = io_array(&ctx, t)?;
        if let Some(s) = t.static_shape() {
            a.shape = to_i64s(&ctx, &s)?;
        }
        outputs.push(feature(name, FeatureKind::MultiArrayType(a)));
    }
    Ok((inputs, outputs, states))
}

fn metadata_to_proto(m: &Metadata) -> Option<pb::Metadata> {
    (!m.is_empty()).then(|| pb::Metadata {
        short_description: m.short_description.clone(),
        version_string: m.version.clone(),
        author: m.author.clone(),
        license: m.license.clone(),
        user_defined: m.user_defined.clone(),
    })
}

/// The Model message for `model`. Constants that belong in weight.bin and are not stored yet go
/// through `sink`.
pub fn encode_model(model: &Model, sink: &mut dyn BlobSink) -> Result<pb::Model> {
    let p = &model.program;
    if p.functions.is_empty() {
        return Err(MilError::BadProgram {
            detail: "no functions".to_string(),
        });
    }
    if !p.functions.iter().any(|(n, _)| *n == p.default_function) {
        return Err(MilError::BadProgram {
            detail: format!("default function {:?} is not defined", p.default_function),
        });
    }
    for fname in model.input_shapes.keys() {
        if !p.functions.iter().any(|(n, _)| n == fname) {
            return Err(MilError::Encode {
                context: "input shapes".to_string(),
                detail: format!("function {fname:?} does not exist"),
            });
        }
    }
    let mut functions = BTreeMap::new();
    let mut descriptions = Vec::new();
    for (name, f) in &p.functions {
        if functions
            .insert(name.clone(), function_to_proto(name, f, sink)?)
            .is_some()
        {
            return Err(MilError::BadProgram {
                detail: format!("function {name:?} is defined twice"),
            });
        }
        let (input, output, state) = describe_function(model, name, f)?;
        descriptions.push(pb::FunctionDescription {
            name: name.clone(),
            input,
            output,
            state,
            predicted_feature_name: String::new(),
            predicted_probabilities_name: String::new(),
        });
    }
    let mut description = pb::ModelDescription {
        metadata: metadata_to_proto(&model.metadata),
        ..Default::default()
    };
    if descriptions.len() == 1 && descriptions[0].name == MAIN {
        let d = descriptions.remove(0);
        description.input = d.input;
        description.output = d.output;
        description.state = d.state;
    } else {
        description.functions = descriptions;
        description.default_function_name = p.default_function.clone();
    }
    Ok(pb::Model {
        specification_version: SPEC_VERSION,
        description: Some(description),
        is_updatable: false,
        r#type: Some(pb::model::Type::MlProgram(mil::Program {
            version: PROGRAM_VERSION,
            functions,
            doc_string: String::new(),
            attributes: BTreeMap::new(),
        })),
    })
}

// ---------------------------------------------------------------- decoding

/// Decoding context: the model file (for errors) and the weight file, if the package has one.
struct Dec<'a> {
    path: &'a Path,
    blobs: Option<&'a BlobReader>,
}

impl Dec<'_> {
    fn err(&self, context: impl Into<String>, detail: impl Into<String>) -> MilError {
        MilError::ProtoContent {
            path: self.path.to_path_buf(),
            context: context.into(),
            detail: detail.into(),
        }
    }

    fn tensor_type(&self, ctx: &str, t: &mil::TensorType) -> Result<TensorType> {
        let dtype = dtype_from_proto(t.data_type)
            .ok_or_else(|| self.err(ctx, format!("unsupported data type {}", t.data_type)))?;
        if t.dimensions.len() as u64 > MAX_RANK {
            return Err(self.err(
                ctx,
                format!(
                    "rank {} exceeds anec's limit of {MAX_RANK}",
                    t.dimensions.len()
                ),
            ));
        }
        if t.rank != t.dimensions.len() as i64 {
            return Err(self.err(
                ctx,
                format!("rank {} with {} dimensions", t.rank, t.dimensions.len()),
            ));
        }
        let shape = t
            .dimensions
            .iter()
            .map(|d| match d.dimension {
                Some(mil::dimension::Dimension::Constant(c)) => Ok(Dim::Fixed(c.size)),
                Some(mil::dimension::Dimension::Unknown(u)) if !u.variadic => Ok(Dim::Unknown),
                Some(mil::dimension::Dimension::Unknown(_)) => {
                    Err(self.err(ctx, "variadic rank is not supported"))
                }
                None => Err(self.err(ctx, "a dimension without a size")),
            })
            .collect::<Result<_>>()?;
        Ok(TensorType { dtype, shape })
    }

    fn value_type(&self, ctx: &str, t: Option<&mil::ValueType>) -> Result<ValueType> {
        match t.and_then(|t| t.r#type.as_ref()) {
            Some(VT::TensorType(t)) => Ok(ValueType::Tensor(self.tensor_type(ctx, t)?)),
            Some(VT::StateType(s)) => {
                match s.wrapped_type.as_deref().and_then(|w| w.r#type.as_ref()) {
                    Some(VT::TensorType(t)) => Ok(ValueType::State(self.tensor_type(ctx, t)?)),
                    _ => Err(self.err(ctx, "a state that does not wrap a tensor")),
                }
            }
            Some(VT::ListType(_)) | Some(VT::TupleType(_)) | Some(VT::DictionaryType(_)) => {
                Err(self.err(ctx, "list, tuple and dictionary types are not supported"))
            }
            None => Err(self.err(ctx, "missing type")),
        }
    }

    fn value(&self, ctx: &str, v: &mil::Value) -> Result<ConstValue> {
        let ty = match self.value_type(ctx, v.r#type.as_ref())? {
            ValueType::Tensor(t) => t,
            ValueType::State(_) => return Err(self.err(ctx, "a state-typed constant")),
        };
        let shape = ty
            .static_shape()
            .ok_or_else(|| self.err(ctx, "a constant with an unknown dimension"))?;
        let n = ty.num_elements().ok_or_else(|| {
            self.err(
                ctx,
                format!("a constant of shape {shape:?} has more than 2^64 elements"),
            )
        })?;
        let data = match &v.value {
            Some(ValueKind::BlobFileValue(b)) => {
                if b.file_name != WEIGHT_FILE_REF {
                    return Err(self.err(
                        ctx,
                        format!("blob file {:?}, expected {WEIGHT_FILE_REF:?}", b.file_name),
                    ));
                }
                let reader = self.blobs.ok_or_else(|| {
                    self.err(ctx, "references weight.bin, but the package has none")
                })?;
                ConstData::Stored(reader.read(b.offset, ty.dtype, n)?)
            }
            Some(ValueKind::ImmediateValue(i)) => match &i.value {
                Some(Imm::Tensor(t)) => self.immediate(ctx, &ty, n, t)?,
                Some(Imm::Tuple(_)) | Some(Imm::List(_)) | Some(Imm::Dictionary(_)) | None => {
                    return Err(self.err(ctx, "only tensor immediates are supported"))
                }
            },
            None => return Err(self.err(ctx, "a value without contents")),
        };
        Ok(ConstValue { ty, data })
    }

    fn immediate(
        &self,
        ctx: &str,
        ty: &TensorType,
        n: u64,
        t: &mil::TensorValue,
    ) -> Result<ConstData> {
        let want = immediate_field(ty.dtype);
        let count = |got: usize| -> Result<()> {
            if got as u64 != n {
                return Err(self.err(
                    ctx,
                    format!("{got} values for {n} elements of {}", ty.dtype.mil_name()),
                ));
            }
            Ok(())
        };
        let field = |f: ImmField| -> Result<()> {
            if f != want {
                return Err(self.err(
                    ctx,
                    format!(
                        "{} immediate stored as {f:?}, expected {want:?}",
                        ty.dtype.mil_name()
                    ),
                ));
            }
            Ok(())
        };
        let bytes: Vec<u8> = match t.value.as_ref() {
            Some(TV::Floats(v)) => {
                field(ImmField::Floats)?;
                count(v.values.len())?;
                v.values.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
            Some(TV::Ints(v)) => {
                field(ImmField::Ints)?;
                count(v.values.len())?;
                let mut out = Vec::with_capacity(v.values.len() * 4);
                for &x in &v.values {
                    match ty.dtype {
                        DType::I16 => out.extend(
                            i16::try_from(x)
                                .map_err(|_| self.err(ctx, format!("{x} is not an int16")))?
                                .to_le_bytes(),
                        ),
                        DType::U16 => out.extend(
                            u16::try_from(x)
                                .map_err(|_| self.err(ctx, format!("{x} is not a uint16")))?
                                .to_le_bytes(),
                        ),
                        _ => out.extend(x.to_le_bytes()),
                    }
                }
                out
            }
            Some(TV::LongInts(v)) => {
                field(ImmField::LongInts)?;
                count(v.values.len())?;
                v.values.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
            Some(TV::Bools(v)) => {
                field(ImmField::Bools)?;
                count(v.values.len())?;
                v.values.iter().map(|&x| x as u8).collect()
            }
            Some(TV::Strings(v)) => {
                field(ImmField::Strings)?;
                count(v.values.len())?;
                return Ok(ConstData::Strings(v.values.clone()));
            }
            Some(TV::Bytes(v)) => {
                field(ImmField::Bytes)?;
                let expected = byte_len(ty.dtype, n).unwrap_or(0);
                if v.values.len() as u64 != expected {
                    return Err(self.err(
                        ctx,
                        format!(
                            "{} bytes for {n} elements of {}, expected {expected}",
                            v.values.len(),
                            ty.dtype.mil_name()
                        ),
                    ));
                }
                v.values.clone()
            }
            Some(TV::Doubles(_)) => return Err(self.err(ctx, "fp64 immediates are not supported")),
            None => return Err(self.err(ctx, "an empty immediate")),
        };
        Ok(ConstData::Bytes(Arc::from(bytes)))
    }

    fn op(&self, fname: &str, op: &mil::Operation) -> Result<Operation> {
        let name = match op
            .attributes
            .get("name")
            .map(|v| self.value("name attribute", v))
        {
            Some(Ok(ConstValue {
                data: ConstData::Strings(s),
                ..
            })) if s.len() == 1 => s[0].clone(),
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(self.err(
                    format!("function {fname:?}, a {:?} op", op.r#type),
                    "no string `name` attribute",
                ))
            }
        };
        let ctx = format!("function {fname:?}, op {name:?}");
        let kind = OpKind::from_mil_name(&op.r#type).ok_or_else(|| MilError::UnknownOp {
            path: self.path.to_path_buf(),
            function: fname.to_string(),
            op: name.clone(),
            op_type: op.r#type.clone(),
        })?;
        if !op.blocks.is_empty() {
            return Err(self.err(&ctx, "ops with nested blocks are not supported"));
        }
        let mut val = None;
        for (key, v) in &op.attributes {
            match (key.as_str(), kind) {
                ("name", _) => {}
                ("val", OpKind::Const) => val = Some(self.value(&format!("{ctx}, val"), v)?),
                _ => return Err(self.err(&ctx, format!("unsupported attribute {key:?}"))),
            }
        }
        let mut inputs = BTreeMap::new();
        for (param, arg) in &op.inputs {
            let pctx = format!("{ctx}, parameter {param:?}");
            let args = arg
                .arguments
                .iter()
                .map(|b| match &b.binding {
                    Some(PbBinding::Name(n)) => Ok(Arg::Var(n.clone())),
                    Some(PbBinding::Value(v)) => Ok(Arg::Value(self.value(&pctx, v)?)),
                    None => Err(self.err(&pctx, "an empty binding")),
                })
                .collect::<Result<Vec<_>>>()?;
            inputs.insert(param.clone(), args);
        }
        let outputs = op
            .outputs
            .iter()
            .map(|o| {
                let t =
                    self.value_type(&format!("{ctx}, output {:?}", o.name), o.r#type.as_ref())?;
                Ok((o.name.clone(), t))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Operation {
            kind,
            name,
            inputs,
            outputs,
            val,
        })
    }

    fn function(&self, fname: &str, f: &mil::Function) -> Result<Function> {
        let ctx = format!("function {fname:?}");
        let block = f.block_specializations.get(&f.opset).ok_or_else(|| {
            self.err(
                &ctx,
                format!(
                    "opset {:?} has no block (blocks: {:?})",
                    f.opset,
                    f.block_specializations.keys().collect::<Vec<_>>()
                ),
            )
        })?;
        if f.block_specializations.len() != 1 {
            return Err(self.err(&ctx, "more than one block specialization"));
        }
        if !block.inputs.is_empty() || !f.attributes.is_empty() || !block.attributes.is_empty() {
            return Err(self.err(
                &ctx,
                "block inputs or function/block attributes are not supported",
            ));
        }
        let inputs = f
            .inputs
            .iter()
            .map(|i| {
                let t =
                    self.value_type(&format!("{ctx}, input {:?}", i.name), i.r#type.as_ref())?;
                Ok((i.name.clone(), t))
            })
            .collect::<Result<Vec<_>>>()?;
        let operations = block
            .operations
            .iter()
            .map(|op| self.op(fname, op))
            .collect::<Result<Vec<_>>>()?;
        Ok(Function {
            inputs,
            operations,
            outputs: block.outputs.clone(),
        })
    }

    fn array_feature<'f>(
        &self,
        ctx: &str,
        fd: &'f pb::FeatureDescription,
    ) -> Result<&'f pb::ArrayFeatureType> {
        match fd.r#type.as_ref().and_then(|t| t.r#type.as_ref()) {
            Some(FeatureKind::MultiArrayType(a)) => Ok(a),
            Some(FeatureKind::StateType(pb::StateFeatureType {
                r#type: Some(StateKind::ArrayType(a)),
            })) => Ok(a),
            _ => Err(self.err(ctx, "only multi-array and state features are supported")),
        }
    }

    /// Checks one function's description against its MIL signature and returns the flexible
    /// input shapes it declares.
    fn check_description(
        &self,
        fname: &str,
        f: &Function,
        inputs: &[pb::FeatureDescription],
        outputs: &[pb::FeatureDescription],
        states: &[pb::FeatureDescription],
    ) -> Result<BTreeMap<String, InputShapes>> {
        let ctx = format!("description of function {fname:?}");
        let names =
            |v: &[pb::FeatureDescription]| v.iter().map(|x| x.name.clone()).collect::<Vec<_>>();
        let mil_inputs: Vec<String> = f
            .inputs
            .iter()
            .filter(|(_, t)| matches!(t, ValueType::Tensor(_)))
            .map(|(n, _)| n.clone())
            .collect();
        let mil_states: Vec<String> = f
            .inputs
            .iter()
            .filter(|(_, t)| matches!(t, ValueType::State(_)))
            .map(|(n, _)| n.clone())
            .collect();
        let same = |a: &[String], b: &[String]| {
            a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
                && a.len() == b.len()
        };
        if !same(&names(inputs), &mil_inputs) {
            return Err(self.err(
                &ctx,
                format!(
                    "inputs {:?}, but the program's are {mil_inputs:?}",
                    names(inputs)
                ),
            ));
        }
        if !same(&names(states), &mil_states) {
            return Err(self.err(
                &ctx,
                format!(
                    "states {:?}, but the program's are {mil_states:?}",
                    names(states)
                ),
            ));
        }
        if names(outputs) != f.outputs {
            return Err(self.err(
                &ctx,
                format!(
                    "outputs {:?}, but the program's are {:?}",
                    names(outputs),
                    f.outputs
                ),
            ));
        }
        let types = var_types(f);
        let mut flex = BTreeMap::new();
        for fd in inputs.iter().chain(states).chain(outputs) {
            let fctx = format!("{ctx}, feature {:?}", fd.name);
            let a = self.array_feature(&fctx, fd)?;
            let t = match types.get(fd.name.as_str()) {
                Some(ValueType::Tensor(t)) | Some(ValueType::State(t)) => t,
                None => return Err(self.err(&fctx, "no such variable")),
            };
            let dt = array_dtype_from_proto(a.data_type).ok_or_else(|| {
                self.err(
                    &fctx,
                    format!("unsupported array data type {}", a.data_type),
                )
            })?;
            if dt != t.dtype {
                return Err(self.err(
                    &fctx,
                    format!(
                        "described as {}, the program has {}",
                        dt.mil_name(),
                        t.dtype.mil_name()
                    ),
                ));
            }
            let shape: Vec<u64> = a
                .shape
                .iter()
                .map(|&d| {
                    u64::try_from(d).map_err(|_| self.err(&fctx, format!("negative dimension {d}")))
                })
                .collect::<Result<_>>()?;
            if let Some(s) = t.static_shape() {
                let scalar = s.is_empty() && shape == [1];
                if !shape.is_empty() && shape != s && !scalar {
                    return Err(self.err(
                        &fctx,
                        format!("described shape {shape:?}, the program has {s:?}"),
                    ));
                }
            }
            match &a.shape_flexibility {
                Some(ShapeFlexibility::EnumeratedShapes(e)) => {
                    let list = e
                        .shapes
                        .iter()
                        .map(|s| {
                            s.shape
                                .iter()
                                .map(|&d| {
                                    u64::try_from(d).map_err(|_| {
                                        self.err(&fctx, format!("negative dimension {d}"))
                                    })
                                })
                                .collect::<Result<Vec<u64>>>()
                        })
                        .collect::<Result<Vec<_>>>()?;
                    flex.insert(fd.name.clone(), InputShapes::Enumerated(list));
                }
                Some(ShapeFlexibility::ShapeRange(r)) => {
                    flex.insert(
                        fd.name.clone(),
                        InputShapes::Range {
                            default: shape,
                            bounds: r
                                .size_ranges
                                .iter()
                                .map(|s| (s.lower_bound, s.upper_bound))
                                .collect(),
                        },
                    );
                }
                None => {}
            }
        }
        Ok(flex)
    }
}

fn metadata_from_proto(m: Option<&pb::Metadata>) -> Metadata {
    m.map(|m| Metadata {
        author: m.author.clone(),
        version: m.version_string.clone(),
        short_description: m.short_description.clone(),
        license: m.license.clone(),
        user_defined: m.user_defined.clone(),
    })
    .unwrap_or_default()
}

/// The model in a decoded Model message. `path` names model.mlmodel in errors; `blobs` is the
/// package's weight.bin, if it has one. Types are taken as declared: call
/// [`check_program`](super::infer::check_program) afterwards.
pub fn decode_model(m: &pb::Model, path: &Path, blobs: Option<&BlobReader>) -> Result<Model> {
    let d = Dec { path, blobs };
    let prog = match &m.r#type {
        Some(pb::model::Type::MlProgram(p)) => p,
        None => return Err(d.err("model", "not an ML Program (no model type)")),
    };
    if prog.version != PROGRAM_VERSION {
        return Err(d.err(
            "program",
            format!("version {}, expected {PROGRAM_VERSION}", prog.version),
        ));
    }
    let desc = m.description.clone().unwrap_or_default();
    // Function order: the description's (insertion order); a single function has no list.
    let order: Vec<String> = if desc.functions.is_empty() {
        if prog.functions.len() != 1 {
            return Err(d.err(
                "description",
                format!(
                    "{} functions in the program but none described",
                    prog.functions.len()
                ),
            ));
        }
        prog.functions.keys().cloned().collect()
    } else {
        desc.functions.iter().map(|f| f.name.clone()).collect()
    };
    let described: BTreeSet<&String> = order.iter().collect();
    let defined: BTreeSet<&String> = prog.functions.keys().collect();
    if described != defined || described.len() != order.len() {
        return Err(d.err(
            "description",
            format!("functions {order:?}, but the program defines {defined:?}"),
        ));
    }
    let default_function = if desc.functions.is_empty() {
        order[0].clone()
    } else if described.contains(&desc.default_function_name) {
        desc.default_function_name.clone()
    } else {
        return Err(d.err(
            "description",
            format!(
                "default function {:?} is not among {order:?}",
                desc.default_function_name
            ),
        ));
    };
    let top_level = !desc.input.is_empty() || !desc.output.is_empty() || !desc.state.is_empty();
    if !desc.functions.is_empty() && top_level {
        return Err(d.err("description", "both top-level features and a function list"));
    }
    let mut functions = Vec::with_capacity(order.len());
    let mut input_shapes = BTreeMap::new();
    for name in &order {
        let f = d.function(name, &prog.functions[name])?;
        let flex = match desc.functions.iter().find(|x| &x.name == name) {
            Some(fd) => d.check_description(name, &f, &fd.input, &fd.output, &fd.state)?,
            None => d.check_description(name, &f, &desc.input, &desc.output, &desc.state)?,
        };
        if !flex.is_empty() {
            input_shapes.insert(name.clone(), flex);
        }
        functions.push((name.clone(), f));
    }
    Ok(Model {
        program: Program {
            functions,
            default_function,
        },
        input_shapes,
        metadata: metadata_from_proto(desc.metadata.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mil::builder::FunctionBuilder;
    use half::f16;
    use prost::Message;

    /// Records what would go to weight.bin and hands out consecutive offsets.
    #[derive(Default)]
    struct Rec(Vec<ConstValue>);

    impl BlobSink for Rec {
        fn store(&mut self, c: &ConstValue) -> Result<StoredBlob> {
            self.0.push(c.clone());
            Ok(StoredBlob {
                offset: 64 * self.0.len() as u64,
                size_in_bytes: c.bytes().map_or(0, |b| b.len() as u64),
                bytes: None,
            })
        }
    }

    fn immediate(c: ConstValue) -> TV {
        match value_to_proto(&c, &mut Rec::default(), "test")
            .unwrap()
            .value
        {
            Some(ValueKind::ImmediateValue(mil::value::ImmediateValue {
                value: Some(Imm::Tensor(mil::TensorValue { value: Some(v) })),
            })) => v,
            other => panic!("not an immediate: {other:?}"),
        }
    }

    #[test]
    fn immediates_use_coremltools_fields() {
        // fp16 goes in `bytes`: 2.0 → 00 40, 1e-5 → A8 00 (docs/coreml-format.md §4).
        let v = ConstValue::from_f16(&[2], &[f16::from_f32(2.0), f16::from_f32(1e-5)]).unwrap();
        assert_eq!(
            immediate(v),
            TV::Bytes(mil::tensor_value::RepeatedBytes {
                values: vec![0x00, 0x40, 0xA8, 0x00]
            })
        );
        assert_eq!(
            immediate(ConstValue::scalar_f32(1.5)),
            TV::Floats(mil::tensor_value::RepeatedFloats { values: vec![1.5] })
        );
        assert_eq!(
            immediate(ConstValue::vec_i32(&[-1, 7])),
            TV::Ints(mil::tensor_value::RepeatedInts {
                values: vec![-1, 7]
            })
        );
        assert_eq!(
            immediate(ConstValue::vec_bool(&[true, false])),
            TV::Bools(mil::tensor_value::RepeatedBools {
                values: vec![true, false]
            })
        );
        assert_eq!(
            immediate(ConstValue::string("valid")),
            TV::Strings(mil::tensor_value::RepeatedStrings {
                values: vec!["valid".to_string()]
            })
        );
        assert_eq!(
            immediate(ConstValue::from_indices(4, &[3], &[12, 15, 1]).unwrap()),
            TV::Bytes(mil::tensor_value::RepeatedBytes {
                values: vec![0xFC, 0x01]
            })
        );
    }

    #[test]
    fn ten_elements_go_to_the_blob_fewer_stay_inline() {
        let mut rec = Rec::default();
        let ten = ConstValue::from_f16(&[10], &[f16::ONE; 10]).unwrap();
        let v = value_to_proto(&ten, &mut rec, "t").unwrap();
        match v.value {
            Some(ValueKind::BlobFileValue(b)) => {
                assert_eq!((b.file_name.as_str(), b.offset), (WEIGHT_FILE_REF, 64))
            }
            other => panic!("{other:?}"),
        }
        let nine = ConstValue::from_f16(&[9], &[f16::ONE; 9]).unwrap();
        assert!(matches!(
            value_to_proto(&nine, &mut rec, "t").unwrap().value,
            Some(ValueKind::ImmediateValue(_))
        ));
        let bools = ConstValue::from_bool(&[12], &[true; 12]).unwrap();
        assert!(matches!(
            value_to_proto(&bools, &mut rec, "t").unwrap().value,
            Some(ValueKind::ImmediateValue(_))
        ));
        assert_eq!(rec.0.len(), 1);
    }

    #[test]
    fn decoding_rejects_fp16_stored_as_floats() {
        let v = mil::Value {
            doc_string: String::new(),
            r#type: Some(value_type_to_proto(&ValueType::Tensor(TensorType::new(
                DType::F16,
                &[1],
            )))),
            value: Some(ValueKind::ImmediateValue(mil::value::ImmediateValue {
                value: Some(Imm::Tensor(mil::TensorValue {
                    value: Some(TV::Floats(mil::tensor_value::RepeatedFloats {
                        values: vec![1.0],
                    })),
                })),
            })),
        };
        let d = Dec {
            path: Path::new("m.mlmodel"),
            blobs: None,
        };
        let e = d.value("op \"x\"", &v).unwrap_err().to_string();
        assert!(
            e.contains("fp16 immediate stored as Floats, expected Bytes"),
            "{e}"
        );
    }

    fn stateful() -> Function {
        let mut b = FunctionBuilder::new();
        let x = b.input("x", TensorType::new(DType::F16, &[1, 4])).unwrap();
        let s = b.state("kv", TensorType::new(DType::F16, &[1, 4])).unwrap();
        let r = b.read_state("r", &s).unwrap();
        let y = b.add("y", &x, &r).unwrap();
        b.write_state("w", &s, &y).unwrap();
        b.output(&y).unwrap();
        b.finish().unwrap()
    }

    fn model(names: &[&str]) -> Model {
        Model::new(Program {
            functions: names.iter().map(|n| (n.to_string(), stateful())).collect(),
            default_function: names[0].to_string(),
        })
    }

    #[test]
    fn single_main_function_is_described_top_level_with_states_apart() {
        let m = encode_model(&model(&["main"]), &mut Rec::default()).unwrap();
        assert_eq!(m.specification_version, 9);
        let d = m.description.as_ref().unwrap();
        assert!(d.functions.is_empty() && d.default_function_name.is_empty());
        assert_eq!(d.input.iter().map(|f| &f.name).collect::<Vec<_>>(), ["x"]);
        assert_eq!(d.state.iter().map(|f| &f.name).collect::<Vec<_>>(), ["kv"]);
        assert_eq!(d.output.iter().map(|f| &f.name).collect::<Vec<_>>(), ["y"]);
        match d.state[0].r#type.as_ref().and_then(|t| t.r#type.as_ref()) {
            Some(FeatureKind::StateType(pb::StateFeatureType {
                r#type: Some(StateKind::ArrayType(a)),
            })) => {
                assert_eq!(a.shape, [1, 4]);
                assert_eq!(a.data_type, ArrayDataType::Float16 as i32);
            }
            other => panic!("{other:?}"),
        }
        // mlProgram is field 502: tag bytes B2 1F.
        let bytes = m.encode_to_vec();
        assert!(bytes.windows(2).any(|w| w == [0xB2, 0x1F]));
    }

    #[test]
    fn several_functions_are_listed_with_the_default_and_opset() {
        let m = encode_model(&model(&["infer", "prefill"]), &mut Rec::default()).unwrap();
        let d = m.description.as_ref().unwrap();
        assert!(d.input.is_empty() && d.output.is_empty() && d.state.is_empty());
        assert_eq!(
            d.functions.iter().map(|f| &f.name).collect::<Vec<_>>(),
            ["infer", "prefill"]
        );
        assert_eq!(d.default_function_name, "infer");
        assert_eq!(d.functions[1].state[0].name, "kv");
        let Some(pb::model::Type::MlProgram(p)) = &m.r#type else {
            panic!("not an ML program")
        };
        assert_eq!(p.version, 1);
        for f in p.functions.values() {
            assert_eq!(f.opset, "CoreML8");
            assert_eq!(
                f.block_specializations.keys().collect::<Vec<_>>(),
                ["CoreML8"]
            );
            let block = &f.block_specializations["CoreML8"];
            for op in &block.operations {
                assert!(op.attributes.contains_key("name"), "{}", op.r#type);
            }
            let w = block
                .operations
                .iter()
                .find(|o| o.r#type == "write_state")
                .unwrap();
            assert!(w.outputs.is_empty());
            assert!(matches!(
                w.inputs["input"].arguments[0].binding,
                Some(PbBinding::Name(ref n)) if n == "kv"
            ));
        }
        // The multi-function spec starts 08 09 12 <len> A2 01 (docs/coreml-format.md §4).
        let bytes = m.encode_to_vec();
        assert_eq!(&bytes[..3], &[0x08, 0x09, 0x12]);
    }

    #[test]
    fn enumerated_shapes_are_written_with_the_default_first() {
        let mut b = FunctionBuilder::new();
        let ids = b
            .input_enumerated("input_ids", DType::I32, &[vec![1, 1], vec![1, 64]])
            .unwrap();
        let y = b.cast("y", &ids, DType::F16).unwrap();
        b.output(&y).unwrap();
        let (f, shapes) = b.finish_with_shapes().unwrap();
        let m = Model::new(Program {
            functions: vec![("main".to_string(), f)],
            default_function: "main".to_string(),
        })
        .with_enumerated_shapes("main", "input_ids", shapes["input_ids"].clone());
        let p = encode_model(&m, &mut Rec::default()).unwrap();
        let d = p.description.unwrap();
        let Some(FeatureKind::MultiArrayType(a)) =
            d.input[0].r#type.as_ref().and_then(|t| t.r#type.clone())
        else {
            panic!("not a multi-array input")
        };
        assert_eq!(a.shape, [1, 1]);
        assert_eq!(a.data_type, ArrayDataType::Int32 as i32);
        let Some(ShapeFlexibility::EnumeratedShapes(e)) = a.shape_flexibility else {
            panic!("no enumerated shapes")
        };
        let list: Vec<Vec<i64>> = e.shapes.into_iter().map(|s| s.shape).collect();
        assert_eq!(list, [vec![1, 1], vec![1, 64]]);

        // Without the shapes, an unknown dimension is an error naming the input.
        let mut bare = m.clone();
        bare.input_shapes.clear();
        let e = encode_model(&bare, &mut Rec::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("input_ids") && e.contains("no enumerated shapes"),
            "{e}"
        );
    }

    #[test]
    fn non_fp16_states_and_bool_outputs_are_refused() {
        let mut m = model(&["main"]);
        m.program.functions[0].1.inputs[1].1 =
            ValueType::State(TensorType::new(DType::F32, &[1, 4]));
        let e = encode_model(&m, &mut Rec::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"kv\"") && e.contains("states must be fp16"),
            "{e}"
        );

        let mut b = FunctionBuilder::new();
        let x = b.input("x", TensorType::new(DType::F16, &[2])).unwrap();
        let y = b.equal("y", &x, &x).unwrap();
        b.output(&y).unwrap();
        let m = Model::new(Program {
            functions: vec![("main".to_string(), b.finish().unwrap())],
            default_function: "main".to_string(),
        });
        let e = encode_model(&m, &mut Rec::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("output \"y\"") && e.contains("bool is not"),
            "{e}"
        );
    }

    #[test]
    fn decoding_checks_the_description_against_the_program() {
        let path = Path::new("m.mlmodel");
        let good = encode_model(&model(&["infer", "prefill"]), &mut Rec::default()).unwrap();
        let back = decode_model(&good, path, None).unwrap();
        assert_eq!(back, model(&["infer", "prefill"]));

        let mut bad = good.clone();
        bad.description.as_mut().unwrap().functions[1].input[0].name = "z".to_string();
        let e = decode_model(&bad, path, None).unwrap_err().to_string();
        assert!(
            e.contains("m.mlmodel") && e.contains("\"prefill\"") && e.contains("[\"z\"]"),
            "{e}"
        );

        let mut bad = good.clone();
        bad.description.as_mut().unwrap().default_function_name = "main".to_string();
        let e = decode_model(&bad, path, None).unwrap_err().to_string();
        assert!(e.contains("default function \"main\""), "{e}");

        let mut bad = good.clone();
        let state = bad.description.as_mut().unwrap().functions[0]
            .state
            .remove(0);
        bad.description.as_mut().unwrap().functions[0]
            .input
            .push(state);
        let e = decode_model(&bad, path, None).unwrap_err().to_string();
        assert!(e.contains("inputs") && e.contains("kv"), "{e}");
    }
}
