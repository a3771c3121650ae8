//! The .mlpackage folder: writing it atomically with deterministic bytes, and reading it back
//! into the IR (docs/coreml-format.md §1).
//!
//! ```text
//! NAME.mlpackage/Manifest.json
//! NAME.mlpackage/Data/com.apple.CoreML/model.mlmodel
//! NAME.mlpackage/Data/com.apple.CoreML/weights/weight.bin
//! ```
//!
//! The writer builds everything in a temp folder beside the target and renames it into place at
//! the end. Manifest identifiers are derived from a hash of the package contents, so the same
//! model gives the same bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::blob::{overflow, BlobReader, BlobWriter};
use super::error::{MilError, Result};
use super::infer::check_program;
use super::ir::{ConstData, ConstValue, DType, StoredBlob, TensorType};
use super::lower::{decode_model, encode_model, BlobSink};
use super::model::Model;
use super::proto::spec as pb;

/// Package item author (coremltools `_MLPACKAGE_AUTHOR_NAME`).
pub const AUTHOR: &str = "com.apple.CoreML";
/// The root model item's file name.
pub const MODEL_FILE: &str = "model.mlmodel";
/// The weights item (a directory).
pub const WEIGHTS_DIR: &str = "weights";
/// The blob file inside the weights directory.
pub const WEIGHT_FILE: &str = "weight.bin";
const MANIFEST: &str = "Manifest.json";
const FILE_FORMAT_VERSION: &str = "1.0.0";
const MODEL_DESCRIPTION: &str = "CoreML Model Specification";
const WEIGHTS_DESCRIPTION: &str = "CoreML Model Weights";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MilError + '_ {
    move |source| MilError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One `itemInfoEntries` value of Manifest.json.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ManifestItem {
    author: String,
    description: String,
    name: String,
    path: String,
}

/// Manifest.json. Field order here is alphabetical, and the entries are a BTreeMap, so the JSON
/// keys come out sorted as nlohmann::json writes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    file_format_version: String,
    item_info_entries: BTreeMap<String, ManifestItem>,
    root_model_identifier: String,
}

/// Formats 16 bytes as a UUID (8-4-4-4-12 lowercase hex), with RFC 9562's version 8 ("custom")
/// and variant bits set.
fn uuid_from(hash: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash[..16]);
    b[6] = (b[6] & 0x0F) | 0x80;
    b[8] = (b[8] & 0x3F) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Serializes like nlohmann::json's `dump(4)`: 4-space indent, `"key": value`, one trailing newline.
fn manifest_json(m: &Manifest) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    m.serialize(&mut ser).map_err(|e| MilError::Encode {
        context: MANIFEST.to_string(),
        detail: e.to_string(),
    })?;
    out.push(b'\n');
    Ok(out)
}

/// The manifest for a package whose contents hash to `digest`.
fn manifest_for(digest: &[u8; 32]) -> Manifest {
    let id = |what: &str| {
        let mut h = Sha256::new();
        h.update(digest);
        h.update(what.as_bytes());
        uuid_from(&h.finalize())
    };
    let root = id(MODEL_FILE);
    let weights = id(WEIGHTS_DIR);
    let item = |name: &str, description: &str| ManifestItem {
        author: AUTHOR.to_string(),
        description: description.to_string(),
        name: name.to_string(),
        path: format!("{AUTHOR}/{name}"),
    };
    Manifest {
        file_format_version: FILE_FORMAT_VERSION.to_string(),
        item_info_entries: BTreeMap::from([
            (root.clone(), item(MODEL_FILE, MODEL_DESCRIPTION)),
            (weights, item(WEIGHTS_DIR, WEIGHTS_DESCRIPTION)),
        ]),
        root_model_identifier: root,
    }
}

/// Writes one .mlpackage. Create it, [`store`](Self::store) big weights as they are made (their
/// bytes go to weight.bin at once, so the caller can drop them), then [`finish`](Self::finish)
/// with the model. Dropping the writer without finishing removes the temp folder.
pub struct PackageWriter {
    target: PathBuf,
    force: bool,
    tmp: tempfile::TempDir,
    blobs: BlobWriter<BufWriter<File>>,
}

