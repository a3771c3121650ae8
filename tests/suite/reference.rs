//! The reference forward pass against transformers' own logits in the fixtures: full sequence,
//! incremental with the KV cache, greedy continuation, and its refusal of bad input; and its
//! own reading of config.json held equal to `arch`'s.

use std::path::PathBuf;

use anec::arch::{DecoderConfig, RopeScaling};
use anec::reference::{Config, Logits, Reference, ReferenceError, RopeKind};

use candle_core::Device;

use super::util::{fixture, spec, Expected, ALL_MODELS as MODELS};

const TOL: f32 = 1e-3;

/// The fixture's config.json, as the reference reads it.
fn config(model: &str) -> Config {
    Config::from_file(fixture(model).join("config.json")).expect("config parses")
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
        "{:<17} {:>4} {:>12} {:>12} {:>12}",
        "fixture", "seqs", "full", "incremental", "greedy"
    );
    for (m, n, f, i, g) in &table {
        println!("{m:<17} {n:>4} {f:>12.3e} {i:>12.3e} {g:>12.3e}");
    }
    for (m, _, f, i, g) in table {
        assert!(
            f <= TOL && i <= TOL && g <= TOL,
            "{m}: max |Δlogit| {f} / {i} / {g} > {TOL}"
        );
    }
}

/// The comparison is sharp enough to see a wrong variant: without the sliding window, Mistral's
/// 84-token sequence no longer matches past the window; neither does tiny-qwen2-swa with a
/// window on its full-attention layer 0, nor tiny-llama-linear without its RoPE scaling; without
/// the q/k norms Qwen3 does not load.
#[test]
fn a_wrong_variant_is_detected() {
    let mut cfg = config("tiny-mistral");
    cfg.sliding_window = vec![None; 3];
    let late = past_position(&cfg, "tiny-mistral", &Expected::open("tiny-mistral"), 16);
    assert!(
        late > 0.05,
        "past the window the logits must differ: {late}"
    );

    let mut cfg = config("tiny-qwen2-swa");
    assert_eq!(cfg.sliding_window, [None, Some(16), Some(16)]);
    cfg.sliding_window = vec![Some(16); 3];
    let late = past_position(
        &cfg,
        "tiny-qwen2-swa",
        &Expected::open("tiny-qwen2-swa"),
        16,
    );
    assert!(
        late > 0.05,
        "a sliding layer 0 must change the logits: {late}"
    );
    let mut cfg = config("tiny-llama-linear");
    assert_eq!(cfg.rope, RopeKind::Linear { factor: 4.0 });
    cfg.rope = RopeKind::Plain;
    let late = past_position(
        &cfg,
        "tiny-llama-linear",
        &Expected::open("tiny-llama-linear"),
        1,
    );
    assert!(late > 0.05, "unscaled RoPE must change the logits: {late}");

    // without the q/k norms Qwen3's norm weights go unused: refused at load
    let mut cfg = config("tiny-qwen3");
    cfg.qk_norm = false;
    let err = Reference::load_weights(&cfg, &weights("tiny-qwen3")).expect_err("unused norms");
    assert!(err.to_string().contains("q_norm.weight"), "{err}");
}

