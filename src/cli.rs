//! The command line of the `anec` binary: clap structs close to the flags, resolved into the
//! library's validated settings (`ConvertPlan`, verify options) before any work runs. It belongs
//! to the binary (declared from main.rs): the library never sees clap.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use anec::calib::{data::CalibrationSource, Source};
use anec::convert::{Chunks, Compile, ConvertPlan, ReportFormat, Target};
use anec::exec::Precision;
use anec::quant::LutSpec;
use anec::source::ModelSpec;
use anec::verify::{GenerateOptions, ThresholdOverrides, VerifyOptions};

/// Convert HuggingFace LLMs into Core ML packages for the Apple Neural Engine, and check them on the CPU.
#[derive(Debug, Parser)]
#[command(name = "anec", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert a model (hub id or local folder) into embeddings, transformer chunks and LM head packages.
    Convert(ConvertArgs),
    /// Show what a .mlpackage holds: functions, inputs/outputs/states, ops, weights, sizes.
    Inspect(InspectArgs),
    /// Run the converted packages on the CPU and compare them with the original model.
    Verify(VerifyArgs),
    /// Greedy generation from the converted packages on the CPU.
    Generate(GenerateArgs),
    /// Check packages against the Neural Engine rules (`anec lint --rules` lists them).
    Lint(LintArgs),
    /// Run one function of one package on the CPU: JSON tensors in, JSON tensors out.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// HuggingFace hub id (org/name) or a local folder with config.json and safetensors.
    #[arg(long, short = 'm', value_name = "ID|DIR")]
    pub model: String,
    /// Hub revision: branch, tag or commit.
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Use only the local HF cache, never the network (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Output folder [default: ./<model name>-anec].
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Replace the output folder if it exists.
    #[arg(long)]
    pub force: bool,
    /// Context length C: the KV cache and causal mask width.
    #[arg(long, default_value_t = 512, value_name = "C")]
    pub context_length: usize,
    /// Prefill batch B: tokens per `prefill` call.
    #[arg(long, default_value_t = 64, value_name = "B")]
    pub batch_size: usize,
    /// Number of transformer chunks, or `auto` (smallest count whose files fit --max-chunk-mb).
    #[arg(long, default_value = "2", value_name = "N|auto")]
    pub chunks: String,
    /// With --chunks auto: the largest chunk file allowed, in MiB (the iOS per-file limit is 1024).
    #[arg(long, default_value_t = 1024, value_name = "MB")]
    pub max_chunk_mb: u64,
    /// Prefix of every package name (P_embeddings.mlpackage, ...).
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// LM head outputs the argmax of each part instead of logits.
    #[arg(long)]
    pub argmax: bool,
    /// LUT for the transformer chunks: `none`, BITS or BITS,GROUP (bits 1,2,3,4,6,8; group 8 when not given).
    #[arg(long, default_value = "6", value_name = "none|B[,G]")]
    pub lut: String,
    /// LUT for the LM head.
    #[arg(long, default_value = "6", value_name = "none|B[,G]")]
    pub lut_lmhead: String,
    /// LUT for the embeddings table.
    #[arg(long, default_value = "none", value_name = "none|B[,G]")]
    pub lut_embed: String,
    /// Calibration text for activation-weighted LUTs: `builtin` (a corpus shipped with anec), a
    /// FILE (plain text, or JSONL with `text` or chat `messages`), `self` (text the model
    /// samples itself; holds the model in f32, 4 bytes a parameter), or `none` (plain k-means).
    #[arg(long, default_value = "builtin", value_name = "builtin|self|none|FILE")]
    pub calibration: String,
    /// At most this many calibration tokens.
    #[arg(long, default_value_t = 2048, value_name = "N")]
    pub calibration_tokens: usize,
    /// Which inputs each layer is calibrated on: those the quantized layers below it produce
    /// (`quantized`), or those of the original model (`original`).
    #[arg(long, default_value = "original", value_parser = ["quantized", "original"])]
    pub calibration_inputs: String,
    /// How calibration shapes the LUTs: `weighted` (k-means weighted by each input channel's
    /// E[x²]) or `gptq` (that, then error feedback through the full E[xxᵀ]).
    #[arg(long, default_value = "weighted", value_parser = ["weighted", "gptq"])]
    pub calibration_method: String,
    /// Gemma 3's fp16 range scale α (embeddings and the block-output norm gains × α, exact):
    /// `auto` measures the f32 reference's residual peak over the calibration text, `none`, or α.
    #[arg(long, default_value = "auto", value_name = "auto|none|ALPHA")]
    pub fp16_scale: String,
    /// Convert only the first K layers (a quick debug build).
    #[arg(long, value_name = "K")]
    pub num_layers: Option<usize>,
    /// Print the plan (parts, layer ranges, estimated sizes) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Compile every package to .mlmodelc with `xcrun coremlcompiler` (default: when it is on PATH).
    #[arg(long, conflicts_with = "no_compile")]
    pub compile: bool,
    /// Never compile to .mlmodelc.
    #[arg(long)]
    pub no_compile: bool,
    /// No progress display.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print a machine-readable JSON summary on stdout, the per-tensor quantization rows included.
    #[arg(long)]
    pub json: bool,
    /// Write the per-tensor quantization rows to FILE: CSV (`.csv`) or JSON (`.json`).
    #[arg(long, value_name = "FILE", conflicts_with = "dry_run")]
    pub report: Option<PathBuf>,
    /// Make Neural Engine lint findings errors: exit 2 and write nothing.
    #[arg(long)]
    pub strict: bool,
    /// One package, [P_]monolithic_full[_lutB].mlpackage, holding the embeddings, every layer
    /// and the LM head (ANEMLL 0.3.5's monolithic layout) instead of separate parts.
    #[arg(long, conflicts_with_all = ["chunks", "max_chunk_mb"])]
    pub monolithic: bool,
    /// Where the output must load: `ios` refuses a --monolithic package over iOS's 1 GiB
    /// per-file limit; `macos` allows it.
    #[arg(long, default_value = "ios", value_parser = ["ios", "macos"])]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The .mlpackage folder.
    pub package: PathBuf,
    /// JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also run `anec lint` on the package.
    #[arg(long)]
    pub lint: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The .mlpackage folder.
    pub package: PathBuf,
    /// The function [default: the package's default function].
    #[arg(long, value_name = "NAME")]
    pub function: Option<String>,
    /// A JSON file `{"name": {"dtype": "fp16"|"fp32"|"int32", "shape": [..], "data": [..]}}`;
    /// states start at zero.
    #[arg(long, value_name = "FILE")]
    pub inputs: PathBuf,
    /// Round every op to fp16 as the Neural Engine does.
    #[arg(long)]
    pub fp16: bool,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// .mlpackage folders, or folders holding them (an `anec convert` output).
    #[arg(required_unless_present = "rules")]
    pub paths: Vec<PathBuf>,
    /// Exit 2 when there is any finding.
    #[arg(long)]
    pub strict: bool,
    /// Print the rule table with each rule's source, and nothing else.
    #[arg(long)]
    pub rules: bool,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The folder `anec convert` wrote.
    pub output: PathBuf,
    /// The original model (hub id or folder) [default: the source recorded in meta.json].
    #[arg(long, short = 'm', value_name = "ID|DIR")]
    pub model: Option<String>,
    /// Text to evaluate (repeatable) [default: a built-in text of a few hundred tokens].
    #[arg(long, value_name = "TEXT")]
    pub prompt: Vec<String>,
    /// Greedy continuation tokens to compare.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub tokens: usize,
    /// Round every op to fp16 as the Neural Engine does.
    #[arg(long)]
    pub fp16: bool,
    /// Fail below this top-1 agreement (fraction) [default: 0.99 fp16, LUT thresholds from the meta].
    #[arg(long, value_name = "F")]
    pub min_top1: Option<f64>,
    /// Fail above this mean KL(reference‖converted) [default: 1e-4 fp16, LUT thresholds from the meta].
    #[arg(long, value_name = "KL")]
    pub max_kl: Option<f64>,
    /// Fail below this per-chunk hidden-state cosine [default: 0.99 fp16, 0.9 with LUTs].
    #[arg(long, value_name = "C")]
    pub min_cosine: Option<f64>,
    /// Use only the local HF cache for the original model.
    #[arg(long)]
    pub offline: bool,
    /// Print a machine-readable JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The folder `anec convert` wrote.
    pub output: PathBuf,
    /// The prompt.
    #[arg(long, short = 'p', value_name = "TEXT")]
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub max_tokens: usize,
    /// Round every op to fp16 as the Neural Engine does.
    #[arg(long)]
    pub fp16: bool,
}