impl PackageWriter {
    /// Starts writing `path` (a `.mlpackage` folder). Refuses an existing path unless `force`.
    pub fn create(path: impl AsRef<Path>, force: bool) -> Result<PackageWriter> {
        let target = path.as_ref().to_path_buf();
        if target.exists() && !force {
            return Err(MilError::Exists { path: target });
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".anec-")
            .tempdir_in(&parent)
            .map_err(io(&parent))?;
        let weights = tmp.path().join("Data").join(AUTHOR).join(WEIGHTS_DIR);
        std::fs::create_dir_all(&weights).map_err(io(&weights))?;
        let wpath = weights.join(WEIGHT_FILE);
        let file = File::create(&wpath).map_err(io(&wpath))?;
        let blobs = BlobWriter::new(BufWriter::new(file), target.join(WEIGHT_FILE))?;
        Ok(PackageWriter {
            target,
            force,
            tmp,
            blobs,
        })
    }

    /// Streams `value` into weight.bin now (or finds identical content already there) and
    /// returns it as a stored constant. A constant this writer stored already (bytes not
    /// loaded) comes back unchanged; one read from another package is copied in.
    pub fn store(&mut self, value: ConstValue) -> Result<ConstValue> {
        let blob = match &value.data {
            ConstData::Stored(s) if s.bytes.is_none() => return Ok(value),
            ConstData::Strings(_) => {
                return Err(MilError::BlobUnsupported {
                    dtype: value.ty.dtype.mil_name(),
                })
            }
            ConstData::Bytes(_) | ConstData::Stored(_) => {
                let n = value.num_elements();
                let bytes = value.bytes().ok_or(MilError::BlobUnsupported {
                    dtype: value.ty.dtype.mil_name(),
                })?;
                self.blobs.append(value.ty.dtype, n, bytes)?
            }
        };
        Ok(ConstValue {
            ty: value.ty,
            data: ConstData::Stored(blob),
        })
    }

    /// Streams a constant given as blob-encoded bytes (borrowed, so a big weight is never copied
    /// into a `ConstValue` first) into weight.bin, like [`PackageWriter::store`].
    pub fn store_bytes(&mut self, dtype: DType, shape: &[u64], bytes: &[u8]) -> Result<ConstValue> {
        let n = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or(overflow("sizing a blob"))?;
        let ty = TensorType::new(dtype, shape);
        let blob = self.blobs.append(dtype, n, bytes)?;
        Ok(ConstValue {
            ty,
            data: ConstData::Stored(blob),
        })
    }

    /// Stores any remaining inline constant of ≥ 10 elements, writes model.mlmodel and
    /// Manifest.json, and renames the folder into place (with `force`, an existing folder is
    /// moved aside first and removed after).
    pub fn finish(self, model: &Model) -> Result<()> {
        let PackageWriter {
            target,
            force,
            tmp,
            mut blobs,
        } = self;
        struct Sink<'a>(&'a mut BlobWriter<BufWriter<File>>);
        impl BlobSink for Sink<'_> {
            fn store(&mut self, c: &ConstValue) -> Result<StoredBlob> {
                let bytes = c.bytes().ok_or(MilError::BlobUnsupported {
                    dtype: c.ty.dtype.mil_name(),
                })?;
                self.0.append(c.ty.dtype, c.num_elements(), bytes)
            }
        }
        let spec = encode_model(model, &mut Sink(&mut blobs))?;
        let model_bytes = spec.encode_to_vec();
        let blob_count = blobs.count();
        let blob_digest = blobs.content_digest();
        blobs.finish()?.into_inner().map_err(|e| MilError::Io {
            path: target.join(WEIGHT_FILE),
            source: e.into_error(),
        })?;

        let dir = tmp.path().join("Data").join(AUTHOR);
        if blob_count == 0 {
            // coremltools writes no weight.bin when nothing is blob-backed; the folder stays.
            let w = dir.join(WEIGHTS_DIR).join(WEIGHT_FILE);
            std::fs::remove_file(&w).map_err(io(&w))?;
        }
        let mpath = dir.join(MODEL_FILE);
        std::fs::write(&mpath, &model_bytes).map_err(io(&mpath))?;

        let mut h = Sha256::new();
        h.update(&model_bytes);
        h.update(blob_count.to_le_bytes());
        h.update(blob_digest);
        let manifest = manifest_for(&h.finalize().into());
        let man_path = tmp.path().join(MANIFEST);
        std::fs::write(&man_path, manifest_json(&manifest)?).map_err(io(&man_path))?;

        replace_target(target, force, tmp)
    }
}

