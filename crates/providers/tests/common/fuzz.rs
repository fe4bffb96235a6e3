//! The corpus runner: the stable-toolchain driver of the fuzz targets (`fuzz/targets.rs`).
//!
//! A run replays a target's seed corpus (`fuzz/corpus/<target>/`), then feeds it mutations of
//! those seeds until its time is up. Mutations know the input's shape: bytes (bit flips,
//! inserted tokens, cut and repeated ranges, splices), JSON (a value replaced, deleted,
//! repeated or swapped for another of the document's) and SSE (events dropped, repeated,
//! swapped, re-framed, or their JSON mutated). There is no coverage feedback, which is what
//! the libFuzzer binaries add (`make fuzz`).
//!
//! Settings, from the environment:
//! - `SWITCHYARD_FUZZ_SECS`: seconds of mutated inputs per target (default 3, what `make
//!   test` runs; `make fuzz` runs much longer).
//! - `SWITCHYARD_FUZZ_CASES`: at most this many mutated inputs per target (default: no limit).
//! - `SWITCHYARD_FUZZ_SEED`: the mutation seed, a number or `random` (default fixed, so a
//!   failure under `make test` happens again on the next run).
//!
//! A failing input is saved under `target/tmp/fuzz-crashes/<target>/`; add it to the
//! target's corpus with the fix, so it is replayed from then on. An input that runs for more
//! than [`HANG`] is saved the same way and aborts the run.

use std::{
    panic::{catch_unwind, resume_unwind},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use fastrand::Rng;
use serde_json::Value;

use crate::targets::Target;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus");
const CRASHES: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/fuzz-crashes");
/// Longest one input may run (in a debug build) before it counts as a hang.
const HANG: Duration = Duration::from_secs(30);
/// Longest mutated input: the seeds are real bodies of a few KiB.
const MAX_INPUT: usize = 256 * 1024;

/// How a run is bounded and seeded.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Time for mutated inputs.
    pub time: Duration,
    /// Most mutated inputs.
    pub cases: u64,
    /// The mutation seed.
    pub seed: u64,
}

impl Settings {
    /// From the environment (see the module docs).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let time = var("SWITCHYARD_FUZZ_SECS")
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(Duration::from_secs(3), Duration::from_secs_f64);
        let cases = var("SWITCHYARD_FUZZ_CASES")
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX);
        let seed = match var("SWITCHYARD_FUZZ_SEED").as_deref() {
            Some("random") => fastrand::u64(..),
            Some(s) => s
                .parse()
                .unwrap_or_else(|_| panic!("SWITCHYARD_FUZZ_SEED={s}")),
            None => 0x5EED,
        };
        Settings { time, cases, seed }
    }
}

/// What a target's input is, for mutations that keep it close to what the parser expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Bytes without structure the mutator knows.
    Bytes,
    /// One JSON document.
    Json,
    /// An SSE stream of JSON payloads.
    Sse,
}

/// Replays the corpus of `name`, then mutations of it for the configured time.
pub fn run(name: &str, target: Target, shape: Shape) {
    let settings = Settings::from_env();
    let seeds = corpus(name);
    assert!(!seeds.is_empty(), "no seed corpus in {CORPUS}/{name}");
    let watch = Watchdog::start(name);
    for (path, input) in &seeds {
        watch.check(name, target, input, Some(path));
    }
    let inputs: Vec<Vec<u8>> = seeds.into_iter().map(|(_, s)| s).collect();
    let mut rng = Rng::with_seed(settings.seed ^ fnv(name.as_bytes()));
    let dict = dictionary(&inputs);
    let start = Instant::now();
    let mut cases = 0u64;
    while cases < settings.cases && start.elapsed() < settings.time {
        let input = mutate(&mut rng, &inputs, &dict, shape);
        watch.check(name, target, &input, None);
        cases += 1;
    }
    watch.stop();
    eprintln!(
        "fuzz {name}: {} seeds and {cases} mutations in {:.1?} (seed {})",
        inputs.len(),
        start.elapsed(),
        settings.seed
    );
}

/// The seed corpus of `name`, in file-name order.
pub fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(CORPUS).join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// The input being run, and since when.
type Current = Arc<Mutex<Option<(Instant, Arc<Vec<u8>>)>>>;

