//! The hostile-input suite (issue 10): one row per case, each with its input generated at
//! test time in a fresh temp dir. Every row checks the exit code, a phrase of the message,
//! that the message names the file involved, that nothing panicked or died of a signal,
//! within a time limit, and that the directory is byte-for-byte what it was before the run
//! (no output file, no temp file, no input overwritten).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest any row may run: a hang is a failure, not a stuck test run.
const TIME_LIMIT: Duration = Duration::from_secs(20);

/// Peak resident memory any row may reach (the child's `ru_maxrss`). Every input here
/// is at most a few megabytes; the model fixture rows map a 100 MB file.
const RSS_LIMIT_MIB: u64 = 128;

/// Rows whose input is a metadata bomb (a header or index claiming hundreds of
/// thousands of entries) may use the input's size plus this much: the bound
/// docs/reliability.md states for refusing one.
const RSS_OVER_INPUT_MIB: u64 = 64;

/// A valid 4×4 f32 safetensors file (64 data bytes).
fn tiny_safetensors() -> Vec<u8> {
    let header = br#"{"w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]}}"#;
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header);
    for i in 0..16u32 {
        v.extend_from_slice(&(i as f32 * 0.25 - 1.0).to_le_bytes());
    }
    v
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

/// The inputs every row may use, all small.
fn setup_common(d: &Path) {
    let w = |name: &str, bytes: &[u8]| std::fs::write(d.join(name), bytes).unwrap();
    for name in [
        "empty.gguf",
        "empty.safetensors",
        "empty.dhp",
        "empty.yaml",
        "empty.txt",
    ] {
        w(name, b"");
    }
    w("trunc.gguf", b"GGUF\x03\x00\x00\x00");
    w(
        "bad.gguf",
        b"NOTAGGUF\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    );
    w(
        "trunc.safetensors",
        b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":",
    );
    w("bad.dhp", &[b'X'; 96]);
    w("small.safetensors", &tiny_safetensors());
    w(
        "text.txt",
        b"The quick brown fox jumps over the lazy dog.\n",
    );
    w("unknown.yaml", b"name: x\nbogus_field: 3\n");
    w(
        "device_unknown.yaml",
        b"slug: x\nname: x\nram_budget_mb: 1024\nflavour: 3\n",
    );
    w("notyaml.yaml", b"{{{[[[: : :\n");
    std::fs::create_dir(d.join("dir.gguf")).unwrap();
    mkfifo(&d.join("fifo.gguf"));
    mkfifo(&d.join("fifo.txt"));
}

/// A valid pack of `small.safetensors`, made by the binary under test.
fn make_pack(d: &Path, mode: &[&str]) -> PathBuf {
    let out = d.join("good.dhp");
    let st = Command::new(env!("CARGO_BIN_EXE_dhurandhar"))
        .arg("pack")
        .arg(d.join("small.safetensors"))
        .arg("-o")
        .arg(&out)
        .args(mode)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

fn setup_trunc_pack(d: &Path) {
    let p = make_pack(d, &[]);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(d.join("trunc.dhp"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(p).unwrap();
}

fn setup_good_pack(d: &Path) {
    make_pack(d, &[]);
}

/// A two-layer llama GGUF whose `head_count_kv` is `kv` (and no SSM layers).
fn llama_gguf(d: &Path, name: &str, kv: u32) {
    use dhurandhar_checkpoint::gguf::{GgmlType, GgufBuilder, GgufValue};
    let u = GgufValue::U32;
    let mut b = GgufBuilder::new()
        .kv("general.architecture", GgufValue::String("llama".into()))
        .kv("llama.block_count", u(2))
        .kv("llama.embedding_length", u(64))
        .kv("llama.feed_forward_length", u(128))
        .kv("llama.attention.head_count", u(4))
        .kv("llama.attention.head_count_kv", u(kv))
        .kv("llama.context_length", u(256))
        .tensor_filled("token_embd.weight", &[64, 32], GgmlType::F32);
    for i in 0..2 {
        for (t, shape) in [
            ("attn_q", [64u64, 64]),
            ("attn_k", [64, 32]),
            ("attn_v", [64, 32]),
        ] {
            b = b.tensor_filled(&format!("blk.{i}.{t}.weight"), &shape, GgmlType::F32);
        }
    }
    std::fs::write(d.join(name), b.to_bytes().unwrap()).unwrap();
}

fn setup_zero_kv_gguf(d: &Path) {
    llama_gguf(d, "zero_kv.gguf", 0);
}

/// A syntactically valid YAML document nested 100,000 levels deep.
fn setup_deep_yaml(d: &Path) {
    let n = 100_000;
    let mut s = String::with_capacity(2 * n + 16);
    s.push_str("name: ");
    s.push_str(&"[".repeat(n));
    s.push_str(&"]".repeat(n));
    s.push('\n');
    std::fs::write(d.join("deep.yaml"), &s).unwrap();
    let dev = format!(
        "slug: x\nname: x\nram_budget_mb: 1024\nnotes: {}{}\n",
        "{".repeat(n),
        "}".repeat(n)
    );
    std::fs::write(d.join("deep_device.yaml"), dev).unwrap();
}

/// safetensors headers listing `n` one-byte tensors.
fn many_tensor_safetensors(n: usize) -> Vec<u8> {
    let mut h = String::from("{");
    for i in 0..n {
        if i > 0 {
            h.push(',');
        }
        h.push_str(&format!(
            r#""t{i}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{}]}}"#,
            i + 1
        ));
    }
    h.push('}');
    let mut v = (h.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(h.as_bytes());
    v.resize(v.len() + n, 0);
    v
}

/// 300,000 tensors: over the 262,144 limit (the campaign's file had 1.45 M).
fn setup_many_tensors_st(d: &Path) {
    std::fs::write(d.join("many.safetensors"), many_tensor_safetensors(300_000)).unwrap();
}

/// One tensor and a `__metadata__` value that is an array of 5 M zeros: few tensors,
/// but millions of JSON values for a parser to build.
fn setup_many_values_st(d: &Path) {
    let n = 5_000_000;
    let mut h = String::with_capacity(2 * n + 128);
    h.push_str(r#"{"__metadata__":{"a":["#);
    for i in 0..n {
        h.push_str(if i == 0 { "0" } else { ",0" });
    }
    h.push_str(r#"]},"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#);
    let mut v = (h.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(h.as_bytes());
    v.push(0);
    std::fs::write(d.join("values.safetensors"), v).unwrap();
}

/// A valid pack (checksummed index, every entry consistent) listing `n` empty tensors,
/// written as text (no structs: the test process must stay small, see [`spawn_row`]).
fn empty_tensor_pack(path: &Path, n: usize) {
    use dhurandhar_pack::format::{FOOTER_MAGIC, HEADER_LEN, MAGIC, VERSION};
    let mut json = String::from(r#"{"kind":"pack","chunk_size":1048576,"tensors":["#);
    for i in 0..n {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            r#"{{"name":"t{i}","dtype":"U8","shape":[0],"mode":"lossless","raw_bytes":0,"xxh3":0,"chunks":[]}}"#
        ));
    }
    json.push_str("]}");
    let mut v = vec![0u8; HEADER_LEN];
    v[..8].copy_from_slice(&MAGIC);
    v[8..12].copy_from_slice(&VERSION.to_le_bytes());
    v.extend_from_slice(json.as_bytes());
    v.extend_from_slice(&(HEADER_LEN as u64).to_le_bytes());
    v.extend_from_slice(&(json.len() as u64).to_le_bytes());
    v.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(json.as_bytes()).to_le_bytes());
    v.extend_from_slice(&FOOTER_MAGIC);
    std::fs::write(path, v).unwrap();
}

fn setup_many_entries_pack(d: &Path) {
    empty_tensor_pack(&d.join("many.dhp"), 300_000);
}

/// A GGUF listing 270,000 one-element f32 tensors (over the 262,144 a pack may hold),
/// written as flat bytes.
fn setup_many_tensors_gguf(d: &Path) {
    let n: u64 = 270_000;
    let s = |v: &mut Vec<u8>, x: &str| {
        v.extend_from_slice(&(x.len() as u64).to_le_bytes());
        v.extend_from_slice(x.as_bytes());
    };
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(&1u64.to_le_bytes());
    s(&mut v, "general.architecture");
    v.extend_from_slice(&8u32.to_le_bytes());
    s(&mut v, "llama");
    for i in 0..n {
        s(&mut v, &format!("t{i}"));
        v.extend_from_slice(&1u32.to_le_bytes()); // dims
        v.extend_from_slice(&1u64.to_le_bytes()); // one element
        v.extend_from_slice(&0u32.to_le_bytes()); // F32
        v.extend_from_slice(&(32 * i).to_le_bytes()); // aligned offset
    }
    v.resize(v.len().div_ceil(32) * 32 + 32 * n as usize, 0);
    std::fs::write(d.join("many.gguf"), v).unwrap();
}

/// A config.json whose `hidden_size` is 1e20 (a float no count fits).
fn setup_huge_config(d: &Path) {
    let dir = d.join("huge");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":1e20,
"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
"intermediate_size":128,"vocab_size":1000,"max_position_embeddings":256}"#,
    )
    .unwrap();
}

/// `d/NAME/config.json` holding `text`.
fn config_in(d: &Path, name: &str, text: &str) {
    let dir = d.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("config.json"), text).unwrap();
}

/// A llama config.json with one field replaced by `value` (JSON text).
fn llama_config_with(field: &str, value: &str) -> String {
    let mut fields = vec![
        ("architectures", r#"["LlamaForCausalLM"]"#),
        ("model_type", r#""llama""#),
        ("hidden_size", "64"),
        ("num_hidden_layers", "2"),
        ("num_attention_heads", "4"),
        ("num_key_value_heads", "2"),
        ("intermediate_size", "128"),
        ("vocab_size", "1000"),
        ("max_position_embeddings", "256"),
    ];
    fields.retain(|(k, _)| *k != field);
    if !value.is_empty() {
        fields.push((field, value));
    }
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

fn setup_config_not_object(d: &Path) {
    config_in(d, "arr", "[1, 2]");
}
fn setup_config_no_hidden(d: &Path) {
    config_in(d, "nohidden", &llama_config_with("hidden_size", ""));
}
fn setup_config_negative(d: &Path) {
    config_in(d, "neg", &llama_config_with("hidden_size", "-64"));
}
fn setup_config_fraction(d: &Path) {
    config_in(d, "frac", &llama_config_with("hidden_size", "64.5"));
}
fn setup_config_zero_heads(d: &Path) {
    config_in(
        d,
        "zeroheads",
        &llama_config_with("num_attention_heads", "0"),
    );
}
fn setup_config_huge_layers(d: &Path) {
    config_in(
        d,
        "layers",
        &llama_config_with("num_hidden_layers", "1e300"),
    );
}

/// A KV tensor file whose one tensor's shape disagrees with its byte range.
fn setup_kv_bad_size(d: &Path) {
    let header = br#"{"k":{"dtype":"F32","shape":[4,4],"data_offsets":[0,60]}}"#;
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header);
    v.resize(v.len() + 60, 0);
    std::fs::write(d.join("badkv.safetensors"), v).unwrap();
}

fn setup_binary_text(d: &Path) {
    std::fs::write(d.join("binary.txt"), b"\xff\xfe\x00not text").unwrap();
}

fn setup_llama_gguf(d: &Path) {
    llama_gguf(d, "model.gguf", 2);
}

struct Case {
    /// Short id, printed on failure.
    name: &'static str,
    /// Extra inputs beyond [`setup_common`].
    setup: Option<fn(&Path)>,
    /// Arguments; `{d}` is the temp dir, `{gguf}` the SmolLM2 fixture (row skipped when
    /// the fixture is not fetched).
    args: &'static [&'static str],
    /// Expected exit code.
    code: i32,
    /// A phrase stderr must contain.
    phrase: &'static str,
    /// A file name stderr must mention (the file involved), if any.
    names: Option<&'static str>,
    /// Longest the run may take.
    limit: Duration,
    /// Peak RSS bound in MiB; `None`: the size of `names`'s file + [`RSS_OVER_INPUT_MIB`].
    rss_mib: Option<u64>,
}

const fn case(
    name: &'static str,
    args: &'static [&'static str],
    code: i32,
    phrase: &'static str,
    names: Option<&'static str>,
) -> Case {
    Case {
        name,
        setup: None,
        args,
        code,
        phrase,
        names,
        limit: TIME_LIMIT,
        rss_mib: Some(RSS_LIMIT_MIB),
    }
}

/// A row whose memory is bounded by its input's size (see [`RSS_OVER_INPUT_MIB`]).
const fn input_bounded(mut c: Case) -> Case {
    c.rss_mib = None;
    c
}

/// A row that used to take 30 s or more: killed as a hang after 5 s (a generous bound
/// on a loaded machine for what now takes milliseconds).
const fn fast(mut c: Case) -> Case {
    c.limit = Duration::from_secs(5);
    c
}

const fn with(mut c: Case, setup: fn(&Path)) -> Case {
    c.setup = Some(setup);
    c
}

const NO_FILE: &str = "No such file or directory";

fn cases() -> Vec<Case> {
    let f = Some;
    vec![
        // inspect: every format broken in the obvious ways.
        case(
            "inspect-empty-gguf",
            &["inspect", "{d}/empty.gguf"],
            1,
            "truncated",
            f("empty.gguf"),
        ),
        case(
            "inspect-trunc-gguf",
            &["inspect", "{d}/trunc.gguf"],
            1,
            "truncated",
            f("trunc.gguf"),
        ),
        case(
            "inspect-bad-magic-gguf",
            &["inspect", "{d}/bad.gguf"],
            1,
            "bad magic",
            f("bad.gguf"),
        ),
        case(
            "inspect-empty-st",
            &["inspect", "{d}/empty.safetensors"],
            1,
            "truncated",
            f("empty.safetensors"),
        ),
        case(
            "inspect-trunc-st",
            &["inspect", "{d}/trunc.safetensors"],
            1,
            "truncated",
            f("trunc.safetensors"),
        ),
        case(
            "inspect-dir",
            &["inspect", "{d}/dir.gguf"],
            1,
            "directory",
            f("dir.gguf"),
        ),
        case(
            "inspect-missing",
            &["inspect", "{d}/nope.gguf"],
            1,
            NO_FILE,
            f("nope.gguf"),
        ),
        case(
            "inspect-fifo",
            &["inspect", "{d}/fifo.gguf"],
            1,
            "not a regular file",
            f("fifo.gguf"),
        ),
        case(
            "inspect-json-out-dir",
            &[
                "inspect",
                "{d}/small.safetensors",
                "--json-out",
                "{d}/dir.gguf",
            ],
            1,
            "directory",
            f("dir.gguf"),
        ),
        case(
            "inspect-json-out-fifo",
            &[
                "inspect",
                "{d}/small.safetensors",
                "--json-out",
                "{d}/fifo.txt",
            ],
            1,
            "not a regular file",
            f("fifo.txt"),
        ),
        // analyze / models: model and device profiles.
        case(
            "analyze-yaml-unknown-field",
            &["analyze", "-m", "{d}/unknown.yaml"],
            1,
            "unknown field `bogus_field`",
            f("unknown.yaml"),
        ),
        case(
            "analyze-yaml-empty",
            &["analyze", "-m", "{d}/empty.yaml"],
            1,
            "missing field `name`",
            f("empty.yaml"),
        ),
        case(
            "analyze-yaml-missing",
            &["analyze", "-m", "{d}/nope.yaml"],
            1,
            NO_FILE,
            f("nope.yaml"),
        ),
        case(
            "analyze-yaml-garbage",
            &["analyze", "-m", "{d}/notyaml.yaml"],
            1,
            "",
            f("notyaml.yaml"),
        ),
        case(
            "analyze-empty-gguf",
            &["analyze", "-m", "{d}/empty.gguf"],
            1,
            "truncated",
            f("empty.gguf"),
        ),
        case(
            "analyze-device-unknown-field",
            &["analyze", "-d", "{d}/device_unknown.yaml"],
            1,
            "unknown field `flavour`",
            f("device_unknown.yaml"),
        ),
        case(
            "analyze-json-out-fifo",
            &["analyze", "--json-out", "{d}/fifo.txt"],
            1,
            "not a regular file",
            f("fifo.txt"),
        ),
        case(
            "models-bad-flag",
            &["models", "--json-out", "{d}/x.json"],
            2,
            "unexpected argument",
            None,
        ),
        case(
            "devices-bad-flag",
            &["devices", "--bogus"],
            2,
            "unexpected argument",
            None,
        ),
        // kv bench / compare / speed / capture: sizes checked before allocating.
        case(
            "kv-bench-yaml-unknown",
            &["kv", "bench", "-m", "{d}/unknown.yaml"],
            1,
            "unknown field",
            f("unknown.yaml"),
        ),
        case(
            "kv-bench-trunc-gguf",
            &["kv", "bench", "-m", "{d}/trunc.gguf"],
            1,
            "truncated",
            f("trunc.gguf"),
        ),
        case(
            "kv-bench-samples-huge",
            &["kv", "bench", "--samples", "1000000000"],
            1,
            "samples",
            None,
        ),
        case(
            "kv-bench-seq-len-max",
            &["kv", "bench", "--seq-len", "18446744073709551615"],
            1,
            "seq_len",
            None,
        ),
        case(
            "kv-compare-seq-len-huge",
            &[
                "kv",
                "compare",
                "--seq-len",
                "1000000000000",
                "--num-kv-heads",
                "1",
            ],
            1,
            "seq_len",
            None,
        ),
        case(
            "kv-compare-data-empty",
            &["kv", "compare", "--data", "{d}/empty.safetensors"],
            1,
            "",
            f("empty.safetensors"),
        ),
        case(
            "kv-compare-data-fifo",
            &["kv", "compare", "--data", "{d}/fifo.txt"],
            1,
            "not a regular file",
            f("fifo.txt"),
        ),
        case(
            "kv-compare-data-missing",
            &["kv", "compare", "--data", "{d}/nope.safetensors"],
            1,
            "",
            f("nope.safetensors"),
        ),
        case(
            "kv-speed-head-dim-huge",
            &["kv", "speed", "--head-dim", "1000000000"],
            1,
            "head_dim",
            None,
        ),
        case(
            "kv-speed-threads-huge",
            &["kv", "speed", "--threads", "10000"],
            1,
            "threads",
            None,
        ),
        case(
            "kv-capture-empty-gguf",
            &[
                "kv",
                "capture",
                "--model",
                "{d}/empty.gguf",
                "--text-file",
                "{d}/text.txt",
                "-o",
                "{d}/out.safetensors",
            ],
            1,
            "truncated",
            f("empty.gguf"),
        ),
        case(
            "kv-capture-fifo-text",
            &[
                "kv",
                "capture",
                "--model",
                "{gguf}",
                "--text-file",
                "{d}/fifo.txt",
                "-o",
                "{d}/out.safetensors",
            ],
            1,
            "not a regular file",
            f("fifo.txt"),
        ),
        case(
            "kv-capture-out-is-input",
            &[
                "kv",
                "capture",
                "--model",
                "{gguf}",
                "--text-file",
                "{d}/text.txt",
                "-o",
                "{d}/text.txt",
            ],
            1,
            "same file",
            f("text.txt"),
        ),
        // mmap-profile
        case(
            "mmap-profile-yaml-unknown",
            &["mmap-profile", "--model", "{d}/unknown.yaml"],
            1,
            "unknown field",
            f("unknown.yaml"),
        ),
        case(
            "mmap-profile-file-no-range",
            &["mmap-profile", "--file", "{d}/empty.gguf"],
            1,
            "needs",
            None,
        ),
        // pack / unpack / verify / pack-stats / delta
        case(
            "pack-empty-st",
            &["pack", "{d}/empty.safetensors", "-o", "{d}/out.dhp"],
            1,
            "truncated",
            f("empty.safetensors"),
        ),
        case(
            "pack-trunc-gguf",
            &["pack", "{d}/trunc.gguf", "-o", "{d}/out.dhp"],
            1,
            "truncated",
            f("trunc.gguf"),
        ),
        case(
            "pack-missing",
            &["pack", "{d}/nope.safetensors", "-o", "{d}/out.dhp"],
            1,
            NO_FILE,
            f("nope.safetensors"),
        ),
        case(
            "pack-onto-input",
            &[
                "pack",
                "{d}/small.safetensors",
                "-o",
                "{d}/small.safetensors",
            ],
            1,
            "same file",
            f("small.safetensors"),
        ),
        case(
            "pack-onto-fifo",
            &["pack", "{d}/small.safetensors", "-o", "{d}/fifo.txt"],
            1,
            "not a regular file",
            f("fifo.txt"),
        ),
        case(
            "pack-onto-dir",
            &["pack", "{d}/small.safetensors", "-o", "{d}/dir.gguf"],
            1,
            "directory",
            f("dir.gguf"),
        ),
        case(
            "verify-empty",
            &["verify", "{d}/empty.dhp"],
            1,
            "empty file",
            f("empty.dhp"),
        ),
        case(
            "verify-bad-magic",
            &["verify", "{d}/bad.dhp"],
            1,
            "not a .dhp pack",
            f("bad.dhp"),
        ),
        with(
            case(
                "verify-trunc",
                &["verify", "{d}/trunc.dhp"],
                1,
                "",
                f("trunc.dhp"),
            ),
            setup_trunc_pack,
        ),
        case(
            "verify-missing",
            &["verify", "{d}/nope.dhp"],
            1,
            NO_FILE,
            f("nope.dhp"),
        ),
        case(
            "pack-stats-empty",
            &["pack-stats", "{d}/empty.dhp"],
            1,
            "empty file",
            f("empty.dhp"),
        ),
        case(
            "pack-stats-bad-magic",
            &["pack-stats", "{d}/bad.dhp"],
            1,
            "not a .dhp pack",
            f("bad.dhp"),
        ),
        with(
            case(
                "pack-stats-trunc",
                &["pack-stats", "{d}/trunc.dhp"],
                1,
                "",
                f("trunc.dhp"),
            ),
            setup_trunc_pack,
        ),
        case(
            "unpack-empty",
            &["unpack", "{d}/empty.dhp", "-o", "{d}/out.safetensors"],
            1,
            "empty file",
            f("empty.dhp"),
        ),
        case(
            "unpack-bad-magic",
            &["unpack", "{d}/bad.dhp", "-o", "{d}/out.safetensors"],
            1,
            "not a .dhp pack",
            f("bad.dhp"),
        ),
        with(
            case(
                "unpack-trunc",
                &["unpack", "{d}/trunc.dhp", "-o", "{d}/out.safetensors"],
                1,
                "",
                f("trunc.dhp"),
            ),
            setup_trunc_pack,
        ),
        with(
            case(
                "unpack-onto-input",
                &["unpack", "{d}/good.dhp", "-o", "{d}/good.dhp"],
                1,
                "same file",
                f("good.dhp"),
            ),
            setup_good_pack,
        ),
        case(
            "delta-empty-base",
            &[
                "delta",
                "{d}/empty.safetensors",
                "{d}/small.safetensors",
                "-o",
                "{d}/d.dhp",
            ],
            1,
            "truncated",
            f("empty.safetensors"),
        ),
        case(
            "delta-onto-base",
            &[
                "delta",
                "{d}/small.safetensors",
                "{d}/small.safetensors",
                "-o",
                "{d}/small.safetensors",
            ],
            1,
            "same file",
            f("small.safetensors"),
        ),
        case(
            "delta-apply-bad-delta",
            &[
                "delta",
                "apply",
                "{d}/small.safetensors",
                "{d}/bad.dhp",
                "-o",
                "{d}/n.safetensors",
            ],
            1,
            "not a .dhp pack",
            f("bad.dhp"),
        ),
        // generate / eval
        case(
            "generate-empty-gguf",
            &["generate", "--model", "{d}/empty.gguf", "--prompt", "hi"],
            1,
            "truncated",
            f("empty.gguf"),
        ),
        case(
            "generate-fifo",
            &["generate", "--model", "{d}/fifo.gguf", "--prompt", "hi"],
            1,
            "not a regular file",
            f("fifo.gguf"),
        ),
        case(
            "generate-dir",
            &["generate", "--model", "{d}/dir.gguf", "--prompt", "hi"],
            1,
            "",
            f("dir.gguf"),
        ),
        case(
            "generate-missing",
            &["generate", "--model", "{d}/nope.gguf", "--prompt", "hi"],
            1,
            NO_FILE,
            f("nope.gguf"),
        ),
        case(
            "generate-safetensors",
            &[
                "generate",
                "--model",
                "{d}/small.safetensors",
                "--prompt",
                "hi",
            ],
            1,
            "",
            f("small.safetensors"),
        ),
        case(
            "eval-empty-gguf",
            &[
                "eval",
                "--model",
                "{d}/empty.gguf",
                "--text-file",
                "{d}/text.txt",
            ],
            1,
            "truncated",
            f("empty.gguf"),
        ),
        case(
            "eval-fifo-text",
            &["eval", "--model", "{gguf}", "--text-file", "{d}/fifo.txt"],
            1,
            "not a regular file",
            f("fifo.txt"),
        ),
        case(
            "eval-missing-text",
            &["eval", "--model", "{gguf}", "--text-file", "{d}/nope.txt"],
            1,
            NO_FILE,
            f("nope.txt"),
        ),
        // Sampling, token and thread counts: refused before any work.
        case(
            "generate-temperature-nan",
            &[
                "generate",
                "--model",
                "{gguf}",
                "--prompt",
                "hi",
                "--temperature",
                "NaN",
                "--max-tokens",
                "1",
            ],
            1,
            "temperature: NaN",
            None,
        ),
        case(
            "generate-temperature-negative",
            &[
                "generate",
                "--model",
                "{gguf}",
                "--prompt",
                "hi",
                "--temperature=-1",
                "--max-tokens",
                "1",
            ],
            1,
            "temperature: -1",
            None,
        ),
        case(
            "generate-top-p-7",
            &[
                "generate",
                "--model",
                "{gguf}",
                "--prompt",
                "hi",
                "--top-p",
                "7",
                "--max-tokens",
                "1",
            ],
            1,
            "top_p: 7",
            None,
        ),
        case(
            "generate-top-p-0",
            &[
                "generate",
                "--model",
                "{gguf}",
                "--prompt",
                "hi",
                "--top-p",
                "0",
                "--max-tokens",
                "1",
            ],
            1,
            "top_p: 0",
            None,
        ),
        case(
            "generate-max-tokens-u64-max",
            &[
                "generate",
                "--model",
                "{gguf}",
                "--prompt",
                "hi",
                "--max-tokens",
                "18446744073709551615",
            ],
            1,
            "exceeds the model's context length",
            None,
        ),
        case(
            "generate-threads-10000",
            &[
                "generate",
                "--model",
                "{gguf}",
                "--prompt",
                "hi",
                "--max-tokens",
                "1",
                "--threads",
                "10000",
            ],
            1,
            "threads: 10000 is out of range",
            None,
        ),
        case(
            "generate-bench-prompt-huge",
            &[
                "generate",
                "--model",
                "{gguf}",
                "--bench",
                "--bench-prompt",
                "1000000000",
                "--bench-threads",
                "1",
                "--bench-repeats",
                "1",
            ],
            1,
            "context length",
            None,
        ),
        case(
            "generate-bench-threads-10000",
            &[
                "generate",
                "--model",
                "{gguf}",
                "--bench",
                "--bench-prompt",
                "4",
                "--bench-threads",
                "10000",
                "--bench-repeats",
                "1",
            ],
            1,
            "threads: 10000 is out of range",
            None,
        ),
        case(
            "eval-threads-10000",
            &[
                "eval",
                "--model",
                "{gguf}",
                "--text-file",
                "{d}/text.txt",
                "--threads",
                "10000",
            ],
            1,
            "threads: 10000 is out of range",
            None,
        ),
        case(
            "kv-speed-threads-above-cores",
            &[
                "kv",
                "speed",
                "--threads",
                "1000",
                "--vectors",
                "16",
                "--min-seconds",
                "0",
            ],
            1,
            "× the",
            None,
        ),
        case(
            "kv-capture-threads-10000",
            &[
                "kv",
                "capture",
                "--model",
                "{gguf}",
                "--text-file",
                "{d}/text.txt",
                "-o",
                "{d}/out.safetensors",
                "--threads",
                "10000",
            ],
            1,
            "threads: 10000 is out of range",
            None,
        ),
        // head_count_kv = 0 without SSM layers: one refusal for every reader.
        with(
            case(
                "inspect-zero-kv-heads",
                &["inspect", "{d}/zero_kv.gguf"],
                1,
                "`llama.attention.head_count_kv` is 0",
                f("zero_kv.gguf"),
            ),
            setup_zero_kv_gguf,
        ),
        with(
            case(
                "analyze-zero-kv-heads",
                &["analyze", "-m", "{d}/zero_kv.gguf"],
                1,
                "`llama.attention.head_count_kv` is 0",
                f("zero_kv.gguf"),
            ),
            setup_zero_kv_gguf,
        ),
        with(
            case(
                "kv-bench-zero-kv-heads",
                &["kv", "bench", "-m", "{d}/zero_kv.gguf"],
                1,
                "`llama.attention.head_count_kv` is 0",
                f("zero_kv.gguf"),
            ),
            setup_zero_kv_gguf,
        ),
        with(
            case(
                "generate-zero-kv-heads",
                &["generate", "--model", "{d}/zero_kv.gguf", "--prompt", "hi"],
                1,
                "`llama.attention.head_count_kv` is 0",
                f("zero_kv.gguf"),
            ),
            setup_zero_kv_gguf,
        ),
        with(
            case(
                "pack-zero-kv-heads",
                &["pack", "{d}/zero_kv.gguf", "-o", "{d}/out.dhp"],
                1,
                "`llama.attention.head_count_kv` is 0",
                f("zero_kv.gguf"),
            ),
            setup_zero_kv_gguf,
        ),
        // YAML nested 100,000 levels deep: refused at once (it took the parser 30 s).
        fast(with(
            case(
                "analyze-yaml-deep",
                &["analyze", "-m", "{d}/deep.yaml"],
                1,
                "nested more than 64 levels",
                f("deep.yaml"),
            ),
            setup_deep_yaml,
        )),
        fast(with(
            case(
                "kv-bench-yaml-deep",
                &["kv", "bench", "-m", "{d}/deep.yaml"],
                1,
                "nested more than 64 levels",
                f("deep.yaml"),
            ),
            setup_deep_yaml,
        )),
        fast(with(
            case(
                "analyze-device-yaml-deep",
                &["analyze", "-d", "{d}/deep_device.yaml"],
                1,
                "nested more than 64 levels",
                f("deep_device.yaml"),
            ),
            setup_deep_yaml,
        )),
        // FIFOs and directories where a pack or a checkpoint to pack is expected.
        case(
            "verify-fifo",
            &["verify", "{d}/fifo.gguf"],
            1,
            "not a regular file",
            f("fifo.gguf"),
        ),
        case(
            "verify-dir",
            &["verify", "{d}/dir.gguf"],
            1,
            "directory",
            f("dir.gguf"),
        ),
        case(
            "pack-stats-fifo",
            &["pack-stats", "{d}/fifo.gguf"],
            1,
            "not a regular file",
            f("fifo.gguf"),
        ),
        case(
            "unpack-fifo",
            &["unpack", "{d}/fifo.gguf", "-o", "{d}/out.safetensors"],
            1,
            "not a regular file",
            f("fifo.gguf"),
        ),
        case(
            "pack-fifo",
            &["pack", "{d}/fifo.gguf", "-o", "{d}/out.dhp"],
            1,
            "not a regular file",
            f("fifo.gguf"),
        ),
        case(
            "delta-fifo-new",
            &[
                "delta",
                "{d}/small.safetensors",
                "{d}/fifo.gguf",
                "-o",
                "{d}/d.dhp",
            ],
            1,
            "not a regular file",
            f("fifo.gguf"),
        ),
        case(
            "delta-apply-fifo-delta",
            &[
                "delta",
                "apply",
                "{d}/small.safetensors",
                "{d}/fifo.gguf",
                "-o",
                "{d}/n.safetensors",
            ],
            1,
            "not a regular file",
            f("fifo.gguf"),
        ),
        with(
            case(
                "kv-compare-data-gguf",
                &["kv", "compare", "--data", "{d}/model.gguf"],
                1,
                "this is a GGUF model, not a KV tensor file",
                f("model.gguf"),
            ),
            setup_llama_gguf,
        ),
        // --json-out onto an input: refused before any work, for every command.
        case(
            "inspect-json-out-onto-input",
            &[
                "inspect",
                "{d}/small.safetensors",
                "--json-out",
                "{d}/small.safetensors",
            ],
            1,
            "same file",
            f("small.safetensors"),
        ),
        case(
            "analyze-json-out-onto-profile",
            &[
                "analyze",
                "-m",
                "{d}/unknown.yaml",
                "--json-out={d}/unknown.yaml",
            ],
            1,
            "same file",
            f("unknown.yaml"),
        ),
        with(
            case(
                "verify-json-out-onto-pack",
                &["verify", "{d}/good.dhp", "--json-out", "{d}/good.dhp"],
                1,
                "same file",
                f("good.dhp"),
            ),
            setup_good_pack,
        ),
        case(
            "pack-json-out-onto-input",
            &[
                "pack",
                "{d}/small.safetensors",
                "-o",
                "{d}/out.dhp",
                "--json-out",
                "{d}/small.safetensors",
            ],
            1,
            "same file",
            f("small.safetensors"),
        ),
        // Metadata bombs: refused before parsing, within the input's size + 64 MiB.
        input_bounded(with(
            case(
                "inspect-st-300k-tensors",
                &["inspect", "{d}/many.safetensors"],
                1,
                "at most 262144 tensors",
                f("many.safetensors"),
            ),
            setup_many_tensors_st,
        )),
        input_bounded(with(
            case(
                "pack-st-300k-tensors",
                &["pack", "{d}/many.safetensors", "-o", "{d}/out.dhp"],
                1,
                "at most 262144 tensors",
                f("many.safetensors"),
            ),
            setup_many_tensors_st,
        )),
        with(
            case(
                "pack-gguf-270k-tensors",
                &["pack", "{d}/many.gguf", "-o", "{d}/out.dhp"],
                1,
                "may list at most 262144 tensors",
                f("many.gguf"),
            ),
            setup_many_tensors_gguf,
        ),
        with(
            case(
                "inspect-gguf-270k-tensors",
                &["inspect", "{d}/many.gguf"],
                1,
                "tensor count is 270000",
                f("many.gguf"),
            ),
            setup_many_tensors_gguf,
        ),
        input_bounded(with(
            case(
                "inspect-st-5m-json-values",
                &["inspect", "{d}/values.safetensors"],
                1,
                "JSON values",
                f("values.safetensors"),
            ),
            setup_many_values_st,
        )),
        input_bounded(with(
            case(
                "pack-stats-300k-entries",
                &["pack-stats", "{d}/many.dhp"],
                1,
                "at most 262144 tensors",
                f("many.dhp"),
            ),
            setup_many_entries_pack,
        )),
        input_bounded(with(
            case(
                "verify-300k-entries",
                &["verify", "{d}/many.dhp"],
                1,
                "at most 262144 tensors",
                f("many.dhp"),
            ),
            setup_many_entries_pack,
        )),
        input_bounded(with(
            case(
                "unpack-300k-entries",
                &["unpack", "{d}/many.dhp", "-o", "{d}/out.safetensors"],
                1,
                "at most 262144 tensors",
                f("many.dhp"),
            ),
            setup_many_entries_pack,
        )),
        // config.json: a value no count fits is refused with the field named, and the
        // file is named once.
        with(
            case(
                "analyze-config-1e20",
                &["analyze", "-m", "{d}/huge/config.json"],
                1,
                "`hidden_size` = 1e+20 is out of range",
                f("config.json"),
            ),
            setup_huge_config,
        ),
        with(
            case(
                "analyze-config-dir-1e20",
                &["analyze", "-m", "{d}/huge"],
                1,
                "`hidden_size` = 1e+20 is out of range",
                f("config.json"),
            ),
            setup_huge_config,
        ),
        // config.json: every malformed value names the field; the file is named once.
        with(
            case(
                "analyze-config-not-object",
                &["analyze", "-m", "{d}/arr/config.json"],
                1,
                "is not a JSON object",
                f("config.json"),
            ),
            setup_config_not_object,
        ),
        with(
            case(
                "analyze-config-no-hidden-size",
                &["analyze", "-m", "{d}/nohidden/config.json"],
                1,
                "missing `hidden_size`",
                f("config.json"),
            ),
            setup_config_no_hidden,
        ),
        with(
            case(
                "analyze-config-negative",
                &["analyze", "-m", "{d}/neg/config.json"],
                1,
                "`hidden_size` should be a non-negative integer, found -64",
                f("config.json"),
            ),
            setup_config_negative,
        ),
        with(
            case(
                "analyze-config-fraction",
                &["analyze", "-m", "{d}/frac/config.json"],
                1,
                "`hidden_size` should be a non-negative integer, found 64.5",
                f("config.json"),
            ),
            setup_config_fraction,
        ),
        with(
            case(
                "analyze-config-zero-heads",
                &["analyze", "-m", "{d}/zeroheads/config.json"],
                1,
                "`num_attention_heads` must be greater than zero",
                f("config.json"),
            ),
            setup_config_zero_heads,
        ),
        with(
            case(
                "analyze-config-1e300-layers",
                &["analyze", "-m", "{d}/layers/config.json"],
                1,
                "`num_hidden_layers` = 1e+300 is out of range",
                f("config.json"),
            ),
            setup_config_huge_layers,
        ),
        // KV tensor files and text inputs.
        with(
            case(
                "kv-compare-data-bad-size",
                &["kv", "compare", "--data", "{d}/badkv.safetensors"],
                1,
                "tensor `k` (F32 [4, 4]) should take 64 bytes",
                f("badkv.safetensors"),
            ),
            setup_kv_bad_size,
        ),
        case(
            "kv-compare-data-dev-zero",
            &["kv", "compare", "--data", "/dev/zero"],
            1,
            "not a regular file",
            f("/dev/zero"),
        ),
        case(
            "eval-text-dev-zero",
            &["eval", "--model", "{gguf}", "--text-file", "/dev/zero"],
            1,
            "not a regular file",
            f("/dev/zero"),
        ),
        case(
            "eval-text-empty",
            &["eval", "--model", "{gguf}", "--text-file", "{d}/empty.txt"],
            1,
            "fewer than 2 tokens",
            f("empty.txt"),
        ),
        with(
            case(
                "eval-text-binary",
                &["eval", "--model", "{gguf}", "--text-file", "{d}/binary.txt"],
                1,
                "not UTF-8",
                f("binary.txt"),
            ),
            setup_binary_text,
        ),
        case(
            "kv-capture-text-dev-zero",
            &[
                "kv",
                "capture",
                "--model",
                "{gguf}",
                "--text-file",
                "/dev/zero",
                "-o",
                "{d}/kv.safetensors",
            ],
            1,
            "not a regular file",
            f("/dev/zero"),
        ),
    ]
}

/// Every regular file under `d` with its bytes (FIFOs and directories by name only),
/// one level of subdirectories included.
fn snapshot(d: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(d).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let bytes = ft.is_file().then(|| std::fs::read(e.path()).unwrap());
        if ft.is_dir() {
            for inner in std::fs::read_dir(e.path()).unwrap() {
                let inner = inner.unwrap();
                let bytes = inner
                    .file_type()
                    .unwrap()
                    .is_file()
                    .then(|| std::fs::read(inner.path()).unwrap());
                let n = inner.file_name().to_string_lossy().into_owned();
                m.insert(format!("{name}/{n}"), bytes);
            }
        }
        m.insert(name, bytes);
    }
    m
}

/// Start the binary for one row so that its `ru_maxrss` is its own.
///
/// The kernel folds the memory image a process had before `execve` into its peak RSS.
/// `Command` spawns with `vfork` semantics when it can, and then that image is the test
/// process's (its all-time peak); a `pre_exec` hook forces a plain `fork`, whose image
/// is the test process's *current* RSS, which `malloc_trim` keeps at a few MiB (the
/// inputs are generated as flat buffers and freed before the spawn).
fn spawn_row(args: &[String]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    // SAFETY: returns freed heap pages to the OS; no allocator state is invalidated.
    unsafe { libc::malloc_trim(0) };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dhurandhar"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the hook does nothing (no allocation, no locks); it only makes the
    // standard library fork instead of vfork.
    unsafe { cmd.pre_exec(|| Ok(())) };
    cmd.spawn().unwrap()
}

/// Largest peak RSS of any row, printed at the end.
static PEAK_RSS_MIB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `try_wait` that also returns the child's peak RSS in KiB (`wait4`'s `ru_maxrss`),
/// measured by the kernel for that one process.
fn try_wait_rusage(child: &std::process::Child) -> Option<(std::process::ExitStatus, u64)> {
    let mut status = 0;
    // SAFETY: plain syscall on our own child's PID with valid out-pointers; the child is
    // reaped here, and `Child` is not waited on again (only dropped).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe {
        libc::wait4(
            child.id() as libc::pid_t,
            &mut status,
            libc::WNOHANG,
            &mut usage,
        )
    };
    assert!(pid >= 0, "wait4: {}", std::io::Error::last_os_error());
    (pid != 0).then(|| {
        (
            std::process::ExitStatus::from_raw(status),
            usage.ru_maxrss as u64,
        )
    })
}