/// Renames the finished temp folder to `target`; with `force`, an existing target is moved
/// aside first (rename onto a non-empty folder fails) and removed after.
fn replace_target(target: PathBuf, force: bool, tmp: tempfile::TempDir) -> Result<()> {
    let mut aside = None;
    if target.exists() {
        if !force {
            return Err(MilError::Exists { path: target });
        }
        let parent = tmp.path().parent().unwrap_or(Path::new(".")).to_path_buf();
        let old = tempfile::Builder::new()
            .prefix(".anec-old-")
            .tempdir_in(&parent)
            .map_err(io(&parent))?;
        let old_path = old.path().join("package");
        std::fs::rename(&target, &old_path).map_err(io(&target))?;
        aside = Some((old, old_path));
    }
    let built = tmp.keep();
    if let Err(source) = std::fs::rename(&built, &target) {
        let _ = std::fs::remove_dir_all(&built);
        if let Some((_, old_path)) = &aside {
            // Put the previous package back.
            let _ = std::fs::rename(old_path, &target);
        }
        return Err(MilError::Io {
            path: target,
            source,
        });
    }
    drop(aside); // removes the previous package
    Ok(())
}

/// What [`read_package_info`] finds besides the model.
#[derive(Clone, Debug)]
pub struct PackageInfo {
    pub specification_version: i32,
    pub model_file_bytes: u64,
    pub weight_file_bytes: u64,
    pub blob_count: u32,
}

fn read_manifest(pkg: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    let path = pkg.join(MANIFEST);
    let bad = |detail: String| MilError::Manifest {
        path: path.clone(),
        detail,
    };
    if !path.is_file() {
        let why = if pkg.exists() {
            "is not a .mlpackage folder"
        } else {
            "does not exist"
        };
        return Err(bad(format!("not found: {} {why}", pkg.display())));
    }
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let version: Vec<u32> = m
        .file_format_version
        .split('.')
        .map(|p| p.parse::<u32>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            bad(format!(
                "fileFormatVersion {:?} is not major.minor.patch",
                m.file_format_version
            ))
        })?;
    if version.len() != 3 || version.as_slice() > [1, 0, 0].as_slice() {
        return Err(bad(format!(
            "fileFormatVersion {:?} (expected at most 1.0.0)",
            m.file_format_version
        )));
    }
    let data = pkg.join("Data");
    let mut weights = None;
    for (id, item) in &m.item_info_entries {
        let inside = Path::new(&item.path)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(bad(format!(
                "item {id} path {:?} leaves the package's Data folder",
                item.path
            )));
        }
        let p = data.join(&item.path);
        if !p.exists() {
            return Err(bad(format!(
                "item {id} ({}) path {} does not exist",
                item.name,
                p.display()
            )));
        }
        if item.name == WEIGHTS_DIR {
            weights = Some(p);
        }
    }
    let root = m
        .item_info_entries
        .get(&m.root_model_identifier)
        .ok_or_else(|| {
            bad(format!(
                "rootModelIdentifier {:?} is not an item",
                m.root_model_identifier
            ))
        })?;
    Ok((data.join(&root.path), weights))
}

