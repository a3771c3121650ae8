//! Safetensors checkpoints (single or sharded) read through mmap one tensor at a time, converted
//! to fp16 with an overflow check, and the ledger of the tensor names used.
//!
//! Every header is validated in full when the store opens (header length inside the file, JSON,
//! supported dtype, offsets inside the data area and equal to dtype × shape, no two tensors
//! sharing bytes), so a tensor handed out later is always a valid slice of the mapping. Nothing
//! but the header is read until a tensor is asked for, and then only its bytes.
//!
//! Pages of the mapping that have been read count in the process's resident memory until they
//! are unmapped, so a whole checkpoint read once would stay in RSS. A tensor's pages are released
//! (madvise `MADV_DONTNEED`) as it is converted and when its user calls
//! [`RawTensor::release`]; the kernel keeps them in its page cache, and a later read maps them
//! again, so RSS stays near the tensor being worked on.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use half::{bf16, f16};
use memmap2::Mmap;
use serde::Deserialize;

use crate::source::{self, ModelFiles, SourceError};

/// Safetensors caps its JSON header at 100 MB; anything larger is a lie or not a checkpoint.
const MAX_HEADER_LEN: u64 = 100_000_000;
/// The little-endian u64 header length that opens every safetensors file.
const HEADER_LEN_BYTES: usize = 8;

/// The element types anec reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32,
    F16,
    BF16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }

    fn from_safetensors(s: &str) -> Option<Dtype> {
        match s {
            "F32" => Some(Dtype::F32),
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::BF16),
            _ => None,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        })
    }
}

/// Why a checkpoint or one of its tensors was refused. Each names the file and the tensor.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{} is truncated: {len} bytes, too short for the 8-byte safetensors header length", path.display())]
    Truncated { path: PathBuf, len: u64 },
    #[error("{}: header length {header_len} runs past the end of the file ({file_len} bytes): truncated, or not a safetensors file", path.display())]
    HeaderPastEnd {
        path: PathBuf,
        header_len: u64,
        file_len: u64,
    },
    #[error("{}: header length {header_len} exceeds the safetensors limit of {MAX_HEADER_LEN} bytes", path.display())]
    HeaderTooLarge { path: PathBuf, header_len: u64 },
    #[error("{}: the safetensors header is not valid JSON: {reason}", path.display())]
    HeaderJson { path: PathBuf, reason: String },
    #[error("{}: tensor {tensor} has an invalid header entry: {reason}", path.display())]
    BadEntry {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("{}: tensor {tensor} has dtype {dtype}, which anec does not read (supported: F32, F16, BF16)", path.display())]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{}: tensor {tensor} has data_offsets [{begin}, {end}] outside the data area of {data_len} bytes", path.display())]
    OutOfBounds {
        path: PathBuf,
        tensor: String,
        begin: u64,
        end: u64,
        data_len: u64,
    },
    #[error("{}: tensor {tensor} ({dtype} {shape:?}) needs {expected} bytes but its data_offsets [{begin}, {end}] span {}", path.display(), end.saturating_sub(*begin))]
    SizeMismatch {
        path: PathBuf,
        tensor: String,
        dtype: Dtype,
        shape: Vec<usize>,
        expected: u64,
        begin: u64,
        end: u64,
    },
    #[error("{}: tensors {first} [{first_begin}, {first_end}] and {second} [{second_begin}, {second_end}] overlap", path.display())]
    Overlap {
        path: PathBuf,
        first: String,
        first_begin: u64,
        first_end: u64,
        second: String,
        second_begin: u64,
        second_end: u64,
    },
    #[error("tensor {tensor} appears in both {} and {}", first.display(), second.display())]
    Duplicate {
        tensor: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{}: tensor {tensor} is mapped to shard {shard}, which is not among the checkpoint's files", index.display())]
    UnknownShard {
        index: PathBuf,
        tensor: String,
        shard: String,
    },
    #[error("tensor {tensor} is listed in {} but missing from its shard {}", index.display(), shard.display())]
    MissingInShard {
        tensor: String,
        index: PathBuf,
        shard: PathBuf,
    },
    #[error("tensor {tensor} is missing from the checkpoint ({within})")]
    Missing { tensor: String, within: String },
    #[error("tensor {tensor} in {} has shape {found:?} but the config expects {expected:?}", file.display())]
    ShapeMismatch {
        tensor: String,
        file: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{} checkpoint tensor(s) not used by the architecture (not on the allow-list): {}", tensors.len(), list_names(tensors))]
    Unused { tensors: Vec<String> },
    #[error("tensor {tensor}: value {value} (element {index}) does not fit in fp16 (largest finite 65504)")]
    F16Overflow {
        tensor: String,
        value: f32,
        index: usize,
    },
}

fn list_names(names: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", … and {} more", names.len() - SHOWN));
    }
    s
}

