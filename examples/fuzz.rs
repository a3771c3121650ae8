//! A structured-mutation fuzzer over anec's real file readers, on stable Rust (no cargo-fuzz).
//!
//! Each target starts from seed files taken from the fixtures (tests/fixtures and the
//! coremltools samples, plus one tiny conversion written at start), mutates them (byte flips,
//! truncation, integer fields set to boundary values, length-field edits, protobuf varint edits,
//! JSON values replaced by boundary values of the same or another type), writes the result where
//! the reader expects it and calls the reader under `catch_unwind`. A reader may refuse the
//! input; it may not panic. A global allocator refuses any single allocation above
//! [`ALLOC_CEILING`], so an infallible allocation sized by a file aborts at once (the input is
//! then the target's file under the work folder printed at start) instead of exhausting memory.
//!
//! ```text
//! cargo run --example fuzz -- --seconds 6            # every target, 6 s each (CI's smoke pass)
//! cargo run --release --example fuzz -- --seconds 600 --target mlmodel --seed 7
//! ```
//!
//! Prints one line per target (time, executions, inputs the reader accepted, crashes) and exits
//! 1 when any input panicked;
//! each panicking input is saved under `<work>/crashes/` with the panic message beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anec::arch::DecoderConfig;
use anec::convert::{Chunks, Compile, ConvertPlan};
use anec::exec::{Interpreter, Precision, Tensor};
use anec::mil::ValueType;
use anec::source::{ModelFiles, ModelSpec};
use anec::verify::{Converted, Tok};
use anec::weights::WeightStore;
use serde_json::Value;

/// No reader needs a single allocation this large for the small seeds used here (the largest,
/// tiny-llama's weights, is under 1 MB); asking for more means a size came from the mutated file.
const ALLOC_CEILING: usize = 1 << 30;

struct Ceiling;

