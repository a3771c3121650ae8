//! `anec convert` end to end on the tiny fixtures: the output contract (ANE-CONTRACT.md) read
//! back with `mil::read_package`, blob sharing between `infer` and `prefill`, meta, determinism.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anec::convert::{self, Chunks, Compile, ConvertError, ConvertPlan};
use anec::meta::{LutBits, Meta};
use anec::mil::{self, ConstData, DType, Dim, Function, OpKind, TensorType, ValueType};
use anec::outdir::OutputError;
use anec::quant::LutSpec;
use anec::source::ModelSpec;

use super::util::{files, fixture, function_names, spec, MODELS};

const C: u64 = 64;
const B: u64 = 16;

pub fn plan(model: &str, out: &Path) -> ConvertPlan {
    let mut p = ConvertPlan::new(spec(model), out);
    p.context_length = C as usize;
    p.batch_size = B as usize;
    p.chunks = Chunks::Count(2);
    p.quiet = true;
    p.compile = Compile::Never;
    p
}

pub fn lut(bits: u32, group: usize) -> Option<LutSpec> {
    Some(LutSpec {
        bits,
        group: Some(group),
    })
}

struct Dims {
    h: u64,
    v: u64,
    l: u64,
    kv: u64,
    d: u64,
}

fn dims(model: &str) -> Dims {
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(model).join("config.json")).unwrap())
            .unwrap();
    let g = |k: &str| cfg[k].as_u64().unwrap();
    let h = g("hidden_size");
    let heads = g("num_attention_heads");
    Dims {
        h,
        v: g("vocab_size"),
        l: g("num_hidden_layers"),
        kv: g("num_key_value_heads"),
        d: cfg["head_dim"].as_u64().unwrap_or(h / heads),
    }
}

fn tensor(dtype: DType, shape: &[u64]) -> ValueType {
    ValueType::Tensor(TensorType::new(dtype, shape))
}

fn input<'a>(f: &'a Function, name: &str) -> &'a ValueType {
    &f.inputs
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no input {name} in {:?}", f.inputs))
        .1
}

fn output_types(f: &Function) -> Vec<(String, ValueType)> {
    f.outputs
        .iter()
        .map(|o| {
            let ty = f
                .operations
                .iter()
                .flat_map(|op| op.outputs.iter())
                .find(|(n, _)| n == o)
                .unwrap_or_else(|| panic!("output {o} is produced by no op"))
                .1
                .clone();
            (o.clone(), ty)
        })
        .collect()
}

/// (offset, size) of every stored blob a function references.
fn blobs(f: &Function) -> BTreeSet<(u64, u64)> {
    f.operations
        .iter()
        .flat_map(|op| op.constants())
        .filter_map(|c| match &c.data {
            ConstData::Stored(b) => Some((b.offset, b.size_in_bytes)),
            _ => None,
        })
        .collect()
}

fn weight_bin(pkg: &Path) -> PathBuf {
    pkg.join("Data/com.apple.CoreML/weights/weight.bin")
}

fn check_chunk(pkg: &Path, d: &Dims, expect_lut: bool) {
    let model = mil::read_package(pkg).unwrap();
    let prog = &model.program;
    assert_eq!(
        function_names(prog),
        ["infer", "prefill"],
        "{}",
        pkg.display()
    );
    assert_eq!(prog.default_function, "infer");
    let state = ValueType::State(TensorType::new(DType::F16, &[2 * d.l, d.kv, C, d.d]));
    for (name, f) in &prog.functions {
        let s = if name == "infer" { 1 } else { B };
        assert_eq!(input(f, "model_model_kv_cache_0"), &state, "{name}");
        assert_eq!(input(f, "hidden_states"), &tensor(DType::F16, &[1, s, d.h]));
        assert_eq!(input(f, "position_ids"), &tensor(DType::I32, &[s]));
        assert_eq!(input(f, "causal_mask"), &tensor(DType::F16, &[1, 1, s, C]));
        assert_eq!(input(f, "current_pos"), &tensor(DType::I32, &[1]));
        assert_eq!(f.inputs.len(), 5);
        assert_eq!(
            output_types(f),
            [(
                "output_hidden_states".to_string(),
                tensor(DType::F16, &[1, s, d.h])
            )]
        );
        assert!(
            mil::infer::unused_inputs(f).is_empty(),
            "{name}: unused inputs {:?}",
            mil::infer::unused_inputs(f)
        );
        let kinds: BTreeSet<OpKind> = f.operations.iter().map(|o| o.kind).collect();
        assert!(kinds.contains(&OpKind::WriteState) && kinds.contains(&OpKind::ReadState));
        assert_eq!(
            kinds.contains(&OpKind::ConstexprLutToDense),
            expect_lut,
            "{name}"
        );
        assert!(kinds.contains(&OpKind::Conv));
        assert!(!kinds.contains(&OpKind::Linear));
    }
    let infer = blobs(&prog.functions[0].1);
    let prefill = blobs(&prog.functions[1].1);
    assert!(!infer.is_empty());
    assert_eq!(infer, prefill, "infer and prefill reference the same blobs");
    // The file holds nothing but one function's blobs.
    let bound: u64 = 64
        + infer
            .iter()
            .map(|(_, size)| 64 + size.div_ceil(64) * 64)
            .sum::<u64>();
    let len = std::fs::metadata(weight_bin(pkg)).unwrap().len();
    assert!(
        len <= bound,
        "weight.bin {len} bytes > one function's blobs {bound}"
    );
}

