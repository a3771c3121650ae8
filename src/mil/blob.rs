//! weight.bin, MIL blob storage version 2: a streaming writer that stores each distinct constant
//! once, and an mmap reader that checks every record before handing out bytes.
//!
//! Layout (docs/coreml-format.md §2, from MILBlob's StorageFormat.hpp), all integers little-endian:
//!
//! ```text
//! | header 64B: count u32, version u32 = 2, 7 × u64 reserved = 0 |
//! | metadata 64B at a 64-aligned offset: sentinel u32 0xDEADBEEF, dtype u32 (BlobDataType),
//! |   size_in_bytes u64, data offset u64 (= metadata + 64), padding_size_in_bits u64, 4 × u64 = 0 |
//! | data (size_in_bytes) | zero fill to the next multiple of 64 | metadata | data | ... (no trailing pad)
//! ```
//!
//! The proto's `BlobFileValue.offset` is the offset of the **metadata** record.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::error::{MilError, Result};
use super::ir::{DType, StoredBlob};
use super::value::{byte_len, check_byte_len};

/// Size of the file header.
pub const HEADER_SIZE: u64 = 64;
/// Size of each blob's metadata record.
pub const METADATA_SIZE: u64 = 64;
/// Every metadata record (and so every blob's data) starts at a multiple of this.
pub const ALIGN: u64 = 64;
/// First field of every metadata record (`EF BE AD DE` on disk).
pub const SENTINEL: u32 = 0xDEAD_BEEF;
/// The only storage format version Core ML reads.
pub const VERSION: u32 = 2;

/// Field offsets inside the header.
const HEADER_COUNT: usize = 0;
const HEADER_VERSION: usize = 4;
/// Field offsets inside a metadata record.
const META_SENTINEL: usize = 0;
const META_DTYPE: usize = 4;
const META_SIZE: usize = 8;
const META_OFFSET: usize = 16;
const META_PADDING: usize = 24;

/// MILBlob's BlobDataType codes (BlobDataType.hpp). Not the proto's DataType numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum BlobDataType {
    Float16 = 1,
    Float32 = 2,
    UInt8 = 3,
    Int8 = 4,
    BFloat16 = 5,
    Int16 = 6,
    UInt16 = 7,
    Int4 = 8,
    UInt1 = 9,
    UInt2 = 10,
    UInt4 = 11,
    UInt3 = 12,
    UInt6 = 13,
    Int32 = 14,
    UInt32 = 15,
    Float8E4M3FN = 16,
    Float8E5M2 = 17,
}

impl BlobDataType {
    /// The code for a storable IR dtype; `None` for bool, string and int64 (always inline).
    pub fn from_dtype(dtype: DType) -> Option<BlobDataType> {
        Some(match dtype {
            DType::F16 => BlobDataType::Float16,
            DType::F32 => BlobDataType::Float32,
            DType::U8 => BlobDataType::UInt8,
            DType::I8 => BlobDataType::Int8,
            DType::I16 => BlobDataType::Int16,
            DType::U16 => BlobDataType::UInt16,
            DType::I4 => BlobDataType::Int4,
            DType::U1 => BlobDataType::UInt1,
            DType::U2 => BlobDataType::UInt2,
            DType::U4 => BlobDataType::UInt4,
            DType::U3 => BlobDataType::UInt3,
            DType::U6 => BlobDataType::UInt6,
            DType::I32 => BlobDataType::Int32,
            DType::Bool | DType::Str | DType::I64 => return None,
        })
    }

    pub fn code(self) -> u32 {
        self as u32
    }

    /// The BlobDataType of a code read from a file.
    pub fn from_code(code: u32) -> Option<BlobDataType> {
        use BlobDataType::*;
        Some(match code {
            1 => Float16,
            2 => Float32,
            3 => UInt8,
            4 => Int8,
            5 => BFloat16,
            6 => Int16,
            7 => UInt16,
            8 => Int4,
            9 => UInt1,
            10 => UInt2,
            11 => UInt4,
            12 => UInt3,
            13 => UInt6,
            14 => Int32,
            15 => UInt32,
            16 => Float8E4M3FN,
            17 => Float8E5M2,
            _ => return None,
        })
    }
}

