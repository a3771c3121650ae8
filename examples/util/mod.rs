//! What the benchmark examples read about their own process (Linux /proc): CPU time, which stays
//! meaningful when other work shares the cores, and peak resident memory.

use anyhow::{Context, Result};

/// User + system CPU seconds of this process, all threads (fields 14 and 15 of /proc/self/stat,
/// in clock ticks of 1/100 s, the Linux default).
pub fn cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let rest = stat.rsplit_once(')').context("/proc/self/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(f.get(i)
            .context("/proc/self/stat is short")?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Peak resident set size in bytes (VmHWM of /proc/self/status).
#[allow(dead_code)] // lut_bench reads only the CPU time
pub fn peak_rss() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?
        .trim()
        .trim_end_matches(" kB")
        .parse::<u64>()?;
    Ok(kb * 1024)
}
