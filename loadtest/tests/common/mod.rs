//! Running the harness from a test: within a time bound, stopped with SIGTERM (which stops whatever validators it
//! started) when the bound passes, and its JSON report read back.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `baton-loadtest ARGS --out OUT`, failing the test if it does not succeed within `bound`.
pub fn run_harness(args: &[&str], out: &Path, bound: Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton-loadtest"))
        .args(args)
        .arg("--out")
        .arg(out)
        .spawn()
        .expect("start baton-loadtest");
    let deadline = Instant::now() + bound;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
            panic!("baton-loadtest {args:?} exceeded its time bound of {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "baton-loadtest {args:?} failed: {status}");
}

/// A JSON report the harness wrote.
pub fn read_report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("report")).expect("json")
}
