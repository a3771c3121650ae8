//! Constructing and decoding [`ConstValue`]s: typed vectors in, blob-encoded bytes kept, typed vectors out.
//!
//! The bytes are always the blob encoding of ir.rs's [`ConstData`]: little-endian elements in
//! row-major order, sub-byte types packed LSB-first ([`bits`](super::bits)), bool one byte (0/1)
//! per element.

use std::sync::Arc;

use half::f16;

use super::bits;
use super::error::{MilError, Result};
use super::ir::{ConstData, ConstValue, DType, TensorType};

/// The element count, saturating: an impossible count then fails the length checks instead of
/// overflowing.
fn count(shape: &[u64]) -> u64 {
    shape.iter().fold(1u64, |n, &d| n.saturating_mul(d))
}

fn check_count(shape: &[u64], got: usize) -> Result<()> {
    let expected = count(shape);
    if expected != got as u64 {
        return Err(MilError::ElementCount {
            shape: shape.to_vec(),
            expected,
            got: got as u64,
        });
    }
    Ok(())
}

/// `got` bytes where `elements` values of `dtype` take `expected`: equal, or a
/// [`MilError::ByteLength`] naming `what` (constant, blob, ...).
pub(crate) fn check_byte_len(
    what: &'static str,
    dtype: DType,
    elements: u64,
    expected: u64,
    got: u64,
) -> Result<()> {
    if got != expected {
        return Err(MilError::ByteLength {
            what,
            dtype: dtype.mil_name(),
            elements,
            expected,
            got,
        });
    }
    Ok(())
}

/// Bytes that `n` elements of `dtype` take in blob encoding (`None` for strings).
pub fn byte_len(dtype: DType, n: u64) -> Option<u64> {
    match dtype {
        DType::Str => None,
        d => Some(n.saturating_mul(d.bits() as u64).div_ceil(8)),
    }
}

impl ConstValue {
    fn from_raw(dtype: DType, shape: &[u64], bytes: Vec<u8>) -> ConstValue {
        ConstValue {
            ty: TensorType::new(dtype, shape),
            data: ConstData::Bytes(Arc::from(bytes)),
        }
    }

    /// An fp16 tensor; `values.len()` must equal the shape's element count.
    pub fn from_f16(shape: &[u64], values: &[f16]) -> Result<ConstValue> {
        check_count(shape, values.len())?;
        let mut bytes = Vec::with_capacity(values.len() * 2);
        values
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        Ok(Self::from_raw(DType::F16, shape, bytes))
    }

    /// An fp32 tensor.
    pub fn from_f32(shape: &[u64], values: &[f32]) -> Result<ConstValue> {
        check_count(shape, values.len())?;
        let mut bytes = Vec::with_capacity(values.len() * 4);
        values
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        Ok(Self::from_raw(DType::F32, shape, bytes))
    }

    /// An int32 tensor.
    pub fn from_i32(shape: &[u64], values: &[i32]) -> Result<ConstValue> {
        check_count(shape, values.len())?;
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok(Self::from_raw(DType::I32, shape, bytes))
    }

    /// A bool tensor (one byte per element).
    pub fn from_bool(shape: &[u64], values: &[bool]) -> Result<ConstValue> {
        check_count(shape, values.len())?;
        let bytes = values.iter().map(|&b| b as u8).collect();
        Ok(Self::from_raw(DType::Bool, shape, bytes))
    }

    /// A rank-0 string (`pad_type`, `cast.dtype`, ...).
    pub fn string(s: &str) -> ConstValue {
        ConstValue {
            ty: TensorType::scalar(DType::Str),
            data: ConstData::Strings(vec![s.to_string()]),
        }
    }

    /// A rank-1 string tensor.
    pub fn strings<S: AsRef<str>>(values: &[S]) -> ConstValue {
        ConstValue {
            ty: TensorType::new(DType::Str, &[values.len() as u64]),
            data: ConstData::Strings(values.iter().map(|s| s.as_ref().to_string()).collect()),
        }
    }

    /// A rank-0 int32.
    pub fn scalar_i32(v: i32) -> ConstValue {
        Self::from_raw(DType::I32, &[], v.to_le_bytes().to_vec())
    }

    /// A rank-0 fp16.
    pub fn scalar_f16(v: f16) -> ConstValue {
        Self::from_raw(DType::F16, &[], v.to_le_bytes().to_vec())
    }

    /// A rank-0 fp32.
    pub fn scalar_f32(v: f32) -> ConstValue {
        Self::from_raw(DType::F32, &[], v.to_le_bytes().to_vec())
    }