/// Runs each input under a watch for hangs, and saves the inputs that fail.
struct Watchdog {
    current: Current,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(name: &str) -> Self {
        let current = Current::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, name) = (current.clone(), stop.clone(), name.to_string());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(200));
                let hung = match c.lock() {
                    Ok(g) => g
                        .as_ref()
                        .filter(|(at, _)| at.elapsed() > HANG)
                        .map(|(_, input)| input.clone()),
                    Err(_) => None,
                };
                if let Some(input) = hung {
                    let path = save(&name, "hang", &input);
                    eprintln!(
                        "fuzz {name}: an input ran for more than {HANG:?}; saved as {}",
                        path.display()
                    );
                    std::process::abort();
                }
            }
        });
        Watchdog {
            current,
            stop,
            thread: Some(thread),
        }
    }

    fn check(&self, name: &str, target: Target, input: &[u8], seed: Option<&Path>) {
        let shared = Arc::new(input.to_vec());
        if let Ok(mut g) = self.current.lock() {
            *g = Some((Instant::now(), shared));
        }
        let result = catch_unwind(|| target(input));
        if let Ok(mut g) = self.current.lock() {
            *g = None;
        }
        if let Err(panic) = result {
            match seed {
                Some(path) => eprintln!("fuzz {name}: corpus file {} fails", path.display()),
                None => {
                    let path = save(name, "crash", input);
                    eprintln!(
                        "fuzz {name}: a mutated input fails; saved as {} (add it to \
                         fuzz/corpus/{name}/ with the fix): {}",
                        path.display(),
                        String::from_utf8_lossy(&input[..input.len().min(4096)])
                    );
                }
            }
            resume_unwind(panic);
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn save(name: &str, kind: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(CRASHES).join(name);
    let path = dir.join(format!("{kind}-{:016x}", fnv(input)));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input)) {
        eprintln!("fuzz {name}: cannot save {}: {e}", path.display());
    }
    path
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// === mutations ===

/// Tokens worth inserting anywhere: JSON and SSE syntax, escapes, edge-case numbers.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"\\u0000",
    b"null",
    b"true",
    b"-",
    b"0",
    b"-0",
    b"1e999",
    b"1.5",
    b"4294967295",
    b"4294967296",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"data: ",
    b"data:",
    b"event: ",
    b": keep-alive\n\n",
    b"[DONE]",
    b"\xff",
    b"\xc3\xa9",
    b"\xf0\x9f\x98\x80",
    b"\x00",
];

/// Values a JSON mutation may put anywhere.
fn interesting_values() -> Vec<Value> {
    use serde_json::json;
    vec![
        Value::Null,
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(u32::MAX),
        json!(u64::from(u32::MAX) + 1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1.5),
        json!(-1e300),
        json!(""),
        json!(" "),
        json!("x"),
        json!("\u{0}\u{1f}\"\\\u{7f}é😀\u{2028}"),
        json!("a".repeat(5000)),
        json!({}),
        json!([]),
        json!([{}]),
        json!({"type": null}),
    ]
}

