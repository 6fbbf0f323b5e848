//! The `simulator` command line: exit codes, the summary, the failure diff, folders and reports.

use std::path::PathBuf;
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("simulator-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const SHORT: &str = "seed = 3\nstart = \"2026-11-24T08:00:00Z\"\nduration = \"10m\"\n";

// Proves a passing scenario exits 0 and prints the summary and digest, and that `--report`
// writes report.json.
#[test]
fn passing_run_exits_zero_and_reports() {
    let dir = scratch("pass");
    let file = dir.join("short.toml");
    std::fs::write(
        &file,
        format!("{SHORT}[[expect.performance]]\nmetric = \"offered_msg_per_min\"\neq = 792\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_simulator"))
        .args([
            "run",
            file.to_str().unwrap(),
            "--report",
            dir.join("out").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("output digest: "), "{stdout}");
    assert!(stdout.contains("[pass] offered msg/min = 792"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/report.json")).unwrap()).unwrap();
    assert_eq!(report["passed"], true);
    assert_eq!(report["seed"], 3);
}

// Proves a failing expectation exits non-zero with expected vs actual and the seed to reproduce,
// and that a folder run reports every scenario and fails if one fails.
#[test]
fn failing_run_exits_non_zero_with_a_diff() {
    let dir = scratch("fail");
    std::fs::write(dir.join("a.toml"), SHORT).unwrap();
    std::fs::write(
        dir.join("b.toml"),
        format!("{SHORT}[[expect.counts]]\nmetric = \"records_in\"\ntopic = \"parking\"\neq = 1\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_simulator"))
        .args(["run", dir.to_str().unwrap(), "--seed", "9"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stdout.contains("2 scenarios: SOME FAILED"), "{stdout}");
    assert!(
        stderr.contains("FAILED count records_in topic=parking = 1"),
        "{stderr}"
    );
    // 12 car parks x 12 readings a minute x 10 minutes.
    assert!(stderr.contains("actual:   1440"), "{stderr}");
    assert!(stderr.contains("--seed 9"), "{stderr}");
}

// Proves an unknown key is refused with its name and line, before anything runs.
#[test]
fn unknown_key_is_refused() {
    let dir = scratch("typo");
    let file = dir.join("typo.toml");
    std::fs::write(&file, format!("{SHORT}[generator]\nlod_factor = 2\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_simulator"))
        .args(["run", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("lod_factor") && stderr.contains("line 5"),
        "{stderr}"
    );
}
