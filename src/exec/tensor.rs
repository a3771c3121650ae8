//! The interpreter's own small tensor: a MIL dtype tag, a row-major shape and f32/i32/bool data.
//!
//! Floats are held as f32 whatever their MIL dtype; an fp16-typed tensor holds values that are
//! exactly representable in fp16 when the interpreter runs in `Precision::F16` (every op's output
//! is rounded), and plain f32 values in `Precision::F32`. Integer dtypes (int8/16/32, uint8/16, the
//! sub-byte index types) are held as i32, bool as bool. Data is reference-counted, so cloning a tensor is cheap.

use std::fmt;
use std::sync::Arc;

use half::f16;

use crate::mil::DType;

/// A tensor whose parts do not fit together.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("tensor of shape {shape:?} needs {} elements, got {elements}", .shape.iter().fold(1usize, |n, &d| n.saturating_mul(d)))]
    Shape { shape: Vec<usize>, elements: usize },
    #[error("a {dtype} tensor cannot hold {storage} data")]
    DType {
        dtype: &'static str,
        storage: String,
    },
    #[error("a tensor of shape {shape:?} is too large to allocate")]
    TooLarge { shape: Vec<usize> },
}

/// The element storage of a [`Tensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    Float(Arc<[f32]>),
    Int(Arc<[i32]>),
    Bool(Arc<[bool]>),
}

/// Which storage a MIL dtype uses, or `None` for strings (held apart, see `Value`). Sub-byte,
/// int64 and int4 constants are held as i32 like the other integer types.
pub(crate) fn storage_of(dtype: DType) -> Option<Storage> {
    match dtype {
        DType::F16 | DType::F32 => Some(Storage::Float),
        DType::I8
        | DType::I16
        | DType::I32
        | DType::I64
        | DType::U8
        | DType::U16
        | DType::U1
        | DType::U2
        | DType::U3
        | DType::U4
        | DType::U6
        | DType::I4 => Some(Storage::Int),
        DType::Bool => Some(Storage::Bool),
        DType::Str => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Storage {
    Float,
    Int,
    Bool,
}

/// A dense tensor value (function inputs and outputs, states, intermediate values).
#[derive(Clone, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Data,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.len();
        let head: Vec<String> = (0..n.min(8))
            .map(|i| match &self.data {
                Data::Float(v) => format!("{}", v[i]),
                Data::Int(v) => format!("{}", v[i]),
                Data::Bool(v) => format!("{}", v[i]),
            })
            .collect();
        write!(
            f,
            "Tensor<{}, {:?}>[{}{}]",
            self.dtype.mil_name(),
            self.shape,
            head.join(", "),
            if n > 8 { ", …" } else { "" }
        )
    }
}

/// `n` copies of `v`, allocated fallibly.
fn filled<T: Clone>(n: usize, v: T, shape: &[usize]) -> Result<Arc<[T]>, TensorError> {
    let mut data = Vec::new();
    data.try_reserve_exact(n)
        .map_err(|_| TensorError::TooLarge {
            shape: shape.to_vec(),
        })?;
    data.resize(n, v);
    Ok(data.into())
}