/// Max |Δlogit| against transformers at positions `from..` of sequence 2 for a model run with
/// `cfg` (positions before `from` must still match).
fn past_position(cfg: &Config, model: &str, exp: &Expected, from: usize) -> f32 {
    let r = Reference::load_weights(cfg, &weights(model)).expect("loads");
    let ids = exp.ids("ids_2");
    assert!(ids.len() > from + 16, "{model}: sequence 2 is long enough");
    let got = r.forward(&ids, &mut r.new_cache()).expect("forward");
    let want = exp.logits("logits_2");
    let early = (0..from)
        .map(|i| max_abs(got.row(i), &want[i]))
        .fold(0f32, f32::max);
    assert!(
        early <= TOL,
        "{model}: before {from} nothing changes: {early}"
    );
    (from..ids.len())
        .map(|i| max_abs(got.row(i), &want[i]))
        .fold(0f32, f32::max)
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
    assert!(
        err.to_string()
            .contains("num_key_value_heads = 3 for 4 heads"),
        "{err}"
    );

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
        let cfg = Config::from_file(&path).expect("v5 config parses");
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

// ------------------------------------------------------------------------------------------
// The reference's reading of config.json against arch's

/// `arch`'s reading and the reference's agree on every value the forward pass uses: sizes,
/// head_dim, eps, RoPE base, kind, factors and inverse frequencies, biases, q/k norms, tying
/// and the per-layer windows.
fn same_reading(what: &str, a: &DecoderConfig, r: &Config) {
    assert_eq!(
        (
            a.model_type.as_str(),
            a.vocab_size,
            a.hidden_size,
            a.intermediate_size,
            a.num_layers,
            a.num_heads,
            a.num_kv_heads,
            a.head_dim
        ),
        (
            r.model_type.as_str(),
            r.vocab_size,
            r.hidden_size,
            r.intermediate_size,
            r.num_layers,
            r.num_heads,
            r.num_kv_heads,
            r.head_dim
        ),
        "{what}: sizes"
    );
    assert_eq!(a.rms_norm_eps, r.rms_norm_eps, "{what}: eps");
    assert_eq!(a.rope_theta, r.rope_theta, "{what}: RoPE base");
    let kind = match a.rope_scaling {
        RopeScaling::None => RopeKind::Plain,
        RopeScaling::Linear { factor } => RopeKind::Linear { factor },
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => RopeKind::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        },
    };
    assert_eq!(kind, r.rope, "{what}: RoPE scaling");
    let (fa, fr) = (anec::arch::rope_inv_freq(a), r.inv_freq());
    assert_eq!(fa.len(), fr.len(), "{what}: inv_freq length");
    for (i, (x, y)) in fa.iter().zip(&fr).enumerate() {
        // Both are float32 replays of transformers; pow may differ in its last bit.
        let rel = (x - f64::from(*y)).abs() / x.abs();
        assert!(rel <= 2.5e-7, "{what}: inv_freq[{i}] {x} vs {y}");
    }
    assert_eq!(
        (
            a.qkv_bias,
            a.o_bias,
            a.mlp_bias,
            a.qk_norm,
            a.tie_embeddings
        ),
        (
            r.qkv_bias,
            r.o_bias,
            r.mlp_bias,
            r.qk_norm,
            r.tie_embeddings
        ),
        "{what}: biases, q/k norm, tying"
    );
    assert_eq!(a.sliding_window, r.sliding_window, "{what}: windows");
    assert_eq!(
        a.gemma
            .as_ref()
            .map(|g| (g.query_pre_attn_scalar, g.local_rope_theta)),
        r.gemma
            .as_ref()
            .map(|g| (g.query_pre_attn_scalar, g.local_rope_theta)),
        "{what}: Gemma's attention scale and local RoPE base"
    );
    let (la, lr) = (anec::arch::rope_inv_freq_local(a), r.inv_freq_local());
    for (i, (x, y)) in la.iter().zip(&lr).enumerate() {
        let rel = (x - f64::from(*y)).abs() / x.abs();
        assert!(rel <= 2.5e-7, "{what}: local inv_freq[{i}] {x} vs {y}");
    }
}

/// The tensors a checkpoint of `arch`'s config holds (all of which the converter must read),
/// by name and shape, sorted.
fn arch_tensors(a: &DecoderConfig) -> Vec<(String, Vec<usize>)> {
    let mut v = super::util::expected_tensors(a);
    v.sort();
    v
}

/// The tensors the loaded reference read, sorted.
fn reference_tensors(r: &Reference) -> Vec<(String, Vec<usize>)> {
    let mut v = r.tensors().to_vec();
    v.sort();
    v
}

