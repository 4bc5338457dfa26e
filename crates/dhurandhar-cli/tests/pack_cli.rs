//! End-to-end tests of `pack`, `unpack`, `verify`, `pack-stats`, `delta` and
//! `delta apply`: round trips, JSON contract, snapshots, and bad input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use dhurandhar_pack::DType;

fn dh() -> Command {
    Command::cargo_bin("dhurandhar").unwrap()
}

fn run_ok(args: &[&str]) -> String {
    let out = dh().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run_err(args: &[&str], needles: &[&str]) -> String {
    let out = dh().args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&run_ok(args)).unwrap()
}

/// Deterministic weight-like tensors (plus a NaN, -0.0 and an empty tensor).
fn tensors(seed: u64, bump: bool) -> Vec<(String, DType, Vec<u64>, Vec<u8>)> {
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) % 20001) as f32 / 20000.0 - 0.5
    };
    let mut w: Vec<f32> = (0..64 * 96).map(|_| next() * 0.1).collect();
    w[0] = f32::NAN;
    w[1] = -0.0;
    if bump {
        for v in w.iter_mut().skip(2).step_by(7) {
            *v = f32::from_bits(v.to_bits() ^ 1);
        }
    }
    let f32b: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    // the BF16 copy has no NaN, so quant-residual mode quantizes it
    let finite: Vec<u8> = w
        .iter()
        .flat_map(|v| if v.is_nan() { 0.01f32 } else { *v }.to_le_bytes())
        .collect();
    let bf16 = dhurandhar_pack::cast_f32_bytes(&finite, DType::BF16);
    vec![
        ("layer.0.weight".into(), DType::F32, vec![64, 96], f32b),
        ("layer.0.bf16".into(), DType::BF16, vec![96, 64], bf16),
        (
            "layer.0.bias".into(),
            DType::F32,
            vec![4],
            vec![0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64],
        ),
        ("empty".into(), DType::F16, vec![0], vec![]),
    ]
}

fn write_input(path: &Path, t: &[(String, DType, Vec<u64>, Vec<u8>)]) {
    let list: Vec<_> = t
        .iter()
        .map(|(n, d, s, b)| (n.clone(), *d, s.clone(), b.len() as u64))
        .collect();
    dhurandhar_pack::write_safetensors(path, &list, &BTreeMap::new(), &mut |i, sink| sink(&t[i].3))
        .unwrap();
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    write_input(&p, &tensors(1, false));
    (dir, p)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Drop fields that depend on time or on the temp directory.
fn scrub(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        for k in ["seconds", "gb_per_s", "input", "output", "file", "base"] {
            o.remove(k);
        }
    }
    v
}

#[test]
fn pack_verify_unpack_round_trip_is_bit_exact() {
    let (dir, input) = setup();
    let packed = dir.path().join("m.dhp");
    let back = dir.path().join("back.safetensors");
    let out = run_ok(&["pack", s(&input), "-o", s(&packed), "--chunk-kib", "4"]);
    assert!(out.contains("4 lossless") && out.contains("GB/s"), "{out}");
    let v = json(&["verify", s(&packed), "--json"]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["tensors_hashed"], 4);
    let u = json(&["unpack", s(&packed), "-o", s(&back), "--json"]);
    assert_eq!(u["verified_bit_exact"], 4);
    // Our writer is deterministic, so bit-exact tensors give a byte-identical file.
    assert_eq!(
        std::fs::read(&input).unwrap(),
        std::fs::read(&back).unwrap()
    );
}

