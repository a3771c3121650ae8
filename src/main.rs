//! The `anec` binary: parse the command line, run, print errors as `anec: error: …` with their
//! causes, and exit with a documented code.
//!
//! Exit codes: 0 success; 1 verification ran and failed its thresholds; 2 usage or input error
//! (bad flags, missing or corrupt model files, unsupported configs, an existing output);
//! 3 I/O error (a file could not be read or written).

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};

const EXIT_VERIFY_FAILED: u8 = 1;
const EXIT_INPUT: u8 = 2;
const EXIT_IO: u8 = 3;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // clap's own text starts `error: `; every anec error starts `anec: error: `.
            eprint!("anec: {}", e.render());
            return ExitCode::from(EXIT_INPUT);
        }
        Err(e) => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            // Every module error's message already holds its causes (`cannot read X: <io
            // error>`), so the top error is printed alone: each cause appears once.
            eprintln!("anec: error: {err}");
            ExitCode::from(exit_code(&err))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Convert(args) => {
            let json = args.json;
            let report_file = args.report_file()?;
            let plan = args.into_plan()?;
            plan.validate()?;
            let report = anec::convert::run(&plan)?;
            if let Some((path, format)) = &report_file {
                report.write_tensor_report(path, *format)?;
            }
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
            } else {
                emit(&report.to_string())?;
            }
        }
        Command::Inspect(args) => {
            let report = anec::mil::inspect(&args.package)?;
            let lint = match args.lint {
                true => Some(anec::lint::lint_package(&args.package)?),
                false => None,
            };
            if args.json {
                let json = match &lint {
                    Some(l) => serde_json::json!({ "inspect": report, "lint": l }),
                    None => serde_json::to_value(&report)?,
                };
                emit(&format!("{}\n", serde_json::to_string_pretty(&json)?))?;
            } else {
                emit(&report.to_string())?;
                if let Some(l) = &lint {
                    emit(&format!("\nlint: {l}"))?;
                }
            }
        }
        Command::Lint(args) => return lint(&args),
        Command::Run(args) => run_package(&args)?,
        Command::Verify(args) => {
            let json = args.json;
            let report = anec::verify::run(&args.into_options())?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
            } else {
                emit(&report.to_string())?;
            }
            if !report.passed() {
                eprintln!("anec: verification failed: {}", report.failures.join("; "));
                return Ok(ExitCode::from(EXIT_VERIFY_FAILED));
            }
        }
        Command::Generate(args) => {
            let opts = args.into_options();
            emit(&opts.prompt)?;
            // A reader that went away stops the text, not the generation.
            let generation = anec::verify::generate(&opts, &mut |piece| {
                let _ = emit(piece);
            })?;
            emit("\n")?;
            eprintln!(
                "{} prompt tokens, {} generated, {:.1} tokens/s{}",
                generation.prompt_tokens,
                generation.ids.len(),
                generation.tokens_per_second,
                if generation.stopped_at_eos {
                    ", stopped at end of sequence"
                } else {
                    ""
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `anec run`: one function of one package on fresh (zero) states, outputs as JSON on stdout.
fn run_package(args: &cli::RunArgs) -> anyhow::Result<()> {
    use anec::exec::{json, Interpreter};
    let model = anec::mil::read_package(&args.package)?;
    let function = args
        .function
        .clone()
        .unwrap_or_else(|| model.program.default_function.clone());
    let text = std::fs::read_to_string(&args.inputs).map_err(|e| {
        anyhow::Error::new(e).context(format!("cannot read {}", args.inputs.display()))
    })?;
    let tensors: std::collections::BTreeMap<String, json::JsonTensor> = serde_json::from_str(&text)
        .map_err(|e| {
            anyhow::anyhow!("{}: not a JSON map of tensors: {e}", args.inputs.display())
        })?;
    let interp = Interpreter::new(&model, cli::precision(args.fp16));
    let mut states = interp.zero_states(&function)?;
    let outputs = interp.run(&function, &json::from_json(&tensors)?, &mut states)?;
    emit(&format!(
        "{}\n",
        serde_json::to_string(&json::to_json(&outputs))?
    ))?;
    Ok(())
}

/// `anec lint`: the findings of every package named (or found in a named folder); with
/// `--strict`, any finding exits 2.
fn lint(args: &cli::LintArgs) -> anyhow::Result<ExitCode> {
    if args.rules {
        if args.json {
            emit(&format!(
                "{}\n",
                serde_json::to_string_pretty(anec::lint::RULES)?
            ))?;
        } else {
            emit(&anec::lint::rules_table())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut reports = Vec::new();
    for path in &args.paths {
        let pkgs = anec::lint::packages_in(path).map_err(|e| {
            anyhow::Error::new(e).context(format!("cannot read {}", path.display()))
        })?;
        if pkgs.is_empty() {
            anyhow::bail!("{}: no .mlpackage found", path.display());
        }
        for pkg in pkgs {
            reports.push(anec::lint::lint_package(&pkg)?);
        }
    }
    if args.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&reports)?))?;
    } else {
        for r in &reports {
            emit(&r.to_string())?;
        }
    }
    let findings: usize = reports.iter().map(|r| r.findings.len()).sum();
    if args.strict && findings > 0 {
        eprintln!("anec: error: --strict: {findings} lint finding(s)");
        return Ok(ExitCode::from(EXIT_INPUT));
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to stdout and flushes; a reader that went away (`anec … | head`) is not an
/// error (the work is done), any other failure is an I/O error.
fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// I/O failures (a read-only output, a full disk) exit 3; everything the user can fix in the
/// input or the flags exits 2, a file that does not exist included. Typed module errors carry
/// their io::Error as a source.
fn exit_code(err: &anyhow::Error) -> u8 {
    let io = err.chain().find_map(|e| e.downcast_ref::<std::io::Error>());
    match io {
        Some(e) if e.kind() != std::io::ErrorKind::NotFound => EXIT_IO,
        _ => EXIT_INPUT,
    }
}