// SAFETY: forwards to the system allocator; only refuses (null) requests above the ceiling,
// which the allocation API allows.
unsafe impl GlobalAlloc for Ceiling {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CEILING {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CEILING {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_CEILING {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Ceiling = Ceiling;

// ------------------------------------------------------------------------------ randomness

/// splitmix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// Integer values at the edges: what a crafted size, count, offset or length would hold.
const BOUNDARY: [u64; 14] = [
    0,
    1,
    2,
    63,
    64,
    255,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    3_000_000_000,
    1 << 40,
    0x7FFF_FFFF_FFFF_FFFF,
    0x8000_0000_0000_0000,
    u64::MAX,
];

// ------------------------------------------------------------------------------ mutations

/// Byte-level edits: flips, boundary bytes, truncation, integer overwrites, splices.
fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>) {
    if b.is_empty() {
        b.extend_from_slice(&rng.next().to_le_bytes());
        return;
    }
    let at = rng.below(b.len());
    match rng.below(7) {
        0 => b[at] ^= 1 << rng.below(8),
        1 => b[at] = *rng.pick(&[0u8, 0xFF, 0x7F, 0x80, b'0', b'9', b'-']),
        2 => b.truncate(at),
        3 | 4 => {
            // a little-endian u32 or u64 boundary value, aligned as binary headers are
            let v = *rng.pick(&BOUNDARY);
            let width = if rng.below(2) == 0 { 4 } else { 8 };
            let at = at / width * width;
            let bytes = v.to_le_bytes();
            for (i, &x) in bytes[..width].iter().enumerate() {
                if let Some(slot) = b.get_mut(at + i) {
                    *slot = x;
                }
            }
        }
        5 => {
            let len = rng.below(16).min(b.len() - at);
            b.drain(at..at + len);
        }
        _ => {
            let from = rng.below(b.len());
            let len = rng.below(32).min(b.len() - from);
            let chunk = b[from..from + len].to_vec();
            b.splice(at..at, chunk);
        }
    }
}

/// A JSON value replacing another: boundary numbers, odd strings, other types.
fn boundary_json(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 | 1 => Value::from(*rng.pick(&BOUNDARY)),
        2 => Value::from(*rng.pick(&[-1i64, i64::MIN, -3_000_000_000])),
        3 => Value::from(*rng.pick(&[0.5f64, 1e308, -1e308, 1e-310, 3e9])),
        4 => Value::from(*rng.pick(&[
            "",
            "..",
            "../escape",
            "/abs/path",
            "a/b",
            "none",
            "x\u{0}y",
            "é",
        ])),
        _ => rng
            .pick(&[
                Value::Null,
                Value::Bool(true),
                Value::Array(vec![]),
                Value::Object(Default::default()),
            ])
            .clone(),
    }
}

/// Every node of a JSON document, as a path of keys and indices.
fn json_paths(v: &Value, at: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    out.push(at.clone());
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(PathStep::Index(i));
                json_paths(x, at, out);
                at.pop();
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                at.push(PathStep::Key(k.clone()));
                json_paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn json_at<'a>(v: &'a mut Value, path: &[PathStep]) -> &'a mut Value {
    path.iter().fold(v, |v, s| match s {
        PathStep::Key(k) => &mut v[k.as_str()],
        PathStep::Index(i) => &mut v[*i],
    })
}

/// A structural edit of a JSON document: a value replaced, a number nudged, an array emptied,
/// grown or shrunk, a key removed.
fn mutate_json(rng: &mut Rng, doc: &mut Value) {
    let mut paths = Vec::new();
    json_paths(doc, &mut Vec::new(), &mut paths);
    let path = rng.pick(&paths).clone();
    let node = json_at(doc, &path);
    match node {
        Value::Number(n) if rng.below(2) == 0 => {
            let x = n.as_i64().unwrap_or(0);
            *node = Value::from(x.wrapping_add(*rng.pick(&[-1i64, 1, -64, 64])));
        }
        Value::Array(a) if !a.is_empty() && rng.below(2) == 0 => match rng.below(3) {
            0 => a.clear(),
            1 => {
                a.remove(rng.below(a.len()));
            }
            _ => {
                let x = a[rng.below(a.len())].clone();
                a.push(x);
            }
        },
        Value::Object(m) if !m.is_empty() && rng.below(2) == 0 => {
            let key = m.keys().nth(rng.below(m.len())).cloned();
            if let Some(k) = key {
                m.remove(&k);
            }
        }
        _ => *node = boundary_json(rng),
    }
}

/// Mutates a JSON file: mostly structurally (when it parses), sometimes as bytes.
fn mutate_json_bytes(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        match serde_json::from_slice::<Value>(&out) {
            Ok(mut doc) if rng.below(4) != 0 => {
                mutate_json(rng, &mut doc);
                out = serde_json::to_vec(&doc).unwrap_or(out);
            }
            _ => mutate_bytes(rng, &mut out),
        }
    }
    out
}

/// Mutates a safetensors file: its JSON header structurally (the length field rewritten to
/// match), its length field, or its bytes.
fn mutate_safetensors(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let header = seed
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
        .filter(|&n| n.checked_add(8).is_some_and(|e| e <= seed.len()));
    match (rng.below(3), header) {
        (0, Some(n)) => {
            let json = mutate_json_bytes(rng, &seed[8..8 + n]);
            let mut out = (json.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&json);
            out.extend_from_slice(&seed[8 + n..]);
            out
        }
        (1, _) => {
            let mut out = seed.to_vec();
            let v = match rng.below(2) {
                0 => *rng.pick(&BOUNDARY),
                _ => header.unwrap_or(0) as u64 ^ (1 << rng.below(64)),
            };
            if out.len() >= 8 {
                out[..8].copy_from_slice(&v.to_le_bytes());
            }
            out
        }
        _ => {
            let mut out = seed.to_vec();
            for _ in 0..1 + rng.below(3) {
                mutate_bytes(rng, &mut out);
            }
            out
        }
    }
}