fn check_embeddings(pkg: &Path, d: &Dims) {
    let model = mil::read_package(pkg).unwrap();
    let (_, f) = &model.program.functions[0];
    assert_eq!(model.program.functions.len(), 1);
    match input(f, "input_ids") {
        ValueType::Tensor(t) => {
            assert_eq!(t.dtype, DType::I32);
            assert_eq!(t.shape[0], Dim::Fixed(1));
            assert_eq!(t.rank(), 2);
        }
        other => panic!("input_ids is {other:?}"),
    }
    let out = output_types(f);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "hidden_states");
    match &out[0].1 {
        ValueType::Tensor(t) => {
            assert_eq!(t.dtype, DType::F16);
            assert_eq!(t.rank(), 3);
            assert_eq!(t.shape[2], Dim::Fixed(d.h));
        }
        other => panic!("hidden_states is {other:?}"),
    }
}

fn check_lm_head(pkg: &Path, d: &Dims, argmax: bool) {
    let model = mil::read_package(pkg).unwrap();
    let (_, f) = &model.program.functions[0];
    assert_eq!(input(f, "hidden_states"), &tensor(DType::F16, &[1, 1, d.h]));
    let out = output_types(f);
    if argmax {
        assert_eq!(
            out,
            [
                ("argmax_idx".to_string(), tensor(DType::I32, &[1])),
                ("argmax_val".to_string(), tensor(DType::F16, &[1])),
            ]
        );
    } else {
        assert_eq!(
            out,
            [("logits1".to_string(), tensor(DType::F16, &[1, 1, d.v]))]
        );
    }
}

