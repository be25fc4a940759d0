//! Records the git commit the binaries were built from, for `aurora_build_info`.
//! `AURORA_BUILD_COMMIT` wins (container builds have no `.git`); otherwise ask git;
//! otherwise "unknown".
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=AURORA_BUILD_COMMIT");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/logs/HEAD");
    let commit = std::env::var("AURORA_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=AURORA_COMMIT={commit}");
}