/// Where each varint of a protobuf message starts and ends (tags, values and lengths, in
/// nested messages too: a length-delimited field is walked when it parses as a message).
fn varints(b: &[u8], base: usize, depth: usize, out: &mut Vec<(usize, usize)>) -> bool {
    let mut at = 0;
    let mut found = Vec::new();
    // Reads the varint at `at` and records where it is.
    let spot = |at: &mut usize, found: &mut Vec<(usize, usize)>| {
        let start = *at;
        let v = read_varint(b, at)?;
        found.push((base + start, base + *at));
        Some(v)
    };
    while at < b.len() {
        let Some(tag) = spot(&mut at, &mut found) else {
            return false;
        };
        match tag & 7 {
            0 if spot(&mut at, &mut found).is_some() => {}
            1 => at += 8,
            5 => at += 4,
            2 => {
                let Some(len) = spot(&mut at, &mut found) else {
                    return false;
                };
                let start = at;
                let Some(end) = usize::try_from(len)
                    .ok()
                    .and_then(|l| start.checked_add(l))
                    .filter(|&e| e <= b.len())
                else {
                    return false;
                };
                if depth < 40 {
                    let mut inner = Vec::new();
                    if varints(&b[start..end], base + start, depth + 1, &mut inner) {
                        found.extend(inner);
                    }
                }
                at = end;
            }
            _ => return false,
        }
    }
    out.extend(found);
    at == b.len()
}

fn encode_varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// One protobuf field, parsed just enough to edit it and write it back with every enclosing
/// length recomputed (so an edit deep inside stays a well-formed message and reaches the
/// decoder's checks instead of failing at the first length).
#[derive(Clone)]
enum Field {
    Varint(u64, u64),
    /// A 4- or 8-byte value (floats).
    Fixed(u64, Vec<u8>),
    /// A length-delimited payload that does not parse as a message (strings, packed data).
    Bytes(u64, Vec<u8>),
    Message(u64, Vec<Field>),
}

fn read_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn parse_fields(b: &[u8], depth: usize) -> Option<Vec<Field>> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < b.len() {
        let tag = read_varint(b, &mut at)?;
        let field = match tag & 7 {
            0 => Field::Varint(tag, read_varint(b, &mut at)?),
            1 | 5 => {
                let end = at + if tag & 7 == 1 { 8 } else { 4 };
                let f = Field::Fixed(tag, b.get(at..end)?.to_vec());
                at = end;
                f
            }
            2 => {
                let len = usize::try_from(read_varint(b, &mut at)?).ok()?;
                let payload = b.get(at..at.checked_add(len)?)?;
                at += len;
                match parse_fields(payload, depth + 1).filter(|f| depth < 40 && !f.is_empty()) {
                    Some(inner) => Field::Message(tag, inner),
                    None => Field::Bytes(tag, payload.to_vec()),
                }
            }
            _ => return None,
        };
        out.push(field);
    }
    Some(out)
}

fn write_fields(fields: &[Field], out: &mut Vec<u8>) {
    for f in fields {
        match f {
            Field::Varint(tag, v) => {
                out.extend(encode_varint(*tag));
                out.extend(encode_varint(*v));
            }
            Field::Fixed(tag, b) => {
                out.extend(encode_varint(*tag));
                out.extend(b);
            }
            Field::Bytes(tag, b) => {
                out.extend(encode_varint(*tag));
                out.extend(encode_varint(b.len() as u64));
                out.extend(b);
            }
            Field::Message(tag, inner) => {
                let mut body = Vec::new();
                write_fields(inner, &mut body);
                out.extend(encode_varint(*tag));
                out.extend(encode_varint(body.len() as u64));
                out.extend(body);
            }
        }
    }
}

/// Fields and field lists of a tree: each list counts once, each leaf once.
fn count_nodes(list: &[Field]) -> usize {
    1 + list
        .iter()
        .map(|f| match f {
            Field::Message(_, inner) => count_nodes(inner),
            _ => 1,
        })
        .sum::<usize>()
}