/// Strings found in the seeds (keys and string values), for mutations that swap one for
/// another: a `type` that names another event kind reaches other decoder paths.
fn dictionary(seeds: &[Vec<u8>]) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.len() < 64 => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => {
                for (k, x) in o {
                    out.push(k.clone());
                    walk(x, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for s in seeds {
        if let Ok(v) = serde_json::from_slice::<Value>(s) {
            walk(&v, &mut out);
        }
        for e in sse_events(s) {
            if let Ok(v) = serde_json::from_slice::<Value>(&e.data) {
                walk(&v, &mut out);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One mutated input: a seed (or now and then plain random bytes), changed one to eight
/// times.
pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], dict: &[String], shape: Shape) -> Vec<u8> {
    if rng.u8(..32) == 0 {
        let len = rng.usize(..256);
        return std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
    }
    let mut d = seeds[rng.usize(..seeds.len())].clone();
    let rounds = if rng.bool() { 1 } else { rng.usize(2..9) };
    for _ in 0..rounds {
        match (shape, rng.u8(..4)) {
            (Shape::Json, 0 | 1) => json_op(rng, &mut d, dict),
            (Shape::Sse, 0 | 1) => sse_op(rng, &mut d, dict),
            _ => byte_op(rng, &mut d, seeds),
        }
        d.truncate(MAX_INPUT);
    }
    d
}

fn byte_op(rng: &mut Rng, d: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let at = rng.usize(..=d.len());
    match rng.u8(..9) {
        0 if at < d.len() => d[at] ^= 1 << rng.u8(..8),
        1 if at < d.len() => d[at] = rng.u8(..),
        2 => {
            let len = rng.usize(1..9);
            let bytes: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
            d.splice(at..at, bytes);
        }
        3 | 4 => {
            let token = TOKENS[rng.usize(..TOKENS.len())];
            d.splice(at..at, token.iter().copied());
        }
        5 => {
            let end = (at + rng.usize(1..64)).min(d.len());
            d.drain(at..end);
        }
        6 => {
            let end = (at + rng.usize(1..256)).min(d.len());
            let piece = d[at..end].to_vec();
            let to = rng.usize(..=d.len());
            d.splice(to..to, piece);
        }
        7 => {
            // A splice: this input's head, another seed's tail.
            let other = &seeds[rng.usize(..seeds.len())];
            let from = rng.usize(..=other.len());
            d.truncate(at);
            d.extend_from_slice(&other[from..]);
        }
        _ => d.truncate(at),
    }
}

fn json_op(rng: &mut Rng, d: &mut Vec<u8>, dict: &[String]) {
    let Ok(mut v) = serde_json::from_slice::<Value>(d) else {
        return;
    };
    mutate_value(rng, &mut v, dict);
    let out = if rng.u8(..4) == 0 {
        serde_json::to_vec_pretty(&v)
    } else {
        serde_json::to_vec(&v)
    };
    if let Ok(out) = out {
        *d = out;
    }
}

/// Changes one node of `v`.
fn mutate_value(rng: &mut Rng, v: &mut Value, dict: &[String]) {
    let mut paths = Vec::new();
    pointers(v, String::new(), &mut paths);
    let path = paths[rng.usize(..paths.len())].clone();
    let node = match v.pointer(&path) {
        Some(n) => n.clone(),
        None => return,
    };
    let replacement = match rng.u8(..6) {
        0 | 1 => {
            let values = interesting_values();
            values[rng.usize(..values.len())].clone()
        }
        2 if !dict.is_empty() => Value::String(dict[rng.usize(..dict.len())].clone()),
        3 => Value::Array(vec![node.clone(), node]),
        4 => {
            // Delete the node from its parent, or rename it when the parent is an object
            // (to another key the seeds use).
            let Some((parent, last)) = path.rsplit_once('/') else {
                return;
            };
            let key = last.replace("~1", "/").replace("~0", "~");
            match v.pointer_mut(parent) {
                Some(Value::Object(o)) => {
                    if let Some(x) = o.remove(&key) {
                        if rng.bool() && !dict.is_empty() {
                            o.insert(dict[rng.usize(..dict.len())].clone(), x);
                        }
                    }
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = key.parse::<usize>() {
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                }
                _ => {}
            }
            return;
        }
        _ => {
            // Another node of the same document in its place.
            let other = &paths[rng.usize(..paths.len())];
            v.pointer(other).cloned().unwrap_or(Value::Null)
        }
    };
    if let Some(slot) = v.pointer_mut(&path) {
        *slot = replacement;
    }
}

/// JSON pointers of every node of `v`, the root (`""`) first.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(x, format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

fn sse_events(d: &[u8]) -> Vec<switchyard_providers::sse::Event> {
    let mut p = switchyard_providers::sse::Parser::new();
    let mut out = Vec::new();
    if p.push(d).is_ok() {
        while let Some(e) = p.next_event() {
            out.push(e);
        }
    }
    out
}

fn sse_op(rng: &mut Rng, d: &mut Vec<u8>, dict: &[String]) {
    let events = sse_events(d);
    if events.is_empty() {
        return;
    }
    let mut raw: Vec<Vec<u8>> = events.iter().map(|e| e.raw.to_vec()).collect();
    let i = rng.usize(..raw.len());
    match rng.u8(..7) {
        0 => {
            raw.remove(i);
        }
        1 => raw.insert(i, raw[i].clone()),
        2 => {
            let j = rng.usize(..raw.len());
            raw.swap(i, j);
        }
        3 => {
            // The same event with other line endings.
            let ending: &[u8] = [&b"\r\n"[..], b"\r"][rng.usize(..2)];
            let mut out = Vec::new();
            for &b in &raw[i] {
                if b == b'\n' {
                    out.extend_from_slice(ending);
                } else {
                    out.push(b);
                }
            }
            raw[i] = out;
        }
        4 => {
            // Its data split over two `data:` lines (joined again by the framer with `\n`).
            let data = &events[i].data;
            let cut = rng.usize(..=data.len());
            raw[i] = [b"data: ", &data[..cut], b"\ndata:", &data[cut..], b"\n\n"].concat();
        }
        _ => {
            let e = &events[i];
            let Ok(mut v) = serde_json::from_slice::<Value>(&e.data) else {
                return;
            };
            mutate_value(rng, &mut v, dict);
            let Ok(json) = serde_json::to_vec(&v) else {
                return;
            };
            let mut out = Vec::new();
            if let Some(name) = &e.event {
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(name);
                out.push(b'\n');
            }
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&json);
            out.extend_from_slice(b"\n\n");
            raw[i] = out;
        }
    }
    *d = raw.concat();
}
