//! The reference forward pass against transformers' own logits in the fixtures: full sequence,
//! incremental with the KV cache, greedy continuation, and its refusal of bad input.

use std::path::PathBuf;

use anec::arch::DecoderConfig;
use anec::reference::{Logits, Reference, ReferenceError};

use super::util::{fixture, spec, Expected, MODELS};

const TOL: f32 = 1e-3;

/// The fixture's config.json, parsed by `arch`.
fn config(model: &str) -> DecoderConfig {
    DecoderConfig::from_config_file(fixture(model).join("config.json")).expect("config parses")
}

/// The fixture's safetensors shards, as `source::resolve` lists them.
fn weights(model: &str) -> Vec<PathBuf> {
    anec::source::resolve(&spec(model))
        .expect("fixture resolves")
        .weights
}

/// Through `source::resolve` (the fixtures are plain folders; Mistral is sharded).
fn load(model: &str) -> Reference {
    let files = anec::source::resolve(&spec(model)).expect("fixture resolves");
    Reference::load(&config(model), &files).expect("reference loads")
}

/// Max |Δ| over all rows; asserts identical argmax at every row.
fn compare(what: &str, got: &Logits, want: &[Vec<f32>]) -> f32 {
    assert_eq!(got.rows, want.len(), "{what}: rows");
    let mut max = 0f32;
    for (i, w) in want.iter().enumerate() {
        assert_eq!(got.cols, w.len(), "{what}: vocab width");
        let g = got.row(i);
        for (a, b) in g.iter().zip(w) {
            max = max.max((a - b).abs());
        }
        assert_eq!(
            got.argmax(i),
            anec::reference::argmax(w),
            "{what}: argmax differs at position {i}"
        );
    }
    max
}

#[test]
fn matches_transformers_logits_full_incremental_and_greedy() {
    let mut table = vec![];
    for model in MODELS {
        let r = load(model);
        let exp = Expected::open(model);
        let n_seq = exp.count();
        assert!(n_seq >= 3, "{model}: fixture has {n_seq} sequences");
        let (mut full_max, mut inc_max, mut gen_max) = (0f32, 0f32, 0f32);
        for s in 0..n_seq {
            let ids = exp.ids(&format!("ids_{s}"));
            let want = exp.logits(&format!("logits_{s}"));
            // full sequence
            let mut cache = r.new_cache();
            let got = r.forward(&ids, &mut cache).expect("forward");
            assert_eq!(cache.len(), ids.len());
            full_max = full_max.max(compare(&format!("{model} seq {s} full"), &got, &want));
            // incremental: prefill a prefix, then token by token
            let prefix = ids.len() / 3;
            let mut cache = r.new_cache();
            let mut parts = vec![r.forward(&ids[..prefix], &mut cache).expect("prefill")];
            for (i, &t) in ids[prefix..].iter().enumerate() {
                assert_eq!(cache.len(), prefix + i);
                parts.push(r.forward(&[t], &mut cache).expect("step"));
            }
            let got = anec::reference::Matrix::concat(&parts);
            inc_max = inc_max.max(compare(
                &format!("{model} seq {s} incremental"),
                &got,
                &want,
            ));
            // greedy continuation
            let gen_ids = exp.ids(&format!("gen_ids_{s}"));
            let gen_want = exp.logits(&format!("gen_logits_{s}"));
            let g = r.greedy(&ids, gen_ids.len(), &[]).expect("greedy");
            assert_eq!(g.ids, gen_ids, "{model} seq {s}: greedy continuation");
            gen_max = gen_max.max(compare(
                &format!("{model} seq {s} greedy"),
                &g.logits,
                &gen_want,
            ));
        }
        table.push((model, n_seq, full_max, inc_max, gen_max));
    }
    println!(
        "{:<14} {:>4} {:>12} {:>12} {:>12}",
        "fixture", "seqs", "full", "incremental", "greedy"
    );
    for (m, n, f, i, g) in &table {
        println!("{m:<14} {n:>4} {f:>12.3e} {i:>12.3e} {g:>12.3e}");
    }
    for (m, _, f, i, g) in table {
        assert!(
            f <= TOL && i <= TOL && g <= TOL,
            "{m}: max |Δlogit| {f} / {i} / {g} > {TOL}"
        );
    }
}

