//! meta.yaml / meta.json: one serde struct, written both ways (ANE-CONTRACT.md "meta.yaml").
//!
//! The field order of [`Parameters`] is the key order ANEMLL's runners were written against;
//! keys after `state_name` are anec's additions (the source, so `anec verify` finds the original
//! weights, and the per-chunk layout).

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The largest context length anec converts or reads back: the ANE's widest tensor dimension
/// (16384, ANE-CONTRACT.md), which the causal mask `[1, 1, B, C]` and the KV state's C axis
/// must fit. `verify` builds a C×C mask, so this also bounds what a meta.json can make it
/// allocate (512 MiB at the ceiling).
pub const MAX_CONTEXT_LENGTH: usize = 16_384;

/// Errors reading or writing the meta files.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid anec meta file: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A field whose value is out of range, inconsistent with another, or (for file names) not
    /// a plain file name inside the conversion folder.
    #[error("{}: {field} {value}: {reason}", path.display())]
    Field {
        path: PathBuf,
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot serialize meta: {0}")]
    Serialize(String),
    /// meta.yaml (what the runners read) and meta.json (what `anec verify` reads) disagree.
    #[error("{}: meta.yaml and meta.json disagree on {key}: meta.yaml has {yaml}, meta.json has {json}", dir.display())]
    Mismatch {
        dir: PathBuf,
        key: String,
        yaml: String,
        json: String,
    },
}

/// The whole file: a single `model_info` map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub model_info: ModelInfo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `anec-<source name>-ctx<C>`.
    pub name: String,
    /// anec's version.
    pub version: String,
    pub description: String,
    pub license: String,
    pub framework: String,
    /// config.json `model_type`.
    pub architecture: String,
    /// `monolithic` for the one-package layout (where ANEMLL's runners look for it); absent
    /// for the chunked layout, which they take as the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    pub parameters: Parameters,
}

/// A LUT setting as the runners read it: the bit width, or the string `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LutBits {
    None,
    Bits(u32),
}

impl From<Option<u32>> for LutBits {
    fn from(b: Option<u32>) -> Self {
        b.map_or(LutBits::None, LutBits::Bits)
    }
}

impl Serialize for LutBits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LutBits::None => s.serialize_str("none"),
            LutBits::Bits(b) => s.serialize_u32(*b),
        }
    }
}

impl<'de> Deserialize<'de> for LutBits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bits(u32),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bits(b) => Ok(LutBits::Bits(b)),
            Raw::Word(w) if w == "none" => Ok(LutBits::None),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "LUT bits must be a number or \"none\", got {w:?}"
            ))),
        }
    }
}

/// `model_info.parameters`, in the contract's key order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    pub context_length: usize,
    pub batch_size: usize,
    /// Monolithic only: the layers' LUT bits (ANEMLL's `lut_bits`, which names the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lut_bits: Option<LutBits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lut_per_channel: Option<usize>,
    pub lut_embeddings: LutBits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lut_embeddings_per_channel: Option<usize>,
    pub lut_ffn: LutBits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lut_ffn_per_channel: Option<usize>,
    pub lut_lmhead: LutBits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lut_lmhead_per_channel: Option<usize>,
    /// 0 (and not written) for the monolithic layout.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_chunks: usize,
    pub model_prefix: String,
    /// File name of the embeddings part (`.mlpackage`, or `.mlmodelc` when compiled).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub embeddings: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lm_head: String,
    /// Chunk 01's file name; runners substitute `01ofNN`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ffn: String,
    /// The one package of the monolithic layout (then embeddings, lm_head, ffn are empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monolithic_model: Option<String>,
    pub split_lm_head: usize,
    /// Monolithic only: the package's functions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    pub lm_head_chunk_sizes: Vec<usize>,
    pub vocab_size: usize,
    pub argmax_in_model: bool,
    /// Only for sliding-window models: the (largest) window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Gemma 3 (ANEMLL 0.3.5): the rotate functions are in separate `_rot` packages (anec: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_rotate: Option<bool>,
    /// Gemma 3: `false`, the chunks hold a local (window) and a global (context) KV state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_cache: Option<bool>,
    /// Gemma 3: the fp16 range scale α folded into the weights (1 when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp16_scale: Option<f64>,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub state_name: String,
    // ---- anec's additions ----
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    /// Every chunk's file name, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_files: Vec<String>,
    /// `[start, end)` layer range of every chunk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_layers: Vec<[usize; 2]>,
    /// Where the original weights are (for `anec verify`).
    pub source: Source,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The model the output came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The hub id, when the model came from the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The absolute folder the weights were read from.
    pub path: String,
}

