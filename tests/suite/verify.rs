//! `anec verify` / `anec generate` on converted fixtures: passes on faithful packages, agrees
//! with transformers' own logits, and fails on corrupted ones (packages edited through mil's
//! reader and writer).

use std::path::{Path, PathBuf};

use anec::convert::{self, Chunks, Compile, ConvertPlan};
use anec::exec::Precision;
use anec::meta::MetaError;
use anec::mil::{Arg, ConstValue, Function, OpKind};
use anec::quant::LutSpec;
use anec::verify::{
    self, Converted, GenerateOptions, ThresholdOverrides, Thresholds, Tok, VerifyError,
    VerifyOptions, VerifyReport,
};
use half::f16;

use super::util::{const_mut, fixture, margin, rewrite, spec, Expected, MODELS};

const C: usize = 512;
const B: usize = 64;

fn convert_fixture(model: &str, out: &Path) {
    convert_with(model, out, |_| {});
}

fn convert_with(model: &str, out: &Path, tweak: impl Fn(&mut ConvertPlan)) {
    let mut p = ConvertPlan::new(spec(model), out);
    p.context_length = C;
    p.batch_size = B;
    p.chunks = Chunks::Count(2);
    p.quiet = true;
    p.compile = Compile::Never;
    tweak(&mut p);
    convert::run(&p).expect("fixture converts");
}

fn verify(out: &Path, model: &str, precision: Precision) -> VerifyReport {
    let mut o = VerifyOptions::new(out);
    o.model = Some(spec(model));
    o.precision = precision;
    verify::run(&o).expect("verify runs")
}

#[test]
fn tokenizer_adds_special_tokens_as_transformers_does() {
    for model in MODELS {
        let fx = Expected::open(model);
        let tok = Tok::open(&fixture(model)).expect("tokenizer.json");
        for (i, prompt) in fx.prompts.iter().enumerate() {
            let ids = tok.encode(prompt).expect("encode");
            assert_eq!(ids, fx.ids(&format!("ids_{i}")), "{model} prompt {i}");
        }
    }
}

#[test]
fn verify_passes_on_every_fixture_at_fp16() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for model in MODELS {
        let out = tmp.path().join(model);
        convert_fixture(model, &out);
        for precision in [Precision::F32, Precision::F16] {
            let r = verify(&out, model, precision);
            println!("{r}");
            assert!(r.passed(), "{model} {precision:?}: {:?}", r.failures);
            let o = &r.overall;
            assert!(
                o.tokens > 300,
                "{model}: the default text gives {} tokens",
                o.tokens
            );
            assert!(o.prefilled >= 4 * B, "{model}: prefill batches used");
            assert!(o.top1_agreement >= 0.99, "{model}: {}", o.top1_agreement);
            assert!(o.kl_mean.expect("logits") < 1e-3, "{model}");
            assert_eq!(o.chunk_cosine_min.len(), 2);
            assert!(
                o.chunk_cosine_min.iter().all(|&c| c > 0.999),
                "{model}: {o:?}"
            );
            let ratio = o.perplexity_converted.expect("ppl") / o.perplexity_reference;
            assert!(
                (ratio - 1.0).abs() < 0.01,
                "{model}: perplexity ratio {ratio}"
            );
            // the JSON form carries the same numbers
            let j = serde_json::to_value(&r).expect("serialize");
            assert_eq!(j["overall"]["tokens"], o.tokens);
            assert_eq!(j["failures"].as_array().map(Vec::len), Some(0));
            assert_eq!(j["passed"], true);
        }
    }
}