/// Runs one row; returns a failure description, or `None` when it passes or is skipped.
// The child is reaped by `wait4` in `try_wait_rusage`, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_case(c: &Case, gguf: Option<&Path>) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup_common(d);
    if let Some(s) = c.setup {
        s(d);
    }
    let mut args = Vec::new();
    for a in c.args {
        if a.contains("{gguf}") {
            let Some(g) = gguf else {
                eprintln!("{}: skipped (fixture not fetched)", c.name);
                return None;
            };
            args.push(a.replace("{gguf}", &g.to_string_lossy()));
        } else {
            args.push(a.replace("{d}", &d.to_string_lossy()));
        }
    }
    let before = snapshot(d);
    let mut child = spawn_row(&args);
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut { stderr }, &mut s).ok();
        s
    });
    let start = Instant::now();
    let (status, maxrss_kib) = loop {
        if let Some(done) = try_wait_rusage(&child) {
            break done;
        }
        if start.elapsed() > c.limit {
            child.kill().ok();
            child.wait().ok();
            return Some(format!(
                "{}: still running after {:?} (hang)",
                c.name, c.limit
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let err = reader.join().unwrap();
    let mut fails = Vec::new();
    let rss_limit_mib = c.rss_mib.unwrap_or_else(|| {
        let input = c.names.expect("an input-bounded row names its input");
        let bytes = std::fs::metadata(d.join(input)).map_or(0, |m| m.len());
        bytes.div_ceil(1 << 20) + RSS_OVER_INPUT_MIB
    });
    let rss_mib = maxrss_kib.div_ceil(1024);
    PEAK_RSS_MIB.fetch_max(rss_mib, std::sync::atomic::Ordering::Relaxed);
    if rss_mib > rss_limit_mib {
        fails.push(format!(
            "peak RSS {rss_mib} MiB over the {rss_limit_mib} MiB bound"
        ));
    }
    if let Some(sig) = status.signal() {
        fails.push(format!("killed by signal {sig}"));
    }
    if status.code() == Some(101) || err.contains("panicked") {
        fails.push("panicked".into());
    }
    if status.code() != Some(c.code) {
        fails.push(format!("exit {:?}, expected {}", status.code(), c.code));
    }
    if !err.contains(c.phrase) {
        fails.push(format!("message lacks {:?}", c.phrase));
    }
    if err.matches("(os error").count() > 1 {
        fails.push("the OS error is repeated".into());
    }
    if let Some(n) = c.names {
        if !err.contains(n) {
            fails.push(format!("message does not name {n}"));
        }
        // Said once: "x.json: x.json: x.json: ..." is noise.
        let times = err.matches(n).count();
        if times > 2 {
            fails.push(format!("message names {n} {times} times"));
        }
    }
    let after = snapshot(d);
    if after != before {
        let changed: Vec<_> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, _)| k.as_str())
            .chain(
                before
                    .keys()
                    .filter(|k| !after.contains_key(*k))
                    .map(|k| k.as_str()),
            )
            .collect();
        fails.push(format!("files created, changed or removed: {changed:?}"));
    }
    (!fails.is_empty())
        .then(|| format!("{}: {} — stderr: {}", c.name, fails.join("; "), err.trim()))
}

#[test]
fn hostile_inputs_fail_cleanly() {
    let gguf = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF);
    let cases = cases();
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "duplicate row {}", c.name);
    }
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run_case(c, gguf.as_deref()))
        .collect();
    eprintln!(
        "{} rows; largest peak RSS of a row: {} MiB",
        cases.len(),
        PEAK_RSS_MIB.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