impl Meta {
    /// The YAML text (key order as the struct).
    pub fn to_yaml(&self) -> Result<String, MetaError> {
        serde_saphyr::to_string(self).map_err(|e| MetaError::Serialize(e.to_string()))
    }

    /// The JSON text (same content, pretty-printed, trailing newline).
    pub fn to_json(&self) -> Result<String, MetaError> {
        let mut s =
            serde_json::to_string_pretty(self).map_err(|e| MetaError::Serialize(e.to_string()))?;
        s.push('\n');
        Ok(s)
    }

    /// Writes `meta.yaml` and `meta.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), MetaError> {
        for (name, text) in [
            ("meta.yaml", self.to_yaml()?),
            ("meta.json", self.to_json()?),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| MetaError::Write { path, source })?;
        }
        Ok(())
    }

    /// Reads and checks `<dir>/meta.yaml`.
    pub fn read(dir: &Path) -> Result<Meta, MetaError> {
        Self::read_file(&dir.join("meta.yaml"), |t| {
            serde_saphyr::from_str(t).map_err(|e| e.to_string())
        })
    }

    /// Reads and checks `<dir>/meta.json` (what `verify` and `generate` read).
    pub fn read_json(dir: &Path) -> Result<Meta, MetaError> {
        Self::read_file(&dir.join("meta.json"), |t| {
            serde_json::from_str(t).map_err(|e| e.to_string())
        })
    }

    /// Reads `<dir>/meta.json` and `<dir>/meta.yaml`, each checked, and requires them to hold
    /// the same values key by key: the runners read the YAML, `verify` the JSON, so a check of
    /// one file alone would pass a wrong other one.
    pub fn read_both(dir: &Path) -> Result<Meta, MetaError> {
        let json = Self::read_json(dir)?;
        let yaml = Self::read(dir)?;
        let value =
            |m: &Meta| serde_json::to_value(m).map_err(|e| MetaError::Serialize(e.to_string()));
        if let Some((key, y, j)) = first_difference("", &value(&yaml)?, &value(&json)?) {
            return Err(MetaError::Mismatch {
                dir: dir.to_path_buf(),
                key,
                yaml: y,
                json: j,
            });
        }
        Ok(json)
    }

    fn read_file(
        path: &Path,
        parse: impl FnOnce(&str) -> Result<Meta, String>,
    ) -> Result<Meta, MetaError> {
        let text = std::fs::read_to_string(path).map_err(|source| MetaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let meta = parse(&text).map_err(|message| MetaError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        meta.model_info
            .parameters
            .check()
            .map_err(|(field, value, reason)| MetaError::Field {
                path: path.to_path_buf(),
                field,
                value,
                reason,
            })?;
        Ok(meta)
    }
}

/// The first key (a dotted path, `[i]` for list items) where `a` and `b` differ, with both values
/// as JSON text (`absent` for a missing key).
fn first_difference(
    at: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    let key = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k)));
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => {
                        if let Some(d) = first_difference(&key(k), u, v) {
                            return Some(d);
                        }
                    }
                    (u, v) => {
                        let show =
                            |o: Option<&Value>| o.map_or("absent".to_string(), Value::to_string);
                        return Some((key(k), show(u), show(v)));
                    }
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(&format!("{at}[{i}]"), u, v)),
        _ if a == b => None,
        _ => Some((at.to_string(), a.to_string(), b.to_string())),
    }
}

