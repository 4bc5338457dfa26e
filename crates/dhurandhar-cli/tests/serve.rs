//! `dhurandhar serve`: flags reach the server, a non-loopback bind warns, a bad
//! allowed directory is refused before listening.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;

#[test]
fn a_missing_allow_dir_is_refused_with_its_name() {
    let out = Command::cargo_bin("dhurandhar")
        .unwrap()
        .args(["serve", "--port", "0", "--allow-dir", "/no/such/models"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/models"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn serves_the_dashboard_and_warns_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::cargo_bin("dhurandhar")
        .unwrap()
        .args(["serve", "--host", "0.0.0.0", "--port", "0", "--allow-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // "dhurandhar dashboard: http://0.0.0.0:PORT/  (Ctrl-C stops it)"
    let port: u16 = line
        .split("0.0.0.0:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"ok\":true"), "{answer}");
    assert!(err.contains("warning: listening on 0.0.0.0"), "{err}");
}
