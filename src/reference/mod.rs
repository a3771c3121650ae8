//! The forward pass with HuggingFace transformers' semantics on the original weights (float32,
//! candle), with a KV cache: the yardstick everything else is measured against.
//!
//! Driven by its own reading of config.json ([`Config`]): RMSNorm, RoPE (rotate-half, HF's
//! inv_freq), GQA/MQA, q/k/v biases, per-head q/k norms, explicit head_dim, tied embeddings,
//! per-layer sliding windows (a query at `p` sees keys in `(p - window, p]`), a SiLU-gated MLP
//! (Gemma 3: tanh-GELU-gated, (1 + w) norms on both block outputs, scaled embeddings, per-layer RoPE),
//! the final norm and the LM head, with its own tensor names. It shares no code with `ane`,
//! `exec` or `arch` (only `source`'s list of files): `verify` compares two independent
//! computations.

mod config;
mod model;

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use thiserror::Error;

use crate::source::ModelFiles;

pub use config::{Config, Gemma, RopeKind};
pub use model::Cache;

/// Errors of the reference forward pass.
#[derive(Debug, Error)]
pub enum ReferenceError {
    #[error("no safetensors weight files given for the reference model")]
    NoWeights,
    #[error("cannot read safetensors weights {path}: {source}")]
    Open {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("tensor `{name}` is missing from the checkpoint")]
    Missing { name: String },
    #[error("tensor `{name}` has shape {got:?} but the config implies {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("cannot load tensor `{name}`: {source}")]
    Tensor {
        name: String,
        source: candle_core::Error,
    },
    #[error("the checkpoint has tensors the config does not use (a config mismatch?): {}", names.join(", "))]
    Unused { names: Vec<String> },
    #[error("cannot read {}: {source}", path.display())]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin} is not valid JSON: {source}")]
    ConfigJson {
        origin: String,
        source: serde_json::Error,
    },
    #[error("{origin}: {field} = {value}: {reason}")]
    BadConfig {
        origin: String,
        field: String,
        value: String,
        reason: &'static str,
    },
    #[error("config not usable by the reference: {0}")]
    Config(String),
    #[error("token id {id} at index {index} is outside the vocabulary of {vocab}")]
    Token { id: u32, index: usize, vocab: usize },
    #[error("reference forward pass failed: {0}")]
    Compute(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ReferenceError>;

/// A row-major f32 matrix `[rows, cols]` (logits `[n, vocab]` or hidden states `[n, hidden]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// Next-token logits `[n, vocab]`: row `i` is the distribution after token `i`.
pub type Logits = Matrix;

impl Matrix {
    /// Row `i` (panics if `i >= rows`, a caller bug).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Index of the largest value of row `i`; the first one on ties, as `torch.argmax` does.
    pub fn argmax(&self, i: usize) -> usize {
        argmax(self.row(i))
    }

    /// Rows stacked under each other (all must have `cols` columns).
    pub fn concat(parts: &[Matrix]) -> Matrix {
        let cols = parts.first().map_or(0, |p| p.cols);
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
        for p in parts {
            debug_assert_eq!(p.cols, cols);
            data.extend_from_slice(&p.data);
        }
        Matrix {
            rows: data.len().checked_div(cols).unwrap_or(0),
            cols,
            data,
        }
    }

    fn from_tensor(t: &Tensor) -> Result<Matrix> {
        let (rows, cols) = t.dims2()?;
        let data = t.flatten_all()?.to_vec1::<f32>()?;
        Ok(Matrix { rows, cols, data })
    }
}

/// Index of the first maximum of `v` (0 for an empty slice).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// The logits together with the hidden states after every layer.
#[derive(Clone, Debug)]
pub struct Trace {
    pub logits: Logits,
    /// `layers[i]`: the residual stream `[n, hidden]` after decoder layer `i` (before any norm).
    pub layers: Vec<Matrix>,
    /// The final norm applied to the last layer's output `[n, hidden]` (what the LM head reads;
    /// the last chunk of a converted model outputs this).
    pub final_norm: Matrix,
}

/// A greedy continuation.
#[derive(Clone, Debug)]
pub struct Greedy {
    /// The chosen tokens.
    pub ids: Vec<u32>,
    /// `[ids.len(), vocab]`: row `j` is the logits that chose `ids[j]`.
    pub logits: Logits,
}

/// The reference model: all weights in f32 on the CPU.
pub struct Reference {
    cfg: Config,
    model: model::Model,
    /// Every checkpoint tensor the model read, with its shape, in reading order.
    tensors: Vec<(String, Vec<usize>)>,
}

impl std::fmt::Debug for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reference")
            .field("model_type", &self.cfg.model_type)
            .field("num_layers", &self.cfg.num_layers)
            .finish_non_exhaustive()
    }
}

impl Reference {
    /// Loads the checkpoint `files` (as `source::resolve` found them) for `cfg`.
    pub fn load(cfg: &Config, files: &ModelFiles) -> Result<Reference> {
        Reference::load_weights(cfg, &files.weights)
    }

    /// The first `layers` decoder layers of the checkpoint only (a conversion made with
    /// `--num-layers`): the final norm and LM head follow layer `layers - 1`.
    pub fn load_first_layers(cfg: &Config, files: &ModelFiles, layers: usize) -> Result<Reference> {
        if layers == 0 || layers > cfg.num_layers {
            return Err(ReferenceError::Config(format!(
                "cannot keep {layers} of {} layers",
                cfg.num_layers
            )));
        }
        let mut cut = cfg.clone();
        cut.num_layers = layers;
        cut.sliding_window.truncate(layers);
        Reference::open(&cut, &files.weights, layers < cfg.num_layers)
    }