/// Edits the `k`-th node (depth first): a list loses, repeats or swaps a field; a varint
/// becomes a boundary or neighbouring value; a fixed value a boundary float or integer; a
/// payload is cut or altered.
fn mutate_node(rng: &mut Rng, list: &mut Vec<Field>, k: &mut usize) -> bool {
    if *k == 0 {
        if !list.is_empty() {
            let i = rng.below(list.len());
            match rng.below(3) {
                0 => drop(list.remove(i)),
                1 => list.insert(i, list[i].clone()),
                _ => {
                    let j = rng.below(list.len());
                    list.swap(i, j);
                }
            }
        }
        return true;
    }
    *k -= 1;
    for f in list.iter_mut() {
        if let Field::Message(_, inner) = f {
            if mutate_node(rng, inner, k) {
                return true;
            }
            continue;
        }
        if *k > 0 {
            *k -= 1;
            continue;
        }
        match f {
            Field::Varint(_, v) => {
                *v = match rng.below(3) {
                    0 => *rng.pick(&BOUNDARY),
                    1 => v.wrapping_add(*rng.pick(&[1u64, u64::MAX])),
                    _ => v.wrapping_mul(*rng.pick(&[2u64, 1 << 20, 1 << 32])),
                }
            }
            Field::Fixed(_, b) if b.len() == 4 => {
                let x = *rng.pick(&[0.0f32, -1.0, f32::NAN, f32::INFINITY, 1e30, 65520.0]);
                b.copy_from_slice(&x.to_le_bytes());
            }
            Field::Fixed(_, b) => b.copy_from_slice(&rng.pick(&BOUNDARY).to_le_bytes()),
            Field::Bytes(_, b) => mutate_bytes(rng, b),
            Field::Message(..) => {}
        }
        return true;
    }
    false
}

/// Mutates a protobuf message: mostly one field of its parsed tree (lengths recomputed), else
/// one varint edited in place (a tag, a value or a length: the enclosing lengths go stale), or
/// its bytes.
fn mutate_protobuf(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(2) {
        match (rng.below(8), parse_fields(&out, 0)) {
            (0..=4, Some(mut tree)) => {
                let mut k = rng.below(count_nodes(&tree));
                mutate_node(rng, &mut tree, &mut k);
                out.clear();
                write_fields(&tree, &mut out);
            }
            (5 | 6, _) => {
                let mut spots = Vec::new();
                varints(&out, 0, 0, &mut spots);
                if spots.is_empty() {
                    mutate_bytes(rng, &mut out);
                    continue;
                }
                let (start, end) = *rng.pick(&spots);
                let mut at = start;
                let old = read_varint(&out, &mut at).unwrap_or(0);
                let new = match rng.below(3) {
                    0 => *rng.pick(&BOUNDARY),
                    1 => old.wrapping_add(*rng.pick(&[1u64, u64::MAX, 2, u64::MAX - 1])),
                    _ => old.wrapping_mul(*rng.pick(&[2u64, 1 << 20, 1 << 32])),
                };
                out.splice(start..end, encode_varint(new));
            }
            _ => mutate_bytes(rng, &mut out),
        }
    }
    out
}

// ------------------------------------------------------------------------------ targets

/// One file a target mutates, with the folder it is read from.
struct Seed {
    name: String,
    /// The folder the reader is given (a copy of the seed's folder in the work area).
    dir: PathBuf,
    /// The mutated file, relative to `dir`.
    file: PathBuf,
    bytes: Vec<u8>,
}

/// Reads the input where it was written; true when the reader accepted it.
type Reader = fn(&Path, &Path) -> bool;
type Mutator = fn(&mut Rng, &[u8]) -> Vec<u8>;

struct Target {
    name: &'static str,
    what: &'static str,
    seeds: Vec<Seed>,
    mutate: Mutator,
    read: Reader,
}

fn read_safetensors(_dir: &Path, file: &Path) -> bool {
    let files = ModelFiles {
        dir: file.parent().unwrap_or(Path::new(".")).to_path_buf(),
        config: file.with_file_name("config.json"),
        weights: vec![file.to_path_buf()],
        index: None,
        tokenizer_files: vec![],
        repo_id: None,
        revision: None,
        downloaded: vec![],
    };
    let Ok(store) = WeightStore::open(&files) else {
        return false;
    };
    let names: Vec<String> = store.names().map(str::to_string).collect();
    for name in names {
        let shape = store
            .info(&name)
            .map(|(_, s)| s.to_vec())
            .unwrap_or_default();
        if let Ok(t) = store.get(&name, &shape) {
            let _ = t.to_f16_bytes();
        }
    }
    true
}

fn read_config(_dir: &Path, file: &Path) -> bool {
    std::fs::read_to_string(file).is_ok_and(|text| {
        DecoderConfig::from_json_str(&text).is_ok_and(|cfg| cfg.validate("config.json").is_ok())
    })
}