/// The dry run's size estimates are within 10% of the weight.bin files written.
fn check_estimates(report: &convert::ConvertReport) {
    assert_eq!(report.plan.parts.len(), report.files.len());
    for (part, file) in report.plan.parts.iter().zip(&report.files) {
        let (est, got) = (part.estimated_bytes as f64, file.weight_bytes as f64);
        assert!(
            (est - got).abs() <= 0.1 * got,
            "{}: estimated {est} bytes, wrote {got}",
            file.name
        );
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn fp16_two_chunks_follow_the_contract_for_every_fixture() {
    for model in MODELS {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let report = convert::run(&plan(model, &out)).unwrap();
        let d = dims(model);
        let files = files_in(&out);
        for f in [
            "combined_chunk_01of02.mlpackage",
            "combined_chunk_02of02.mlpackage",
            "embeddings.mlpackage",
            "lm_head.mlpackage",
            "meta.json",
            "meta.yaml",
            "tokenizer.json",
            "tokenizer_config.json",
        ] {
            assert!(
                files.contains(&f.to_string()),
                "{model}: {f} missing in {files:?}"
            );
        }
        assert!(report.quant.tensors.is_empty());
        check_estimates(&report);
        check_embeddings(&out.join("embeddings.mlpackage"), &d);
        check_lm_head(&out.join("lm_head.mlpackage"), &d, false);
        for k in 1..=2 {
            check_chunk(
                &out.join(format!("combined_chunk_0{k}of02.mlpackage")),
                &d,
                false,
            );
        }
        let meta = Meta::read(&out).unwrap();
        let p = &meta.model_info.parameters;
        assert_eq!(p.num_chunks, 2);
        assert_eq!(p.context_length, C as usize);
        assert_eq!(p.batch_size, B as usize);
        assert_eq!(p.lut_ffn, LutBits::None);
        assert_eq!(p.ffn, "combined_chunk_01of02.mlpackage");
        assert_eq!(p.lm_head, "lm_head.mlpackage");
        assert_eq!(p.embeddings, "embeddings.mlpackage");
        assert_eq!(p.lm_head_chunk_sizes, vec![d.v as usize]);
        assert_eq!(p.num_layers, d.l as usize);
        assert_eq!(p.hidden_size, d.h as usize);
        assert_eq!(p.state_name, "model_model_kv_cache_0");
        let slides = ["tiny-mistral", "tiny-qwen2-swa"].contains(&model);
        assert_eq!(p.sliding_window, slides.then_some(16));
        assert_eq!(
            Path::new(&p.source.path),
            std::fs::canonicalize(fixture(model)).unwrap()
        );
        let yaml = std::fs::read_to_string(out.join("meta.yaml")).unwrap();
        let keys = [
            "context_length:",
            "batch_size:",
            "lut_embeddings:",
            "lut_ffn:",
            "lut_lmhead:",
            "num_chunks:",
            "model_prefix:",
            "embeddings:",
            "lm_head:",
            "ffn:",
            "split_lm_head:",
            "lm_head_chunk_sizes:",
            "vocab_size:",
            "argmax_in_model:",
            "num_layers:",
            "hidden_size:",
            "state_name:",
        ];
        let pos: Vec<usize> = keys
            .iter()
            .map(|k| {
                yaml.find(&format!("\n    {k}"))
                    .unwrap_or_else(|| panic!("{k} in {yaml}"))
            })
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "key order in {yaml}");
        let json: Meta =
            serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
        assert_eq!(json, meta);
        // Nothing left beside the output.
        assert_eq!(files_in(tmp.path()), ["out"]);
    }
}

#[test]
fn lut_parts_share_blobs_and_carry_the_bits_in_their_names() {
    for model in MODELS {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let mut p = plan(model, &out);
        p.lut_ffn = lut(4, 8);
        p.lut_lmhead = lut(6, 8);
        p.lut_embed = lut(6, 8);
        p.prefix = "tiny".into();
        p.argmax = true;
        let report = convert::run(&p).unwrap();
        let d = dims(model);
        check_estimates(&report);
        assert!(
            report.quant.tensors.iter().all(|q| q.snr_db.is_finite()),
            "{model}"
        );
        // The summary's last line ends (the shell prompt or next output starts on its own line).
        let text = report.to_string();
        assert!(text.ends_with('\n'), "{model}: {text:?}");
        assert!(
            report.quant.tensors.iter().any(|q| q.bits == 4)
                && report.quant.tensors.iter().any(|q| q.bits == 6)
        );
        for k in 1..=2 {
            check_chunk(
                &out.join(format!("tiny_combined_lut4_chunk_0{k}of02.mlpackage")),
                &d,
                true,
            );
        }
        check_embeddings(&out.join("tiny_embeddings_lut6.mlpackage"), &d);
        check_lm_head(&out.join("tiny_lm_head_lut6.mlpackage"), &d, true);
        let meta = Meta::read(&out).unwrap();
        let m = &meta.model_info.parameters;
        assert_eq!(m.lut_ffn, LutBits::Bits(4));
        assert_eq!(m.lut_ffn_per_channel, Some(8));
        assert_eq!(m.lut_lmhead, LutBits::Bits(6));
        assert_eq!(m.lut_embeddings, LutBits::Bits(6));
        assert_eq!(m.model_prefix, "tiny");
        assert!(m.argmax_in_model);
        assert_eq!(m.ffn, "tiny_combined_lut4_chunk_01of02.mlpackage");
    }
}

#[test]
fn two_conversions_write_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    for out in [&a, &b] {
        let mut p = plan("tiny-qwen3", out);
        p.lut_ffn = lut(6, 8);
        convert::run(&p).unwrap();
    }
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (path, bytes) in &fa {
        assert!(bytes == &fb[path], "{path} differs");
    }
}

