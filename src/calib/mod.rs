//! Calibration: statistics of the activations that reach every linear layer when the model
//! reads calibration text, gathered layer by layer while the parts are written, for
//! activation-weighted LUT quantization (docs/quantization.md).
//!
//! [`Calibrator`] embeds the calibration tokens once, then walks the model in order as the
//! chunk builder asks for each weight: it computes just far enough to reach that weight's
//! input ([`Site`]: q/k/v, o, gate/up, down, the LM head) and records per input channel
//! `E[x²]` there (and a sample of rows for measuring output error). One forward pass in all.
//! With `sequential`, every stage after a weight was quantized uses the quantized values the
//! builder reported back with [`Calibrator::record`], so each weight is calibrated on the
//! inputs it will really see in the converted model (GPTQ's order).

pub mod data;
pub mod forward;
pub mod sampled;

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use half::f16;

use crate::arch::DecoderConfig;
use crate::quant::gptq::Hessian;
use crate::quant::QuantError;
use crate::weights::{WeightError, WeightStore};

pub use forward::Site;

/// Errors of the calibration pass; each names the layer, site or token at fault.
#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error("calibration: non-finite activations in {site} (the checkpoint overflows in f32 on the calibration text)")]
    NonFinite { site: String },
    #[error("calibration: token id {id} is outside the vocabulary of {vocab}")]
    Token { id: usize, vocab: usize },
    #[error(
        "calibration: layer {asked} was asked for after layer {at} (layers must come in order)"
    )]
    Order { asked: usize, at: usize },
    #[error("calibration: no text to calibrate on")]
    Empty,
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error("calibration: sampling text from the model: {0}")]
    Reference(Box<crate::reference::ReferenceError>),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error("calibration: tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, CalibError>;

/// Where the calibration tokens come from (`--calibration`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Text: the built-in corpus or a file.
    Text(data::CalibrationSource),
    /// Text the model writes itself ([`sampled`]).
    Model,
}

/// The calibration sequences of `source` for the model in `files`, up to `max_tokens` tokens
/// in sequences of at most `seq_len`; `eos` ends a sampled sequence.
pub fn load(
    source: &Source,
    files: &crate::source::ModelFiles,
    eos: &[u32],
    max_tokens: usize,
    seq_len: usize,
) -> Result<data::CalibrationSet> {
    match source {
        Source::Text(text) => Ok(data::load(text, &files.dir, max_tokens, seq_len)?),
        Source::Model => sampled::generate(files, eos, max_tokens, seq_len),
    }
}

/// Rows of activations kept per site for [`SiteStats::output_error`].
pub const SAMPLE_ROWS: usize = 256;

/// What one site's inputs looked like over the calibration tokens.
pub struct SiteStats {
    /// `E[x_j²]` per input channel `j`.
    pub mean_sq: Vec<f64>,
    /// Up to [`SAMPLE_ROWS`] input rows `[s, in]`, spread over the calibration tokens.
    sample: Tensor,
    /// The damped factorization of `E[x xᵀ]`, with [`Method::Gptq`], made once for the
    /// weights that share the site.
    hessian: Option<std::result::Result<Hessian, QuantError>>,
}

impl std::fmt::Debug for SiteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteStats")
            .field("channels", &self.mean_sq.len())
            .field("hessian", &self.hessian.is_some())
            .finish_non_exhaustive()
    }
}

/// GPTQ's dampening: 1 % of the mean diagonal of `H`.
pub const GPTQ_DAMP: f64 = 0.01;

impl SiteStats {
    /// The importance of each input channel for the weighted k-means: `E[x_j²]`, floored at
    /// 1e-6 of the mean so that a channel that never fires still places its weights.
    pub fn importance(&self) -> Vec<f64> {
        let mean = self.mean_sq.iter().sum::<f64>() / self.mean_sq.len().max(1) as f64;
        let floor = (mean * 1e-6).max(f64::MIN_POSITIVE);
        self.mean_sq.iter().map(|&v| v.max(floor)).collect()
    }