/// The packages, driven by the host protocol, against transformers' logits directly (not
/// through `reference`): top-1 equal wherever transformers' margin exceeds fp16 noise.
#[test]
fn converted_packages_agree_with_transformers_logits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for model in MODELS {
        let out = tmp.path().join(model);
        convert_fixture(model, &out);
        let fx = Expected::open(model);
        let mut conv = Converted::open(&out, Precision::F16).expect("open");
        let (mut worst, mut agree, mut total) = (0f32, 0, 0);
        for s in 0..fx.prompts.len() {
            let ids = fx.ids(&format!("ids_{s}"));
            let want = fx.logits(&format!("logits_{s}"));
            let run = conv.prompt(&ids).expect("prompt");
            if ids.len() >= B {
                assert_eq!(run.prefilled, B, "{model} seq {s}: one prefill batch");
            }
            let got = run.logits.expect("logits");
            for (i, w) in want.iter().enumerate() {
                let g = got.row(i);
                worst = g
                    .iter()
                    .zip(w)
                    .map(|(a, b)| (a - b).abs())
                    .fold(worst, f32::max);
                if margin(w) > 0.05 {
                    total += 1;
                    agree += usize::from(run.argmax[i] as usize == anec::reference::argmax(w));
                }
            }
        }
        println!("{model}: max |Δlogit| vs transformers {worst:.4}, top-1 {agree}/{total}");
        assert_eq!(agree, total, "{model}");
        assert!(worst < 0.1, "{model}: max |Δlogit| {worst}");
    }
}

/// `generate` streams the greedy continuation; it is transformers' greedy continuation.
#[test]
fn generate_streams_the_greedy_continuation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for model in MODELS {
        let out = tmp.path().join(model);
        convert_fixture(model, &out);
        let fx = Expected::open(model);
        let want = fx.ids("gen_ids_0");
        let mut pieces = Vec::new();
        let mut o = GenerateOptions::new(&out, fx.prompts[0].clone());
        o.max_tokens = want.len();
        o.eos = Some(vec![]);
        let g = verify::generate(&o, &mut |s| pieces.push(s.to_string())).expect("generate");
        assert_eq!(g.ids, want, "{model}");
        assert_eq!(g.prompt_tokens, fx.ids("ids_0").len());
        assert_eq!(
            pieces.concat(),
            g.text,
            "{model}: the streamed pieces make the text"
        );
        assert!(pieces.len() > 1, "{model}: streamed in pieces");
        assert!(g.tokens_per_second > 0.0);
        println!(
            "{model}: {:?} → {:?} ({:.1} tokens/s)",
            fx.prompts[0], g.text, g.tokens_per_second
        );
    }
}

// ------------------------------------------------------------------------------ corruption

fn map_f16(v: &mut ConstValue, g: impl Fn(usize, f32) -> f32) {
    let vals: Vec<f16> = v
        .to_f32_vec()
        .expect("numeric")
        .into_iter()
        .enumerate()
        .map(|(i, x)| f16::from_f32(g(i, x)))
        .collect();
    *v = ConstValue::from_f16(&v.shape(), &vals).expect("f16");
}

/// The weight consts of every conv in op order.
fn conv_weights(f: &Function) -> Vec<String> {
    f.operations
        .iter()
        .filter(|o| o.kind == OpKind::Conv)
        .filter_map(|o| match o.inputs.get("weight").and_then(|a| a.first()) {
            Some(Arg::Var(n)) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn chunk1(out: &Path) -> PathBuf {
    let meta = verify::read_meta(out).expect("meta");
    out.join(&meta.model_info.parameters.chunk_files[0])
}

fn corrupted(model: &str, tmp: &Path, edit: impl Fn(&str, &mut Function)) -> VerifyReport {
    let out = tmp.join(model);
    convert_fixture(model, &out);
    let before = verify(&out, model, Precision::F32);
    assert!(
        before.passed(),
        "{model} before corruption: {:?}",
        before.failures
    );
    rewrite(&chunk1(&out), edit);
    let r = verify(&out, model, Precision::F32);
    println!("{r}");
    r
}

#[test]
fn verify_fails_when_two_layers_are_swapped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for model in ["tiny-llama", "tiny-mistral"] {
        let r = corrupted(model, tmp.path(), |_, f| {
            let names = conv_weights(f);
            let per_layer = names.len() / 2; // chunk 1 holds two layers
            assert_eq!(per_layer, 7, "q k v o gate up down");
            for i in 0..per_layer {
                let a = const_mut(f, &names[i]).clone();
                let b = std::mem::replace(const_mut(f, &names[i + per_layer]), a);
                *const_mut(f, &names[i]) = b;
            }
        });
        assert!(!r.passed(), "{model}: swapped layers must fail");
        assert!(
            r.failures.iter().any(|f| f.contains("chunk 1")),
            "{:?}",
            r.failures
        );
    }
}

#[test]
fn verify_fails_when_the_rope_table_is_broken() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for model in ["tiny-llama", "tiny-qwen3"] {
        // the sign of rotate-half flipped: every rotation goes the other way
        let r = corrupted(model, tmp.path(), |_, f| {
            let name = f
                .operations
                .iter()
                .find(|o| o.kind == OpKind::Const && o.outputs[0].0.starts_with("rope_sin"))
                .map(|o| o.outputs[0].0.clone())
                .expect("rope_sin table");
            map_f16(const_mut(f, &name), |_, x| -x);
        });
        assert!(!r.passed(), "{model}: a broken rope table must fail");
    }
}

#[test]
fn verify_fails_when_a_bias_is_dropped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = corrupted("tiny-qwen2", tmp.path(), |_, f| {
        let names: Vec<String> = f
            .operations
            .iter()
            .filter(|o| o.kind == OpKind::Const && o.outputs[0].0.starts_with("k_bias"))
            .map(|o| o.outputs[0].0.clone())
            .collect();
        assert!(!names.is_empty(), "qwen2 has k biases");
        // layer 0's k bias becomes zero
        map_f16(const_mut(f, &names[0]), |_, _| 0.0);
    });
    assert!(!r.passed(), "a dropped k bias must fail");
}

