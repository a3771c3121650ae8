//! LUT palettization benchmark: seconds per million weights and SNR at LUT4/LUT6, group 8 and
//! per tensor, on the LUT.md §3 synthetic 4096×4096 matrix stored bf16-origin and fp16-native,
//! with one rayon thread and with all of them; plus fp16-native with `Options { coarsen: true }`.
//! Wall and CPU seconds are both printed: with other work on the cores, the one-thread CPU time
//! is the stable figure.
//!
//! `cargo run --release --example lut_bench [-- --size ROWSxCOLS] [--seed N] [--dump DIR] [--no-bench]
//!  [--lut SPEC]... [--one-thread]`
//!
//! `--lut 6,8` (repeatable) benchmarks only those LUTs; `--one-thread` skips the all-thread runs.
//!
//! `--dump DIR` also writes the exact fp16 inputs coremltools should see (`bf16_origin_f16.npy`,
//! `fp16_native_f16.npy`, uint16 codes) and our per-group SNRs on them (`ours.json`), for
//! tools/lut_vs_coremltools.py.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anec::quant::{self, synth, LutSpec, Options, Palettized, WeightView};
use anyhow::{bail, Context, Result};

mod util;

/// LUT.md §3, coremltools 9.0 `_get_kmeans_lookup_table_and_weight` (kmeans1d path) on the same
/// kind of 4096×4096 matrix: seconds for the whole matrix, and SNR dB.
const COREMLTOOLS: [(&str, f64, f64); 4] = [
    ("4,8", 13.9, 16.70),
    ("6,8", 32.8, 29.22),
    ("4,tensor", 7.8, 16.03),
    ("6,tensor", 7.2, 27.44),
];

struct Args {
    rows: usize,
    cols: usize,
    seed: u64,
    dump: Option<PathBuf>,
    bench: bool,
    luts: Vec<String>,
    one_thread: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rows: 4096,
        cols: 4096,
        seed: 0,
        dump: None,
        bench: true,
        luts: Vec::new(),
        one_thread: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--size" => {
                let v = value()?;
                let (r, c) = v
                    .split_once('x')
                    .with_context(|| format!("--size {v:?}: want ROWSxCOLS"))?;
                a.rows = r.parse().with_context(|| format!("--size rows {r:?}"))?;
                a.cols = c.parse().with_context(|| format!("--size cols {c:?}"))?;
            }
            "--seed" => {
                let v = value()?;
                a.seed = v.parse().with_context(|| format!("--seed {v:?}"))?;
            }
            "--dump" => a.dump = Some(PathBuf::from(value()?)),
            "--no-bench" => a.bench = false,
            "--lut" => a.luts.push(value()?),
            "--one-thread" => a.one_thread = true,
            other => bail!(
                "unknown argument {other:?} (use --size, --seed, --dump, --no-bench, --lut, --one-thread)"
            ),
        }
    }
    Ok(a)
}

fn run(
    threads: usize,
    w: WeightView<'_>,
    rows: usize,
    cols: usize,
    spec: LutSpec,
    opts: Options,
) -> Result<(Palettized, f64, f64)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| {
        let (t, cpu) = (Instant::now(), util::cpu_seconds()?);
        let p = quant::palettize_with(w, rows, cols, spec, opts)?;
        Ok((p, t.elapsed().as_secs_f64(), util::cpu_seconds()? - cpu))
    })
}