/// The comparison is sharp enough to see a wrong variant: without the sliding window, Mistral's
/// 90-token sequence no longer matches; without the q/k norms Qwen3 does not load.
#[test]
fn a_wrong_variant_is_detected() {
    let exp = Expected::open("tiny-mistral");
    let mut cfg = config("tiny-mistral");
    cfg.sliding_window = vec![None; 3];
    let r = Reference::load_weights(&cfg, &weights("tiny-mistral")).expect("loads");
    let ids = exp.ids("ids_2");
    assert!(ids.len() > 16);
    let got = r.forward(&ids, &mut r.new_cache()).expect("forward");
    let want = exp.logits("logits_2");
    let early = (0..16)
        .map(|i| max_abs(got.row(i), &want[i]))
        .fold(0f32, f32::max);
    let late = (16..ids.len())
        .map(|i| max_abs(got.row(i), &want[i]))
        .fold(0f32, f32::max);
    assert!(early <= TOL, "inside the window nothing changes: {early}");
    assert!(
        late > 0.05,
        "past the window the logits must differ: {late}"
    );

    // without the q/k norms Qwen3's norm weights go unused: refused at load
    let mut cfg = config("tiny-qwen3");
    cfg.qk_norm = false;
    let err = Reference::load_weights(&cfg, &weights("tiny-qwen3")).expect_err("unused norms");
    assert!(err.to_string().contains("q_norm.weight"), "{err}");
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Hidden states after every layer: one per layer, the same whether computed in one pass or
/// incrementally, and the final norm of the last one is what the LM head reads.
#[test]
fn traced_hidden_states_are_consistent() {
    for model in MODELS {
        let r = load(model);
        let exp = Expected::open(model);
        let ids = exp.ids("ids_1");
        let full = r.forward_traced(&ids, &mut r.new_cache()).expect("traced");
        assert_eq!(full.layers.len(), r.config().num_layers, "{model}");
        for l in &full.layers {
            assert_eq!(
                (l.rows, l.cols),
                (ids.len(), r.config().hidden_size),
                "{model}"
            );
        }
        assert_eq!(full.final_norm.rows, ids.len());
        let plain = r.forward(&ids, &mut r.new_cache()).expect("forward");
        assert_eq!(
            plain, full.logits,
            "{model}: tracing must not change the logits"
        );
        // incremental trace of the last 4 tokens equals the tail of the full trace
        let split = ids.len() - 4;
        let mut cache = r.new_cache();
        r.forward(&ids[..split], &mut cache).expect("prefix");
        let tail = r.forward_traced(&ids[split..], &mut cache).expect("tail");
        for (li, (a, b)) in full.layers.iter().zip(&tail.layers).enumerate() {
            for i in 0..4 {
                let d = max_abs(a.row(split + i), b.row(i));
                assert!(d < 1e-4, "{model} layer {li} pos {}: {d}", split + i);
            }
        }
        // the final norm is RMSNorm(last layer) · weight: its rows differ from the raw residual
        let last = full.layers.last().expect("layers");
        assert!(max_abs(last.row(0), full.final_norm.row(0)) > 1e-3);
    }
}

#[test]
fn bad_input_is_refused_with_the_offending_value() {
    let cfg = config("tiny-llama");
    let files = weights("tiny-llama");
    let r = Reference::load_weights(&cfg, &files).expect("loads");
    let err = r
        .forward(&[1, 2, 512], &mut r.new_cache())
        .expect_err("token 512 ≥ vocab");
    assert!(
        matches!(
            err,
            ReferenceError::Token {
                id: 512,
                index: 2,
                vocab: 512
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("512"));

    let none: [PathBuf; 0] = [];
    assert!(matches!(
        Reference::load_weights(&cfg, &none),
        Err(ReferenceError::NoWeights)
    ));

    let missing = fixture("tiny-llama").join("nope.safetensors");
    let err = Reference::load_weights(&cfg, &[&missing]).expect_err("missing file");
    assert!(err.to_string().contains("nope.safetensors"), "{err}");

    let mut wrong = cfg.clone();
    wrong.intermediate_size = 100;
    let err = Reference::load_weights(&wrong, &files).expect_err("shape mismatch");
    assert!(
        matches!(&err, ReferenceError::Shape { name, expected, got }
            if name == "model.layers.0.mlp.gate_proj.weight" && expected == &[100, 64] && got == &[172, 64]),
        "{err}"
    );

    let mut biased = cfg.clone();
    biased.qkv_bias = true;
    let err = Reference::load_weights(&biased, &files).expect_err("missing bias");
    assert!(
        err.to_string()
            .contains("model.layers.0.self_attn.q_proj.bias"),
        "{err}"
    );

    let mut untied = config("tiny-qwen2");
    untied.tie_embeddings = false;
    let err = Reference::load_weights(&untied, &weights("tiny-qwen2")).expect_err("no lm_head");
    assert!(
        matches!(&err, ReferenceError::Missing { name } if name == "lm_head.weight"),
        "{err}"
    );

    let mut heads = cfg.clone();
    heads.num_kv_heads = 3;
    let err = Reference::load_weights(&heads, &files).expect_err("4 heads over 3 kv heads");
    assert!(err.to_string().contains("3 KV heads"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("model.safetensors");
    std::fs::write(&junk, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json").expect("write");
    let err = Reference::load_weights(&cfg, &[&junk]).expect_err("corrupt header");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

/// The transformers-5 key style (`dtype`, `rope_parameters`) drives the same numbers.
#[test]
fn transformers5_configs_give_the_same_logits() {
    for model in MODELS {
        let path = fixture(model).join("config.transformers5.json");
        let cfg = DecoderConfig::from_config_file(&path).expect("v5 config parses");
        let r = Reference::load_weights(&cfg, &weights(model)).expect("loads");
        let exp = Expected::open(model);
        let got = r
            .forward(&exp.ids("ids_2"), &mut r.new_cache())
            .expect("forward");
        let d = compare(&format!("{model} v5 config"), &got, &exp.logits("logits_2"));
        assert!(d <= TOL, "{model}: {d}");
    }
}

/// Every checkpoint tensor must be used: a config that drops a bias or layers is refused;
/// `load_first_layers` cuts the model on purpose.
#[test]
fn unused_checkpoint_tensors_are_refused() {
    let mut cfg = config("tiny-qwen2");
    cfg.qkv_bias = false;
    let err = Reference::load_weights(&cfg, &weights("tiny-qwen2")).expect_err("biases unused");
    match &err {
        ReferenceError::Unused { names } => {
            assert_eq!(names.len(), 9, "3 layers × q/k/v: {names:?}");
            assert!(names.contains(&"model.layers.0.self_attn.q_proj.bias".to_string()));
        }
        other => panic!("expected Unused, got {other}"),
    }
    assert!(err
        .to_string()
        .contains("model.layers.2.self_attn.v_proj.bias"));

    let mut cut = config("tiny-llama");
    cut.num_layers = 2;
    cut.sliding_window.truncate(2);
    let err = Reference::load_weights(&cut, &weights("tiny-llama")).expect_err("layers 2, 3");
    assert!(
        err.to_string()
            .contains("model.layers.3.mlp.up_proj.weight"),
        "{err}"
    );

    let files = anec::source::resolve(&spec("tiny-llama")).expect("resolves");
    let two = Reference::load_first_layers(&config("tiny-llama"), &files, 2).expect("2 layers");
    assert_eq!(two.config().num_layers, 2);
    let t = two
        .forward_traced(&[507, 355, 279], &mut two.new_cache())
        .expect("forward");
    assert_eq!(t.layers.len(), 2);
    // the first two layers are the full model's first two layers
    let full = load("tiny-llama");
    let f = full
        .forward_traced(&[507, 355, 279], &mut full.new_cache())
        .expect("forward");
    assert_eq!(t.layers[1], f.layers[1]);
    assert_ne!(t.logits, f.logits);
    assert!(Reference::load_first_layers(&config("tiny-llama"), &files, 5).is_err());
}