fn read_package(dir: &Path, _file: &Path) -> bool {
    anec::mil::read_package(dir).is_ok()
}

/// Reads the package, then runs every function on zero inputs and zero states (inputs are
/// bounded by the harness; everything else the package declares is the interpreter's to
/// refuse). Accepted when a function ran to the end.
fn run_package(dir: &Path, _file: &Path) -> bool {
    let Ok(model) = anec::mil::read_package(dir) else {
        return false;
    };
    let interp = Interpreter::new(&model.program, Precision::F16);
    let mut ran = false;
    for (name, f) in &model.program.functions {
        let mut inputs = BTreeMap::new();
        for (input, ty) in &f.inputs {
            let ValueType::Tensor(t) = ty else { continue };
            let small = t
                .num_elements()
                .filter(|&n| n <= 1 << 16)
                .and_then(|_| t.static_shape());
            let Some(shape) = small else {
                return ran;
            };
            let shape = shape.iter().map(|&d| d as usize).collect();
            let Ok(z) = Tensor::zeros(t.dtype, shape) else {
                return ran;
            };
            inputs.insert(input.clone(), z);
        }
        if let Ok(mut states) = interp.zero_states(name) {
            ran |= interp.run(name, &inputs, &mut states).is_ok();
        }
    }
    ran
}

fn read_meta(dir: &Path, _file: &Path) -> bool {
    Converted::open(dir, Precision::F32).is_ok()
}

fn read_tokenizer(dir: &Path, _file: &Path) -> bool {
    let Ok(tok) = Tok::open(dir) else {
        return false;
    };
    let _ = tok.eos_ids();
    tok.encode("The keeper wrote: wind from the west.")
        .is_ok_and(|ids| tok.decode(&ids).is_ok())
}