#[test]
fn pack_json_contract_and_stats_snapshots() {
    let (dir, input) = setup();
    let packed = dir.path().join("m.dhp");
    let v = json(&[
        "pack",
        s(&input),
        "-o",
        s(&packed),
        "--json",
        "--chunk-kib",
        "4",
    ]);
    for k in [
        "input_bytes",
        "output_bytes",
        "ratio",
        "seconds",
        "gb_per_s",
        "tensors",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    let row = &v["tensors"][0];
    for k in [
        "name",
        "dtype",
        "mode",
        "input_bytes",
        "output_bytes",
        "bits_per_weight",
    ] {
        assert!(row.get(k).is_some(), "row missing {k}");
    }
    insta::assert_json_snapshot!("pack_lossless_json", scrub(v));
    insta::assert_snapshot!(
        "pack_stats_table",
        run_ok(&["pack-stats", s(&packed)]).replace(s(&packed), "m.dhp")
    );
    insta::assert_json_snapshot!(
        "pack_stats_json",
        scrub(json(&["pack-stats", s(&packed), "--json"]))
    );
}

#[test]
fn quant_residual_json_reports_errors_per_tensor() {
    let (dir, input) = setup();
    let packed = dir.path().join("q.dhp");
    let v = json(&[
        "pack",
        s(&input),
        "-o",
        s(&packed),
        "--mode",
        "quant-residual",
        "--bits",
        "8",
        "--group",
        "32",
        "--residual-frac",
        "0.02",
        "--json",
    ]);
    let rows = v["tensors"].as_array().unwrap();
    let q: Vec<_> = rows
        .iter()
        .filter(|r| r["mode"] == "quant-residual")
        .collect();
    // the NaN tensor stays lossless; the BF16 one is quantized
    assert_eq!(q.len(), 1, "{v:#}");
    assert_eq!(q[0]["name"], "layer.0.bf16");
    let (b, r) = (
        q[0]["rel_error_base"].as_f64().unwrap(),
        q[0]["rel_error_with_residual"].as_f64().unwrap(),
    );
    assert!(r < b && b < 0.02, "{b} {r}");
    assert!(v["rel_error_base"].as_f64().is_some());
    let stats = run_ok(&["pack-stats", s(&packed)]);
    assert!(stats.contains("quant-residual"));
    let u = json(&[
        "unpack",
        s(&packed),
        "-o",
        s(&dir.path().join("d.safetensors")),
        "--json",
    ]);
    assert_eq!(
        (u["verified_bit_exact"].as_u64(), u["lossy"].as_u64()),
        (Some(3), Some(1))
    );
    run_err(
        &[
            "pack",
            s(&input),
            "-o",
            s(&packed),
            "--mode",
            "quant-residual",
            "--bits",
            "3",
        ],
        &["--bits must be 4 or 8"],
    );
}

#[test]
fn verify_and_unpack_name_the_corrupted_tensor_and_chunk() {
    let (dir, input) = setup();
    let packed = dir.path().join("m.dhp");
    run_ok(&["pack", s(&input), "-o", s(&packed), "--chunk-kib", "4"]);
    let mut bytes = std::fs::read(&packed).unwrap();
    bytes[64 + 300] ^= 0x10; // inside the first tensor's first chunk
    std::fs::write(&packed, &bytes).unwrap();
    run_err(
        &["verify", s(&packed)],
        &["layer.0.weight", "chunk 0", "checksum mismatch"],
    );
    let v = dh()
        .args(["verify", s(&packed), "--json"])
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(
        (
            j["ok"].as_bool(),
            j["bad_tensor"].as_str(),
            j["bad_chunk"].as_u64()
        ),
        (Some(false), Some("layer.0.weight"), Some(0))
    );
    let out = dir.path().join("x.safetensors");
    run_err(
        &["unpack", s(&packed), "-o", s(&out)],
        &["layer.0.weight", "chunk 0"],
    );
    assert!(!out.exists());
}

#[test]
fn bad_files_fail_cleanly() {
    let (dir, input) = setup();
    let packed = dir.path().join("m.dhp");
    run_ok(&["pack", s(&input), "-o", s(&packed)]);
    let good = std::fs::read(&packed).unwrap();
    let p = dir.path().join("bad.dhp");
    std::fs::write(&p, &good[..good.len() - 10]).unwrap();
    run_err(&["verify", s(&p)], &["bad.dhp", "truncated"]);
    let mut b = good.clone();
    b[8] = 9;
    std::fs::write(&p, &b).unwrap();
    run_err(
        &["pack-stats", s(&p)],
        &["unsupported .dhp format version 9"],
    );
    std::fs::write(&p, b"not a pack at all, just some text").unwrap();
    run_err(
        &["unpack", s(&p), "-o", s(&dir.path().join("o.safetensors"))],
        &["not a .dhp pack"],
    );
    run_err(
        &[
            "pack",
            s(&dir.path().join("missing.safetensors")),
            "-o",
            s(&p),
        ],
        &["missing.safetensors"],
    );
    run_err(
        &["pack", s(&p), "-o", s(&dir.path().join("x.dhp"))],
        &["bad.dhp"],
    );
}

#[test]
fn delta_and_apply_restore_the_new_checkpoint() {
    let (dir, base) = setup();
    let new = dir.path().join("new.safetensors");
    let mut t = tensors(1, true);
    t.push(("added".into(), DType::F32, vec![2], vec![0; 8]));
    write_input(&new, &t);
    let d = dir.path().join("d.dhp");
    let out = dir.path().join("restored.safetensors");
    let v = json(&["delta", s(&base), s(&new), "-o", s(&d), "--json"]);
    let rows = v["tensors"].as_array().unwrap();
    let mode = |n: &str| {
        rows.iter().find(|r| r["name"] == n).unwrap()["mode"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(mode("layer.0.weight"), "delta");
    assert_eq!(mode("layer.0.bias"), "unchanged");
    assert_eq!(
        rows.iter().find(|r| r["name"] == "added").unwrap()["note"],
        "added"
    );
    let human = run_ok(&["delta", s(&base), s(&new), "-o", s(&d)]);
    assert!(human.contains("added: 1 tensor(s): added"), "{human}");
    run_ok(&["verify", s(&d)]);
    run_ok(&["delta", "apply", s(&base), s(&d), "-o", s(&out)]);
    assert_eq!(std::fs::read(&new).unwrap(), std::fs::read(&out).unwrap());
    // wrong base: refused, naming the tensor; unpack of a delta: refused
    run_err(
        &[
            "delta",
            "apply",
            s(&new),
            s(&d),
            "-o",
            s(&dir.path().join("x.safetensors")),
        ],
        &["layer.0.weight", "base"],
    );
    run_err(
        &["unpack", s(&d), "-o", s(&dir.path().join("x.safetensors"))],
        &["delta apply"],
    );
    let mut reshaped = tensors(1, false);
    reshaped[0].2 = vec![96, 64];
    let rb = dir.path().join("reshaped.safetensors");
    write_input(&rb, &reshaped);
    run_err(
        &[
            "delta",
            "apply",
            s(&rb),
            s(&d),
            "-o",
            s(&dir.path().join("x.safetensors")),
        ],
        &["layer.0.weight", "shape"],
    );
    assert!(!dir.path().join("x.safetensors").exists());
}

#[test]
fn disk_full_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.safetensors");
    let mut t = tensors(3, false);
    let noise: Vec<u8> = (0..400_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    t.push(("noise".into(), DType::U8, vec![noise.len() as u64], noise));
    write_input(&input, &t);
    let out = dir.path().join("out.dhp");
    let bin = assert_cmd::cargo::cargo_bin("dhurandhar");
    // A 64 KiB file-size limit makes write() fail with EFBIG, as a full disk fails with ENOSPC.
    let script = format!(
        "trap '' XFSZ; ulimit -f 64; exec '{}' pack '{}' -o '{}'",
        bin.display(),
        s(&input),
        s(&out)
    );
    let o = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("out.dhp") && !err.contains("panicked"),
        "{err}"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["big.safetensors".to_string()],
        "partial output left behind"
    );
}

/// Outputs are written through a temp file, but must end up with ordinary permissions
/// (what `File::create` gives under the current umask), not the temp file's 0o600.
#[cfg(unix)]
#[test]
fn outputs_have_ordinary_file_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, input) = setup();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let reference = dir.path().join("reference");
    std::fs::File::create(&reference).unwrap();
    let packed = dir.path().join("m.dhp");
    let restored = dir.path().join("r.safetensors");
    run_ok(&["pack", s(&input), "-o", s(&packed)]);
    run_ok(&["unpack", s(&packed), "-o", s(&restored)]);
    assert_eq!(mode(&packed), mode(&reference));
    assert_eq!(mode(&restored), mode(&reference));
}