    /// Loads the checkpoint's safetensors files (one file or all shards) for `cfg`. Every
    /// tensor of the checkpoint must be used, apart from a stored RoPE table
    /// (`…rotary_emb.inv_freq`) and, when tied, a stored `lm_head.weight` copy.
    pub fn load_weights<P: AsRef<Path>>(cfg: &Config, weights: &[P]) -> Result<Reference> {
        Reference::open(cfg, weights, false)
    }

    fn open<P: AsRef<Path>>(
        cfg: &Config,
        weights: &[P],
        later_layers_unused: bool,
    ) -> Result<Reference> {
        cfg.validate("the reference config")?;
        if weights.is_empty() {
            return Err(ReferenceError::NoWeights);
        }
        for p in weights {
            if let Err(e) = std::fs::metadata(p.as_ref()) {
                return Err(ReferenceError::Open {
                    path: p.as_ref().to_path_buf(),
                    source: e.into(),
                });
            }
        }
        // SAFETY: the files are memory-mapped read-only; as for every mmap, they must not be
        // truncated by another process while we copy the tensors out (done in this call).
        let st = unsafe { MmapedSafetensors::multi(weights) }.map_err(|source| {
            ReferenceError::Open {
                path: weights[0].as_ref().to_path_buf(),
                source,
            }
        })?;
        let loader = Loader {
            st: &st,
            read: RefCell::new(Vec::new()),
        };
        let model = model::Model::load(cfg, &loader)?;
        let tensors = loader.read.into_inner();
        let read: HashSet<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        let ignorable = |n: &str| {
            n == "rotary_emb.inv_freq"
                || n.ends_with(".rotary_emb.inv_freq")
                || (cfg.tie_embeddings && n == "lm_head.weight")
        };
        let mut unused: Vec<String> = st
            .tensors()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|n| !read.contains(n.as_str()) && !ignorable(n))
            .filter(|n| !(later_layers_unused && layer_of(n).is_some_and(|i| i >= cfg.num_layers)))
            .collect();
        if !unused.is_empty() {
            unused.sort();
            return Err(ReferenceError::Unused { names: unused });
        }
        Ok(Reference {
            cfg: cfg.clone(),
            model,
            tensors,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Every checkpoint tensor the model read, with its shape, in reading order.
    pub fn tensors(&self) -> &[(String, Vec<usize>)] {
        &self.tensors
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> Cache {
        Cache::new(self.cfg.num_layers)
    }

    /// Runs `tokens` at positions `cache.len()..`, appends their keys/values to `cache` and
    /// returns the next-token logits `[tokens.len(), vocab]`.
    pub fn forward(&self, tokens: &[u32], cache: &mut Cache) -> Result<Logits> {
        Ok(self.run(tokens, cache, false)?.logits)
    }

    /// As [`Reference::forward`], also returning the hidden states after every layer.
    pub fn forward_traced(&self, tokens: &[u32], cache: &mut Cache) -> Result<Trace> {
        self.run(tokens, cache, true)
    }

    /// Greedy decoding: runs `prompt` on a fresh cache, then picks the argmax `max_new` times
    /// (stopping early after a token in `stop`).
    pub fn greedy(&self, prompt: &[u32], max_new: usize, stop: &[u32]) -> Result<Greedy> {
        let mut cache = self.new_cache();
        let mut ids = Vec::with_capacity(max_new);
        let mut rows = Vec::with_capacity(max_new);
        if max_new == 0 || prompt.is_empty() {
            return Ok(Greedy {
                ids,
                logits: Matrix {
                    rows: 0,
                    cols: self.cfg.vocab_size,
                    data: vec![],
                },
            });
        }
        let first = self.forward(prompt, &mut cache)?;
        let mut last = Matrix {
            rows: 1,
            cols: first.cols,
            data: first.row(first.rows - 1).to_vec(),
        };
        loop {
            let next = last.argmax(0) as u32;
            ids.push(next);
            rows.push(last);
            if ids.len() == max_new || stop.contains(&next) {
                break;
            }
            last = self.forward(&[next], &mut cache)?;
        }
        Ok(Greedy {
            ids,
            logits: Matrix::concat(&rows),
        })
    }

    fn run(&self, tokens: &[u32], cache: &mut Cache, trace: bool) -> Result<Trace> {
        for (index, &id) in tokens.iter().enumerate() {
            if id as usize >= self.cfg.vocab_size {
                return Err(ReferenceError::Token {
                    id,
                    index,
                    vocab: self.cfg.vocab_size,
                });
            }
        }
        if cache.layers.len() != self.cfg.num_layers {
            return Err(ReferenceError::Config(format!(
                "the cache has {} layers, the model {}",
                cache.layers.len(),
                self.cfg.num_layers
            )));
        }
        self.model.forward(tokens, cache, trace)
    }
}

/// Tensor access by HF name, checked against the shape the config implies, converted to f32.
struct Loader<'a> {
    st: &'a MmapedSafetensors,
    /// The names read so far, with the shapes they were checked against.
    read: RefCell<Vec<(String, Vec<usize>)>>,
}

/// `i` of a `model.layers.{i}.…` name.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

impl Loader<'_> {
    fn get(&self, name: &str, expected: &[usize]) -> Result<Tensor> {
        let view = self.st.get(name).map_err(|_| ReferenceError::Missing {
            name: name.to_string(),
        })?;
        self.read
            .borrow_mut()
            .push((name.to_string(), expected.to_vec()));
        if view.shape() != expected {
            return Err(ReferenceError::Shape {
                name: name.to_string(),
                expected: expected.to_vec(),
                got: view.shape().to_vec(),
            });
        }
        let t = self
            .st
            .load(name, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|source| ReferenceError::Tensor {
                name: name.to_string(),
                source,
            })?;
        Ok(t)
    }
}