    /// The damped Hessian of this site for LUT-GPTQ, when the full `E[x xᵀ]` was gathered.
    pub fn hessian(&self) -> Option<std::result::Result<&Hessian, QuantError>> {
        self.hessian
            .as_ref()
            .map(|h| h.as_ref().map_err(Clone::clone))
    }

    /// `‖(W − Ŵ) X‖ / ‖W X‖` over the sampled input rows, for `W` `[rows, in]` (row-major f32)
    /// and its quantized `Ŵ`.
    pub fn output_error(&self, w: &[f32], w_hat: &[f16], rows: usize) -> Result<f64> {
        let cols = self.mean_sq.len();
        let w = Tensor::from_slice(w, (rows, cols), &Device::Cpu)?;
        let hat: Vec<f32> = w_hat.iter().map(|v| v.to_f32()).collect();
        let hat = Tensor::from_vec(hat, (rows, cols), &Device::Cpu)?;
        let y = self.sample.matmul(&w.t()?)?;
        let dy = self.sample.matmul(&(&w - &hat)?.t()?)?;
        let num = dy.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        let den = y.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        Ok(if den > 0.0 { (num / den).sqrt() } else { 0.0 })
    }
}

/// Accumulates one site's statistics over the sequences.
struct SiteAcc {
    sum_sq: Vec<f64>,
    gram: Option<Option<Tensor>>,
    rows: usize,
    sample: Vec<Tensor>,
    sampled: usize,
}

impl SiteAcc {
    /// With `gram`, also `Σ x xᵀ`.
    fn new(gram: bool) -> Self {
        SiteAcc {
            sum_sq: Vec::new(),
            gram: gram.then_some(None),
            rows: 0,
            sample: Vec::new(),
            sampled: 0,
        }
    }

    /// Adds `x` (`[n, in]`); keeps every `stride`-th row for the sample.
    fn add(&mut self, x: &Tensor, stride: usize) -> Result<()> {
        let sq = x.sqr()?.sum(0)?.to_vec1::<f32>()?;
        if self.sum_sq.is_empty() {
            self.sum_sq = vec![0.0; sq.len()];
        }
        for (a, v) in self.sum_sq.iter_mut().zip(sq) {
            *a += v as f64;
        }
        if let Some(g) = &mut self.gram {
            let xx = x.t()?.matmul(x)?;
            *g = Some(match g.take() {
                Some(prev) => (prev + xx)?,
                None => xx,
            });
        }
        let n = x.dim(0)?;
        // Rows whose global index is a multiple of `stride`.
        let first = (stride - self.rows % stride) % stride;
        let picks: Vec<u32> = (first..n)
            .step_by(stride)
            .take(SAMPLE_ROWS - self.sampled)
            .map(|r| r as u32)
            .collect();
        if !picks.is_empty() {
            let idx = Tensor::from_vec(picks.clone(), picks.len(), &Device::Cpu)?;
            self.sample.push(x.index_select(&idx, 0)?);
            self.sampled += picks.len();
        }
        self.rows += n;
        Ok(())
    }

    fn finish(self) -> Result<SiteStats> {
        let rows = self.rows.max(1) as f64;
        let cols = self.sum_sq.len();
        let hessian = match self.gram.flatten() {
            Some(g) => {
                let g = (g / rows)?.flatten_all()?.to_vec1::<f32>()?;
                Some(Hessian::new(g, cols, GPTQ_DAMP))
            }
            None => None,
        };
        Ok(SiteStats {
            mean_sq: self.sum_sq.iter().map(|s| s / rows).collect(),
            sample: Tensor::cat(&self.sample, 0)?,
            hessian,
        })
    }
}

/// How calibration statistics shape the LUTs (`--calibration-method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Each weight counts `E[x_j²]` of its input channel in the k-means (diagonal Hessian).
    Weighted,
    /// The weighted LUT, then error feedback through the full `E[x xᵀ]`.
    Gptq,
}

