//! The converted tiny models run through `exec` with the runner's host protocol
//! (`verify::Converted`), every position with and without `prefill`, compared with transformers'
//! logits (a smoke check; `anec verify` is the full comparison).

use anec::convert;
use anec::exec::Precision;
use anec::reference::{argmax, Matrix};
use anec::verify::{Converted, ConvertedRun};

use super::convert::{lut, plan};
use super::util::{margin, Expected, MODELS};

/// All of `ids` from position 0 through `infer`, one token at a time (no `prefill`): the logits
/// (`None` with the in-model argmax) and the next-token choice after every position.
fn infer_only(conv: &mut Converted, ids: &[u32]) -> (Option<Matrix>, Vec<u32>) {
    conv.reset().unwrap();
    let steps: Vec<ConvertedRun> = ids.iter().map(|&id| conv.step(id).unwrap()).collect();
    let logits = steps
        .iter()
        .map(|r| r.logits.clone())
        .collect::<Option<Vec<_>>>()
        .map(|ls| Matrix::concat(&ls));
    (
        logits,
        steps.iter().flat_map(|r| r.argmax.clone()).collect(),
    )
}

/// Compares the converted model run through `exec` with transformers' logits; returns
/// (max |Δlogit|, top-1 agreement over positions with margin > 0.05, positions compared).
fn compare(model: &str, use_lut: bool) -> (f32, f64, usize) {
    compare_with(model, use_lut, false)
}

fn compare_with(model: &str, use_lut: bool, argmax_in_model: bool) -> (f32, f64, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut p = plan(model, &out);
    p.context_length = 128;
    p.batch_size = 32;
    p.argmax = argmax_in_model;
    if use_lut {
        p.lut_ffn = lut(6, 8);
    }
    convert::run(&p).unwrap();
    let mut max_err = 0f32;
    let (mut agree, mut total) = (0usize, 0usize);
    let mut compared = 0;
    let fx = Expected::open(model);
    let mut conv = Converted::open(&out, Precision::F16).unwrap();
    for seq in 0..fx.count() {
        let ids = fx.ids(&format!("ids_{seq}"));
        let want = fx.logits(&format!("logits_{seq}"));
        for use_prefill in [false, true] {
            let (logits, choices) = if use_prefill {
                let run = conv.prompt(&ids).unwrap();
                (run.logits, run.argmax)
            } else {
                infer_only(&mut conv, &ids)
            };
            assert_eq!(choices.len(), want.len(), "{model} seq {seq}");
            assert_eq!(logits.is_none(), argmax_in_model, "{model} seq {seq}");
            for (pos, w) in want.iter().enumerate() {
                if let Some(logits) = &logits {
                    let err = logits
                        .row(pos)
                        .iter()
                        .zip(w)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    max_err = max_err.max(err);
                }
                compared += 1;
                if margin(w) > 0.05 {
                    total += 1;
                    agree += usize::from(choices[pos] as usize == argmax(w));
                }
            }
        }
    }
    (max_err, agree as f64 / total.max(1) as f64, compared)
}

#[test]
fn converted_models_match_transformers_through_the_host_protocol() {
    for model in MODELS {
        let (max_err, top1, n) = compare(model, false);
        eprintln!(
            "{model} fp16: max |Δlogit| {max_err:.4}, top-1 agreement {:.1}% over {n} positions",
            top1 * 100.0
        );
        assert!(top1 >= 0.99, "{model}: top-1 agreement {top1}");
        assert!(max_err < 0.25, "{model}: max |Δlogit| {max_err}");
    }
}

#[test]
fn lut6_models_stay_close_to_transformers() {
    for model in MODELS {
        let (max_err, top1, n) = compare(model, true);
        eprintln!(
            "{model} LUT6 g8 FFN: max |Δlogit| {max_err:.4}, top-1 agreement {:.1}% over {n} positions",
            top1 * 100.0
        );
        assert!(top1 >= 0.85, "{model}: top-1 agreement {top1}");
    }
}

#[test]
fn in_model_argmax_picks_the_reference_top1() {
    for model in ["tiny-llama", "tiny-qwen2"] {
        let (_, top1, n) = compare_with(model, false, true);
        eprintln!(
            "{model} --argmax: top-1 agreement {:.1}% over {n} positions",
            top1 * 100.0
        );
        assert!(top1 >= 0.99, "{model}: top-1 agreement {top1}");
    }
}
