//! Named tensors as JSON, for `anec run` and the tools that compare its CPU execution with
//! Core ML's (tools/ane_report.py): `{"name": {"dtype": "fp16", "shape": [1, 1, 64],
//! "data": [0.5, ...]}}`, data flat in row-major order. Only fp16, fp32 and int32 travel.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::tensor::{Data, Tensor};
use crate::mil::DType;

/// One tensor as it is written in JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JsonTensor {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// A JSON tensor that cannot become a [`Tensor`], named with its input.
#[derive(Debug, thiserror::Error)]
pub enum JsonTensorError {
    #[error("tensor `{name}`: dtype {dtype:?} is not one of fp16, fp32, int32")]
    DType { name: String, dtype: String },
    #[error("tensor `{name}`: {source}")]
    Tensor {
        name: String,
        source: super::TensorError,
    },
}

/// Each JSON tensor as an interpreter tensor (fp16 values are rounded to fp16).
pub fn from_json(
    tensors: &BTreeMap<String, JsonTensor>,
) -> Result<BTreeMap<String, Tensor>, JsonTensorError> {
    tensors
        .iter()
        .map(|(name, t)| {
            let shape = t.shape.clone();
            let built = match t.dtype.as_str() {
                "fp16" => {
                    let v: Vec<f32> = t.data.iter().map(|&x| x as f32).collect();
                    Tensor::f16_from_f32(shape, &v)
                }
                "fp32" => Tensor::f32(shape, t.data.iter().map(|&x| x as f32).collect()),
                "int32" => Tensor::i32(shape, t.data.iter().map(|&x| x as i32).collect()),
                _ => {
                    return Err(JsonTensorError::DType {
                        name: name.clone(),
                        dtype: t.dtype.clone(),
                    })
                }
            };
            built
                .map(|x| (name.clone(), x))
                .map_err(|source| JsonTensorError::Tensor {
                    name: name.clone(),
                    source,
                })
        })
        .collect()
}

/// Each tensor as JSON, its dtype by MIL name.
pub fn to_json(tensors: &BTreeMap<String, Tensor>) -> BTreeMap<String, JsonTensor> {
    tensors
        .iter()
        .map(|(name, t)| {
            let data = match t.data() {
                Data::Float(v) => v.iter().map(|&x| f64::from(x)).collect(),
                Data::Int(v) => v.iter().map(|&x| f64::from(x)).collect(),
                Data::Bool(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
            };
            let dtype = match t.dtype() {
                DType::F16 => "fp16",
                DType::F32 => "fp32",
                d => d.mil_name(),
            };
            let json = JsonTensor {
                dtype: dtype.to_string(),
                shape: t.shape().to_vec(),
                data,
            };
            (name.clone(), json)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_and_bad_dtypes_are_named() {
        let mut m = BTreeMap::new();
        m.insert(
            "h".to_string(),
            Tensor::f16_from_f32(vec![1, 2], &[0.5, -2.0]).unwrap(),
        );
        m.insert("p".to_string(), Tensor::i32(vec![1], vec![7]).unwrap());
        let json = to_json(&m);
        assert_eq!(json["p"].dtype, "int32");
        assert_eq!(json["h"].data, vec![0.5, -2.0]);
        assert_eq!(from_json(&json).unwrap(), m);
        let mut bad = json.clone();
        bad.get_mut("h").unwrap().dtype = "bf16".into();
        let err = from_json(&bad).unwrap_err().to_string();
        assert!(err.contains("`h`") && err.contains("bf16"), "{err}");
        let mut short = json;
        short.get_mut("h").unwrap().shape = vec![3];
        assert!(from_json(&short).is_err());
    }
}
