//! The installer (`bootstrap/bootstrap.sh`, `bootstrap/uninstall.sh`): its
//! bats suite, run against a stand-in `docker` with the real aurora-cli
//! build (the file layout, the questions, truncated downloads, reruns,
//! rotation, uninstall). The install on the Docker Engine end to end is a
//! long-tier stack test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is a test failure

use std::process::Command;

use aurora_tests::repo;

#[test]
fn the_installer_passes_its_bats_suite() {
    let bats = sidecar_kit::cli::which("bats").unwrap_or_else(|| {
        panic!("`bats` is not installed: run scripts/lib/deps.sh (./scripts/test does)")
    });
    let cli = testbed::tools::workspace_bin("aurora-cli").unwrap();
    let out = Command::new(bats)
        .arg("--tap")
        .arg(repo().join("bootstrap/tests"))
        .env("BATS_AURORA_CLI", cli)
        .env_remove("AURORA_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "bats failed:\n{text}");
    // The suite ran whole: a plan line and no test skipped.
    assert!(text.starts_with("1.."), "{text}");
    assert!(!text.contains("# skip"), "{text}");
}
