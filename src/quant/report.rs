//! The quantization report: one summary row per palettized tensor, the median SNR of each role
//! (q_proj, down_proj, lm_head, ...), and the tensors more than 3 dB below their role's median,
//! which are the candidates for more bits. The text form is the summary; the per-tensor rows
//! serialize to JSON (`--json`, where a lossless tensor's +∞ SNR is `null`) and to CSV.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::Palettized;

/// One palettized tensor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorSummary {
    pub name: String,
    pub role: String,
    pub rows: usize,
    pub cols: usize,
    pub bits: u32,
    /// Output channels per LUT as used.
    pub group_size: usize,
    /// The requested group size, when it did not divide the rows and a smaller one was used.
    pub group_requested: Option<usize>,
    pub groups: usize,
    pub distinct_mean: f64,
    pub distinct_max: usize,
    pub snr_db: f64,
    pub worst_group: usize,
    pub worst_group_snr_db: f64,
    /// With calibration: `‖(W − Ŵ)X‖ / ‖WX‖` on sampled calibration activations `X`, the
    /// relative error the quantization adds to this layer's output.
    pub output_error: Option<f64>,
    pub seconds: f64,
}

impl TensorSummary {
    pub fn new(name: impl Into<String>, role: impl Into<String>, p: &Palettized) -> Self {
        TensorSummary {
            name: name.into(),
            role: role.into(),
            rows: p.rows,
            cols: p.cols,
            bits: p.bits,
            group_size: p.group_size,
            group_requested: p.group_adjusted.map(|(requested, _)| requested),
            groups: p.groups,
            distinct_mean: p.distinct.mean,
            distinct_max: p.distinct.max,
            snr_db: p.snr_db,
            worst_group: p.worst_group.0,
            worst_group_snr_db: p.worst_group.1,
            output_error: None,
            seconds: p.seconds,
        }
    }
}

/// SNR statistics of one role.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoleSummary {
    pub role: String,
    pub tensors: usize,
    pub median_snr_db: f64,
    pub min_snr_db: f64,
    /// Median calibrated output error of the role's tensors, when calibrated.
    pub median_output_error: Option<f64>,
}

/// A tensor whose SNR is more than [`QuantReport::FLAG_BELOW_MEDIAN_DB`] below its role's median.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorFlag {
    pub name: String,
    pub role: String,
    pub snr_db: f64,
    pub role_median_snr_db: f64,
    pub below_median_db: f64,
}

/// Per-tensor rows in insertion order, roles sorted by name, flags in tensor order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QuantReport {
    pub tensors: Vec<TensorSummary>,
    pub roles: Vec<RoleSummary>,
    pub flagged: Vec<TensorFlag>,
    /// Sum of the tensors' palettizing times.
    pub seconds: f64,
}

/// Role names recognised by [`QuantReport::role_of`], matched as `.name.` or a trailing `.name`
/// component of an HF tensor name.
const ROLES: [&str; 9] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "lm_head",
    "embed_tokens",
];

impl QuantReport {
    /// How far below its role's median SNR a tensor is flagged.
    pub const FLAG_BELOW_MEDIAN_DB: f64 = 3.0;

    pub fn new() -> Self {
        Self::default()
    }

    /// The role of an HF weight name (`model.layers.3.mlp.down_proj.weight` → `down_proj`), or
    /// `other`. Callers with their own naming pass roles to [`QuantReport::push`] directly.
    pub fn role_of(name: &str) -> &'static str {
        name.split('.')
            .find_map(|part| ROLES.iter().find(|r| **r == part).copied())
            .unwrap_or("other")
    }

    /// Adds a tensor and refreshes the role medians and flags.
    pub fn push(&mut self, name: impl Into<String>, role: impl Into<String>, p: &Palettized) {
        self.add(TensorSummary::new(name, role, p));
    }

    /// Adds a prepared row and refreshes the role medians and flags.
    pub fn add(&mut self, row: TensorSummary) {
        self.seconds += row.seconds;
        self.tensors.push(row);
        self.refresh();
    }

    fn refresh(&mut self) {
        let mut by_role: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for t in &self.tensors {
            let (snr, err) = by_role.entry(&t.role).or_default();
            snr.push(t.snr_db);
            err.extend(t.output_error);
        }
        self.roles = by_role
            .into_iter()
            .map(|(role, (mut v, mut e))| {
                v.sort_by(f64::total_cmp);
                e.sort_by(f64::total_cmp);
                RoleSummary {
                    role: role.to_string(),
                    tensors: v.len(),
                    median_snr_db: median(&v),
                    min_snr_db: v[0],
                    median_output_error: (!e.is_empty()).then(|| median(&e)),
                }
            })
            .collect();
        let medians: BTreeMap<&str, f64> = self
            .roles
            .iter()
            .map(|r| (r.role.as_str(), r.median_snr_db))
            .collect();
        self.flagged = self
            .tensors
            .iter()
            .filter_map(|t| {
                let m = *medians.get(t.role.as_str())?;
                let below = m - t.snr_db;
                (below > Self::FLAG_BELOW_MEDIAN_DB).then(|| TensorFlag {
                    name: t.name.clone(),
                    role: t.role.clone(),
                    snr_db: t.snr_db,
                    role_median_snr_db: m,
                    below_median_db: below,
                })
            })
            .collect();
    }

    /// The calibrated tensors with the highest output error, worst first: the ones that hurt
    /// the model most, and so the first candidates for more bits.
    pub fn worst_output_error(&self, n: usize) -> Vec<&TensorSummary> {
        let mut v: Vec<&TensorSummary> = self
            .tensors
            .iter()
            .filter(|t| t.output_error.is_some())
            .collect();
        v.sort_by(|a, b| {
            b.output_error
                .unwrap_or(0.0)
                .total_cmp(&a.output_error.unwrap_or(0.0))
        });
        v.truncate(n);
        v
    }

    /// The median SNR of `role`, if any tensor has it.
    pub fn role_median(&self, role: &str) -> Option<f64> {
        self.roles
            .iter()
            .find(|r| r.role == role)
            .map(|r| r.median_snr_db)
    }
}