fn mutate_blob(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(2) {
        if rng.below(3) == 0 || out.len() < 64 {
            mutate_bytes(rng, &mut out);
            continue;
        }
        // A field of the header or of a metadata record (records start on 64-byte boundaries).
        let record = rng.below(out.len() / 64) * 64;
        let field = *rng.pick(&[0usize, 4, 8, 16, 24]);
        let v = rng.pick(&BOUNDARY).to_le_bytes();
        let width = if field < 8 { 4 } else { 8 };
        for (i, &x) in v[..width].iter().enumerate() {
            if let Some(b) = out.get_mut(record + field + i) {
                *b = x;
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------ setup

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// Copies `folder` into the target's work area and makes a seed of `file` inside it.
fn seed_in(work: &Path, target: &str, folder: &Path, file: &str) -> std::io::Result<Seed> {
    let name = folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = work.join(target).join(&name);
    copy_dir(folder, &dir)?;
    let bytes = std::fs::read(dir.join(file))?;
    Ok(Seed {
        name: format!("{name}/{file}"),
        dir,
        file: PathBuf::from(file),
        bytes,
    })
}

fn targets(work: &Path, converted: &Path) -> std::io::Result<Vec<Target>> {
    let fixtures = repo().join("tests/fixtures");
    let models = ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-mistral"];
    let samples: Vec<PathBuf> = ["decode", "prefill", "multifunction", "flexible"]
        .iter()
        .map(|s| {
            fixtures
                .join("coreml-samples")
                .join(format!("{s}.mlpackage"))
        })
        .collect();
    let mut packages = samples.clone();
    let mut written: Vec<PathBuf> = std::fs::read_dir(converted)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "mlpackage"))
        .collect();
    written.sort();
    packages.extend(written);
    let each = |target: &str, dirs: &[PathBuf], file: &str| -> std::io::Result<Vec<Seed>> {
        dirs.iter()
            .filter(|d| d.join(file).is_file())
            .map(|d| seed_in(work, target, d, file))
            .collect()
    };
    // Safetensors seeds: the smallest checkpoint files (one folder each, so a seed's name is
    // its folder).
    let mut st = Vec::new();
    for (folder, file) in [
        (
            fixtures.join("tiny-mistral"),
            "model-00003-of-00003.safetensors",
        ),
        (fixtures.join("tiny-qwen2"), "model.safetensors"),
        (fixtures.join("coreml-samples"), "expected.safetensors"),
    ] {
        let dir = work.join("safetensors").join(st.len().to_string());
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(folder.join(file), dir.join(file))?;
        st.push(Seed {
            name: format!(
                "{}/{file}",
                folder.file_name().unwrap_or_default().to_string_lossy()
            ),
            bytes: std::fs::read(dir.join(file))?,
            dir,
            file: PathBuf::from(file),
        });
    }
    let mut configs = Vec::new();
    for m in models {
        for file in ["config.json", "config.transformers5.json"] {
            let dir = work.join("config").join(format!("{m}-{file}"));
            std::fs::create_dir_all(&dir)?;
            let src = fixtures.join(m).join(file);
            if src.is_file() {
                let bytes = std::fs::read(&src)?;
                std::fs::write(dir.join("config.json"), &bytes)?;
                configs.push(Seed {
                    name: format!("{m}/{file}"),
                    dir,
                    file: PathBuf::from("config.json"),
                    bytes,
                });
            }
        }
    }
    let model_file = "Data/com.apple.CoreML/model.mlmodel";
    let weight_file = "Data/com.apple.CoreML/weights/weight.bin";
    let model_dirs: Vec<PathBuf> = models.iter().map(|m| fixtures.join(m)).collect();
    Ok(vec![
        Target {
            name: "safetensors",
            what: "safetensors header and tensors (weights::WeightStore)",
            seeds: st,
            mutate: mutate_safetensors,
            read: read_safetensors,
        },
        Target {
            name: "config",
            what: "config.json (arch::DecoderConfig)",
            seeds: configs,
            mutate: mutate_json_bytes,
            read: read_config,
        },
        Target {
            name: "mlmodel",
            what: "model.mlmodel protobuf, decode and type inference (mil::read_package)",
            seeds: each("mlmodel", &packages, model_file)?,
            mutate: mutate_protobuf,
            read: read_package,
        },
        Target {
            name: "weight.bin",
            what: "weight.bin header and blob records (mil::read_package)",
            seeds: each("weight.bin", &packages, weight_file)?,
            mutate: mutate_blob,
            read: read_package,
        },
        Target {
            name: "manifest",
            what: "Manifest.json (mil::read_package)",
            seeds: each("manifest", &samples, "Manifest.json")?,
            mutate: mutate_json_bytes,
            read: read_package,
        },
        Target {
            name: "exec",
            what: "model.mlmodel read, then run on zero inputs (exec::Interpreter)",
            seeds: each("exec", &packages, model_file)?,
            mutate: mutate_protobuf,
            read: run_package,
        },
        Target {
            name: "meta",
            what: "meta.json and the packages it names (verify::Converted::open)",
            seeds: each("meta", &[converted.to_path_buf()], "meta.json")?,
            mutate: mutate_json_bytes,
            read: read_meta,
        },
        Target {
            name: "tokenizer",
            what: "tokenizer.json and tokenizer_config.json (verify::Tok)",
            seeds: each("tokenizer", &model_dirs, "tokenizer.json")?,
            mutate: mutate_json_bytes,
            read: read_tokenizer,
        },
    ])
}

/// A tiny conversion (tiny-llama, context 64): seeds for meta.json and anec-written packages.
fn convert_seed(work: &Path) -> Result<PathBuf, String> {
    let out = work.join("converted");
    let spec = ModelSpec {
        model: repo()
            .join("tests/fixtures/tiny-llama")
            .display()
            .to_string(),
        revision: None,
        offline: true,
    };
    let mut plan = ConvertPlan::new(spec, &out);
    plan.context_length = 64;
    plan.batch_size = 16;
    plan.chunks = Chunks::Count(2);
    plan.quiet = true;
    plan.compile = Compile::Never;
    anec::convert::run(&plan).map_err(|e| e.to_string())?;
    Ok(out)
}

// ------------------------------------------------------------------------------ the loop

struct Outcome {
    execs: u64,
    /// Inputs the reader accepted (how deep the mutations reach).
    accepted: u64,
    crashes: Vec<(String, String)>,
    elapsed: Duration,
}

fn fuzz(target: &Target, rng: &mut Rng, budget: Duration, crash_dir: &Path) -> Outcome {
    let start = Instant::now();
    let mut execs = 0u64;
    let mut accepted = 0u64;
    let mut crashes: Vec<(String, String)> = Vec::new();
    while start.elapsed() < budget && !target.seeds.is_empty() {
        let seed = rng.pick(&target.seeds);
        let input = (target.mutate)(rng, &seed.bytes);
        let path = seed.dir.join(&seed.file);
        if std::fs::write(&path, &input).is_err() {
            break;
        }
        LAST_PANIC.lock().map(|mut m| m.take()).ok();
        let result = panic::catch_unwind(AssertUnwindSafe(|| (target.read)(&seed.dir, &path)));
        execs += 1;
        accepted += u64::from(matches!(result, Ok(true)));
        if result.is_err() {
            let message = LAST_PANIC
                .lock()
                .ok()
                .and_then(|mut m| m.take())
                .unwrap_or_default();
            // One saved input per distinct panic location.
            let site = message.lines().next().unwrap_or_default().to_string();
            if !crashes.iter().any(|(s, _)| *s == site) {
                let n = crashes.len();
                let file = crash_dir.join(format!("{}-{n}.bin", target.name));
                let _ = std::fs::write(&file, &input);
                let _ = std::fs::write(
                    file.with_extension("txt"),
                    format!("seed {}\n{message}\n", seed.name),
                );
                crashes.push((site, file.display().to_string()));
            }
        }
    }
    // Leave the seed files as they were.
    for seed in &target.seeds {
        let _ = std::fs::write(seed.dir.join(&seed.file), &seed.bytes);
    }
    Outcome {
        execs,
        accepted,
        crashes,
        elapsed: start.elapsed(),
    }
}

/// The message of the latest panic (the hook stores it; the loop takes it).
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

struct Args {
    seconds: f64,
    seed: u64,
    only: Option<String>,
    work: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 5.0,
        seed: 1,
        only: None,
        work: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--target" => a.only = Some(value()?),
            "--work" => a.work = Some(PathBuf::from(value()?)),
            other => {
                return Err(format!(
                    "unknown argument {other:?} (--seconds S, --seed N, --target NAME, --work DIR)"
                ))
            }
        }
    }
    Ok(a)
}

fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fuzz: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let tmp;
    let work = match &args.work {
        Some(w) => w.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("anec-fuzz-")
                .tempdir()
                .expect("a temporary folder for the fuzzer");
            tmp.path().to_path_buf()
        }
    };
    let crash_dir = work.join("crashes");
    std::fs::create_dir_all(&crash_dir).expect("the crash folder");
    println!(
        "work folder {} (after an abort, the input is the target's file there)",
        work.display()
    );
    let converted = convert_seed(&work).expect("the tiny-llama seed conversion");
    let all = targets(&work, &converted).expect("the seed files");
    panic::set_hook(Box::new(|info| {
        if let Ok(mut m) = LAST_PANIC.lock() {
            *m = Some(info.to_string());
        }
    }));
    let mut rng = Rng(args.seed);
    let budget = Duration::from_secs_f64(args.seconds);
    let mut crashes = Vec::new();
    println!(
        "{:<12} {:>6} {:>8} {:>9} {:>9} {:>7}  what",
        "target", "seeds", "time s", "execs", "accepted", "crashes"
    );
    for t in all
        .iter()
        .filter(|t| args.only.as_deref().is_none_or(|o| o == t.name))
    {
        let out = fuzz(t, &mut rng, budget, &crash_dir);
        println!(
            "{:<12} {:>6} {:>8.1} {:>9} {:>9} {:>7}  {}",
            t.name,
            t.seeds.len(),
            out.elapsed.as_secs_f64(),
            out.execs,
            out.accepted,
            out.crashes.len(),
            t.what
        );
        for (site, file) in out.crashes {
            crashes.push(format!("{}: {site} (input {file})", t.name));
        }
    }
    let _ = panic::take_hook();
    for line in &crashes {
        println!("CRASH {line}");
    }
    if !crashes.is_empty() {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}
