//! `dhurandhar eval` errors that need no model run: sizes are checked first and named
//! by their option field.

use assert_cmd::Command;
use predicates::prelude::*;

#[test]
fn chunk_and_threads_are_checked_before_the_model_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("t.txt");
    std::fs::write(&text, "hello world").unwrap();
    let run = |extra: &[&str]| {
        let mut c = Command::cargo_bin("dhurandhar").unwrap();
        c.args(["eval", "--model", "/nonexistent/m.gguf", "--text-file"])
            .arg(&text)
            .args(extra);
        c.assert().code(1)
    };
    run(&["--chunk", "0"]).stderr(predicate::str::contains("chunk: 0 is out of range"));
    run(&["--threads", "99999999"]).stderr(predicate::str::contains(
        "threads: 99999999 is out of range",
    ));
    run(&[]).stderr(predicate::str::contains("/nonexistent/m.gguf"));
}