#[test]
fn verify_refuses_inconsistent_meta() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("m");
    convert_fixture("tiny-llama", &out);
    let path = out.join("meta.json");
    let good = std::fs::read_to_string(&path).expect("meta.json");
    let mut meta: serde_json::Value = serde_json::from_str(&good).expect("json");
    meta["model_info"]["parameters"]["chunk_layers"] = serde_json::json!([[0, 2], [3, 4]]);
    std::fs::write(&path, meta.to_string()).expect("write");
    let err = Converted::open(&out, Precision::F32).expect_err("gap in chunk_layers");
    assert!(
        err.to_string().contains("chunk_layers [[0, 2], [3, 4]]"),
        "{err}"
    );

    let mut meta: serde_json::Value = serde_json::from_str(&good).expect("json");
    meta["model_info"]["parameters"]["lm_head_chunk_sizes"] = serde_json::json!([500]);
    std::fs::write(&path, meta.to_string()).expect("write");
    let err = Converted::open(&out, Precision::F32).expect_err("sizes do not sum to vocab");
    assert!(err.to_string().contains("[500]"), "{err}");

    let mut meta: serde_json::Value = serde_json::from_str(&good).expect("json");
    meta["model_info"]["parameters"]["chunk_files"][1] = serde_json::json!("missing.mlpackage");
    std::fs::write(&path, meta.to_string()).expect("write");
    let err = Converted::open(&out, Precision::F32).expect_err("missing package");
    assert!(err.to_string().contains("missing.mlpackage"), "{err}");
}

#[test]
fn verify_refuses_a_folder_without_meta() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = verify::run(&VerifyOptions::new(tmp.path())).expect_err("no meta.json");
    assert!(
        matches!(&err, VerifyError::MetaFile(MetaError::Read { path, .. }) if path.ends_with("meta.json")),
        "{err}"
    );
    assert!(err.to_string().contains("meta.json"));
}

/// LUT conversions are judged by LUT.md §5 for their bit width (overridable); quality falls
/// with the bits. (Random-weight tiny models are harsh on LUT4: it fails its thresholds here.)
#[test]
fn verify_judges_lut_conversions_by_their_bits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut kl = vec![];
    for bits in [None, Some(6u32), Some(4)] {
        let out = tmp.path().join(format!("{bits:?}"));
        convert_with("tiny-llama", &out, |p| {
            let spec = bits.map(|bits| LutSpec {
                bits,
                group: Some(8),
            });
            p.lut_ffn = spec;
            p.lut_lmhead = spec;
        });
        // the original from meta's source (no --model)
        let r = verify::run(&VerifyOptions::new(&out)).expect("verify");
        println!("{r}");
        assert_eq!(r.thresholds, Thresholds::for_lut_bits(bits));
        let o = &r.overall;
        assert!(!o.non_finite);
        kl.push(o.kl_mean.expect("logits"));
        if bits == Some(6) {
            assert!(r.passed(), "LUT6: {:?}", r.failures);
            let mut strict = VerifyOptions::new(&out);
            strict.overrides = ThresholdOverrides {
                max_mean_kl: Some(Thresholds::FP16.max_mean_kl),
                ..Default::default()
            };
            let r = verify::run(&strict).expect("verify");
            assert!(!r.passed(), "LUT6 against the fp16 thresholds");
            assert!(
                r.failures.iter().any(|f| f.contains("mean KL")),
                "{:?}",
                r.failures
            );
        }
    }
    assert!(
        kl[0] < kl[1] && kl[1] < kl[2],
        "KL fp16 < LUT6 < LUT4: {kl:?}"
    );
}