/// One metadata record as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BlobMeta {
    pub dtype_code: u32,
    pub size_in_bytes: u64,
    /// Absolute file offset of the data.
    pub data_offset: u64,
    pub padding_bits: u64,
}

/// Encodes the 64-byte header.
pub fn encode_header(count: u32) -> [u8; HEADER_SIZE as usize] {
    let mut h = [0u8; HEADER_SIZE as usize];
    h[HEADER_COUNT..HEADER_COUNT + 4].copy_from_slice(&count.to_le_bytes());
    h[HEADER_VERSION..HEADER_VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Encodes one 64-byte metadata record (reserved fields zero).
pub fn encode_meta(m: &BlobMeta) -> [u8; METADATA_SIZE as usize] {
    let mut r = [0u8; METADATA_SIZE as usize];
    r[META_SENTINEL..META_SENTINEL + 4].copy_from_slice(&SENTINEL.to_le_bytes());
    r[META_DTYPE..META_DTYPE + 4].copy_from_slice(&m.dtype_code.to_le_bytes());
    r[META_SIZE..META_SIZE + 8].copy_from_slice(&m.size_in_bytes.to_le_bytes());
    r[META_OFFSET..META_OFFSET + 8].copy_from_slice(&m.data_offset.to_le_bytes());
    r[META_PADDING..META_PADDING + 8].copy_from_slice(&m.padding_bits.to_le_bytes());
    r
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// `x` rounded up to the next multiple of [`ALIGN`].
pub fn align_up(x: u64) -> Option<u64> {
    x.checked_add(ALIGN - 1).map(|v| v / ALIGN * ALIGN)
}

/// Padding bits in the last byte for `n` elements of `dtype` (0 for whole-byte types).
fn padding_bits(dtype: DType, n: u64) -> Option<u64> {
    let bits = n.checked_mul(dtype.bits() as u64)?;
    Some((8 - bits % 8) % 8)
}

pub(super) fn overflow(what: &'static str) -> MilError {
    MilError::Overflow { what }
}

/// Streams blobs into a weight.bin. Identical (dtype, element count, bytes) are stored once:
/// the second `append` returns the first one's offset.
pub struct BlobWriter<W: Write + Seek> {
    out: W,
    path: PathBuf,
    /// Current end of the file (where the next record goes after alignment).
    end: u64,
    count: u32,
    seen: HashMap<(u32, u64, [u8; 32]), (u64, u64)>,
    /// Hash over (offset, dtype, count, content hash) of every distinct blob: identifies the
    /// file's contents without reading it back.
    digest: Sha256,
}

impl<W: Write + Seek> BlobWriter<W> {
    /// Starts a file: writes a header with count 0 (rewritten by [`finish`](Self::finish)).
    /// `path` only names the file in errors.
    pub fn new(mut out: W, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        out.write_all(&encode_header(0))
            .map_err(|source| MilError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(BlobWriter {
            out,
            path,
            end: HEADER_SIZE,
            count: 0,
            seen: HashMap::new(),
            digest: Sha256::new(),
        })
    }

    fn io(&self, source: std::io::Error) -> MilError {
        MilError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Number of distinct blobs written so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Appends `n` elements of `dtype` whose blob-encoded bytes are `bytes`, unless the same
    /// content is already stored. Returns the metadata offset and the size in bytes.
    pub fn append(&mut self, dtype: DType, n: u64, bytes: &[u8]) -> Result<StoredBlob> {
        let code = BlobDataType::from_dtype(dtype)
            .ok_or(MilError::BlobUnsupported {
                dtype: dtype.mil_name(),
            })?
            .code();
        let expected = byte_len(dtype, n).ok_or(overflow("sizing a blob"))?;
        check_byte_len("blob", dtype, n, expected, bytes.len() as u64)?;
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let key = (code, n, digest);
        if let Some(&(offset, size)) = self.seen.get(&key) {
            return Ok(StoredBlob {
                offset,
                size_in_bytes: size,
                bytes: None,
            });
        }
        let meta_offset = align_up(self.end).ok_or(overflow("aligning a blob"))?;
        let data_offset = meta_offset
            .checked_add(METADATA_SIZE)
            .ok_or(overflow("placing blob data"))?;
        let new_end = data_offset
            .checked_add(expected)
            .ok_or(overflow("placing blob data"))?;
        let count = self
            .count
            .checked_add(1)
            .ok_or(overflow("counting blobs"))?;
        let meta = BlobMeta {
            dtype_code: code,
            size_in_bytes: expected,
            data_offset,
            padding_bits: padding_bits(dtype, n).ok_or(overflow("sizing a blob"))?,
        };
        let gap = (meta_offset - self.end) as usize;
        let zeros = [0u8; ALIGN as usize];
        self.out
            .write_all(&zeros[..gap])
            .and_then(|_| self.out.write_all(&encode_meta(&meta)))
            .and_then(|_| self.out.write_all(bytes))
            .map_err(|e| self.io(e))?;
        self.end = new_end;
        self.count = count;
        self.seen.insert(key, (meta_offset, expected));
        self.digest.update(meta_offset.to_le_bytes());
        self.digest.update(code.to_le_bytes());
        self.digest.update(n.to_le_bytes());
        self.digest.update(digest);
        Ok(StoredBlob {
            offset: meta_offset,
            size_in_bytes: expected,
            bytes: None,
        })
    }

    /// A hash of everything appended so far (layout and contents).
    pub fn content_digest(&self) -> [u8; 32] {
        self.digest.clone().finalize().into()
    }

    /// Rewrites the header with the final count, flushes, and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        let header = encode_header(self.count);
        let r = self
            .out
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.out.write_all(&header))
            .and_then(|_| self.out.seek(SeekFrom::Start(self.end)))
            .and_then(|_| self.out.flush());
        r.map_err(|e| self.io(e))?;
        Ok(self.out)
    }
}

/// The file's bytes: an mmap, or memory (tests).
enum Backing {
    Map(memmap2::Mmap),
    Mem(Vec<u8>),
}

impl AsRef<[u8]> for Backing {
    fn as_ref(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Mem(v) => v,
        }
    }
}

/// One blob's bytes, sharing the file mapping (what [`StoredBlob::bytes`] holds after reading).
struct BlobSlice {
    file: Arc<Backing>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for BlobSlice {
    fn as_ref(&self) -> &[u8] {
        &(*self.file).as_ref()[self.start..self.start + self.len]
    }
}

/// Reads a weight.bin through an mmap. The header is checked on open; each record when read.
pub struct BlobReader {
    path: PathBuf,
    file: Arc<Backing>,
    count: u32,
}

impl BlobReader {
    /// Maps `path` and checks the header (length, version).
    pub fn open(path: &Path) -> Result<BlobReader> {
        let io = |source| MilError::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        if len < HEADER_SIZE {
            // (Mapping an empty file fails; report the real problem.)
            return Err(MilError::BlobFileTooShort {
                path: path.to_path_buf(),
                len,
            });
        }
        // SAFETY: the map is read-only; anec does not modify a package while reading it. A file
        // truncated by another process during the read would fault, as with any mmap reader.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(io)?;
        Self::from_backing(path.to_path_buf(), Backing::Map(map))
    }

    /// Reads from bytes in memory; `path` names the file in errors.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<BlobReader> {
        Self::from_backing(path.into(), Backing::Mem(bytes))
    }

    fn from_backing(path: PathBuf, backing: Backing) -> Result<BlobReader> {
        let b = backing.as_ref();
        if (b.len() as u64) < HEADER_SIZE {
            return Err(MilError::BlobFileTooShort {
                path,
                len: b.len() as u64,
            });
        }
        let version = u32_at(b, HEADER_VERSION);
        if version != VERSION {
            return Err(MilError::BlobVersion {
                path,
                found: version,
            });
        }
        let count = u32_at(b, HEADER_COUNT);
        Ok(BlobReader {
            path,
            file: Arc::new(backing),
            count,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header's blob count.
    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn file_len(&self) -> u64 {
        (*self.file).as_ref().len() as u64
    }

    /// The metadata record at `offset`, checked: in bounds, sentinel, data right after the
    /// record and inside the file.
    pub fn meta(&self, offset: u64) -> Result<BlobMeta> {
        let b = (*self.file).as_ref();
        let file_len = b.len() as u64;
        let end = offset
            .checked_add(METADATA_SIZE)
            .ok_or(overflow("reading blob metadata"))?;
        if end > file_len || offset < HEADER_SIZE {
            return Err(MilError::BlobBounds {
                path: self.path.clone(),
                what: "blob metadata",
                offset,
                end,
                file_len,
            });
        }
        let r = &b[offset as usize..end as usize];
        let sentinel = u32_at(r, META_SENTINEL);
        if sentinel != SENTINEL {
            return Err(MilError::BlobSentinel {
                path: self.path.clone(),
                offset,
                found: sentinel,
            });
        }
        let meta = BlobMeta {
            dtype_code: u32_at(r, META_DTYPE),
            size_in_bytes: u64_at(r, META_SIZE),
            data_offset: u64_at(r, META_OFFSET),
            padding_bits: u64_at(r, META_PADDING),
        };
        if meta.data_offset != end {
            return Err(MilError::BlobDataOffset {
                path: self.path.clone(),
                offset,
                data_offset: meta.data_offset,
                expected: end,
            });
        }
        let data_end = meta
            .data_offset
            .checked_add(meta.size_in_bytes)
            .ok_or(overflow("reading blob data"))?;
        if data_end > file_len {
            return Err(MilError::BlobBounds {
                path: self.path.clone(),
                what: "blob data",
                offset: meta.data_offset,
                end: data_end,
                file_len,
            });
        }
        Ok(meta)
    }

    /// The blob at metadata `offset`, checked against the tensor that references it
    /// (`n` elements of `dtype`), with its bytes borrowed from the mapping.
    pub fn read(&self, offset: u64, dtype: DType, n: u64) -> Result<StoredBlob> {
        let meta = self.meta(offset)?;
        let expected_code = BlobDataType::from_dtype(dtype).map(BlobDataType::code);
        if expected_code != Some(meta.dtype_code) {
            return Err(MilError::BlobDType {
                path: self.path.clone(),
                offset,
                found: meta.dtype_code,
                expected: expected_code,
                dtype: dtype.mil_name(),
            });
        }
        let expected = byte_len(dtype, n).ok_or(overflow("sizing a blob"))?;
        let padding = padding_bits(dtype, n).ok_or(overflow("sizing a blob"))?;
        if meta.size_in_bytes != expected || (dtype.is_sub_byte() && meta.padding_bits != padding) {
            return Err(MilError::BlobSize {
                path: self.path.clone(),
                offset,
                size_in_bytes: meta.size_in_bytes,
                padding_bits: meta.padding_bits,
                dtype: dtype.mil_name(),
                elements: n,
                expected,
            });
        }
        let slice = BlobSlice {
            file: Arc::clone(&self.file),
            start: meta.data_offset as usize,
            len: meta.size_in_bytes as usize,
        };
        Ok(StoredBlob {
            offset,
            size_in_bytes: meta.size_in_bytes,
            bytes: Some(Arc::new(slice)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mil::bits;
    use std::io::Cursor;

    /// A record found while walking the file: its metadata offset and contents.
    #[derive(Debug)]
    struct BlobRecord {
        metadata_offset: u64,
        meta: BlobMeta,
    }

    /// Every record, walked as MILBlob does: the first at 64, the next at
    /// align64(data offset + size), `count` of them. (The reader itself only reads the records
    /// a program references; the tests walk all of them to compare layouts.)
    fn records(r: &BlobReader) -> Result<Vec<BlobRecord>> {
        let mut out = Vec::new();
        let mut at = HEADER_SIZE;
        for _ in 0..r.count() {
            let meta = r.meta(at)?;
            out.push(BlobRecord {
                metadata_offset: at,
                meta,
            });
            at = meta
                .data_offset
                .checked_add(meta.size_in_bytes)
                .and_then(align_up)
                .ok_or(overflow("walking blobs"))?;
        }
        Ok(out)
    }

    fn write(blobs: &[(DType, u64, Vec<u8>)]) -> (Vec<u8>, Vec<u64>) {
        let mut w = BlobWriter::new(Cursor::new(Vec::new()), "test.bin").unwrap();
        let offs = blobs
            .iter()
            .map(|(d, n, b)| w.append(*d, *n, b).unwrap().offset)
            .collect();
        (w.finish().unwrap().into_inner(), offs)
    }

    #[test]
    fn header_and_meta_are_64_bytes_little_endian() {
        let h = encode_header(2);
        assert_eq!(h.len(), 64);
        assert_eq!(&h[..8], &[2, 0, 0, 0, 2, 0, 0, 0]);
        assert!(h[8..].iter().all(|&b| b == 0));
        let m = encode_meta(&BlobMeta {
            dtype_code: 11,
            size_in_bytes: 0x800,
            data_offset: 0x80,
            padding_bits: 0,
        });
        assert_eq!(m.len(), 64);
        assert_eq!(&m[..4], &[0xEF, 0xBE, 0xAD, 0xDE]);
        assert_eq!(&m[4..8], &[0x0B, 0, 0, 0]);
        assert_eq!(&m[8..16], &[0, 8, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&m[16..24], &[0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert!(m[24..].iter().all(|&b| b == 0));
    }

    /// A worked example checked against coremltools' output: uint4 64×64 then fp16 [4,1,16,1].
    #[test]
    fn layout_matches_the_multifunction_sample() {
        let idx = vec![0x5Au8; 2048];
        let lut = vec![0x11u8; 128];
        let (file, offs) = write(&[(DType::U4, 64 * 64, idx), (DType::F16, 64, lut)]);
        assert_eq!(offs, vec![64, 2176]);
        assert_eq!(file.len(), 2368);
        assert_eq!(u32_at(&file, 0), 2);
        assert_eq!(u64_at(&file, 2176 + 16), 2240);
    }

    #[test]
    fn alignment_gap_is_zero_filled_and_no_trailing_padding() {
        let (file, offs) = write(&[
            (DType::F16, 3, vec![1, 2, 3, 4, 5, 6]),
            (DType::F32, 1, vec![9, 9, 9, 9]),
        ]);
        assert_eq!(offs, vec![64, 192]);
        assert!(file[134..192].iter().all(|&b| b == 0));
        assert_eq!(file.len(), 192 + 64 + 4);
    }

    #[test]
    fn sub_byte_size_and_padding() {
        // uint6 [1, 2, 3, 63, 5] → 81 30 FC 05, size 4, padding 2 (docs/coreml-format.md §2).
        let packed = bits::pack(6, &[1, 2, 3, 63, 5]);
        assert_eq!(packed, vec![0x81, 0x30, 0xFC, 0x05]);
        let (file, _) = write(&[(DType::U6, 5, packed)]);
        let r = BlobReader::from_bytes("t", file).unwrap();
        let m = r.meta(64).unwrap();
        assert_eq!((m.dtype_code, m.size_in_bytes, m.padding_bits), (13, 4, 2));
        let b = r.read(64, DType::U6, 5).unwrap();
        assert_eq!(
            (**b.bytes.as_ref().unwrap()).as_ref(),
            &[0x81, 0x30, 0xFC, 0x05]
        );
    }

    #[test]
    fn identical_content_is_stored_once() {
        let mut w = BlobWriter::new(Cursor::new(Vec::new()), "t").unwrap();
        let a = w.append(DType::F16, 2, &[1, 2, 3, 4]).unwrap();
        let b = w.append(DType::F16, 2, &[1, 2, 3, 4]).unwrap();
        let c = w.append(DType::I16, 2, &[1, 2, 3, 4]).unwrap();
        assert_eq!(a.offset, b.offset);
        assert_ne!(a.offset, c.offset);
        assert_eq!(w.count(), 2);
    }

    #[test]
    fn round_trip_every_storable_dtype() {
        let dtypes = [
            DType::F16,
            DType::F32,
            DType::U8,
            DType::I8,
            DType::I16,
            DType::U16,
            DType::I32,
            DType::I4,
            DType::U1,
            DType::U2,
            DType::U3,
            DType::U4,
            DType::U6,
        ];
        let blobs: Vec<(DType, u64, Vec<u8>)> = dtypes
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let n = 11 + i as u64;
                let b = if d.is_sub_byte() {
                    let mask = (1u32 << d.bits()) - 1;
                    let vals: Vec<u8> = (0..n).map(|k| ((k * 7) as u32 & mask) as u8).collect();
                    bits::pack(d.bits(), &vals)
                } else {
                    let len = byte_len(d, n).unwrap() as usize;
                    (0..len).map(|k| (k * 7 + i) as u8).collect()
                };
                (d, n, b)
            })
            .collect();
        let (file, offs) = write(&blobs);
        let r = BlobReader::from_bytes("t", file).unwrap();
        assert_eq!(r.count() as usize, dtypes.len());
        let recs = records(&r).unwrap();
        assert_eq!(
            recs.iter().map(|x| x.metadata_offset).collect::<Vec<_>>(),
            offs
        );
        for ((d, n, b), off) in blobs.iter().zip(&offs) {
            assert_eq!(off % ALIGN, 0);
            let got = r.read(*off, *d, *n).unwrap();
            assert_eq!((**got.bytes.as_ref().unwrap()).as_ref(), &b[..], "{d:?}");
        }
    }

    #[test]
    fn reader_rejects_bad_records_naming_offset_and_values() {
        let (file, _) = write(&[(DType::F16, 4, vec![0; 8])]);
        let r = BlobReader::from_bytes("w.bin", file.clone()).unwrap();
        let e = r.read(64, DType::F32, 2).unwrap_err().to_string();
        assert!(
            e.contains("w.bin") && e.contains("offset 64") && e.contains("code 1"),
            "{e}"
        );
        let e = r.read(64, DType::F16, 5).unwrap_err().to_string();
        assert!(e.contains("8 bytes") && e.contains("needs 10"), "{e}");
        let e = r.read(0, DType::F16, 4).unwrap_err().to_string();
        assert!(e.contains("offset 0"), "{e}");

        let mut bad = file.clone();
        bad[64] = 0;
        let e = BlobReader::from_bytes("w.bin", bad)
            .unwrap()
            .read(64, DType::F16, 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sentinel 0xdeadbe00"), "{e}");

        let mut bad = file.clone();
        bad[4] = 1;
        let e = BlobReader::from_bytes("w.bin", bad)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("version 1"), "{e}");

        let truncated = file[..file.len() - 1].to_vec();
        let e = BlobReader::from_bytes("w.bin", truncated)
            .unwrap()
            .read(64, DType::F16, 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("up to 136") && e.contains("has 135"), "{e}");

        let e = BlobReader::from_bytes("w.bin", vec![0; 10])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("10 bytes"), "{e}");
    }

    #[test]
    fn writer_refuses_inline_only_dtypes_and_wrong_lengths() {
        let mut w = BlobWriter::new(Cursor::new(Vec::new()), "t").unwrap();
        assert!(matches!(
            w.append(DType::Bool, 1, &[1]),
            Err(MilError::BlobUnsupported { .. })
        ));
        assert!(matches!(
            w.append(DType::F16, 2, &[1, 2, 3]),
            Err(MilError::ByteLength { .. })
        ));
    }

    fn sample(name: &str) -> (serde_json::Value, PathBuf) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coreml-samples");
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.blobs.json"))).unwrap(),
        )
        .unwrap();
        let bin = dir.join(format!(
            "{name}.mlpackage/Data/com.apple.CoreML/weights/weight.bin"
        ));
        (json, bin)
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Every record of coremltools' weight.bin files, against the dump in NAME.blobs.json; then
    /// the same blobs written again by BlobWriter give the identical file, byte for byte.
    #[test]
    fn coremltools_samples_read_and_rewrite_byte_identical() {
        for name in ["decode", "prefill", "multifunction", "flexible"] {
            let (json, bin) = sample(name);
            let original = std::fs::read(&bin).unwrap();
            assert_eq!(original.len() as u64, json["file_bytes"].as_u64().unwrap());
            assert_eq!(
                &original[..4],
                &(json["count"].as_u64().unwrap() as u32).to_le_bytes()
            );
            assert_eq!(
                &original[8..64],
                &[0u8; 56][..],
                "{name}: reserved header bytes"
            );
            let r = BlobReader::open(&bin).unwrap();
            assert_eq!(r.count() as u64, json["count"].as_u64().unwrap());
            let recs = records(&r).unwrap();
            let expected = json["blobs"].as_array().unwrap();
            assert_eq!(recs.len(), expected.len());
            let mut w = BlobWriter::new(Cursor::new(Vec::new()), "rewrite").unwrap();
            for (rec, want) in recs.iter().zip(expected) {
                let m = rec.meta;
                assert_eq!(
                    rec.metadata_offset,
                    want["metadata_offset"].as_u64().unwrap()
                );
                assert_eq!(m.dtype_code as u64, want["mil_dtype"].as_u64().unwrap());
                assert_eq!(m.size_in_bytes, want["size_in_bytes"].as_u64().unwrap());
                assert_eq!(m.data_offset, want["data_offset"].as_u64().unwrap());
                assert_eq!(
                    m.padding_bits,
                    want["padding_size_in_bits"].as_u64().unwrap()
                );
                let data = &original[m.data_offset as usize..][..m.size_in_bytes as usize];
                assert_eq!(hex(&data[..16]), want["first_bytes_hex"].as_str().unwrap());
                let raw = &original[rec.metadata_offset as usize..][..64];
                assert!(
                    raw[32..].iter().all(|&b| b == 0),
                    "{name}: reserved metadata"
                );
                let dtype = match BlobDataType::from_code(m.dtype_code).unwrap() {
                    BlobDataType::Float16 => DType::F16,
                    BlobDataType::UInt4 => DType::U4,
                    BlobDataType::Int4 => DType::I4,
                    other => panic!("{name}: unexpected {other:?}"),
                };
                let n = m.size_in_bytes * 8 / dtype.bits() as u64;
                let blob = r.read(rec.metadata_offset, dtype, n).unwrap();
                assert_eq!((**blob.bytes.as_ref().unwrap()).as_ref(), data);
                let again = w.append(dtype, n, data).unwrap();
                assert_eq!(again.offset, rec.metadata_offset);
            }
            assert_eq!(
                w.finish().unwrap().into_inner(),
                original,
                "{name}: rewrite differs"
            );
        }
    }

    #[test]
    fn empty_file_is_too_short_not_an_mmap_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("weight.bin");
        std::fs::write(&p, b"").unwrap();
        let e = BlobReader::open(&p).err().unwrap().to_string();
        assert!(e.contains("weight.bin: 0 bytes, shorter than"), "{e}");
    }

    #[test]
    fn truncated_sample_is_rejected_with_file_and_offset() {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
            "tests/fixtures/coreml-samples/negative/truncated_weights.mlpackage/Data/com.apple.CoreML/weights/weight.bin",
        );
        let r = BlobReader::open(&bin).unwrap();
        let e = records(&r).unwrap_err().to_string();
        assert!(e.contains("weight.bin") && e.contains("has 10000"), "{e}");
    }
}