/// A refused field: its name, its value and why.
type FieldProblem = (&'static str, String, String);

impl Parameters {
    /// Checks what a reader relies on before sizing anything by it: the context and batch
    /// within bounds, the chunk files and layer ranges consistent, the LM-head parts summing to
    /// the vocabulary, and every package name a plain file name (a name with a separator or
    /// `..` would make a reader open a file outside the conversion folder).
    pub fn check(&self) -> Result<(), FieldProblem> {
        let bad = |field: &'static str, value: String, reason: String| Err((field, value, reason));
        if !(1..=MAX_CONTEXT_LENGTH).contains(&self.context_length) {
            return bad(
                "context_length",
                self.context_length.to_string(),
                format!("must be between 1 and {MAX_CONTEXT_LENGTH}"),
            );
        }
        if !(1..=self.context_length).contains(&self.batch_size) {
            return bad(
                "batch_size",
                self.batch_size.to_string(),
                format!(
                    "must be between 1 and context_length {}",
                    self.context_length
                ),
            );
        }
        if let Some(file) = &self.monolithic_model {
            return self.check_monolithic(file);
        }
        let names = [
            ("embeddings", &self.embeddings),
            ("lm_head", &self.lm_head),
            ("ffn", &self.ffn),
        ];
        let chunk_names = self.chunk_files.iter().map(|f| ("chunk_files", f));
        for (field, name) in names.into_iter().chain(chunk_names) {
            let mut parts = Path::new(name).components();
            let plain = matches!(
                (parts.next(), parts.next()),
                (Some(Component::Normal(_)), None)
            ) && !name.contains(['/', '\\']);
            if !plain {
                return bad(
                    field,
                    format!("{name:?}"),
                    "must be a file name inside the conversion folder".into(),
                );
            }
        }
        self.check_lm_head()?;
        if self.chunk_files.len() != self.num_chunks || self.chunk_layers.len() != self.num_chunks {
            return bad(
                "num_chunks",
                self.num_chunks.to_string(),
                format!(
                    "but {} chunk files and {} layer ranges",
                    self.chunk_files.len(),
                    self.chunk_layers.len()
                ),
            );
        }
        let mut next = 0;
        for r in &self.chunk_layers {
            if r[0] != next || r[1] <= r[0] {
                return bad(
                    "chunk_layers",
                    format!("{:?}", self.chunk_layers),
                    "must be consecutive non-empty ranges from layer 0".into(),
                );
            }
            next = r[1];
        }
        if next != self.num_layers {
            return bad(
                "chunk_layers",
                format!("{:?}", self.chunk_layers),
                format!("must end at num_layers {}", self.num_layers),
            );
        }
        Ok(())
    }

    /// The LM-head parts sum to the vocabulary.
    fn check_lm_head(&self) -> Result<(), FieldProblem> {
        let bad = |field: &'static str, value: String, reason: String| Err((field, value, reason));
        let sum = self
            .lm_head_chunk_sizes
            .iter()
            .try_fold(0usize, |a, &b| a.checked_add(b));
        if self.lm_head_chunk_sizes.len() != self.split_lm_head || sum != Some(self.vocab_size) {
            return bad(
                "lm_head_chunk_sizes",
                format!("{:?}", self.lm_head_chunk_sizes),
                format!(
                    "must split vocab_size {} into split_lm_head {} parts",
                    self.vocab_size, self.split_lm_head
                ),
            );
        }
        Ok(())
    }

    /// The monolithic layout: one plain file name, no chunk fields, the LM head split as
    /// the chunked layout's.
    fn check_monolithic(&self, file: &str) -> Result<(), FieldProblem> {
        let mut parts = Path::new(file).components();
        let plain = matches!(
            (parts.next(), parts.next()),
            (Some(Component::Normal(_)), None)
        ) && !file.contains(['/', '\\']);
        if !plain {
            return Err((
                "monolithic_model",
                format!("{file:?}"),
                "must be a file name inside the conversion folder".into(),
            ));
        }
        if self.num_chunks != 0 || !self.chunk_files.is_empty() || !self.chunk_layers.is_empty() {
            return Err((
                "num_chunks",
                self.num_chunks.to_string(),
                "a monolithic conversion has no chunks".into(),
            ));
        }
        if self.num_layers == 0 {
            return Err(("num_layers", "0".into(), "must be at least 1".into()));
        }
        self.check_lm_head()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Meta {
        Meta {
            model_info: ModelInfo {
                name: "anec-tiny-llama-ctx512".into(),
                version: "0.1.0".into(),
                description: "tiny-llama converted by anec for the Apple Neural Engine\n".into(),
                license: "see source model".into(),
                framework: "Core ML".into(),
                architecture: "llama".into(),
                model_type: None,
                parameters: Parameters {
                    context_length: 512,
                    batch_size: 64,
                    lut_bits: None,
                    lut_per_channel: None,
                    lut_embeddings: LutBits::None,
                    lut_embeddings_per_channel: None,
                    lut_ffn: LutBits::Bits(6),
                    lut_ffn_per_channel: Some(8),
                    lut_lmhead: LutBits::Bits(6),
                    lut_lmhead_per_channel: Some(8),
                    num_chunks: 2,
                    model_prefix: String::new(),
                    embeddings: "embeddings.mlpackage".into(),
                    lm_head: "lm_head_lut6.mlpackage".into(),
                    ffn: "combined_lut6_chunk_01of02.mlpackage".into(),
                    monolithic_model: None,
                    split_lm_head: 1,
                    functions: vec![],
                    lm_head_chunk_sizes: vec![512],
                    vocab_size: 512,
                    argmax_in_model: false,
                    sliding_window: None,
                    split_rotate: None,
                    single_cache: None,
                    fp16_scale: None,
                    num_layers: 4,
                    hidden_size: 64,
                    state_name: "model_model_kv_cache_0".into(),
                    num_attention_heads: 4,
                    num_key_value_heads: 2,
                    head_dim: 16,
                    chunk_files: vec![
                        "combined_lut6_chunk_01of02.mlpackage".into(),
                        "combined_lut6_chunk_02of02.mlpackage".into(),
                    ],
                    chunk_layers: vec![[0, 2], [2, 4]],
                    source: Source {
                        repo_id: None,
                        revision: None,
                        path: "/models/tiny-llama".into(),
                    },
                },
            },
        }
    }

    #[test]
    fn check_refuses_what_a_reader_would_size_or_join_by() {
        assert_eq!(sample().model_info.parameters.check(), Ok(()));
        let field = |edit: fn(&mut Parameters)| {
            let mut p = sample().model_info.parameters;
            edit(&mut p);
            p.check().map_err(|(field, value, _)| (field, value))
        };
        assert_eq!(
            field(|p| p.context_length = 3_000_000_000),
            Err(("context_length", "3000000000".into()))
        );
        assert_eq!(
            field(|p| p.chunk_files[1] = "../x.mlpackage".into()),
            Err(("chunk_files", "\"../x.mlpackage\"".into()))
        );
        assert_eq!(
            field(|p| p.lm_head = "a/b.mlpackage".into()),
            Err(("lm_head", "\"a/b.mlpackage\"".into()))
        );
        assert_eq!(
            field(|p| p.lm_head_chunk_sizes = vec![usize::MAX, 513]).map_err(|e| e.0),
            Err("lm_head_chunk_sizes")
        );
    }

    #[test]
    fn read_both_names_the_first_key_where_yaml_and_json_differ() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample();
        m.write(dir.path()).unwrap();
        assert_eq!(Meta::read_both(dir.path()).unwrap(), m);
        let yaml = m.to_yaml().unwrap();
        for (from, to, key, values) in [
            ("lut_ffn: 6", "lut_ffn: 4", "model_info.parameters.lut_ffn", "meta.yaml has 4, meta.json has 6"),
            (
                "    lut_ffn_per_channel: 8\n",
                "",
                "model_info.parameters.lut_ffn_per_channel",
                "meta.yaml has absent, meta.json has 8",
            ),
            (
                "- combined_lut6_chunk_02of02.mlpackage",
                "- other_02of02.mlpackage",
                "model_info.parameters.chunk_files[1]",
                "meta.yaml has \"other_02of02.mlpackage\", meta.json has \"combined_lut6_chunk_02of02.mlpackage\"",
            ),
        ] {
            assert!(yaml.contains(from), "{from:?} not in\n{yaml}");
            std::fs::write(dir.path().join("meta.yaml"), yaml.replacen(from, to, 1)).unwrap();
            let e = Meta::read_both(dir.path()).unwrap_err();
            assert!(matches!(e, MetaError::Mismatch { .. }), "{e}");
            let text = e.to_string();
            assert!(text.contains(&format!("disagree on {key}: {values}")), "{text}");
        }
    }

    #[test]
    fn yaml_keys_come_in_contract_order_and_round_trip() {
        let m = sample();
        let yaml = m.to_yaml().unwrap();
        let order = [
            "model_info:",
            "  name:",
            "  version:",
            "  description:",
            "  license:",
            "  framework:",
            "  architecture:",
            "  parameters:",
            "    context_length: 512",
            "    batch_size: 64",
            "    lut_embeddings: none",
            "    lut_ffn: 6",
            "    lut_ffn_per_channel: 8",
            "    lut_lmhead: 6",
            "    lut_lmhead_per_channel: 8",
            "    num_chunks: 2",
            "    model_prefix:",
            "    embeddings: embeddings.mlpackage",
            "    lm_head: lm_head_lut6.mlpackage",
            "    ffn: combined_lut6_chunk_01of02.mlpackage",
            "    split_lm_head: 1",
            "    lm_head_chunk_sizes:",
            "    vocab_size: 512",
            "    argmax_in_model: false",
            "    num_layers: 4",
            "    hidden_size: 64",
            "    state_name: model_model_kv_cache_0",
        ];
        let mut at = 0;
        for key in order {
            let found = yaml[at..]
                .find(key)
                .unwrap_or_else(|| panic!("{key:?} missing or out of order in:\n{yaml}"));
            at += found + key.len();
        }
        assert!(!yaml.contains("sliding_window"), "{yaml}");
        let back: Meta = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back, m);
        let json: Meta = serde_json::from_str(&m.to_json().unwrap()).unwrap();
        assert_eq!(json, m);
    }
}
