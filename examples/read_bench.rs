//! How fast the checkpoint can be read one tensor at a time while resident memory stays small, two
//! ways: the mapping with each tensor's pages released as it is converted (what `WeightStore`
//! does), or positioned reads into one reused buffer. Each tensor is converted to fp16 bytes, as
//! the dense path does. Prints wall and CPU seconds and the peak RSS (Linux: /proc/self).
//!
//! cargo run --release --example read_bench -- CHECKPOINT_DIR mmap|pread
//!
//! Run each mode in its own process (peak RSS is per process) with the files in the page cache.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use anec::source::{self, ModelSpec};
use anec::weights::WeightStore;
use anyhow::{bail, Context, Result};
use half::{bf16, f16};

mod util;
use util::{cpu_seconds, peak_rss};

/// bf16 little-endian bytes to fp16 bytes, appended to `out`; returns a checksum of the codes.
fn bf16_to_f16(bytes: &[u8], out: &mut Vec<u8>) -> u64 {
    let mut sum = 0u64;
    for c in bytes.chunks_exact(2) {
        let h = f16::from_f32(bf16::from_le_bytes([c[0], c[1]]).to_f32());
        sum = sum.wrapping_add(h.to_bits() as u64);
        out.extend_from_slice(&h.to_le_bytes());
    }
    sum
}

#[derive(serde::Deserialize)]
struct Entry {
    dtype: String,
    data_offsets: [u64; 2],
}

/// Every tensor of one file by positioned reads into `buf`.
fn pread_file(path: &std::path::Path, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(u64, u64)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0)?;
    let mut header = vec![0u8; u64::from_le_bytes(len) as usize];
    file.read_exact_at(&mut header, 8)?;
    let data = 8 + header.len() as u64;
    let entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)?;
    let (mut sum, mut bytes) = (0u64, 0u64);
    for (name, v) in entries {
        if name == "__metadata__" {
            continue;
        }
        let e: Entry = serde_json::from_value(v)?;
        if e.dtype != "BF16" {
            bail!(
                "{name}: {} (this benchmark reads BF16 checkpoints)",
                e.dtype
            );
        }
        let [begin, end] = e.data_offsets;
        buf.resize((end - begin) as usize, 0);
        file.read_exact_at(buf, data + begin)?;
        out.clear();
        sum = sum.wrapping_add(bf16_to_f16(buf, out));
        bytes += end - begin;
    }
    Ok((sum, bytes))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(mode)) = (args.next(), args.next()) else {
        bail!("usage: read_bench CHECKPOINT_DIR mmap|pread");
    };
    let files = source::resolve(&ModelSpec {
        model: dir,
        revision: None,
        offline: true,
    })?;
    let (t, cpu0) = (Instant::now(), cpu_seconds()?);
    let mut out = Vec::new();
    let (mut sum, mut bytes) = (0u64, 0u64);
    match mode.as_str() {
        "mmap" => {
            let store = WeightStore::open(&files)?;
            let names: Vec<String> = store.names().map(str::to_string).collect();
            for name in names {
                let shape = store.info(&name).context("listed tensor")?.1.to_vec();
                let raw = store.get(&name, &shape)?;
                let f16 = raw.to_f16_bytes()?;
                sum = sum.wrapping_add(
                    f16.chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u64)
                        .fold(0u64, u64::wrapping_add),
                );
                bytes += raw.bytes.len() as u64;
                raw.release();
            }
        }
        "pread" => {
            let mut buf = Vec::new();
            for path in &files.weights {
                let (s, b) = pread_file(path, &mut buf, &mut out)?;
                sum = sum.wrapping_add(s);
                bytes += b;
            }
        }
        other => bail!("mode {other:?}: want mmap or pread"),
    }
    println!(
        "{mode}: {:.2} GB in {:.2} s wall, {:.2} s CPU, peak RSS {:.2} GB (checksum {sum:x})",
        bytes as f64 / 1e9,
        t.elapsed().as_secs_f64(),
        cpu_seconds()? - cpu0,
        peak_rss()? as f64 / 1e9
    );
    Ok(())
}