/// Writing onto an input is refused before any work and leaves the input as it was
/// (`pack X -o X` used to replace X with a pack of itself).
#[test]
fn output_onto_an_input_is_refused_and_the_input_kept() {
    let (dir, input) = setup();
    let original = std::fs::read(&input).unwrap();
    run_err(
        &["pack", s(&input), "-o", s(&input)],
        &["same file as the input", "model.safetensors"],
    );
    run_err(
        &[
            "pack",
            s(&input),
            "-o",
            s(&input),
            "--mode",
            "quant-residual",
        ],
        &["same file as the input"],
    );
    assert_eq!(std::fs::read(&input).unwrap(), original);

    let packed = dir.path().join("m.dhp");
    run_ok(&["pack", s(&input), "-o", s(&packed)]);
    let packed_bytes = std::fs::read(&packed).unwrap();
    run_err(
        &["unpack", s(&packed), "-o", s(&packed)],
        &["same file as the input", "m.dhp"],
    );
    assert_eq!(std::fs::read(&packed).unwrap(), packed_bytes);

    let new = dir.path().join("new.safetensors");
    write_input(&new, &tensors(1, true));
    let new_bytes = std::fs::read(&new).unwrap();
    let d = dir.path().join("d.dhp");
    run_err(
        &["delta", s(&input), s(&new), "-o", s(&new)],
        &["same file as the input"],
    );
    run_ok(&["delta", s(&input), s(&new), "-o", s(&d)]);
    let d_bytes = std::fs::read(&d).unwrap();
    run_err(
        &["delta", "apply", s(&input), s(&d), "-o", s(&input)],
        &["same file as the input", "model.safetensors"],
    );
    run_err(
        &["delta", "apply", s(&input), s(&d), "-o", s(&d)],
        &["same file as the input", "d.dhp"],
    );
    assert_eq!(std::fs::read(&input).unwrap(), original);
    assert_eq!(std::fs::read(&new).unwrap(), new_bytes);
    assert_eq!(std::fs::read(&d).unwrap(), d_bytes);
    // The same file through another spelling of its path is still the input.
    let via = dir.path().join(".").join("model.safetensors");
    run_err(
        &["pack", s(&input), "-o", s(&via)],
        &["same file as the input"],
    );
    assert_eq!(std::fs::read(&input).unwrap(), original);
    // Nothing but the files made above: no temp file was left by a refusal.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["d.dhp", "m.dhp", "model.safetensors", "new.safetensors"]
    );
}