type Result<T> = std::result::Result<T, WeightError>;

/// One tensor's place in its file (absolute byte range of the mapping).
#[derive(Clone, Debug)]
struct TensorInfo {
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// One mapped safetensors file and its validated header.
struct Shard {
    path: PathBuf,
    mmap: Mmap,
    tensors: BTreeMap<String, TensorInfo>,
}

#[derive(Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

impl Shard {
    fn open(path: &Path) -> Result<Shard> {
        let io = |source| WeightError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        if file_len < HEADER_LEN_BYTES as u64 {
            return Err(WeightError::Truncated {
                path: path.to_path_buf(),
                len: file_len,
            });
        }
        // SAFETY: the mapping is read-only; like every mmap reader (safetensors, candle) we rely
        // on the checkpoint not being truncated by another process while anec runs.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let tensors = parse_header(path, &mmap)?;
        Ok(Shard {
            path: path.to_path_buf(),
            mmap,
            tensors,
        })
    }
}

/// Validate a whole safetensors header against the file's bytes.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, TensorInfo>> {
    let file_len = bytes.len() as u64;
    let mut len_bytes = [0u8; HEADER_LEN_BYTES];
    len_bytes.copy_from_slice(
        bytes
            .get(..HEADER_LEN_BYTES)
            .ok_or(WeightError::Truncated {
                path: path.to_path_buf(),
                len: file_len,
            })?,
    );
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_LEN {
        return Err(WeightError::HeaderTooLarge {
            path: path.to_path_buf(),
            header_len,
        });
    }
    let data_start = (HEADER_LEN_BYTES as u64)
        .checked_add(header_len)
        .filter(|&s| s <= file_len)
        .ok_or(WeightError::HeaderPastEnd {
            path: path.to_path_buf(),
            header_len,
            file_len,
        })?;
    let data_len = file_len - data_start;
    let header = &bytes[HEADER_LEN_BYTES..data_start as usize];
    let entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| WeightError::HeaderJson {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut tensors = BTreeMap::new();
    for (name, value) in entries {
        if name == "__metadata__" {
            continue;
        }
        let bad = |reason: String| WeightError::BadEntry {
            path: path.to_path_buf(),
            tensor: name.clone(),
            reason,
        };
        let entry: HeaderEntry = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let dtype =
            Dtype::from_safetensors(&entry.dtype).ok_or_else(|| WeightError::UnsupportedDtype {
                path: path.to_path_buf(),
                tensor: name.clone(),
                dtype: entry.dtype.clone(),
            })?;
        let [begin, end] = entry.data_offsets;
        if begin > end || end > data_len {
            return Err(WeightError::OutOfBounds {
                path: path.to_path_buf(),
                tensor: name,
                begin,
                end,
                data_len,
            });
        }
        let shape: Vec<usize> = entry
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad(format!("shape {:?} does not fit in memory", entry.shape)))?;
        let expected = entry
            .shape
            .iter()
            .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d));
        if expected != Some(end - begin) {
            return Err(WeightError::SizeMismatch {
                path: path.to_path_buf(),
                tensor: name,
                dtype,
                shape,
                expected: expected.unwrap_or(u64::MAX),
                begin,
                end,
            });
        }
        // Both fit: end <= data_len and data_start + data_len == file_len == mapping length.
        tensors.insert(
            name,
            TensorInfo {
                dtype,
                shape,
                start: (data_start + begin) as usize,
                end: (data_start + end) as usize,
            },
        );
    }
    // No two tensors may share a byte (empty tensors occupy none).
    let mut spans: Vec<(&String, &TensorInfo)> =
        tensors.iter().filter(|(_, t)| t.end > t.start).collect();
    spans.sort_by_key(|(_, t)| (t.start, t.end));
    for pair in spans.windows(2) {
        let ((a, ta), (b, tb)) = (pair[0], pair[1]);
        if tb.start < ta.end {
            let off = data_start as usize;
            return Err(WeightError::Overlap {
                path: path.to_path_buf(),
                first: a.clone(),
                first_begin: (ta.start - off) as u64,
                first_end: (ta.end - off) as u64,
                second: b.clone(),
                second_begin: (tb.start - off) as u64,
                second_end: (tb.end - off) as u64,
            });
        }
    }
    Ok(tensors)
}