/// How the calibration pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Feed each layer the outputs of the already-quantized layers below it.
    pub sequential: bool,
    pub method: Method,
}

/// How far layer `cursor` has been computed, holding what the next stage reads.
enum Stage {
    /// Only the layer's input.
    Input,
    /// q/k/v's input measured.
    Qkv { h: Vec<Tensor> },
    /// o_proj's input measured.
    O { a: Vec<Tensor> },
    /// gate/up's input measured: the residual `r` and its norm `h`.
    GateUp { r: Vec<Tensor>, h: Vec<Tensor> },
    /// down_proj's input `m` measured.
    Down { r: Vec<Tensor>, m: Vec<Tensor> },
}

/// The calibration pass, advanced site by site as the parts are built. The model is passed to
/// each call (the same `cfg` and `ws` every time), so the pass borrows nothing between calls.
pub struct Calibrator {
    /// Layers converted (`--num-layers`).
    layers: usize,
    opts: Options,
    rope: forward::Rope,
    /// Input of layer `cursor`, one `[n, H]` per sequence.
    hidden: Vec<Tensor>,
    cursor: usize,
    stage: Stage,
    /// Statistics of layer `cursor`'s sites measured so far.
    stats: HashMap<Site, SiteStats>,
    /// Quantized weights of layer `cursor` reported by the builder (`[out, in]` f32).
    quantized: HashMap<String, Tensor>,
    head: Option<SiteStats>,
    tokens: usize,
    seconds: f64,
}