/// The element count of a shape that exists (a tensor's, or one derived from tensors).
fn count(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The element count of `shape`; `None` beyond usize (a shape read from a file).
fn checked_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    /// A tensor from its parts; checks that the element count matches the shape and that the
    /// storage fits the dtype.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Data) -> Result<Tensor, TensorError> {
        let n = match &data {
            Data::Float(v) => v.len(),
            Data::Int(v) => v.len(),
            Data::Bool(v) => v.len(),
        };
        if checked_count(&shape) != Some(n) {
            return Err(TensorError::Shape { shape, elements: n });
        }
        let storage = match &data {
            Data::Float(_) => Storage::Float,
            Data::Int(_) => Storage::Int,
            Data::Bool(_) => Storage::Bool,
        };
        if storage_of(dtype) != Some(storage) {
            return Err(TensorError::DType {
                dtype: dtype.mil_name(),
                storage: format!("{storage:?}"),
            });
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// An fp32 tensor.
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Result<Tensor, TensorError> {
        Tensor::new(DType::F32, shape, Data::Float(values.into()))
    }

    /// An fp16 tensor from half values.
    pub fn f16(shape: Vec<usize>, values: &[f16]) -> Result<Tensor, TensorError> {
        let v: Vec<f32> = values.iter().map(|h| h.to_f32()).collect();
        Tensor::new(DType::F16, shape, Data::Float(v.into()))
    }

    /// An fp16 tensor from f32 values, rounded to the nearest fp16.
    pub fn f16_from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Tensor, TensorError> {
        let v: Vec<f32> = values.iter().map(|&x| round_f16(x)).collect();
        Tensor::new(DType::F16, shape, Data::Float(v.into()))
    }

    /// An int32 tensor.
    pub fn i32(shape: Vec<usize>, values: Vec<i32>) -> Result<Tensor, TensorError> {
        Tensor::new(DType::I32, shape, Data::Int(values.into()))
    }

    /// A bool tensor.
    pub fn bool(shape: Vec<usize>, values: Vec<bool>) -> Result<Tensor, TensorError> {
        Tensor::new(DType::Bool, shape, Data::Bool(values.into()))
    }

    /// A tensor of zeros (false for bool).
    /// Zeros of `shape`. A shape too large for memory (a corrupt package's state, say) is an
    /// error, not an abort.
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        let n = checked_count(&shape).ok_or_else(|| TensorError::TooLarge {
            shape: shape.clone(),
        })?;
        let data = match storage_of(dtype) {
            Some(Storage::Float) => Data::Float(filled(n, 0.0, &shape)?),
            Some(Storage::Int) => Data::Int(filled(n, 0, &shape)?),
            Some(Storage::Bool) => Data::Bool(filled(n, false, &shape)?),
            None => {
                return Err(TensorError::DType {
                    dtype: dtype.mil_name(),
                    storage: "none".into(),
                })
            }
        };
        Tensor::new(dtype, shape, data)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        count(&self.shape)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn data(&self) -> &Data {
        &self.data
    }

    /// The float values (fp16/fp32 tensors), row-major.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::Float(v) => Some(v),
            _ => None,
        }
    }

    /// The integer values (int/uint tensors), row-major.
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            Data::Int(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            Data::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// Every element as f32 (ints converted, bools as 0/1).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            Data::Float(v) => v.to_vec(),
            Data::Int(v) => v.iter().map(|&x| x as f32).collect(),
            Data::Bool(v) => v.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect(),
        }
    }

    /// The same data with another shape of the same element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        Tensor::new(self.dtype, shape, self.data.clone())
    }

    /// The same data under another dtype of the same storage (fp16 ↔ fp32 re-tags without
    /// rounding; use `rounded_f16` to round).
    pub(crate) fn retagged(&self, dtype: DType) -> Result<Tensor, TensorError> {
        Tensor::new(dtype, self.shape.clone(), self.data.clone())
    }

    /// Float data rounded to fp16 values (no-op for other storage).
    pub(crate) fn rounded_f16(self) -> Tensor {
        match &self.data {
            Data::Float(v) => {
                let r: Vec<f32> = v.iter().map(|&x| round_f16(x)).collect();
                Tensor {
                    dtype: self.dtype,
                    shape: self.shape,
                    data: Data::Float(r.into()),
                }
            }
            _ => self,
        }
    }

    pub(crate) fn storage(&self) -> Storage {
        match &self.data {
            Data::Float(_) => Storage::Float,
            Data::Int(_) => Storage::Int,
            Data::Bool(_) => Storage::Bool,
        }
    }

    /// A tensor of `shape` holding this one-element tensor's value everywhere (`fill`),
    /// allocated fallibly.
    pub(crate) fn splat(&self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        let n = checked_count(&shape).ok_or_else(|| TensorError::TooLarge {
            shape: shape.clone(),
        })?;
        if self.len() != 1 {
            return Err(TensorError::Shape {
                shape: vec![1],
                elements: self.len(),
            });
        }
        let data = match &self.data {
            Data::Float(v) => Data::Float(filled(n, v[0], &shape)?),
            Data::Int(v) => Data::Int(filled(n, v[0], &shape)?),
            Data::Bool(v) => Data::Bool(filled(n, v[0], &shape)?),
        };
        Tensor::new(self.dtype, shape, data)
    }

    /// Gathers elements by flat source indices into a new tensor of `shape` (same dtype),
    /// allocated fallibly (the index list may be sized by a file).
    pub(crate) fn take(&self, shape: Vec<usize>, idx: &[usize]) -> Result<Tensor, TensorError> {
        fn pick<T: Copy>(v: &[T], idx: &[usize], shape: &[usize]) -> Result<Arc<[T]>, TensorError> {
            let mut out = Vec::new();
            out.try_reserve_exact(idx.len())
                .map_err(|_| TensorError::TooLarge {
                    shape: shape.to_vec(),
                })?;
            out.extend(idx.iter().map(|&i| v[i]));
            Ok(out.into())
        }
        let data = match &self.data {
            Data::Float(v) => Data::Float(pick(v, idx, &shape)?),
            Data::Int(v) => Data::Int(pick(v, idx, &shape)?),
            Data::Bool(v) => Data::Bool(pick(v, idx, &shape)?),
        };
        Ok(Tensor {
            dtype: self.dtype,
            shape,
            data,
        })
    }
}