    /// A rank-0 bool.
    pub fn scalar_bool(v: bool) -> ConstValue {
        Self::from_raw(DType::Bool, &[], vec![v as u8])
    }

    /// A rank-1 int32 (axes, perm, shape, strides, ...).
    pub fn vec_i32(values: &[i32]) -> ConstValue {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::from_raw(DType::I32, &[values.len() as u64], bytes)
    }

    /// A rank-1 bool (slice masks).
    pub fn vec_bool(values: &[bool]) -> ConstValue {
        Self::from_raw(
            DType::Bool,
            &[values.len() as u64],
            values.iter().map(|&b| b as u8).collect(),
        )
    }

    /// LUT indices of `bits` bits (1, 2, 3, 4, 6 or 8), one per element, packed LSB-first.
    /// The dtype is uint1/2/3/4/6/8; every value must be `< 2^bits`.
    pub fn from_indices(bits: u32, shape: &[u64], indices: &[u8]) -> Result<ConstValue> {
        let dtype = DType::lut_index(bits).ok_or(MilError::BadBitWidth { bits })?;
        check_count(shape, indices.len())?;
        if bits < 8 {
            if let Some((index, &value)) = indices.iter().enumerate().find(|(_, &v)| v >> bits != 0)
            {
                return Err(MilError::IndexOutOfRange { bits, index, value });
            }
        }
        Ok(Self::from_raw(dtype, shape, bits::pack(bits, indices)))
    }

    /// A tensor from bytes already in blob encoding; the length must match dtype and shape.
    pub fn from_bytes(
        dtype: DType,
        shape: &[u64],
        bytes: impl Into<Arc<[u8]>>,
    ) -> Result<ConstValue> {
        let bytes: Arc<[u8]> = bytes.into();
        let n = count(shape);
        let expected = byte_len(dtype, n).ok_or(MilError::ConstDType {
            wanted: "bytes",
            found: "string",
        })?;
        check_byte_len("constant", dtype, n, expected, bytes.len() as u64)?;
        Ok(ConstValue {
            ty: TensorType::new(dtype, shape),
            data: ConstData::Bytes(bytes),
        })
    }

    /// Element count of the (always static) constant shape; unknown dims count as 0.
    pub fn num_elements(&self) -> u64 {
        self.ty.static_shape().map_or(0, |s| count(&s))
    }

    /// The shape as plain numbers (unknown dims as 0; constants never have them).
    pub fn shape(&self) -> Vec<u64> {
        self.ty
            .static_shape()
            .unwrap_or_else(|| vec![0; self.ty.rank()])
    }