/// A flag whose value cannot be used, named with the value.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {value:?}: {reason}")]
pub struct CliError {
    pub flag: &'static str,
    pub value: String,
    pub reason: String,
}

impl ConvertArgs {
    /// `--report FILE` with its format, refused (naming the flag and file) unless it ends in
    /// `.csv` or `.json`; checked before any conversion work.
    pub fn report_file(&self) -> Result<Option<(PathBuf, ReportFormat)>, CliError> {
        let Some(path) = &self.report else {
            return Ok(None);
        };
        match ReportFormat::for_path(path) {
            Some(format) => Ok(Some((path.clone(), format))),
            None => Err(CliError {
                flag: "--report",
                value: path.display().to_string(),
                reason: "the file name must end in .csv or .json".to_string(),
            }),
        }
    }

    /// Resolves defaults and flag interplay into the library's plan; `ConvertPlan::validate`
    /// then checks what needs no model (sizes, bits), `convert::run` what needs the config.
    pub fn into_plan(self) -> Result<ConvertPlan, CliError> {
        let lut = |flag: &'static str, value: &str| {
            LutSpec::parse_optional(value).map_err(|e| CliError {
                flag,
                value: value.to_string(),
                reason: e.to_string(),
            })
        };
        let chunks = match self.chunks.as_str() {
            "auto" => Chunks::Auto {
                max_chunk_mb: self.max_chunk_mb,
            },
            n => Chunks::Count(n.parse().map_err(|_| CliError {
                flag: "--chunks",
                value: n.to_string(),
                reason: "expected a number of chunks or `auto`".to_string(),
            })?),
        };
        let output = self.output.unwrap_or_else(|| default_output(&self.model));
        let mut plan = ConvertPlan::new(
            ModelSpec {
                model: self.model,
                revision: self.revision,
                offline: self.offline,
            },
            output,
        );
        plan.force = self.force;
        plan.context_length = self.context_length;
        plan.batch_size = self.batch_size;
        plan.chunks = chunks;
        plan.prefix = self.prefix.unwrap_or_default();
        plan.argmax = self.argmax;
        plan.lut_ffn = lut("--lut", &self.lut)?;
        plan.lut_lmhead = lut("--lut-lmhead", &self.lut_lmhead)?;
        plan.lut_embed = lut("--lut-embed", &self.lut_embed)?;
        plan.calibration = match self.calibration.as_str() {
            "none" => None,
            "builtin" => Some(Source::Text(CalibrationSource::Builtin)),
            "self" => Some(Source::Model),
            file => Some(Source::Text(CalibrationSource::File(PathBuf::from(file)))),
        };
        plan.calibration_tokens = self.calibration_tokens;
        plan.calibration_sequential = self.calibration_inputs == "quantized";
        plan.calibration_method = if self.calibration_method == "gptq" {
            anec::calib::Method::Gptq
        } else {
            anec::calib::Method::Weighted
        };
        plan.fp16_scale = match self.fp16_scale.as_str() {
            "auto" => anec::convert::Fp16Scale::Auto,
            "none" => anec::convert::Fp16Scale::Off,
            v => match v.parse::<f64>() {
                Ok(a) => anec::convert::Fp16Scale::Value(a),
                Err(_) => {
                    return Err(CliError {
                        flag: "--fp16-scale",
                        value: v.to_string(),
                        reason: "must be auto, none or a number in (0, 1]".to_string(),
                    })
                }
            },
        };
        plan.num_layers = self.num_layers;
        plan.dry_run = self.dry_run;
        plan.quiet = self.quiet || self.json;
        plan.strict = self.strict;
        plan.monolithic = self.monolithic;
        plan.target = if self.target == "macos" {
            Target::Macos
        } else {
            Target::Ios
        };
        plan.compile = match (self.compile, self.no_compile) {
            (true, _) => Compile::Always,
            (_, true) => Compile::Never,
            _ => Compile::Auto,
        };
        Ok(plan)
    }
}

