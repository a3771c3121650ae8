//! Sub-byte packing of LUT indices: an LSB-first bit stream in row-major order (docs/coreml-format.md §2).
//!
//! Element `i` occupies stream bits `[i·b, (i+1)·b)`; stream bit `k` is bit `k mod 8` of byte `k / 8`.
//! Unused high bits of the last byte are zero. The same layout is used in weight.bin and in
//! immediate `bytes` values.

use super::error::{MilError, Result};

/// Bytes needed for `n` elements of `bits` bits: `ceil(n·bits/8)`.
pub fn packed_len(bits: u32, n: usize) -> usize {
    (n * bits as usize).div_ceil(8)
}

/// Padding bits in the last byte (weight.bin's `padding_size_in_bits`): `(8 − n·bits mod 8) mod 8`.
pub fn padding_bits(bits: u32, n: usize) -> u32 {
    ((8 - (n * bits as usize) % 8) % 8) as u32
}

/// Packs `values` (each `< 2^bits`) LSB-first. `bits` is 1..=8; with 8 the bytes are copied.
///
/// Bits of a value above `bits` are dropped: callers validate the range first
/// ([`ConstValue::from_indices`](super::ConstValue::from_indices) does).
///
/// # Panics
/// If `bits` is not in 1..=8 (a programming error, not a data error).
pub fn pack(bits: u32, values: &[u8]) -> Vec<u8> {
    assert!(
        (1..=8).contains(&bits),
        "pack: bit width {bits} not in 1..=8"
    );
    if bits == 8 {
        return values.to_vec();
    }
    let mask = ((1u16 << bits) - 1) as u8;
    let mut out = vec![0u8; packed_len(bits, values.len())];
    let mut bit = 0usize;
    for &v in values {
        let v = (v & mask) as u16;
        let (byte, shift) = (bit / 8, bit % 8);
        let wide = v << shift;
        out[byte] |= wide as u8;
        if shift + bits as usize > 8 {
            out[byte + 1] |= (wide >> 8) as u8;
        }
        bit += bits as usize;
    }
    out
}

/// Unpacks `n` values of `bits` bits from `bytes`, which must be exactly `ceil(n·bits/8)` long.
pub fn unpack(bits: u32, bytes: &[u8], n: usize) -> Result<Vec<u8>> {
    if !(1..=8).contains(&bits) {
        return Err(MilError::BadBitWidth { bits });
    }
    let expected = packed_len(bits, n);
    if bytes.len() != expected {
        return Err(MilError::ByteLength {
            what: "packed indices",
            dtype: "sub-byte",
            elements: n as u64,
            expected: expected as u64,
            got: bytes.len() as u64,
        });
    }
    if bits == 8 {
        return Ok(bytes.to_vec());
    }
    let mask = (1u16 << bits) - 1;
    let mut out = Vec::with_capacity(n);
    let mut bit = 0usize;
    for _ in 0..n {
        let (byte, shift) = (bit / 8, bit % 8);
        let mut wide = bytes[byte] as u16;
        if shift + bits as usize > 8 {
            wide |= (bytes[byte + 1] as u16) << 8;
        }
        out.push(((wide >> shift) & mask) as u8);
        bit += bits as usize;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint4_low_nibble_first() {
        // docs/coreml-format.md §2 (verified against coremltools): [12, 15, ...] -> 0xFC.
        assert_eq!(pack(4, &[12, 15, 3, 0]), vec![0xFC, 0x03]);
        assert_eq!(pack(4, &[1, 2, 3]), vec![0x21, 0x03]);
    }

    #[test]
    fn uint6_matches_coremltools_bytes() {
        let packed = pack(6, &[1, 2, 3, 63, 5]);
        assert_eq!(packed, vec![0x81, 0x30, 0xFC, 0x05]);
        assert_eq!(padding_bits(6, 5), 2);
        assert_eq!(unpack(6, &packed, 5).unwrap(), vec![1, 2, 3, 63, 5]);
    }

    #[test]
    fn uint1_2_3_byte_layouts() {
        assert_eq!(
            pack(1, &[1, 0, 1, 1, 0, 0, 0, 1, 1]),
            vec![0b1000_1101, 0b1]
        );
        assert_eq!(pack(2, &[3, 0, 1, 2, 1]), vec![0b10_01_00_11, 0b01]);
        // uint3: 7, 1, 5 -> bits 111 | 001 | 101 -> stream 111 100 101 (LSB first)
        assert_eq!(pack(3, &[7, 1, 5]), vec![0b0100_1111, 0b1]);
        assert_eq!(padding_bits(3, 3), 7);
    }

    #[test]
    fn round_trip_every_width() {
        for bits in [1u32, 2, 3, 4, 6, 8] {
            let max = ((1u16 << bits) - 1) as u8;
            let vals: Vec<u8> = (0..37u32)
                .map(|i| ((i * 7 + 3) % (max as u32 + 1)) as u8)
                .collect();
            let packed = pack(bits, &vals);
            assert_eq!(packed.len(), packed_len(bits, vals.len()));
            assert_eq!(
                unpack(bits, &packed, vals.len()).unwrap(),
                vals,
                "bits {bits}"
            );
        }
    }

    #[test]
    fn unpack_rejects_wrong_length_and_width() {
        assert!(matches!(
            unpack(4, &[0, 0], 5),
            Err(MilError::ByteLength {
                expected: 3,
                got: 2,
                ..
            })
        ));
        assert!(matches!(
            unpack(4, &[0, 0, 0, 0], 5),
            Err(MilError::ByteLength { .. })
        ));
        assert!(matches!(
            unpack(9, &[0], 1),
            Err(MilError::BadBitWidth { bits: 9 })
        ));
    }
}