    /// The blob-encoded bytes: in memory, or a loaded weight.bin blob. `None` for strings and
    /// for stored blobs whose bytes are not loaded.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.data {
            ConstData::Bytes(b) => Some(b),
            ConstData::Strings(_) => None,
            ConstData::Stored(s) => s.bytes.as_ref().map(|b| (**b).as_ref()),
        }
    }

    /// The bytes, checked against dtype and element count.
    fn checked_bytes(&self, wanted: &'static str) -> Result<&[u8]> {
        let b = match &self.data {
            ConstData::Bytes(b) => &b[..],
            ConstData::Strings(_) => {
                return Err(MilError::ConstDType {
                    wanted,
                    found: "string",
                })
            }
            ConstData::Stored(s) => match &s.bytes {
                Some(b) => (**b).as_ref(),
                None => return Err(MilError::NotLoaded { offset: s.offset }),
            },
        };
        let n = self.num_elements();
        let expected = byte_len(self.ty.dtype, n).unwrap_or(0);
        check_byte_len("constant", self.ty.dtype, n, expected, b.len() as u64)?;
        Ok(b)
    }

    fn wrong(&self, wanted: &'static str) -> MilError {
        MilError::ConstDType {
            wanted,
            found: self.ty.dtype.mil_name(),
        }
    }

    /// Values as f32: fp16, fp32, and integer types (exactly, up to 2^24), bool as 0/1.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let b = self.checked_bytes("f32")?;
        Ok(match self.ty.dtype {
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::Bool => b.iter().map(|&v| (v != 0) as u8 as f32).collect(),
            _ => self
                .to_i64_vec_inner(b, "f32")?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        })
    }

    fn to_i64_vec_inner(&self, b: &[u8], wanted: &'static str) -> Result<Vec<i64>> {
        Ok(match self.ty.dtype {
            DType::I8 => b.iter().map(|&v| v as i8 as i64).collect(),
            DType::U8 => b.iter().map(|&v| v as i64).collect(),
            DType::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DType::U16 => b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            DType::U1 | DType::U2 | DType::U3 | DType::U4 | DType::U6 => {
                bits::unpack(self.ty.dtype.bits(), b, self.num_elements() as usize)?
                    .into_iter()
                    .map(|v| v as i64)
                    .collect()
            }
            DType::I4 => bits::unpack(4, b, self.num_elements() as usize)?
                .into_iter()
                .map(|v| ((v << 4) as i8 >> 4) as i64)
                .collect(),
            _ => return Err(self.wrong(wanted)),
        })
    }

    /// Values as i32: every integer type (int64 must fit), bool as 0/1. Floats are an error.
    pub fn to_i32_vec(&self) -> Result<Vec<i32>> {
        let b = self.checked_bytes("int32")?;
        if self.ty.dtype == DType::Bool {
            return Ok(b.iter().map(|&v| (v != 0) as i32).collect());
        }
        self.to_i64_vec_inner(b, "int32")?
            .into_iter()
            .map(|v| i32::try_from(v).map_err(|_| MilError::IntRange { value: v }))
            .collect()
    }

    /// Values of a bool constant.
    pub fn to_bool_vec(&self) -> Result<Vec<bool>> {
        let b = self.checked_bytes("bool")?;
        if self.ty.dtype != DType::Bool {
            return Err(self.wrong("bool"));
        }
        Ok(b.iter().map(|&v| v != 0).collect())
    }

    /// LUT indices (uint1/2/3/4/6/8) unpacked to one byte per element.
    pub fn to_u8_indices(&self) -> Result<Vec<u8>> {
        let b = self.checked_bytes("indices")?;
        match self.ty.dtype {
            DType::U1 | DType::U2 | DType::U3 | DType::U4 | DType::U6 | DType::U8 => {
                bits::unpack(self.ty.dtype.bits(), b, self.num_elements() as usize)
            }
            _ => Err(self.wrong("uint1/2/3/4/6/8 indices")),
        }
    }

    /// The strings of a string constant.
    pub fn as_strings(&self) -> Option<&[String]> {
        match &self.data {
            ConstData::Strings(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a rank-0 (or single-element) string constant.
    pub fn as_str(&self) -> Option<&str> {
        match self.as_strings() {
            Some([s]) => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mil::ir::StoredBlob;

    #[test]
    fn f16_bytes_are_little_endian_halves() {
        let c = ConstValue::from_f16(&[2], &[f16::from_f32(2.0), f16::from_f32(1e-5)]).unwrap();
        // docs/coreml-format.md §4: 2.0 -> 00 40, 1e-5 -> A8 00
        assert_eq!(c.bytes().unwrap(), &[0x00, 0x40, 0xA8, 0x00]);
        assert_eq!(c.ty, TensorType::new(DType::F16, &[2]));
        assert_eq!(c.to_f32_vec().unwrap()[0], 2.0);
    }

    #[test]
    fn an_element_count_beyond_u64_is_an_error_not_an_overflow() {
        let huge = [1u64 << 40, 1 << 40];
        assert_eq!(TensorType::new(DType::F16, &huge).num_elements(), None);
        assert!(matches!(
            ConstValue::from_bytes(DType::F16, &huge, vec![0u8; 2]),
            Err(MilError::ByteLength { got: 2, .. })
        ));
        assert!(matches!(
            ConstValue::from_f16(&huge, &[f16::ZERO]),
            Err(MilError::ElementCount {
                expected: u64::MAX,
                ..
            })
        ));
    }

    #[test]
    fn constructors_check_element_count() {
        assert!(matches!(
            ConstValue::from_f32(&[2, 3], &[0.0; 5]),
            Err(MilError::ElementCount {
                expected: 6,
                got: 5,
                ..
            })
        ));
        assert!(ConstValue::from_i32(&[3], &[1, 2]).is_err());
        assert!(ConstValue::from_bool(&[], &[]).is_err());
        assert!(ConstValue::from_f16(&[0], &[]).is_ok());
    }

    #[test]
    fn i32_bool_round_trip() {
        let c = ConstValue::from_i32(&[3], &[-1, 0, 70000]).unwrap();
        assert_eq!(c.bytes().unwrap()[..4], [0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(c.to_i32_vec().unwrap(), vec![-1, 0, 70000]);
        assert_eq!(c.to_f32_vec().unwrap(), vec![-1.0, 0.0, 70000.0]);
        assert!(c.to_bool_vec().is_err());
        let b = ConstValue::from_bool(&[2], &[true, false]).unwrap();
        assert_eq!(b.bytes().unwrap(), &[1, 0]);
        assert_eq!(b.to_bool_vec().unwrap(), vec![true, false]);
        assert_eq!(ConstValue::vec_i32(&[1, 2]).ty.shape.len(), 1);
        assert_eq!(ConstValue::scalar_i32(5).to_i32_vec().unwrap(), vec![5]);
    }

    #[test]
    fn floats_are_not_ints() {
        let c = ConstValue::from_f32(&[1], &[1.5]).unwrap();
        assert!(matches!(
            c.to_i32_vec(),
            Err(MilError::ConstDType { found: "fp32", .. })
        ));
    }

    #[test]
    fn indices_pack_and_unpack() {
        let c = ConstValue::from_indices(4, &[2, 2], &[12, 15, 1, 2]).unwrap();
        assert_eq!(c.ty.dtype, DType::U4);
        assert_eq!(c.bytes().unwrap(), &[0xFC, 0x21]);
        assert_eq!(c.to_u8_indices().unwrap(), vec![12, 15, 1, 2]);
        let c6 = ConstValue::from_indices(6, &[5], &[1, 2, 3, 63, 5]).unwrap();
        assert_eq!(c6.bytes().unwrap(), &[0x81, 0x30, 0xFC, 0x05]);
        assert_eq!(c6.ty.dtype, DType::U6);
        let c8 = ConstValue::from_indices(8, &[2], &[200, 1]).unwrap();
        assert_eq!(c8.ty.dtype, DType::U8);
        assert_eq!(c8.to_u8_indices().unwrap(), vec![200, 1]);
    }

    #[test]
    fn indices_reject_out_of_range_and_bad_width() {
        assert!(matches!(
            ConstValue::from_indices(4, &[2], &[3, 16]),
            Err(MilError::IndexOutOfRange {
                bits: 4,
                index: 1,
                value: 16
            })
        ));
        assert!(matches!(
            ConstValue::from_indices(5, &[1], &[0]),
            Err(MilError::BadBitWidth { bits: 5 })
        ));
    }

    #[test]
    fn from_bytes_checks_length() {
        assert!(ConstValue::from_bytes(DType::F16, &[3], vec![0u8; 6]).is_ok());
        assert!(matches!(
            ConstValue::from_bytes(DType::F16, &[3], vec![0u8; 5]),
            Err(MilError::ByteLength {
                expected: 6,
                got: 5,
                ..
            })
        ));
        assert!(ConstValue::from_bytes(DType::U6, &[5], vec![0u8; 4]).is_ok());
        assert!(ConstValue::from_bytes(DType::U6, &[5], vec![0u8; 5]).is_err());
        assert!(ConstValue::from_bytes(DType::Str, &[1], vec![0u8; 1]).is_err());
    }

    #[test]
    fn stored_bytes_are_readable_when_loaded() {
        let data: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(vec![0x00u8, 0x3C]);
        let c = ConstValue {
            ty: TensorType::new(DType::F16, &[1]),
            data: ConstData::Stored(StoredBlob {
                offset: 64,
                size_in_bytes: 2,
                bytes: Some(data),
            }),
        };
        assert_eq!(c.bytes(), Some(&[0x00u8, 0x3C][..]));
        assert_eq!(c.to_f32_vec().unwrap(), vec![1.0]);
        let unloaded = ConstValue {
            ty: TensorType::new(DType::F16, &[1]),
            data: ConstData::Stored(StoredBlob {
                offset: 64,
                size_in_bytes: 2,
                bytes: None,
            }),
        };
        assert_eq!(unloaded.bytes(), None);
        assert!(matches!(
            unloaded.to_f32_vec(),
            Err(MilError::NotLoaded { offset: 64 })
        ));
    }

    #[test]
    fn strings() {
        assert_eq!(ConstValue::string("valid").as_str(), Some("valid"));
        assert_eq!(ConstValue::string("valid").ty.rank(), 0);
        let s = ConstValue::strings(&["a", "b"]);
        assert_eq!(s.ty, TensorType::new(DType::Str, &[2]));
        assert!(s.to_f32_vec().is_err());
        assert_eq!(s.bytes(), None);
    }

    #[test]
    fn int4_signed_decode() {
        let c = ConstValue::from_bytes(DType::I4, &[2], vec![0x7F]).unwrap();
        assert_eq!(c.to_i32_vec().unwrap(), vec![-1, 7]);
    }
}