/// The tensors of one checkpoint, mapped, with the ledger of names handed out.
pub struct WeightStore {
    shards: Vec<Shard>,
    /// tensor name → index into `shards`
    location: BTreeMap<String, usize>,
    used: Mutex<BTreeSet<String>>,
    /// What "the checkpoint" is, for messages: the index or the single file.
    origin: String,
}

/// One tensor as stored: its bytes borrowed from the mapping.
#[derive(Clone)]
pub struct RawTensor<'a> {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Little-endian elements, row-major; not necessarily aligned.
    pub bytes: &'a [u8],
    /// The file it came from.
    pub file: &'a Path,
    /// The mapping `bytes` lie in, whose pages [`RawTensor::release`] drops; None for bytes
    /// that are not a store's (tests).
    map: Option<&'a Mmap>,
}

impl fmt::Debug for RawTensor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawTensor")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.bytes.len())
            .field("file", &self.file)
            .finish()
    }
}

/// Bytes converted between two releases of the source pages: small next to any tensor worth
/// releasing, large enough that the madvise calls cost nothing.
const RELEASE_STEP: usize = 16 << 20;

/// Drops the resident pages of `bytes`, which lie inside `map`, from this process.
#[cfg(unix)]
fn release_pages(map: &Mmap, bytes: &[u8]) {
    let offset = (bytes.as_ptr() as usize).wrapping_sub(map.as_ptr() as usize);
    if bytes.is_empty()
        || offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > map.len())
    {
        return;
    }
    // SAFETY: `map` is a read-only shared file mapping (`Mmap::map`: PROT_READ, MAP_SHARED).
    // MADV_DONTNEED only removes this process's page-table entries for the range; the next access
    // maps the same file bytes again from the page cache (or the file), so every slice into the
    // mapping stays valid and unchanged. (It would discard data only in private or anonymous
    // mappings, which are never advised here.) A failure leaves the pages resident, which is
    // what happens without the call: nothing to report.
    let _ = unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, bytes.len())
    };
}

#[cfg(not(unix))]
fn release_pages(_map: &Mmap, _bytes: &[u8]) {}