impl Calibrator {
    /// Embeds `sequences` (token ids) for a model with `layers` layers converted.
    pub fn new(
        cfg: &DecoderConfig,
        ws: &WeightStore,
        layers: usize,
        sequences: &[Vec<u32>],
        opts: Options,
    ) -> Result<Calibrator> {
        let t0 = Instant::now();
        let sequences: Vec<&Vec<u32>> = sequences.iter().filter(|s| !s.is_empty()).collect();
        if sequences.is_empty() {
            return Err(CalibError::Empty);
        }
        let longest = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        let hidden = sequences
            .iter()
            .map(|s| forward::embed(cfg, ws, s))
            .collect::<Result<Vec<_>>>()?;
        Ok(Calibrator {
            layers,
            opts,
            rope: forward::Rope::new(cfg, longest)?,
            tokens: sequences.iter().map(|s| s.len()).sum(),
            hidden,
            cursor: 0,
            stage: Stage::Input,
            stats: HashMap::new(),
            quantized: HashMap::new(),
            head: None,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// Seconds spent in the calibration pass so far.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }

    /// The statistics of the input of weight `name` (a layer's linear weight), or of the LM
    /// head's input (the final-norm output) when `lm_head`. `None` for a weight that reads no
    /// calibrated site (the embedding table, layers beyond `--num-layers`). Weights must be
    /// asked for in the order the model computes them.
    pub fn stats(
        &mut self,
        cfg: &DecoderConfig,
        ws: &WeightStore,
        name: &str,
        lm_head: bool,
    ) -> Result<Option<&SiteStats>> {
        let t0 = Instant::now();
        let found = if lm_head {
            self.head_stats(cfg, ws)?;
            true
        } else {
            match Site::of(name) {
                Some((layer, site)) if layer < self.layers => {
                    if layer < self.cursor {
                        return Err(CalibError::Order {
                            asked: layer,
                            at: self.cursor,
                        });
                    }
                    while self.cursor < layer || !self.stats.contains_key(&site) {
                        self.step(cfg, ws)?;
                    }
                    true
                }
                _ => false,
            }
        };
        self.seconds += t0.elapsed().as_secs_f64();
        Ok(match (found, lm_head) {
            (false, _) => None,
            (true, true) => self.head.as_ref(),
            (true, false) => Site::of(name).and_then(|(_, site)| self.stats.get(&site)),
        })
    }

    /// Tells the pass the quantized values of weight `name` (`[rows, in]`); with
    /// `Options::sequential`, everything computed after it in the model uses them.
    pub fn record(&mut self, name: &str, rows: usize, decoded: &[f16]) -> Result<()> {
        if !self.opts.sequential {
            return Ok(());
        }
        if let Some((layer, _)) = Site::of(name) {
            if layer == self.cursor {
                let cols = decoded.len() / rows.max(1);
                let v: Vec<f32> = decoded.iter().map(|h| h.to_f32()).collect();
                let t = Tensor::from_vec(v, (rows, cols), &Device::Cpu)?;
                self.quantized.insert(name.to_string(), t);
            }
        }
        Ok(())
    }

    /// Computes the next stage of layer `cursor`, measuring the site it reaches; after
    /// down_proj's, moves on to the next layer.
    fn step(&mut self, cfg: &DecoderConfig, ws: &WeightStore) -> Result<()> {
        let none = HashMap::new();
        let w = forward::Weights {
            cfg,
            ws,
            replace: if self.opts.sequential {
                &self.quantized
            } else {
                &none
            },
        };
        let i = self.cursor;
        let stride = self.tokens.div_ceil(SAMPLE_ROWS).max(1);
        let gram = self.opts.method == Method::Gptq;
        let measure = |site: Site, xs: &[Tensor]| -> Result<SiteStats> {
            let mut acc = SiteAcc::new(gram);
            for x in xs {
                forward::finite(x, || format!("layer {i} (the input of {site:?})"))?;
                acc.add(x, stride)?;
            }
            acc.finish()
        };
        let (stage, measured) = match std::mem::replace(&mut self.stage, Stage::Input) {
            Stage::Input => {
                let h = forward::input_norm(&w, i, &self.hidden)?;
                let s = measure(Site::Qkv, &h)?;
                (Stage::Qkv { h }, Some((Site::Qkv, s)))
            }
            Stage::Qkv { h } => {
                let a = forward::attention(&w, &self.rope, i, &h)?;
                let s = measure(Site::O, &a)?;
                (Stage::O { a }, Some((Site::O, s)))
            }
            Stage::O { a } => {
                let (r, h) = forward::post_attention(&w, i, &self.hidden, &a)?;
                let s = measure(Site::GateUp, &h)?;
                (Stage::GateUp { r, h }, Some((Site::GateUp, s)))
            }
            Stage::GateUp { r, h } => {
                let m = forward::mlp_inner(&w, i, &h)?;
                let s = measure(Site::Down, &m)?;
                (Stage::Down { r, m }, Some((Site::Down, s)))
            }
            Stage::Down { r, m } => {
                self.hidden = forward::output(&w, i, &r, &m)?;
                (Stage::Input, None)
            }
        };
        self.stage = stage;
        match measured {
            Some((site, s)) => {
                self.stats.insert(site, s);
            }
            None => {
                self.cursor += 1;
                self.stats.clear();
                self.quantized.clear();
            }
        }
        Ok(())
    }

    fn head_stats(&mut self, cfg: &DecoderConfig, ws: &WeightStore) -> Result<()> {
        if self.head.is_some() {
            return Ok(());
        }
        while self.cursor < self.layers {
            self.step(cfg, ws)?;
        }
        let stride = self.tokens.div_ceil(SAMPLE_ROWS).max(1);
        let mut acc = SiteAcc::new(self.opts.method == Method::Gptq);
        for x in &self.hidden {
            let normed = forward::final_norm(cfg, ws, x)?;
            forward::finite(&normed, || "the final norm's output".to_string())?;
            acc.add(&normed, stride)?;
        }
        self.head = Some(acc.finish()?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Reference;
    use crate::source::{resolve, ModelSpec};

    fn fixture(name: &str) -> (DecoderConfig, crate::source::ModelFiles) {
        let dir = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let files = resolve(&ModelSpec {
            model: dir,
            revision: None,
            offline: true,
        })
        .unwrap();
        (
            DecoderConfig::from_config_file(&files.config).unwrap(),
            files,
        )
    }

    /// The layer-by-layer pass computes what `reference` computes: the final-norm output of an
    /// 84-token sequence (past Mistral's window of 16) agrees to f32 round-off on every fixture.
    #[test]
    fn layer_by_layer_pass_matches_the_reference() {
        for name in ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-mistral"] {
            let (cfg, files) = fixture(name);
            let ws = WeightStore::open(&files).unwrap();
            let ids: Vec<u32> = (0..84u32).map(|i| (i * 37 + 5) % 500).collect();
            let mut c = Calibrator::new(
                &cfg,
                &ws,
                cfg.num_layers,
                std::slice::from_ref(&ids),
                Options {
                    sequential: false,
                    method: Method::Weighted,
                },
            )
            .unwrap();
            c.head_stats(&cfg, &ws).unwrap();
            assert_eq!(c.cursor, cfg.num_layers);
            let ours = forward::final_norm(&cfg, &ws, &c.hidden[0])
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let ref_cfg = crate::reference::Config::from_file(&files.config).unwrap();
            let reference = Reference::load(&ref_cfg, &files).unwrap();
            let trace = reference
                .forward_traced(&ids, &mut reference.new_cache())
                .unwrap();
            let theirs = &trace.final_norm.data;
            assert_eq!(ours.len(), theirs.len(), "{name}");
            let worst = ours
                .iter()
                .zip(theirs)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "{name}: max |Δ| {worst}");
            // E[x²] of the head's input is the mean over rows of the squared normed states.
            let h = cfg.hidden_size;
            let head = c.head.as_ref().unwrap();
            let col0: f64 = (0..ids.len())
                .map(|r| (theirs[r * h] as f64).powi(2))
                .sum::<f64>()
                / ids.len() as f64;
            assert!(
                (head.mean_sq[0] - col0).abs() <= 1e-4 * col0.max(1e-6),
                "{name}"
            );
        }
    }

    #[test]
    fn layers_must_be_asked_for_in_order() {
        let (cfg, files) = fixture("tiny-llama");
        let ws = WeightStore::open(&files).unwrap();
        let mut c = Calibrator::new(
            &cfg,
            &ws,
            4,
            &[vec![1, 2, 3]],
            Options {
                sequential: true,
                method: Method::Weighted,
            },
        )
        .unwrap();
        assert!(c
            .stats(&cfg, &ws, "model.layers.2.mlp.down_proj.weight", false)
            .unwrap()
            .is_some());
        let err = c
            .stats(&cfg, &ws, "model.layers.1.mlp.down_proj.weight", false)
            .unwrap_err();
        assert!(
            matches!(err, CalibError::Order { asked: 1, at: 2 }),
            "{err}"
        );
        // The embedding table reads no calibrated site.
        assert!(c
            .stats(&cfg, &ws, "model.embed_tokens.weight", false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn output_error_is_zero_for_exact_weights_and_relative() {
        let sample = Tensor::from_vec(vec![1f32, 0.0, 0.0, 1.0], (2, 2), &Device::Cpu).unwrap();
        let s = SiteStats {
            mean_sq: vec![0.5, 0.5],
            sample,
            hessian: None,
        };
        let w = [1f32, 0.0, 0.0, 2.0];
        let exact: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        assert_eq!(s.output_error(&w, &exact, 2).unwrap(), 0.0);
        // Ŵ = [[1,0],[0,1]]: ‖ΔW X‖ = 1, ‖W X‖ = √5.
        let hat: Vec<f16> = [1f32, 0.0, 0.0, 1.0]
            .iter()
            .map(|&v| f16::from_f32(v))
            .collect();
        let e = s.output_error(&w, &hat, 2).unwrap();
        assert!((e - 1.0 / 5f64.sqrt()).abs() < 1e-6, "{e}");
    }
}