/// A FIFO or device node as the output is refused, not replaced by a regular file.
#[cfg(unix)]
#[test]
fn fifo_and_device_outputs_are_refused() {
    use std::os::unix::fs::FileTypeExt;
    let (dir, input) = setup();
    let fifo = dir.path().join("out.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    run_err(&["pack", s(&input), "-o", s(&fifo)], &["FIFO", "out.fifo"]);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let packed = dir.path().join("m.dhp");
    run_ok(&["pack", s(&input), "-o", s(&packed)]);
    run_err(&["unpack", s(&packed), "-o", s(&fifo)], &["FIFO"]);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    run_err(
        &["pack", s(&input), "-o", "/dev/null"],
        &["character device", "/dev/null"],
    );
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

/// Temp files of the atomic writer beside `target`: `.NAME.PID.N.dhtmp`.
fn temps_of(target: &Path) -> Vec<PathBuf> {
    let name = target.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let f = p.file_name().unwrap().to_str().unwrap();
            f.starts_with(&format!(".{name}.")) && f.ends_with(".dhtmp")
        })
        .collect()
}

/// `kill -9` mid-write leaves no output, only a temp file carrying the dead PID; the next
/// pack to the same target removes it.
#[cfg(unix)]
#[test]
fn killed_pack_leaves_no_output_and_the_next_run_cleans_up() {
    let Some(model) = dhurandhar_testkit::fixture(dhurandhar_testkit::MINILM_SAFETENSORS) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("dhurandhar");
    let mut killed = None;
    // A run can finish before the kill lands; try a few targets until one is killed
    // while its temp file exists.
    for attempt in 0..5 {
        let out = dir.path().join(format!("m{attempt}.dhp"));
        let mut child = std::process::Command::new(&bin)
            .args(["pack", s(&model), "-o", s(&out), "--chunk-kib", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        let seen = loop {
            if !temps_of(&out).is_empty() {
                break true;
            }
            if child.try_wait().unwrap().is_some() || t0.elapsed().as_secs() > 120 {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if seen && !status.success() {
            killed = Some(out);
            break;
        }
    }
    let out = killed.expect("no pack run could be killed mid-write");
    assert!(!out.exists(), "a killed pack left an output file");
    let left = temps_of(&out);
    assert_eq!(left.len(), 1, "{left:?}");
    run_ok(&["pack", s(&model), "-o", s(&out)]);
    assert!(out.exists());
    assert_eq!(
        temps_of(&out),
        Vec::<PathBuf>::new(),
        "stale temp not removed"
    );
    run_ok(&["verify", s(&out), "--quick"]);
}

/// A GGUF packs whole: `unpack` gives the same file back, `generate` streams (and loads
/// resident) straight from the pack to the GGUF's text, and mapping a pack is refused.
#[test]
fn a_gguf_pack_unpacks_identically_and_streams() {
    let Some(model) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let pack = d.path().join("m.dhp");
    let r = json(&["pack", s(&model), "-o", s(&pack), "--json"]);
    let file_len = std::fs::metadata(&model).unwrap().len();
    assert_eq!(r["input_bytes"], file_len);
    assert!(r["output_bytes"].as_u64().unwrap() < file_len);
    assert_eq!(r["tensors"][0]["dtype"], "Q8_0");
    let back = d.path().join("back.gguf");
    run_ok(&["unpack", s(&pack), "-o", s(&back)]);
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&model).unwrap());
    let gen = |path: &Path, extra: &[&str]| {
        let mut a = vec![
            "generate",
            "--model",
            s(path),
            "--prompt",
            "The capital of France is",
            "--max-tokens",
            "8",
            "--json",
        ];
        a.extend_from_slice(extra);
        json(&a)
    };
    let want = gen(&model, &[])["text"].clone();
    let streamed = gen(&pack, &["--weights", "stream", "--ram-budget", "48MiB"]);
    assert_eq!(streamed["text"], want);
    let t = &streamed["weights"]["traffic"];
    assert!(t["decode_seconds_per_token"].as_f64().unwrap() > 0.0, "{t}");
    assert_eq!(gen(&pack, &["--weights", "resident"])["text"], want);
    run_err(
        &["generate", "--model", s(&pack), "--prompt", "x"],
        &["m.dhp", "cannot be memory-mapped"],
    );
    run_err(
        &["pack", s(&model), "-o", s(&pack), "--min-plane-saving", "2"],
        &["--min-plane-saving", "between 0 and 1"],
    );
    // A flipped bit in a streamed layer's chunk stops the run, naming tensor and chunk.
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    let bad = d.path().join("bad.dhp");
    std::fs::write(&bad, &bytes).unwrap();
    let err = run_err(
        &[
            "generate",
            "--model",
            s(&bad),
            "--prompt",
            "x",
            "--weights",
            "stream",
        ],
        &["bad.dhp: tensor `", "checksum mismatch"],
    );
    assert_eq!(err.matches("checksum mismatch").count(), 1, "{err}");
}