#[test]
fn reference_and_arch_read_every_fixture_config_alike() {
    for model in MODELS {
        for file in ["config.json", "config.transformers5.json"] {
            let path = fixture(model).join(file);
            let a = DecoderConfig::from_config_file(&path).expect("arch reads it");
            let r = Config::from_file(&path).expect("the reference reads it");
            same_reading(&format!("{model}/{file}"), &a, &r);
            let loaded = Reference::load_weights(&r, &weights(model)).expect("loads");
            assert_eq!(
                reference_tensors(&loaded),
                arch_tensors(&a),
                "{model}/{file}: tensor names and shapes"
            );
        }
    }
}

/// A tiny config of `model_type` with `edits` applied (a `"<absent>"` value removes the key).
fn variant(model_type: &str, edits: serde_json::Value) -> String {
    let mut c = serde_json::json!({
        "model_type": model_type, "vocab_size": 16, "hidden_size": 32,
        "intermediate_size": 24, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
    });
    let obj = c.as_object_mut().expect("object");
    for (k, v) in edits.as_object().expect("edits are an object") {
        if v == "<absent>" {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
    c.to_string()
}

/// Config variants both readings must take alike: key styles, nulls and absences that pick
/// each class's defaults, every RoPE kind and spelling, every sliding-window rule, biases.
fn accepted_variants() -> Vec<(&'static str, String)> {
    use serde_json::json;
    let llama3 = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
    vec![
        ("llama plain", variant("llama", json!({}))),
        (
            "gemma pattern 2, theta and local base",
            variant(
                "gemma3_text",
                json!({"sliding_window": 4, "sliding_window_pattern": 2, "rope_theta": 5e5,
                    "rope_local_base_freq": 2e4, "query_pre_attn_scalar": 8,
                    "rope_scaling": {"rope_type": "linear", "factor": 2.0},
                    "tie_word_embeddings": "<absent>"}),
            ),
        ),
        (
            "gemma per-type rope_parameters",
            variant(
                "gemma3_text",
                json!({"layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
                    "rope_parameters": {
                        "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 2e6},
                        "sliding_attention": {"rope_type": "default", "rope_theta": 3e4}}}),
            ),
        ),
        (
            "llama biases",
            variant("llama", json!({"attention_bias": true, "mlp_bias": true})),
        ),
        (
            "llama tied",
            variant("llama", json!({"tie_word_embeddings": true})),
        ),
        (
            "llama kv null",
            variant("llama", json!({"num_key_value_heads": null})),
        ),
        (
            "llama kv absent",
            variant("llama", json!({"num_key_value_heads": "<absent>"})),
        ),
        (
            "llama head_dim 16",
            variant("llama", json!({"head_dim": 16})),
        ),
        (
            "llama head_dim null",
            variant("llama", json!({"head_dim": null})),
        ),
        ("llama theta", variant("llama", json!({"rope_theta": 5e5}))),
        (
            "llama eps absent",
            variant("llama", json!({"rms_norm_eps": "<absent>"})),
        ),
        (
            "llama linear (type)",
            variant(
                "llama",
                json!({"rope_scaling": {"type": "linear", "factor": 4.0}}),
            ),
        ),
        (
            "llama linear (rope_type)",
            variant(
                "llama",
                json!({"rope_scaling": {"rope_type": "linear", "factor": 2.5}}),
            ),
        ),
        (
            "llama3 (v4)",
            variant("llama", json!({"rope_theta": 5e5, "rope_scaling": llama3})),
        ),
        (
            "llama3 (v5)",
            variant(
                "llama",
                json!({"rope_parameters": {"rope_theta": 5e5,
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
            ),
        ),
        (
            "v5 default with base",
            variant(
                "llama",
                json!({"rope_theta": 3.0,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}),
            ),
        ),
        (
            "rope_scaling null",
            variant("llama", json!({"rope_scaling": null})),
        ),
        (
            "qwen2 window off",
            variant("qwen2", json!({"sliding_window": 8})),
        ),
        (
            "qwen2 window on, from layer 1",
            variant(
                "qwen2",
                json!({"use_sliding_window": true,
            "sliding_window": 8, "max_window_layers": 1}),
            ),
        ),
        (
            "qwen2 window on, default max_window_layers 28",
            variant(
                "qwen2",
                json!({
            "use_sliding_window": true, "sliding_window": 8, "num_hidden_layers": 30}),
            ),
        ),
        (
            "qwen2 window on, default size",
            variant(
                "qwen2",
                json!({"use_sliding_window": true,
            "max_window_layers": 0}),
            ),
        ),
        (
            "qwen2 window null",
            variant(
                "qwen2",
                json!({"use_sliding_window": true,
            "sliding_window": null, "max_window_layers": 0}),
            ),
        ),
        (
            "qwen2 layer_types",
            variant(
                "qwen2",
                json!({"use_sliding_window": true, "sliding_window": 8,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]}),
            ),
        ),
        (
            "qwen2 layer_types, window off",
            variant(
                "qwen2",
                json!({"sliding_window": 8,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]}),
            ),
        ),
        (
            "qwen2 tied",
            variant("qwen2", json!({"tie_word_embeddings": true})),
        ),
        ("qwen3 default head_dim", variant("qwen3", json!({}))),
        (
            "qwen3 attention_bias",
            variant("qwen3", json!({"attention_bias": true, "head_dim": 8})),
        ),
        (
            "qwen3 window on",
            variant(
                "qwen3",
                json!({"use_sliding_window": true, "sliding_window": 8,
            "max_window_layers": 2, "head_dim": 8}),
            ),
        ),
        ("mistral default window", variant("mistral", json!({}))),
        (
            "mistral window null",
            variant("mistral", json!({"sliding_window": null})),
        ),
        (
            "mistral window 8",
            variant("mistral", json!({"sliding_window": 8})),
        ),
        (
            "mistral layer_types",
            variant(
                "mistral",
                json!({"sliding_window": 8,
            "layer_types": ["full_attention", "sliding_attention", "full_attention"]}),
            ),
        ),
        (
            "mistral kv absent",
            variant(
                "mistral",
                json!({"num_key_value_heads": "<absent>",
            "num_attention_heads": 8}),
            ),
        ),
        (
            "mistral mlp_bias ignored",
            variant("mistral", json!({"mlp_bias": true, "attention_bias": true})),
        ),
        (
            "qwen2 mlp_bias ignored",
            variant("qwen2", json!({"mlp_bias": true})),
        ),
    ]
}

/// Both readings agree on each variant; on the small ones the reference also loads a zero
/// checkpoint made of exactly the tensors `arch` expects (a name or shape it reads differently
/// is an error there), and on the bare `{"model_type": …}` configs both apply the same class
/// defaults.
#[test]
fn reference_and_arch_read_config_variants_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (what, json) in accepted_variants() {
        let a = DecoderConfig::from_json_str(&json).unwrap_or_else(|e| panic!("{what}: {e}"));
        let r = Config::parse(&json, what).unwrap_or_else(|e| panic!("{what}: {e}"));
        same_reading(what, &a, &r);
        let tensors: std::collections::HashMap<String, candle_core::Tensor> = arch_tensors(&a)
            .into_iter()
            .map(|(name, shape)| {
                let t = candle_core::Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu)
                    .expect("zeros");
                (name, t)
            })
            .collect();
        let file = dir.path().join("model.safetensors");
        candle_core::safetensors::save(&tensors, &file).expect("write checkpoint");
        let loaded =
            Reference::load_weights(&r, &[&file]).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            reference_tensors(&loaded),
            arch_tensors(&a),
            "{what}: tensors"
        );
    }
    for model_type in ["llama", "qwen2", "qwen3", "mistral", "gemma3_text"] {
        let json = format!(r#"{{"model_type": "{model_type}"}}"#);
        let a = DecoderConfig::from_json_str(&json).expect("arch applies the defaults");
        let r = Config::parse(&json, model_type).expect("the reference applies the defaults");
        same_reading(&format!("bare {model_type}"), &a, &r);
    }
}

/// What one reading refuses, the other refuses too, and the reference's message names the key.
#[test]
fn reference_and_arch_refuse_the_same_configs() {
    use serde_json::json;
    let refused = [
        (
            "yarn",
            variant(
                "llama",
                json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}),
            ),
            "rope_scaling.rope_type",
        ),
        (
            "dynamic",
            variant(
                "llama",
                json!({"rope_scaling": {"type": "dynamic", "factor": 2.0}}),
            ),
            "rope_scaling.rope_type",
        ),
        (
            "linear without factor",
            variant("llama", json!({"rope_scaling": {"type": "linear"}})),
            "rope_scaling.factor",
        ),
        (
            "llama3 without low_freq_factor",
            variant(
                "llama",
                json!({"rope_scaling": {"rope_type": "llama3",
            "factor": 8.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
            ),
            "rope_scaling.low_freq_factor",
        ),
        (
            "gelu",
            variant("llama", json!({"hidden_act": "gelu"})),
            "hidden_act",
        ),
        (
            "partial rotary",
            variant("llama", json!({"partial_rotary_factor": 0.5})),
            "partial_rotary_factor",
        ),
        (
            "gemma3 multimodal",
            variant("gemma3", json!({})),
            "model_type",
        ),
        (
            "gemma soft-capping",
            variant("gemma3_text", json!({"final_logit_softcapping": 30.0})),
            "final_logit_softcapping",
        ),
        (
            "gemma attention soft-capping",
            variant("gemma3_text", json!({"attn_logit_softcapping": 50.0})),
            "attn_logit_softcapping",
        ),
        (
            "gemma exact gelu",
            variant("gemma3_text", json!({"hidden_activation": "gelu"})),
            "hidden_activation",
        ),
        (
            "gemma bidirectional",
            variant("gemma3_text", json!({"use_bidirectional_attention": true})),
            "use_bidirectional_attention",
        ),
        (
            "no model_type",
            variant("llama", json!({"model_type": "<absent>"})),
            "model_type",
        ),
        (
            "4 heads over 3",
            variant("llama", json!({"num_key_value_heads": 3})),
            "num_key_value_heads",
        ),
        (
            "qwen2 default 32 kv heads",
            variant("qwen2", json!({"num_key_value_heads": "<absent>"})),
            "num_key_value_heads",
        ),
        (
            "odd head_dim",
            variant("llama", json!({"head_dim": 7})),
            "head_dim",
        ),
        (
            "zero layers",
            variant("llama", json!({"num_hidden_layers": 0})),
            "num_hidden_layers",
        ),
        (
            "zero eps",
            variant("llama", json!({"rms_norm_eps": 0.0})),
            "rms_norm_eps",
        ),
        (
            "theta 1",
            variant("llama", json!({"rope_theta": 1.0})),
            "rope_theta",
        ),
        (
            "zero window",
            variant("mistral", json!({"sliding_window": 0})),
            "sliding_window",
        ),
        (
            "layer_types too short",
            variant("mistral", json!({"layer_types": ["full_attention"]})),
            "layer_types",
        ),
        (
            "unknown layer type",
            variant(
                "qwen2",
                json!({"layer_types": ["full_attention", "chunked_attention", "full_attention"]}),
            ),
            "layer_types",
        ),
        (
            "negative size",
            variant("llama", json!({"hidden_size": -1})),
            "hidden_size",
        ),
    ];
    for (what, json, field) in refused {
        assert!(
            DecoderConfig::from_json_str(&json).is_err(),
            "{what}: arch accepts it"
        );
        let err = Config::parse(&json, "variant.json").expect_err(what);
        assert!(
            matches!(&err, ReferenceError::BadConfig { origin, field: f, .. }
                if origin == "variant.json" && f == field),
            "{what}: {err}"
        );
    }
}