/// Reads a package into the IR and reports its sizes and spec version. Every function is
/// type-checked ([`check_program`]): declared types that inference contradicts are errors.
pub fn read_package_info(path: impl AsRef<Path>) -> Result<(Model, PackageInfo)> {
    let pkg = path.as_ref();
    let wrap = |e: MilError| match e {
        MilError::Io { .. }
        | MilError::Manifest { .. }
        | MilError::ProtoDecode { .. }
        | MilError::ProtoContent { .. }
        | MilError::UnknownOp { .. }
        | MilError::BlobFileTooShort { .. }
        | MilError::BlobVersion { .. }
        | MilError::BlobBounds { .. }
        | MilError::BlobSentinel { .. }
        | MilError::BlobDType { .. }
        | MilError::BlobSize { .. }
        | MilError::BlobDataOffset { .. } => e,
        other => MilError::InPackage {
            path: pkg.to_path_buf(),
            source: Box::new(other),
        },
    };
    let (model_path, weights_dir) = read_manifest(pkg)?;
    let bytes = std::fs::read(&model_path).map_err(io(&model_path))?;
    let spec = pb::Model::decode(bytes.as_slice()).map_err(|source| MilError::ProtoDecode {
        path: model_path.clone(),
        source,
    })?;
    let weight_path = weights_dir.map(|d| d.join(WEIGHT_FILE));
    let blobs = match &weight_path {
        Some(p) if p.exists() => Some(BlobReader::open(p)?),
        _ => None,
    };
    let model = decode_model(&spec, &model_path, blobs.as_ref()).map_err(wrap)?;
    check_program(&model.program).map_err(wrap)?;
    let info = PackageInfo {
        specification_version: spec.specification_version,
        model_file_bytes: bytes.len() as u64,
        weight_file_bytes: blobs.as_ref().map_or(0, |b| b.file_len()),
        blob_count: blobs.as_ref().map_or(0, |b| b.count()),
    };
    Ok((model, info))
}

/// Reads a package into the IR (blob constants mmap-backed, their `bytes` filled), then
/// type-checks every function.
pub fn read_package(path: impl AsRef<Path>) -> Result<Model> {
    read_package_info(path).map(|(m, _)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Storing borrowed bytes is the same blob as storing the equal constant: one offset.
    #[test]
    fn store_bytes_is_store_without_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackageWriter::create(dir.path().join("p.mlpackage"), false).unwrap();
        let vals: Vec<half::f16> = (0..40).map(|i| half::f16::from_f32(i as f32)).collect();
        let c = ConstValue::from_f16(&[4, 10], &vals).unwrap();
        let a = w
            .store_bytes(DType::F16, &[4, 10], c.bytes().unwrap())
            .unwrap();
        let b = w.store(c.clone()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.ty, c.ty);
        let short = w.store_bytes(DType::F16, &[4, 10], &c.bytes().unwrap()[..78]);
        assert!(
            short.is_err(),
            "a byte count that disagrees with the shape is refused"
        );
    }

    /// Our Manifest serialization reproduces coremltools' file byte for byte (same ids).
    #[test]
    fn manifest_format_matches_coremltools() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coreml-samples");
        for name in ["decode", "prefill", "multifunction", "flexible"] {
            let original =
                std::fs::read(dir.join(format!("{name}.mlpackage/Manifest.json"))).unwrap();
            let parsed: Manifest = serde_json::from_slice(&original).unwrap();
            assert_eq!(manifest_json(&parsed).unwrap(), original, "{name}");
        }
    }

    #[test]
    fn uuid_is_formatted_and_deterministic() {
        let a = manifest_for(&[7u8; 32]);
        let b = manifest_for(&[7u8; 32]);
        let c = manifest_for(&[8u8; 32]);
        assert_eq!(a, b);
        assert_ne!(a.root_model_identifier, c.root_model_identifier);
        let id = &a.root_model_identifier;
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_eq!(&id[14..15], "8");
        assert_eq!(a.item_info_entries.len(), 2);
    }

    #[test]
    fn manifest_items_must_exist_inside_data() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str| {
            let m = format!(
                r#"{{"fileFormatVersion":"1.0.0","rootModelIdentifier":"a","itemInfoEntries":{{"a":{{"author":"x","description":"y","name":"model.mlmodel","path":"{path}"}}}}}}"#
            );
            std::fs::write(dir.path().join(MANIFEST), m).unwrap();
            read_manifest(dir.path()).unwrap_err().to_string()
        };
        let e = write("../../etc/passwd");
        assert!(e.contains("leaves the package"), "{e}");
        let e = write("com.apple.CoreML/model.mlmodel");
        assert!(
            e.contains("does not exist") && e.contains("model.mlmodel"),
            "{e}"
        );
    }

    #[test]
    fn manifest_version_above_1_0_0_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(MANIFEST),
            r#"{"fileFormatVersion":"1.1.0","itemInfoEntries":{},"rootModelIdentifier":"x"}"#,
        )
        .unwrap();
        let e = read_manifest(dir.path()).unwrap_err().to_string();
        assert!(e.contains("1.1.0") && e.contains("Manifest.json"), "{e}");
    }
}