impl WeightStore {
    /// Map every safetensors file of the checkpoint and validate its header; with an index,
    /// check that every tensor it lists is in the shard it names.
    pub fn open(files: &ModelFiles) -> Result<WeightStore> {
        let shards = files
            .weights
            .iter()
            .map(|p| Shard::open(p))
            .collect::<Result<Vec<_>>>()?;
        let mut location: BTreeMap<String, usize> = BTreeMap::new();
        if let Some(index) = &files.index {
            for (tensor, shard_name) in source::read_index(index)? {
                let Some(i) = shards
                    .iter()
                    .position(|s| s.path.file_name() == Some(shard_name.as_ref()))
                else {
                    return Err(WeightError::UnknownShard {
                        index: index.clone(),
                        tensor,
                        shard: shard_name,
                    });
                };
                if !shards[i].tensors.contains_key(&tensor) {
                    return Err(WeightError::MissingInShard {
                        tensor,
                        index: index.clone(),
                        shard: shards[i].path.clone(),
                    });
                }
                location.insert(tensor, i);
            }
        }
        // Tensors a shard holds beyond the index still count in the ledger; without an index
        // a name may appear in one file only.
        for (i, shard) in shards.iter().enumerate() {
            for name in shard.tensors.keys() {
                match location.get(name) {
                    None => {
                        location.insert(name.clone(), i);
                    }
                    Some(&j) if files.index.is_none() && j != i => {
                        return Err(WeightError::Duplicate {
                            tensor: name.clone(),
                            first: shards[j].path.clone(),
                            second: shard.path.clone(),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        let origin = match (&files.index, files.weights.as_slice()) {
            (Some(index), _) => index.display().to_string(),
            (None, [single]) => single.display().to_string(),
            (None, many) => many
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        Ok(WeightStore {
            shards,
            location,
            used: Mutex::new(BTreeSet::new()),
            origin,
        })
    }

    /// Whether the checkpoint holds `name` (does not mark it used).
    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// Every tensor name in the checkpoint, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.location.keys().map(String::as_str)
    }

    /// The dtype and shape of `name` without reading it or marking it used.
    pub fn info(&self, name: &str) -> Option<(Dtype, &[usize])> {
        let info = self.lookup(name)?.1;
        Some((info.dtype, info.shape.as_slice()))
    }

    fn lookup(&self, name: &str) -> Option<(&Shard, &TensorInfo)> {
        let shard = &self.shards[*self.location.get(name)?];
        Some((shard, shard.tensors.get(name)?))
    }

    /// The tensor `name`, checked against the shape the config expects; marks it used.
    pub fn get(&self, name: &str, expected_shape: &[usize]) -> Result<RawTensor<'_>> {
        let (shard, info) = self.lookup(name).ok_or_else(|| WeightError::Missing {
            tensor: name.to_string(),
            within: self.origin.clone(),
        })?;
        if info.shape != expected_shape {
            return Err(WeightError::ShapeMismatch {
                tensor: name.to_string(),
                file: shard.path.clone(),
                expected: expected_shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        self.used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(name.to_string());
        Ok(RawTensor {
            name: name.to_string(),
            dtype: info.dtype,
            shape: info.shape.clone(),
            bytes: &shard.mmap[info.start..info.end],
            file: &shard.path,
            map: Some(&shard.mmap),
        })
    }

    /// The names never handed out by [`get`](Self::get), minus the allow-list; an allow entry
    /// matches a whole name or a dotted suffix (`rotary_emb.inv_freq` matches
    /// `model.layers.0.self_attn.rotary_emb.inv_freq`).
    pub fn unused(&self, allow: &[&str]) -> Vec<String> {
        let used = self
            .used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.location
            .keys()
            .filter(|n| !used.contains(*n))
            .filter(|n| {
                !allow
                    .iter()
                    .any(|a| n.as_str() == *a || n.ends_with(&format!(".{a}")))
            })
            .cloned()
            .collect()
    }

    /// Error listing every checkpoint tensor that was never used and is not allowed.
    pub fn ensure_all_used(&self, allow: &[&str]) -> Result<()> {
        let tensors = self.unused(allow);
        if tensors.is_empty() {
            Ok(())
        } else {
            Err(WeightError::Unused { tensors })
        }
    }
}

impl<'a> RawTensor<'a> {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Rows `rows` of a tensor of two or more dimensions (each row holds every later dimension),
    /// still borrowed from the mapping. `rows` must lie within the first dimension.
    pub fn rows(&self, rows: Range<usize>) -> RawTensor<'a> {
        let row_bytes = self.shape[1..].iter().product::<usize>() * self.dtype.size();
        let mut shape = self.shape.clone();
        shape[0] = rows.len();
        RawTensor {
            name: self.name.clone(),
            dtype: self.dtype,
            shape,
            bytes: &self.bytes[rows.start * row_bytes..rows.end * row_bytes],
            file: self.file,
            map: self.map,
        }
    }

    /// Drops the tensor's pages from this process's resident memory once it has been consumed.
    /// The bytes stay readable (a later read maps them again from the page cache), so this only
    /// costs time if the tensor is read again.
    /// Columns `cols` of a 2-D tensor, copied into `buf` (a conv split along its input
    /// channels); the copy has no pages to release.
    pub fn columns<'b>(&self, cols: Range<usize>, buf: &'b mut Vec<u8>) -> RawTensor<'b>
    where
        'a: 'b,
    {
        let es = self.dtype.size();
        let width = self.shape.get(1).copied().unwrap_or(1) * es;
        buf.clear();
        for row in self.bytes.chunks_exact(width.max(1)) {
            buf.extend_from_slice(&row[cols.start * es..cols.end * es]);
        }
        RawTensor {
            name: self.name.clone(),
            dtype: self.dtype,
            shape: vec![self.shape[0], cols.len()],
            bytes: buf,
            file: self.file,
            map: None,
        }
    }

    pub fn release(&self) {
        if let Some(map) = self.map {
            release_pages(map, self.bytes);
        }
    }

    /// Runs `f` over the bytes in steps of [`RELEASE_STEP`], releasing each step's pages after
    /// it: a big tensor converted to another buffer never has all of its source resident too.
    fn for_each_step(&self, mut f: impl FnMut(&[u8])) {
        for step in self.bytes.chunks(RELEASE_STEP) {
            f(step);
            if let Some(map) = self.map {
                release_pages(map, step);
            }
        }
    }

    /// The values as f32 (exact for every supported dtype).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.numel());
        self.for_each_step(|b| out.extend(decode_f32(self.dtype, b)));
        out
    }

    /// The values as fp16, rounded to nearest even; a finite value beyond fp16's range is an
    /// error naming the tensor and the value (infinities and NaN pass through).
    pub fn to_f16(&self) -> Result<Vec<f16>> {
        let bytes = self.to_f16_bytes()?;
        Ok(bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]))
            .collect())
    }

    /// The tensor as little-endian fp16 bytes (weight.bin's encoding), with the same overflow
    /// check as [`RawTensor::to_f16`]. An F16 tensor is its own bytes, borrowed from the mapping;
    /// others are converted into one buffer of exactly the output size.
    pub fn to_f16_bytes(&self) -> Result<Cow<'a, [u8]>> {
        if self.dtype == Dtype::F16 {
            return Ok(Cow::Borrowed(self.bytes));
        }
        let mut out = Vec::with_capacity(self.numel() * 2);
        let mut overflow = None;
        self.for_each_step(|b| {
            if overflow.is_some() {
                return;
            }
            let first = out.len() / 2;
            for (i, v) in decode_f32(self.dtype, b).enumerate() {
                let h = f16::from_f32(v);
                if h.is_infinite() && v.is_finite() {
                    overflow = Some((first + i, v));
                    return;
                }
                out.extend_from_slice(&h.to_le_bytes());
            }
        });
        match overflow {
            Some((index, value)) => Err(WeightError::F16Overflow {
                tensor: self.name.clone(),
                value,
                index,
            }),
            None => Ok(Cow::Owned(out)),
        }
    }

    /// The raw 16-bit codes of an F16 or BF16 tensor (None for F32), for histogramming.
    pub fn codes16(&self) -> Option<Vec<u16>> {
        match self.dtype {
            Dtype::F16 | Dtype::BF16 => {
                let mut out = Vec::with_capacity(self.numel());
                self.for_each_step(|b| out.extend(u16s(b)));
                Some(out)
            }
            Dtype::F32 => None,
        }
    }
}

fn u16s(bytes: &[u8]) -> impl Iterator<Item = u16> + '_ {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
}