/// A little-endian uint16 `.npy` (format 1.0).
fn write_npy_u16(path: &Path, rows: usize, cols: usize, data: &[u16]) -> Result<()> {
    let dict = format!("{{'descr': '<u2', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header = format!("{dict}{}\n", " ".repeat(pad));
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    for v in data {
        f.write_all(&v.to_le_bytes())?;
    }
    f.flush()?;
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let (rows, cols) = (args.rows, args.cols);
    let all = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let t = Instant::now();
    let f = synth::matrix(rows, cols, args.seed);
    let bf16 = synth::to_bf16_codes(&f);
    let bf16_as_f16 = synth::bf16_to_f16_codes(&bf16);
    let f16 = synth::to_f16_codes(&f);
    drop(f);
    println!(
        "LUT.md §3 synthetic matrix {rows}x{cols}, seed {}, generated in {:.1} s; rayon threads: 1 and {all}",
        args.seed,
        t.elapsed().as_secs_f64()
    );
    let mweights = (rows * cols) as f64 / 1e6;
    let specs = ["4,8", "6,8", "4,tensor", "6,tensor"];
    if args.bench {
        println!();
        println!(
            "{:<12} {:<9} {:>7} {:>9} {:>10} {:>9} {:>10} {:>8} {:>11} {:>9} {:>9} | {:>13} {:>10}",
            "data",
            "lut",
            "threads",
            "seconds",
            "s/Mweight",
            "CPU s",
            "CPU s/M",
            "SNR dB",
            "worst grp",
            "distinct",
            "coarsened",
            "coremltools s",
            "cml SNR"
        );
        let exact = Options::default();
        let coarse = Options { coarsen: true };
        for (data, view, opts) in [
            ("bf16-origin", WeightView::Bf16Codes(&bf16), exact),
            ("fp16-native", WeightView::F16Codes(&f16), exact),
            ("fp16+coarse", WeightView::F16Codes(&f16), coarse),
        ] {
            for s in specs {
                let spec = LutSpec::parse(s)?;
                if opts.coarsen && spec.group.is_none()
                    || !(args.luts.is_empty() || args.luts.iter().any(|l| l == s))
                {
                    continue;
                }
                // A per-tensor LUT is one group: the thread count cannot matter.
                let thread_counts: &[usize] = if spec.group.is_some() && !args.one_thread {
                    &[1, all]
                } else {
                    &[1]
                };
                for &threads in thread_counts {
                    let (p, secs, cpu) = run(threads, view, rows, cols, spec, opts)?;
                    let cml = COREMLTOOLS.iter().find(|c| c.0 == s).map(|c| (c.1, c.2));
                    println!(
                    "{:<12} {:<9} {:>7} {:>9.3} {:>10.4} {:>9.2} {:>10.4} {:>8.2} {:>11.2} {:>9.0} {:>9} | {:>13} {:>10}",
                    data,
                    s,
                    threads,
                    secs,
                    secs / mweights,
                    cpu,
                    cpu / mweights,
                    p.snr_db,
                    p.worst_group.1,
                    p.distinct.mean,
                    p.coarsened_groups,
                    cml.map(|c| format!("{:.1}", c.0 * (rows * cols) as f64 / (4096.0 * 4096.0))).unwrap_or_default(),
                    cml.map(|c| format!("{:.2}", c.1)).unwrap_or_default(),
                );
                }
            }
        }
        println!("\nfp16+coarse: Options {{ coarsen: true }} (DP on bf16-resolution bins, then windowed exact refinement; near-exact)");
        println!("(coremltools columns: LUT.md §3 figures for 4096x4096, scaled by size; SNR from its synthetic matrix, same recipe)");
    }

    if let Some(dir) = args.dump {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_npy_u16(&dir.join("bf16_origin_f16.npy"), rows, cols, &bf16_as_f16)?;
        write_npy_u16(&dir.join("fp16_native_f16.npy"), rows, cols, &f16)?;
        let mut cases = Vec::new();
        for (data, codes) in [("bf16_origin_f16", &bf16_as_f16), ("fp16_native_f16", &f16)] {
            for s in specs {
                let spec = LutSpec::parse(s)?;
                let (p, secs, _) = run(
                    all,
                    WeightView::F16Codes(codes),
                    rows,
                    cols,
                    spec,
                    Options::default(),
                )?;
                cases.push(serde_json::json!({
                    "data": data, "bits": spec.bits, "group": spec.group, "seconds": secs,
                    "snr_db": p.snr_db, "sse": p.sse, "signal": p.signal,
                    "group_snr_db": p.group_snr_db,
                }));
            }
        }
        let out =
            serde_json::json!({ "rows": rows, "cols": cols, "seed": args.seed, "cases": cases });
        let path = dir.join("ours.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "wrote {} (inputs + our results for tools/lut_vs_coremltools.py)",
            dir.display()
        );
    }
    Ok(())
}