/// Median of sorted values (mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}

/// How many flagged tensors the text summary lists by name; `--json` and `--report` list all.
const FLAGS_SHOWN: usize = 8;

impl QuantReport {
    /// The group-size fallbacks, one line per (requested, rows, used) with the number of
    /// tensors it applies to: `group 8 does not divide 172 rows; used 4 in 8 tensors`.
    pub fn notes(&self) -> Vec<String> {
        let mut by: BTreeMap<(usize, usize, usize), usize> = BTreeMap::new();
        for t in &self.tensors {
            if let Some(req) = t.group_requested {
                *by.entry((req, t.rows, t.group_size)).or_default() += 1;
            }
        }
        by.into_iter()
            .map(|((req, rows, used), n)| {
                let tensors = if n == 1 { "tensor" } else { "tensors" };
                format!("group {req} does not divide {rows} rows; used {used} in {n} {tensors}")
            })
            .collect()
    }

    /// The per-tensor rows as CSV: a header, then one line per tensor in build order. Absent
    /// values are empty fields, a lossless tensor's SNR is `inf`.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "name,role,rows,cols,bits,group_size,group_requested,groups,distinct_mean,\
             distinct_max,snr_db,worst_group,worst_group_snr_db,output_error,seconds\n",
        );
        let opt = |v: Option<String>| v.unwrap_or_default();
        for t in &self.tensors {
            let fields = [
                csv_field(&t.name),
                csv_field(&t.role),
                t.rows.to_string(),
                t.cols.to_string(),
                t.bits.to_string(),
                t.group_size.to_string(),
                opt(t.group_requested.map(|g| g.to_string())),
                t.groups.to_string(),
                format!("{:.3}", t.distinct_mean),
                t.distinct_max.to_string(),
                format!("{:.4}", t.snr_db),
                t.worst_group.to_string(),
                format!("{:.4}", t.worst_group_snr_db),
                opt(t.output_error.map(|e| format!("{e:.6}"))),
                format!("{:.4}", t.seconds),
            ];
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        out
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The summary a person reads: role medians, the calibrated tensors with the highest output
/// error, the flagged tensors (what to act on) and the group-size notes, one line per kind.
/// The per-tensor rows are in `--json` and `--report`. Every line ends with a newline.
impl fmt::Display for QuantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "palettized {} tensors in {:.2} s; SNR by role:",
            self.tensors.len(),
            self.seconds
        )?;
        let rw = self
            .roles
            .iter()
            .map(|r| r.role.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            f,
            "  {:<rw$}  {:>7}  {:>9}  {:>9}  {:>13}",
            "role", "tensors", "median dB", "min dB", "out. error"
        )?;
        for r in &self.roles {
            let err = r
                .median_output_error
                .map_or("-".to_string(), |e| format!("{:.2} %", 100.0 * e));
            writeln!(
                f,
                "  {:<rw$}  {:>7}  {:>9.2}  {:>9.2}  {:>13}",
                r.role, r.tensors, r.median_snr_db, r.min_snr_db, err
            )?;
        }
        let worst = self.worst_output_error(5);
        if !worst.is_empty() {
            writeln!(
                f,
                "highest calibrated output error (candidates for more bits):"
            )?;
            for t in worst {
                writeln!(
                    f,
                    "  {} {:.2} % ({:.2} dB)",
                    t.name,
                    100.0 * t.output_error.unwrap_or(0.0),
                    t.snr_db
                )?;
            }
        }
        if self.flagged.is_empty() {
            writeln!(
                f,
                "flagged: none (no tensor more than {:.0} dB below its role's median)",
                Self::FLAG_BELOW_MEDIAN_DB
            )?;
        }
        for fl in self.flagged.iter().take(FLAGS_SHOWN) {
            writeln!(
                f,
                "flagged: {} at {:.2} dB, {:.2} dB below the {} median ({:.2} dB)",
                fl.name, fl.snr_db, fl.below_median_db, fl.role, fl.role_median_snr_db
            )?;
        }
        if self.flagged.len() > FLAGS_SHOWN {
            writeln!(
                f,
                "flagged: {} more (all of them in --json and --report)",
                self.flagged.len() - FLAGS_SHOWN
            )?;
        }
        for note in self.notes() {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}
