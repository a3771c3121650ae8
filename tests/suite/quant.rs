//! quant through its public API on the fixture checkpoints' real tensors: every linear weight of
//! a bf16 and an f32 model palettized at LUT4/LUT6, with the report the converter prints.

use anec::quant::{self, LutSpec, QuantReport, WeightView};
use anec::weights::{Dtype, WeightStore};
use half::f16;

use super::util::spec;

/// Palettizes every 2-D weight with a known role; returns the report and the tensor count.
fn palettize_model(model: &str, lut: &str) -> anyhow::Result<(QuantReport, usize)> {
    let store = WeightStore::open(&anec::source::resolve(&spec(model))?)?;
    let lut = LutSpec::parse(lut)?;
    let mut report = QuantReport::new();
    let mut count = 0;
    for name in store.names() {
        let Some((_, shape)) = store.info(name) else {
            continue;
        };
        let role = QuantReport::role_of(name);
        if shape.len() != 2 || role == "other" {
            continue;
        }
        let (rows, cols) = (shape[0], shape[1]);
        let t = store.get(name, &[rows, cols])?;
        let (codes, floats) = match t.codes16() {
            Some(codes) => (codes, Vec::new()),
            None => (Vec::new(), t.to_f32()),
        };
        let view = match t.dtype {
            Dtype::BF16 => WeightView::Bf16Codes(&codes),
            Dtype::F16 => WeightView::F16Codes(&codes),
            Dtype::F32 => WeightView::F32(&floats),
        };
        let p = quant::palettize(view, rows, cols, lut)?;
        assert_eq!(p.indices.len(), rows * cols, "{name}");
        assert_eq!(p.lut.len(), p.groups * lut.entries(), "{name}");
        assert_eq!(p.groups * p.group_size, rows, "{name}");
        assert!(
            p.indices.iter().all(|&i| (i as usize) < lut.entries()),
            "{name}"
        );
        assert!(
            p.lut.iter().all(|v| v.is_finite()),
            "{name}: non-finite LUT entry"
        );
        // The reported SNR is the decoded tensor's.
        let orig: Vec<f64> = match view {
            WeightView::Bf16Codes(c) => c
                .iter()
                .map(|&c| f32::from_bits((c as u32) << 16) as f64)
                .collect(),
            WeightView::F16Codes(c) => c.iter().map(|&c| f16::from_bits(c).to_f64()).collect(),
            WeightView::F32(v) => v.iter().map(|&v| f16::from_f32(v).to_f64()).collect(),
        };
        let dec = p.decode();
        let sse: f64 = orig
            .iter()
            .zip(&dec)
            .map(|(a, b)| (a - b.to_f64()).powi(2))
            .sum();
        assert!(
            (sse - p.sse).abs() <= 1e-9 * p.sse.max(1e-30),
            "{name}: {sse} vs {}",
            p.sse
        );
        report.push(name, role, &p);
        count += 1;
    }
    Ok((report, count))
}

#[test]
fn bf16_model_linears_palettize_with_a_report() -> anyhow::Result<()> {
    let (r4, n) = palettize_model("tiny-qwen2", "4")?;
    assert!(n >= 7, "expected the q/k/v/o/gate/up/down weights, got {n}");
    let (r6, _) = palettize_model("tiny-qwen2", "6,8")?;
    // More bits, more SNR, tensor by tensor.
    for (a, b) in r4.tensors.iter().zip(&r6.tensors) {
        assert_eq!(a.name, b.name);
        assert!(
            b.snr_db > a.snr_db + 6.0,
            "{}: LUT6 {} vs LUT4 {}",
            a.name,
            b.snr_db,
            a.snr_db
        );
    }
    for role in [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ] {
        assert!(r4.role_median(role).is_some(), "no {role} in the report");
    }
    let json = serde_json::to_value(&r4)?;
    assert_eq!(json["tensors"].as_array().map(Vec::len), Some(n));
    assert!(r4.to_string().contains("median"));
    Ok(())
}

#[test]
fn f32_model_palettizes_per_tensor_and_deterministically() -> anyhow::Result<()> {
    let (a, n) = palettize_model("tiny-llama", "4,tensor")?;
    let (b, _) = palettize_model("tiny-llama", "4,tensor")?;
    assert!(n >= 7);
    assert!(a.tensors.iter().all(|t| t.groups == 1));
    let snr = |r: &QuantReport| {
        r.tensors
            .iter()
            .map(|t| t.snr_db.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(snr(&a), snr(&b));
    // Per-tensor is never better than group 8 on the same tensor.
    let (g8, _) = palettize_model("tiny-llama", "4")?;
    for (t, g) in a.tensors.iter().zip(&g8.tensors) {
        assert!(g.snr_db >= t.snr_db, "{}", t.name);
    }
    Ok(())
}

#[test]
fn lut_flag_values_parse_like_the_cli_documents() {
    assert_eq!(
        LutSpec::parse("6").map(|s| (s.bits, s.group)),
        Ok((6, Some(8)))
    );
    assert_eq!(
        LutSpec::parse("4,16").map(|s| (s.bits, s.group)),
        Ok((4, Some(16)))
    );
    assert_eq!(LutSpec::parse_optional("none"), Ok(None));
    let err = LutSpec::parse("5").unwrap_err().to_string();
    assert!(
        err.contains("5") && err.contains("1, 2, 3, 4, 6, 8"),
        "{err}"
    );
}
