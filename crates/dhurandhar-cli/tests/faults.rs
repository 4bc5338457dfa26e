//! Fault suites (issue 10): writers killed with SIGKILL at random points, a full disk
//! and a read-only output directory. Whatever happens, the output path holds either
//! nothing or the complete, verifying file, never a partial one; the next run leaves no
//! temp file behind; the input is never touched.
//!
//! The kill points are drawn with a fixed seed over the span of an uninterrupted run of
//! the same command (measured here, not asserted). `scripts/kill9.sh` runs the same
//! campaign for longer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dhurandhar");

/// xorshift64*: a fixed, dependency-free sequence of kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A safetensors file of `tensors` f32 tensors of `rows`×256 values drawn from `rng`
/// (smooth enough to compress, varied enough to take time).
fn safetensors(rng: &mut Rng, tensors: usize, rows: usize) -> Vec<u8> {
    let per = rows * 256 * 4;
    let mut header = String::from("{");
    for t in 0..tensors {
        if t > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            r#""layer{t}.weight":{{"dtype":"F32","shape":[{rows},256],"data_offsets":[{},{}]}}"#,
            t * per,
            (t + 1) * per
        ));
    }
    header.push('}');
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    for _ in 0..tensors * rows * 256 {
        let x = (rng.unit() as f32 - 0.5) * 0.1;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Temp files of the atomic writer (`.NAME.PID.N.dhtmp`) in `dir`.
fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dhtmp"))
        .collect()
}

/// One writer under test: its arguments (`{out}` is the output path) and the bytes an
/// uninterrupted run writes.
struct Job {
    name: &'static str,
    args: Vec<String>,
    out: PathBuf,
    reference: Vec<u8>,
    /// How long an uninterrupted run took (where kill points are drawn).
    span: Duration,
    /// Byte-identical runs; otherwise (kv capture orders its `__metadata__` keys
    /// differently from run to run) a complete output has the reference's length and
    /// tensor bytes, and opens.
    exact: bool,
}

impl Job {
    fn new(name: &'static str, dir: &Path, out_name: &str, args: &[&str]) -> Job {
        let out = dir.join(out_name);
        let args: Vec<String> = args.iter().map(|a| a.replace("{out}", s(&out))).collect();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let start = Instant::now();
        ok(&argv);
        let span = start.elapsed();
        let reference = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        Job {
            name,
            args,
            out,
            reference,
            span,
            exact: true,
        }
    }

    fn inexact(mut self) -> Self {
        self.exact = false;
        self
    }

    /// `bytes` is a complete output of this job.
    fn complete(&self, bytes: &[u8]) -> bool {
        if self.exact {
            return bytes == self.reference;
        }
        let data = |b: &[u8]| {
            let n = 8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            b[n..].to_vec()
        };
        bytes.len() == self.reference.len()
            && data(bytes) == data(&self.reference)
            && run(&["inspect", s(&self.out)]).status.success()
    }

    fn argv(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    /// Kill a run after `delay`; returns whether it had already finished.
    fn kill_after(&self, delay: Duration) -> bool {
        let mut child = Command::new(BIN)
            .args(self.argv())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        // SIGKILL: no destructor, no cleanup runs in the writer.
        child.kill().ok();
        child.wait().unwrap();
        finished
    }

    /// The output is absent or complete (byte-identical to an uninterrupted run).
    fn check_after_kill(&self, what: &str) -> bool {
        match std::fs::read(&self.out) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => panic!("{what}: reading {}: {e}", self.out.display()),
            Ok(bytes) => {
                assert!(
                    self.complete(&bytes),
                    "{what}: {} is partial or different ({} bytes, complete is {})",
                    self.out.display(),
                    bytes.len(),
                    self.reference.len()
                );
                true
            }
        }
    }

    /// The next run succeeds, writes the complete file and leaves no temp file (the
    /// killed writer's temp is removed by it).
    fn rerun_and_check(&self, dir: &Path, what: &str) {
        ok(&self.argv());
        let bytes = std::fs::read(&self.out).unwrap();
        assert!(self.complete(&bytes), "{what}: rerun output differs");
        let left = temps(dir);
        assert!(left.is_empty(), "{what}: temp files left: {left:?}");
        std::fs::remove_file(&self.out).unwrap();
    }
}

struct Inputs {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    base: PathBuf,
    pack: PathBuf,
    delta: PathBuf,
}

fn inputs() -> Inputs {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut rng = Rng(0x5eed_0010);
    let base = dir.join("base.safetensors");
    let mut bytes = safetensors(&mut rng, 8, 1024);
    std::fs::write(&base, &bytes).unwrap();
    // A fine-tune: a sparse sprinkle of changed values.
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut i = header_end;
    while i + 4 <= bytes.len() {
        bytes[i] ^= 0x01;
        i += 4 * 97;
    }
    let new = dir.join("new.safetensors");
    std::fs::write(&new, &bytes).unwrap();
    let pack = dir.join("in.dhp");
    ok(&["pack", s(&base), "-o", s(&pack)]);
    let delta = dir.join("in.delta.dhp");
    ok(&["delta", s(&base), s(&new), "-o", s(&delta)]);
    Inputs {
        _dir: tmp,
        dir,
        base,
        pack,
        delta,
    }
}

