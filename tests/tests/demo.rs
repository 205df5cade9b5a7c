//! The `supervised_echo` demo (the README's first command) runs to its end.
//! The `zenws` CLI's own tests are in examples/cli/tests/cli.rs.
//!
//! The example is built with `cargo build` (env `CARGO`, else `cargo`); the
//! run has a deadline, after which the child is killed and the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zenws_tests::serde_json;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Build `examples/<name>.rs` (debug) and return the executable's path.
fn build_example(name: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            "zenws-examples",
            "--example",
            name,
        ])
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "cargo build --example {name} failed");
    // The artifact message names the executable; fall back to the usual place.
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" && v["target"]["name"] == name {
            if let Some(exe) = v["executable"].as_str() {
                return PathBuf::from(exe);
            }
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let exe = target.join("debug").join("examples").join(name);
    assert!(exe.exists(), "{} not found after the build", exe.display());
    exe
}

#[test]
fn supervised_echo_demo_runs_to_completion() {
    let exe = build_example("supervised_echo");
    let out_file = std::env::temp_dir().join(format!("zenws-demo-{}.out", std::process::id()));
    let mut child = Command::new(&exe)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file).expect("create the output file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the demo");
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = std::fs::read_to_string(&out_file).unwrap_or_default();
            panic!("the demo did not exit within 60 s\n{out}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = std::fs::read_to_string(&out_file).unwrap_or_default();
    let _ = std::fs::remove_file(&out_file);
    assert_eq!(st.code(), Some(0), "{out}");
    for needle in [
        "RESTARTED",
        "RESTART BUDGET EXHAUSTED",
        "reconnects",
        "done in",
    ] {
        assert!(out.contains(needle), "demo output lacks {needle:?}\n{out}");
    }
}