/// Little-endian elements of `dtype` as f32 (`bytes` holds whole elements).
fn decode_f32(dtype: Dtype, bytes: &[u8]) -> Box<dyn Iterator<Item = f32> + '_> {
    match dtype {
        Dtype::F32 => Box::new(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        Dtype::F16 => Box::new(u16s(bytes).map(|c| f16::from_bits(c).to_f32())),
        Dtype::BF16 => Box::new(u16s(bytes).map(|c| bf16::from_bits(c).to_f32())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dtype: Dtype, bytes: &[u8]) -> RawTensor<'_> {
        RawTensor {
            name: "t".into(),
            dtype,
            shape: vec![bytes.len() / dtype.size()],
            bytes,
            file: Path::new("x.safetensors"),
            map: None,
        }
    }

    #[test]
    fn f16_bytes_borrow_fp16_sources_and_convert_others() {
        let src: Vec<u8> = [1.5f32, -2.0, 65504.0]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let t = tensor(Dtype::F16, &src);
        assert!(matches!(t.to_f16_bytes().unwrap(), Cow::Borrowed(b) if b == src.as_slice()));
        let f32s: Vec<u8> = [1.5f32, -2.0, 65504.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let converted = tensor(Dtype::F32, &f32s).to_f16_bytes().unwrap();
        assert_eq!(converted.as_ref(), src.as_slice());
    }

    #[test]
    fn f32_to_f16_rounds_to_nearest_even() {
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to the even 1.0;
        // 1 + 3·2^-11 is halfway between 1 + 2^-10 and 1 + 2^-9: ties to the even 1 + 2^-9.
        let vals = [
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
            65504.0,
            -2.5,
        ];
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let h = tensor(Dtype::F32, &bytes).to_f16().unwrap();
        assert_eq!(h[0].to_f32(), 1.0);
        assert_eq!(h[1].to_f32(), 1.0 + 2f32.powi(-9));
        assert_eq!(h[2].to_f32(), 65504.0);
        assert_eq!(h[3].to_f32(), -2.5);
    }

    #[test]
    fn f16_overflow_names_tensor_and_value() {
        let bytes: Vec<u8> = [0.5f32, 1e6].iter().flat_map(|v| v.to_le_bytes()).collect();
        let err = tensor(Dtype::F32, &bytes).to_f16().unwrap_err().to_string();
        assert_eq!(
            err,
            "tensor t: value 1000000 (element 1) does not fit in fp16 (largest finite 65504)"
        );
        // 65519 still rounds to 65504; 65520 rounds to infinity.
        let ok: Vec<u8> = 65519f32.to_le_bytes().to_vec();
        assert!(tensor(Dtype::F32, &ok).to_f16().is_ok());
        let over: Vec<u8> = 65520f32.to_le_bytes().to_vec();
        assert!(tensor(Dtype::F32, &over).to_f16().is_err());
    }

    #[test]
    fn bf16_converts_and_keeps_codes() {
        let codes = [
            bf16::from_f32(1.5).to_bits(),
            bf16::from_f32(-3.0).to_bits(),
        ];
        let bytes: Vec<u8> = codes.iter().flat_map(|c| c.to_le_bytes()).collect();
        let t = tensor(Dtype::BF16, &bytes);
        assert_eq!(t.to_f32(), vec![1.5, -3.0]);
        assert_eq!(
            t.to_f16().unwrap(),
            vec![f16::from_f32(1.5), f16::from_f32(-3.0)]
        );
        assert_eq!(t.codes16().unwrap(), codes.to_vec());
        assert!(tensor(Dtype::F32, &[0; 4]).codes16().is_none());
    }

    fn header_file(header: &str, data: usize) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data));
        v
    }

    #[test]
    fn empty_tensors_and_metadata_are_fine() {
        let h = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[0,4],"data_offsets":[0,0]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#;
        let t = parse_header(Path::new("x"), &header_file(h, 4)).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t["b"].end - t["b"].start, 4);
    }

    #[test]
    fn size_overflow_is_an_error_not_a_panic() {
        let h = r#"{"a":{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,8]}}"#;
        let e = parse_header(Path::new("x"), &header_file(h, 8)).unwrap_err();
        assert!(matches!(e, WeightError::SizeMismatch { .. }), "{e}");
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#;
        let e = parse_header(Path::new("x"), &header_file(h, 8)).unwrap_err();
        assert!(matches!(e, WeightError::OutOfBounds { .. }), "{e}");
        let h = r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#;
        let e = parse_header(Path::new("x"), &header_file(h, 8)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x: tensor a has an invalid header entry"),
            "{e}"
        );
    }

    proptest::proptest! {
        /// Any bytes, and any single-byte corruption of a valid file: an error or a valid
        /// table whose ranges lie inside the file, never a panic.
        #[test]
        fn header_parsing_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Ok(t) = parse_header(Path::new("x"), &bytes) {
                for info in t.values() {
                    proptest::prop_assert!(info.start <= info.end && info.end <= bytes.len());
                }
            }
        }

        #[test]
        fn corrupted_valid_header_never_panics(pos in 0usize..200, byte in proptest::prelude::any::<u8>()) {
            let h = r#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[16,24]}}"#;
            let mut f = header_file(h, 24);
            let pos = pos % f.len();
            f[pos] = byte;
            if let Ok(t) = parse_header(Path::new("x"), &f) {
                for info in t.values() {
                    proptest::prop_assert!(info.start <= info.end && info.end <= f.len());
                }
            }
        }
    }

    /// Resident bytes of the mapping that starts at `start`, from /proc/self/smaps (Linux).
    #[cfg(target_os = "linux")]
    fn mapping_rss(start: *const u8) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{:x}-", start as usize);
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
        lines.next().expect("the mapping is listed");
        let rss = lines.find_map(|l| l.strip_prefix("Rss:")).unwrap();
        rss.trim().trim_end_matches(" kB").parse::<u64>().unwrap() * 1024
    }

    /// Reading a tensor maps its pages into the process; converting it releases them step by
    /// step, `release` releases the rest, and the bytes read the same afterwards.
    #[cfg(target_os = "linux")]
    #[test]
    fn consumed_tensors_leave_resident_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        // One and a half steps of bytes and a few more: not a whole number of steps or pages.
        let n = (3 * RELEASE_STEP / 2 + 6) / 2;
        let h = format!(
            r#"{{"a":{{"dtype":"BF16","shape":[{n}],"data_offsets":[0,{}]}}}}"#,
            2 * n
        );
        let mut file = header_file(&h, 0);
        file.extend((0..n).flat_map(|i| bf16::from_f32((i % 1000) as f32).to_le_bytes()));
        std::fs::write(&path, file).unwrap();
        let files = ModelFiles {
            dir: dir.path().to_path_buf(),
            config: dir.path().join("config.json"),
            weights: vec![path],
            index: None,
            tokenizer_files: vec![],
            repo_id: None,
            revision: None,
            downloaded: vec![],
        };
        let store = WeightStore::open(&files).unwrap();
        let base = store.shards[0].mmap.as_ptr();
        let page = 4096;
        let t = store.get("a", &[n]).unwrap();
        // Reading every byte maps the whole tensor.
        let sum: u64 = t.bytes.iter().map(|&b| b as u64).sum();
        assert!(mapping_rss(base) >= t.bytes.len() as u64 - page);
        // Converting releases each step after reading it: at most the page shared with the
        // header stays.
        let codes = t.codes16().unwrap();
        assert!(
            mapping_rss(base) <= page,
            "{} bytes resident",
            mapping_rss(base)
        );
        let first = t.bytes.iter().map(|&b| b as u64).sum::<u64>();
        assert!(mapping_rss(base) >= t.bytes.len() as u64 - page);
        t.release();
        assert!(
            mapping_rss(base) <= page,
            "{} bytes resident",
            mapping_rss(base)
        );
        // Released pages read back the same bytes.
        assert_eq!(first, sum);
        assert_eq!(codes, t.rows(0..n).codes16().unwrap());
        assert_eq!(codes[999], bf16::from_f32(999.0).to_bits());
    }

    #[test]
    fn store_is_shareable_across_threads() {
        fn sync<T: Send + Sync>() {}
        sync::<WeightStore>();
    }

    #[test]
    fn infinities_pass_through() {
        let bytes: Vec<u8> = f32::INFINITY.to_le_bytes().to_vec();
        assert!(tensor(Dtype::F32, &bytes).to_f16().unwrap()[0].is_infinite());
    }
}