/// `--argmax` packages give no logits (top-1 and greedy only); `--num-layers K` packages are
/// compared with the first K layers of the original.
#[test]
fn verify_handles_in_model_argmax_and_cut_layers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("argmax");
    convert_with("tiny-qwen2", &out, |p| p.argmax = true);
    let r = verify::run(&VerifyOptions::new(&out)).expect("verify");
    println!("{r}");
    assert!(r.passed(), "{:?}", r.failures);
    assert!(r.overall.kl_mean.is_none() && r.overall.perplexity_converted.is_none());
    assert!(r.overall.top1_agreement >= 0.99);
    assert_eq!(r.overall.greedy_agree, r.overall.greedy_total);

    let out = tmp.path().join("k2");
    convert_with("tiny-llama", &out, |p| p.num_layers = Some(2));
    let r = verify::run(&VerifyOptions::new(&out)).expect("verify");
    assert!(r.passed(), "{:?}", r.failures);
    // against the full 4-layer model it would be far off: the cut is what made it pass
    let mut conv = Converted::open(&out, Precision::F32).expect("open");
    let files = verify::original_files(conv.meta(), None, true).expect("files");
    let full = verify::load_reference(&files, 4).expect("4 layers");
    let tok = Tok::open(&out).expect("tok");
    let err = verify::verify_with(&mut conv, &full, &tok, &VerifyOptions::new(&out))
        .expect_err("layer count mismatch");
    assert!(matches!(err, VerifyError::Mismatch(_)), "{err}");
}

/// Given prompts: one row each, plus the pooled row.
#[test]
fn verify_reports_each_prompt_and_the_pool() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("m");
    convert_fixture("tiny-mistral", &out);
    let fx = Expected::open("tiny-mistral");
    let mut o = VerifyOptions::new(&out);
    o.prompts = fx.prompts.clone();
    o.tokens = 8;
    let r = verify::run(&o).expect("verify");
    println!("{r}");
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.prompts.len(), 3);
    for (i, p) in r.prompts.iter().enumerate() {
        assert_eq!(p.tokens, fx.ids(&format!("ids_{i}")).len());
        assert_eq!(p.name, fx.prompts[i]);
        assert_eq!(p.greedy_total, 8);
    }
    let total: usize = r.prompts.iter().map(|p| p.tokens).sum();
    assert_eq!(r.overall.tokens, total);
    assert_eq!(r.overall.greedy_total, 24);
    let text = r.to_string();
    assert!(
        text.contains("overall") && text.contains("PASSED"),
        "{text}"
    );
}

/// Without explicit stop tokens, generation stops at the tokenizer's EOS token.
#[test]
fn generate_stops_at_the_tokenizers_eos() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("m");
    convert_fixture("tiny-mistral", &out);
    let tok = Tok::open(&out).expect("tok");
    assert_eq!(tok.eos_ids(), vec![2], "</s>");
    // tiny-mistral's greedy continuation of prompt 0 is [62, 1, ...]: make `<s>` (1) the stop
    let fx = Expected::open("tiny-mistral");
    assert_eq!(&fx.ids("gen_ids_0")[..2], &[62, 1]);
    let mut o = GenerateOptions::new(&out, fx.prompts[0].clone());
    o.eos = Some(vec![1]);
    let g = verify::generate(&o, &mut |_| {}).expect("generate");
    assert_eq!(g.ids, vec![62, 1]);
    assert!(g.stopped_at_eos);
}
