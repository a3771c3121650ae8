//! The command line: clap structs close to the flags, resolved into the library's validated
//! settings (`ConvertPlan`, verify options) before any work runs. Nothing below this module sees clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Convert HuggingFace LLMs into Core ML packages for the Apple Neural Engine, and check them on the CPU.
#[derive(Debug, Parser)]
#[command(name = "anec", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

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
    /// Print a machine-readable JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The .mlpackage folder.
    pub package: PathBuf,
    /// JSON instead of the table.
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
    /// Fail above this mean KL(reference‖converted) [default: 1e-3 fp16, LUT thresholds from the meta].
    #[arg(long, value_name = "KL")]
    pub max_kl: Option<f64>,
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