/// Rounds an f32 to the nearest fp16 value (ties to even; overflow to ±inf, like the ANE).
pub fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Row-major strides of a shape.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// numpy broadcasting of two shapes; `None` when they do not broadcast.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = if da == db {
            da
        } else if da == 1 {
            db
        } else if db == 1 {
            da
        } else {
            return None;
        };
    }
    Some(out)
}

/// For each element of the broadcast `out` shape, the flat index into a tensor of shape `src`.
pub(crate) fn broadcast_index(src: &[usize], out: &[usize]) -> Vec<usize> {
    let n = count(out);
    if src == out {
        return (0..n).collect();
    }
    let rank = out.len();
    let off = rank - src.len();
    let sstr = strides(src);
    // Effective stride per output axis (0 where broadcast).
    let eff: Vec<usize> = (0..rank)
        .map(|i| {
            if i < off || src[i - off] == 1 {
                0
            } else {
                sstr[i - off]
            }
        })
        .collect();
    strided_index(&eff, out)
}

/// Walking `shape` in row-major order, the flat source index `Σ coord[ax] · stride[ax]` of each
/// element (broadcasts, transposes and reductions are this walk with different strides).
pub(crate) fn strided_index(stride: &[usize], shape: &[usize]) -> Vec<usize> {
    let n = count(shape);
    let mut idx = Vec::with_capacity(n);
    let mut coord = vec![0usize; shape.len()];
    let mut cur = 0usize;
    for _ in 0..n {
        idx.push(cur);
        // increment the coordinate, last axis fastest
        for ax in (0..shape.len()).rev() {
            coord[ax] += 1;
            cur += stride[ax];
            if coord[ax] < shape[ax] {
                break;
            }
            cur -= stride[ax] * coord[ax];
            coord[ax] = 0;
        }
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_too_large_for_memory_is_an_error() {
        let huge = vec![1 << 20, 1 << 20, 1 << 20, 1 << 20];
        let err = Tensor::zeros(DType::F16, huge.clone()).unwrap_err();
        assert!(
            matches!(err, TensorError::TooLarge { ref shape } if *shape == huge),
            "{err}"
        );
        let big = vec![1 << 22, 1 << 22, 2]; // 2^45 elements: no overflow, but no memory for it
        assert!(matches!(
            Tensor::zeros(DType::F32, big),
            Err(TensorError::TooLarge { .. })
        ));
        assert_eq!(
            Tensor::zeros(DType::I32, vec![2, 3]).unwrap().shape(),
            &[2, 3]
        );
    }

    #[test]
    fn broadcast_index_matches_naive() {
        let src = [3, 1];
        let out = [2, 3, 4];
        let idx = broadcast_index(&src, &out);
        let mut k = 0;
        for _a in 0..2 {
            for b in 0..3 {
                for _c in 0..4 {
                    assert_eq!(idx[k], b);
                    k += 1;
                }
            }
        }
        assert_eq!(broadcast_shapes(&[3, 1], &[2, 1, 4]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shapes(&[3], &[4]), None);
    }

    #[test]
    fn constructors_check_counts_and_storage() {
        assert!(Tensor::f32(vec![2, 2], vec![1.0; 3]).is_err());
        assert!(Tensor::new(DType::I32, vec![1], Data::Float(vec![1.0].into())).is_err());
        let t = Tensor::f16_from_f32(vec![1], &[1.0 + 1e-4]).unwrap();
        assert_eq!(t.as_f32().unwrap()[0], 1.0);
    }
}