fn jobs(inp: &Inputs) -> Vec<Job> {
    let d = &inp.dir;
    let mut jobs = vec![
        Job::new("pack", d, "out.dhp", &["pack", s(&inp.base), "-o", "{out}"]),
        Job::new(
            "pack-quant",
            d,
            "outq.dhp",
            &[
                "pack",
                s(&inp.base),
                "-o",
                "{out}",
                "--mode",
                "quant-residual",
            ],
        ),
        Job::new(
            "unpack",
            d,
            "out.safetensors",
            &["unpack", s(&inp.pack), "-o", "{out}"],
        ),
        Job::new(
            "delta-apply",
            d,
            "applied.safetensors",
            &["delta", "apply", s(&inp.base), s(&inp.delta), "-o", "{out}"],
        ),
    ];
    match dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) {
        Some(gguf) => {
            let text = d.join("text.txt");
            std::fs::write(
                &text,
                "It is a truth universally acknowledged, that a single man in possession \
                 of a good fortune, must be in want of a wife.",
            )
            .unwrap();
            jobs.push(
                Job::new(
                    "kv-capture",
                    d,
                    "kv.safetensors",
                    &[
                        "kv",
                        "capture",
                        "--model",
                        s(&gguf),
                        "--text-file",
                        s(&text),
                        "--max-tokens",
                        "24",
                        "--threads",
                        "1",
                        "-o",
                        "{out}",
                    ],
                )
                .inexact(),
            );
        }
        None => eprintln!("kv capture: skipped (SmolLM2 fixture not fetched)"),
    }
    jobs
}

/// Six SIGKILLs per writer (five writers with the fixture: 30 runs): the output is
/// never partial, and the next run cleans up.
#[test]
fn kill9_never_leaves_a_partial_output() {
    let inp = inputs();
    let jobs = jobs(&inp);
    let mut rng = Rng(0x0d15_ea5e);
    let (mut runs, mut absent, mut complete, mut mid_write) = (0, 0, 0, 0);
    // scripts/kill9.sh raises this for the long campaign.
    let per_job: usize = std::env::var("DHURANDHAR_KILL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    for job in &jobs {
        for k in 0..per_job {
            // Mostly inside the run, some just past its end.
            let delay = job.span.mul_f64(1.25 * rng.unit());
            let what = format!("{} kill #{k} after {delay:?}", job.name);
            let finished = job.kill_after(delay);
            let present = job.check_after_kill(&what);
            if !temps(&inp.dir).is_empty() {
                mid_write += 1;
            }
            assert!(present || !finished, "{what}: finished but no output");
            if present {
                complete += 1;
            } else {
                absent += 1;
            }
            job.rerun_and_check(&inp.dir, &what);
            runs += 1;
        }
    }
    eprintln!(
        "kill -9: {runs} runs, {absent} left no output ({mid_write} killed mid-write, a temp \
         file left for the next run to remove), {complete} a complete one"
    );
    assert!(runs >= 24, "only {runs} kill runs");
    assert!(absent > 0, "no kill landed before the commit");
    // Inputs untouched by any of it.
    ok(&["verify", s(&inp.pack)]);
}

/// A tmpfs mounted for one test, unmounted (lazily) on drop.
struct Mount(PathBuf);

impl Mount {
    /// Mount a tmpfs with `opts` on a new directory, or say why not.
    fn tmpfs(parent: &Path, name: &str, opts: &str) -> Result<Mount, String> {
        let dir = parent.join(name);
        std::fs::create_dir(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs", s(&dir)])
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount(dir))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn sha(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Every writer into `dir` fails with `phrase`, exit 1, names its output, and leaves
/// `dir` empty and its input unchanged.
fn writers_fail_into(dir: &Path, inp: &Inputs, phrase: &str) {
    let cases: [(&str, Vec<String>, &Path); 4] = [
        ("pack", vec!["pack".into(), s(&inp.base).into()], &inp.base),
        (
            "pack-quant",
            vec![
                "pack".into(),
                s(&inp.base).into(),
                "--mode".into(),
                "quant-residual".into(),
            ],
            &inp.base,
        ),
        (
            "unpack",
            vec!["unpack".into(), s(&inp.pack).into()],
            &inp.pack,
        ),
        (
            "delta-apply",
            vec![
                "delta".into(),
                "apply".into(),
                s(&inp.base).into(),
                s(&inp.delta).into(),
            ],
            &inp.delta,
        ),
    ];
    for (name, mut args, input) in cases {
        let out = dir.join(format!("{name}.out"));
        args.extend(["-o".into(), s(&out).into()]);
        let before = sha(input);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&argv);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(phrase),
            "{name}: message lacks {phrase:?}: {err}"
        );
        assert!(
            err.contains(&format!("{name}.out")),
            "{name}: output not named: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
        let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        assert!(left.is_empty(), "{name}: left {left:?}");
        assert_eq!(sha(input), before, "{name}: input changed");
    }
}

/// A 1 MiB tmpfs: the 8 MiB writes run out of space.
#[test]
fn disk_full_is_a_clear_error_with_no_partial_output() {
    let inp = inputs();
    let m = match Mount::tmpfs(&inp.dir, "full", "size=1m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("disk-full test skipped: {why}");
            return;
        }
    };
    writers_fail_into(&m.0, &inp, "No space left on device");
}

/// A read-only tmpfs (permission bits would not stop root, a read-only mount does).
#[test]
fn read_only_output_dir_is_a_clear_error() {
    let inp = inputs();
    let m = match Mount::tmpfs(&inp.dir, "ro", "ro,size=1m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("read-only test skipped: {why}");
            return;
        }
    };
    writers_fail_into(&m.0, &inp, "Read-only file system");
}