impl VerifyArgs {
    pub fn into_options(self) -> VerifyOptions {
        VerifyOptions {
            output: self.output,
            model: self.model.map(|model| ModelSpec {
                model,
                revision: None,
                offline: self.offline,
            }),
            prompts: self.prompt,
            tokens: self.tokens,
            precision: precision(self.fp16),
            offline: self.offline,
            overrides: ThresholdOverrides {
                min_top1: self.min_top1,
                max_mean_kl: self.max_kl,
                min_chunk_cosine: self.min_cosine,
            },
        }
    }
}

impl GenerateArgs {
    pub fn into_options(self) -> GenerateOptions {
        GenerateOptions {
            max_tokens: self.max_tokens,
            precision: precision(self.fp16),
            ..GenerateOptions::new(self.output, self.prompt)
        }
    }
}

/// `--fp16` as the interpreter's precision.
pub fn precision(fp16: bool) -> Precision {
    if fp16 {
        Precision::F16
    } else {
        Precision::F32
    }
}

/// `./<last component of the model id or folder>-anec`.
fn default_output(model: &str) -> PathBuf {
    let name = Path::new(model.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .unwrap_or_else(|| "model".to_string());
    PathBuf::from(format!("{name}-anec"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn convert_defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["anec", "convert", "--model", "m"]).unwrap();
        let Command::Convert(a) = cli.command else {
            panic!("not convert")
        };
        assert_eq!((a.context_length, a.batch_size), (512, 64));
        assert_eq!(
            (
                a.chunks.as_str(),
                a.lut.as_str(),
                a.lut_lmhead.as_str(),
                a.lut_embed.as_str()
            ),
            ("2", "6", "6", "none")
        );
    }

    fn plan(args: &[&str]) -> Result<ConvertPlan, CliError> {
        let cli =
            Cli::try_parse_from([&["anec", "convert", "--model", "org/My-Model"], args].concat())
                .unwrap();
        let Command::Convert(a) = cli.command else {
            panic!("not convert")
        };
        a.into_plan()
    }

    #[test]
    fn lut_flags_resolve_bits_and_groups() {
        let p = plan(&["--lut", "4,16", "--lut-lmhead", "none", "--lut-embed", "8"]).unwrap();
        assert_eq!(p.lut_ffn, Some(LutSpec::new(4, Some(16)).unwrap()));
        assert_eq!(p.lut_lmhead, None);
        assert_eq!(p.lut_embed, Some(LutSpec::new(8, Some(8)).unwrap()));
        let p = plan(&[]).unwrap();
        assert_eq!(
            p.lut_ffn,
            Some(LutSpec::new(6, Some(8)).unwrap()),
            "--lut 6 means 6 bits, group 8"
        );
    }

    #[test]
    fn bad_lut_and_chunks_name_the_flag_and_value() {
        let e = plan(&["--lut", "5"]).unwrap_err();
        assert_eq!((e.flag, e.value.as_str()), ("--lut", "5"));
        let e = plan(&["--chunks", "two"]).unwrap_err();
        assert_eq!((e.flag, e.value.as_str()), ("--chunks", "two"));
        assert_eq!(
            plan(&["--chunks", "auto", "--max-chunk-mb", "300"])
                .unwrap()
                .chunks,
            Chunks::Auto { max_chunk_mb: 300 }
        );
    }

    #[test]
    fn output_defaults_to_the_model_name() {
        assert_eq!(plan(&[]).unwrap().output, PathBuf::from("My-Model-anec"));
        assert_eq!(default_output("./models/tiny/"), PathBuf::from("tiny-anec"));
    }

    #[test]
    fn compile_and_no_compile_conflict() {
        let err = Cli::try_parse_from([
            "anec",
            "convert",
            "--model",
            "m",
            "--compile",
            "--no-compile",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