#[test]
fn existing_output_needs_force_and_bad_chunks_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep"), b"x").unwrap();
    let err = convert::run(&plan("tiny-llama", &out)).unwrap_err();
    assert!(
        matches!(err, ConvertError::Output(OutputError::Exists { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&out.display().to_string()));
    // --force does not replace a folder anec did not write.
    let mut p = plan("tiny-llama", &out);
    p.force = true;
    let err = convert::run(&p).unwrap_err();
    assert!(
        matches!(err, ConvertError::Output(OutputError::Refused { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("keep"), "{err}");
    assert!(out.join("keep").exists());
    std::fs::remove_dir_all(&out).unwrap();

    let mut p = plan("tiny-llama", &tmp.path().join("o2"));
    p.chunks = Chunks::Count(5);
    let err = convert::run(&p).unwrap_err();
    assert!(err.to_string().contains("--chunks 5"), "{err}");
    assert!(!tmp.path().join("o2").exists());

    convert::run(&plan("tiny-llama", &out)).unwrap();
    let mut p = plan("tiny-llama", &out);
    p.force = true;
    p.num_layers = Some(2);
    p.chunks = Chunks::Count(1);
    convert::run(&p).unwrap();
    let meta = Meta::read(&out).unwrap();
    assert_eq!(meta.model_info.parameters.num_layers, 2);
    assert_eq!(files_in(tmp.path()), ["out"]);
}

#[test]
fn dry_run_plans_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut p = plan("tiny-llama", &out);
    p.dry_run = true;
    p.chunks = Chunks::Auto { max_chunk_mb: 1 };
    let report = convert::run(&p).unwrap();
    assert!(report.dry_run);
    assert_eq!(report.plan.num_chunks, 1);
    assert_eq!(report.plan.parts.len(), 3);
    assert!(!out.exists());
    assert!(report.to_string().contains("layers 0..4"), "{report}");
    assert!(report.to_string().ends_with('\n'), "{report}");
}

/// Writes every fixture converted (fp16 and LUT, 2 chunks, default context/batch) into
/// `$ANEC_CONVERT_OUT/<model>-{fp16,lut,argmax}` for the coremltools validator:
/// `ANEC_CONVERT_OUT=/tmp/conv cargo test --test tests convert_fixtures_for_validation -- --ignored`.
#[test]
#[ignore]
fn convert_fixtures_for_validation() {
    let Some(root) = std::env::var_os("ANEC_CONVERT_OUT") else {
        panic!("set ANEC_CONVERT_OUT");
    };
    let root = PathBuf::from(root);
    for model in MODELS {
        for (tag, lut_on) in [("fp16", false), ("lut", true), ("argmax", false)] {
            let mut p = plan(model, &root.join(format!("{model}-{tag}")));
            p.context_length = 512;
            p.batch_size = 64;
            p.force = true;
            if lut_on {
                p.lut_ffn = lut(6, 8);
                p.lut_lmhead = lut(6, 8);
                p.lut_embed = lut(4, 8);
            }
            if tag == "argmax" {
                p.argmax = true;
                p.prefix = "tiny".into();
                p.chunks = Chunks::Count(3);
                p.lut_lmhead = lut(4, 16);
            }
            let report = convert::run(&p).unwrap();
            eprintln!("{model} {tag}:\n{report}");
        }
    }
}

/// Converts `$ANEC_MODEL` (a folder) into `$ANEC_CONVERT_OUT` with LUT6 chunks and LM head,
/// printing the report (for measuring real-shaped checkpoints without the CLI).
#[test]
#[ignore]
fn convert_model_from_env() {
    let (Some(model), Some(out)) = (
        std::env::var_os("ANEC_MODEL"),
        std::env::var_os("ANEC_CONVERT_OUT"),
    ) else {
        panic!("set ANEC_MODEL and ANEC_CONVERT_OUT");
    };
    let mut p = ConvertPlan::new(
        ModelSpec {
            model: model.to_string_lossy().into_owned(),
            revision: None,
            offline: true,
        },
        PathBuf::from(out),
    );
    p.force = true;
    // Progress on stderr when it is a terminal and ANEC_PROGRESS is set.
    p.quiet = std::env::var_os("ANEC_PROGRESS").is_none();
    p.compile = Compile::Never;
    p.lut_ffn = lut(6, 8);
    p.lut_lmhead = lut(6, 8);
    let report = convert::run(&p).unwrap();
    println!("{report}");
    for (part, file) in report.plan.parts.iter().zip(&report.files) {
        println!(
            "{:40} estimated {:>12} bytes, weight.bin {:>12} bytes",
            file.name, part.estimated_bytes, file.weight_bytes
        );
    }
}

#[test]
fn chat_template_and_tokenizer_files_are_copied() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    std::fs::create_dir(&src).unwrap();
    for e in std::fs::read_dir(fixture("tiny-qwen3")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, src.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(src.join("chat_template.jinja"), "{{ messages }}").unwrap();
    let out = tmp.path().join("out");
    let mut p = plan("tiny-qwen3", &out);
    p.model.model = src.display().to_string();
    p.chunks = Chunks::Count(1);
    convert::run(&p).unwrap();
    let files = files_in(&out);
    for f in [
        "chat_template.jinja",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(files.contains(&f.to_string()), "{f} missing in {files:?}");
    }
    let meta = Meta::read(&out).unwrap();
    assert_eq!(
        Path::new(&meta.model_info.parameters.source.path),
        std::fs::canonicalize(&src).unwrap()
    );
}
