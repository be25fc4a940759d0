//! `backup`: a verified base backup of PostgreSQL, the assets volume and the
//! node's config and credentials, in one timestamped directory with a
//! manifest and checksums. `restore`: the way back, checked file by file.
//!
//! Layout of a backup directory:
//! ```text
//! <dest>/<node>-<UTC timestamp>/
//!   postgres.tar.gz   pg_basebackup (plain, WAL streamed, verified with
//!                     pg_verifybackup before it was packed), as `pgdata/`
//!   assets.tar.gz     the assets volume
//!   config.tar.gz     the config directory (mode 0600: it holds secrets)
//!   manifest.json     node, times, LSNs, every file's size and SHA-256
//!   SHA256SUMS        the same checksums, for `sha256sum -c`
//! ```

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::NodeConfig;
use crate::error::{CliError, CliResult};
use crate::output;

const PG_ARCHIVE: &str = "postgres.tar.gz";
const ASSETS_ARCHIVE: &str = "assets.tar.gz";
const CONFIG_ARCHIVE: &str = "config.tar.gz";

fn pg_bin(config_dir: Option<&Path>, program: &str) -> CliResult<PathBuf> {
    find_pg_program(
        program,
        config_dir,
        std::env::var_os("PATH").as_deref(),
        Path::new("/usr/lib/postgresql"),
    )
}

/// A PostgreSQL client program (`pg_basebackup`, `pg_verifybackup`):
/// in `backup.bin_dir` when set (and only there), else on `PATH`, else in
/// the newest `<lib_root>/<version>/bin` that has it, which is where
/// Debian's `postgresql-client-<version>` installs the ones it does not
/// link into `/usr/bin`. The client package is enough: no server needed.
fn find_pg_program(
    program: &str,
    bin_dir: Option<&Path>,
    path_var: Option<&std::ffi::OsStr>,
    lib_root: &Path,
) -> CliResult<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if let Some(dir) = bin_dir {
        let p = dir.join(program);
        return if runnable(&p) {
            Ok(p)
        } else {
            Err(CliError::usage(format!(
                "{} not found (backup.bin_dir is {}; it must hold PostgreSQL's client programs)",
                p.display(),
                dir.display()
            )))
        };
    }
    if let Some(p) = sidecar_kit::cli::which_in(path_var, program) {
        return Ok(p);
    }
    let newest = sidecar_kit::cli::newest_pg_bin(lib_root, program);
    newest.map(|bin| bin.join(program)).ok_or_else(|| {
        CliError::usage(format!(
            "{program} not found on PATH or under {}: install PostgreSQL's client programs \
             (Debian/Ubuntu: apt-get install postgresql-client), or set backup.bin_dir",
            lib_root.display()
        ))
    })
}

/// Runs a command whose progress goes to the terminal as it is written
/// (`pg_basebackup -P`); a failure carries the last lines of its stderr,
/// as [`run`]'s does.
fn run_shown(mut cmd: Command, label: &str) -> CliResult {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CliError::failed(format!("running {label}: {e}")))?;
    let mut kept: Vec<u8> = Vec::new();
    if let Some(mut err) = child.stderr.take() {
        let mut buf = [0u8; 4096];
        loop {
            let n = match err.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let _ = std::io::stderr().write_all(&buf[..n]);
            kept.extend_from_slice(&buf[..n]);
            // Only the tail is ever reported.
            if kept.len() > 16 * 1024 {
                kept.drain(..kept.len() - 8 * 1024);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| CliError::failed(format!("waiting for {label}: {e}")))?;
    // The progress line ends without a newline.
    let _ = writeln!(std::io::stderr());
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&kept);
    let tail: Vec<&str> = text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .rev()
        .take(3)
        .collect();
    Err(CliError::failed(format!(
        "{label} failed ({status}): {}",
        tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
    )))
}

/// Runs a command; a failure carries the last lines of its stderr.
fn run(mut cmd: Command, label: &str) -> CliResult<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CliError::failed(format!("running {label}: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(CliError::failed(format!(
            "{label} failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sha256_file(path: &Path) -> CliResult<(String, u64)> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| CliError::failed(format!("reading {}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| CliError::failed(format!("reading {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), total))
}

fn tar_create(archive: &Path, dir: &Path, what: &str) -> CliResult {
    let mut cmd = Command::new("tar");
    cmd.arg("-czf").arg(archive).arg("-C").arg(dir).arg(what);
    run(cmd, &format!("tar of {}", dir.join(what).display())).map(|_| ())
}

/// A `key: value` line of `backup_label`.
fn label_field(label: &str, key: &str) -> Option<String> {
    label
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
}

pub fn backup(config: &NodeConfig, dest: Option<&Path>, as_json: bool) -> CliResult {
    let started = Instant::now();
    let dest = dest.unwrap_or(&config.backup.dest);
    std::fs::create_dir_all(dest)
        .map_err(|e| CliError::usage(format!("cannot create --dest {}: {e}", dest.display())))?;
    let created_at = chrono::Utc::now();
    let dir = dest.join(format!(
        "{}-{}",
        config.node.name,
        created_at.format("%Y%m%dT%H%M%SZ")
    ));
    std::fs::create_dir(&dir)
        .map_err(|e| CliError::failed(format!("creating {}: {e}", dir.display())))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| CliError::failed(format!("chmod {}: {e}", dir.display())))?;
    // pg_basebackup's own progress (-P), and each later step, on a
    // terminal only.
    let mut progress = output::Progress::new(as_json);
    let result = take_backup(config, &dir, created_at, &mut progress);
    drop(progress);
    match result {
        Ok(manifest) => {
            if as_json {
                output::print_json(&json!({"path": dir, "manifest": manifest}));
            } else {
                outln!("backup written to {}", dir.display());
                for f in manifest["files"].as_array().into_iter().flatten() {
                    outln!(
                        "  {:<16} {:>10}  sha256 {}",
                        f["name"].as_str().unwrap_or(""),
                        output::bytes(f["bytes"].as_f64().unwrap_or(0.0)),
                        &f["sha256"].as_str().unwrap_or("")
                            [..16.min(f["sha256"].as_str().unwrap_or("").len())]
                    );
                }
                outln!(
                    "verified with pg_verifybackup; done in {}",
                    output::duration_secs(started.elapsed().as_secs_f64())
                );
                outln!(
                    "restore: aurora-cli restore --from {} --data-dir DIR",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) => {
            // A half-written backup must not be mistaken for a good one.
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

fn take_backup(
    config: &NodeConfig,
    dir: &Path,
    created_at: chrono::DateTime<chrono::Utc>,
    progress: &mut output::Progress,
) -> CliResult<Value> {
    let bin_dir = config.backup.bin_dir.as_deref();
    let staging = dir.join(".staging");
    let pgdata = staging.join("pgdata");
    std::fs::create_dir_all(&staging)
        .map_err(|e| CliError::failed(format!("creating {}: {e}", staging.display())))?;

    let mut cmd = Command::new(pg_bin(bin_dir, "pg_basebackup")?);
    cmd.arg("-d")
        .arg(config.backup.dsn.expose())
        .arg("-D")
        .arg(&pgdata)
        .args([
            "-Fp",
            "-X",
            "stream",
            "-c",
            "fast",
            "--manifest-checksums=SHA256",
            "--no-password",
        ])
        .env("LC_ALL", "C");
    if progress.enabled() {
        cmd.arg("--progress");
        run_shown(cmd, "pg_basebackup")?;
    } else {
        run(cmd, "pg_basebackup")?;
    }
    progress.show("verifying the copy (pg_verifybackup) ...");
    let mut cmd = Command::new(pg_bin(bin_dir, "pg_verifybackup")?);
    cmd.arg("--quiet").arg(&pgdata);
    run(cmd, "pg_verifybackup")?;
    progress.show("archiving ...");
    let label = std::fs::read_to_string(pgdata.join("backup_label")).unwrap_or_default();
    let pg_version = std::fs::read_to_string(pgdata.join("PG_VERSION"))
        .unwrap_or_default()
        .trim()
        .to_string();
    tar_create(&dir.join(PG_ARCHIVE), &staging, "pgdata")?;
    std::fs::remove_dir_all(&staging)
        .map_err(|e| CliError::failed(format!("removing {}: {e}", staging.display())))?;

    let mut archives = vec![PG_ARCHIVE];
    let mut skipped = Vec::new();
    for (src, name) in [
        (&config.backup.assets_dir, ASSETS_ARCHIVE),
        (&config.backup.config_dir, CONFIG_ARCHIVE),
    ] {
        if src.is_dir() {
            tar_create(&dir.join(name), src, ".")?;
            archives.push(name);
        } else {
            skipped.push(format!("{} (not a directory)", src.display()));
        }
    }
    // The config archive holds credentials.
    let _ = std::fs::set_permissions(
        dir.join(CONFIG_ARCHIVE),
        std::fs::Permissions::from_mode(0o600),
    );

    let mut files = Vec::new();
    let mut sums = String::new();
    for name in &archives {
        let (sha, bytes) = sha256_file(&dir.join(name))?;
        sums.push_str(&format!("{sha}  {name}\n"));
        files.push(json!({"name": name, "bytes": bytes, "sha256": sha}));
    }
    let manifest = json!({
        "format": 1,
        "node": config.node.name,
        "role": config.node.role,
        "created_at": created_at.to_rfc3339(),
        "finished_at": chrono::Utc::now().to_rfc3339(),
        "aurora_version": sidecar_kit::telemetry::long_version(),
        "postgres": {
            "version": pg_version,
            "start_wal_location": label_field(&label, "START WAL LOCATION:"),
            "start_timeline": label_field(&label, "START TIMELINE:"),
            "backup_from": label_field(&label, "BACKUP FROM:"),
        },
        "sources": {
            "assets_dir": config.backup.assets_dir,
            "config_dir": config.backup.config_dir,
        },
        "skipped": skipped,
        "files": files,
    });
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| CliError::failed(format!("encoding the manifest: {e}")))?;
    std::fs::write(dir.join("manifest.json"), text)
        .map_err(|e| CliError::failed(format!("writing manifest.json: {e}")))?;
    std::fs::write(dir.join("SHA256SUMS"), sums)
        .map_err(|e| CliError::failed(format!("writing SHA256SUMS: {e}")))?;
    Ok(manifest)
}

/// Checks every file the manifest lists against its size and SHA-256.
fn verify_backup(from: &Path) -> CliResult<Value> {
    let text = std::fs::read_to_string(from.join("manifest.json")).map_err(|e| {
        CliError::usage(format!(
            "{} is not a backup directory (manifest.json: {e})",
            from.display()
        ))
    })?;
    let manifest: Value = serde_json::from_str(&text).map_err(|e| {
        CliError::failed(format!("{}/manifest.json is damaged: {e}", from.display()))
    })?;
    for f in manifest["files"].as_array().into_iter().flatten() {
        let name = f["name"].as_str().unwrap_or("");
        if name.contains('/') || name.is_empty() {
            return Err(CliError::failed(format!(
                "manifest.json names a file outside the backup: `{name}`"
            )));
        }
        let (sha, bytes) = sha256_file(&from.join(name))?;
        if Some(sha.as_str()) != f["sha256"].as_str() || Some(bytes) != f["bytes"].as_u64() {
            return Err(CliError::failed(format!(
                "{name} does not match its checksum in manifest.json: the backup is damaged"
            )));
        }
    }
    Ok(manifest)
}

/// An empty (or missing) directory to restore into; created if missing.
fn empty_target(dir: &Path, flag: &str) -> CliResult {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir)
            .map_err(|e| CliError::usage(format!("{flag} {}: {e}", dir.display())))?;
        if entries.next().is_some() {
            return Err(CliError::usage(format!(
                "{flag} {} is not empty; restore never overwrites data",
                dir.display()
            )));
        }
    } else {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::failed(format!("creating {}: {e}", dir.display())))?;
    }
    Ok(())
}

fn tar_extract(archive: &Path, into: &Path, strip: u32) -> CliResult {
    let mut cmd = Command::new("tar");
    cmd.arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .arg("--no-same-owner")
        .arg(format!("--strip-components={strip}"));
    run(cmd, &format!("extracting {}", archive.display())).map(|_| ())
}

/// Hands `path` and everything under it to `uid:gid`.
fn chown_tree(path: &Path, uid: u32, gid: u32) -> CliResult {
    let mut cmd = Command::new("chown");
    cmd.arg("-R").arg(format!("{uid}:{gid}")).arg(path);
    run(cmd, "chown").map(|_| ())
}

pub struct RestoreArgs<'a> {
    pub from: &'a Path,
    pub data_dir: &'a Path,
    pub assets_dir: Option<&'a Path>,
    pub config_dir: Option<&'a Path>,
    pub bin_dir: Option<&'a Path>,
}

/// `restore`: checks the backup, extracts PostgreSQL into an empty data
/// directory (owned like the directory it sits in, mode 0700) and runs
/// `pg_verifybackup` on the result; assets and config only where asked.
pub fn restore(args: RestoreArgs<'_>, as_json: bool) -> CliResult {
    use std::os::unix::fs::MetadataExt;
    let started = Instant::now();
    let manifest = verify_backup(args.from)?;
    empty_target(args.data_dir, "--data-dir")?;
    tar_extract(&args.from.join(PG_ARCHIVE), args.data_dir, 1)?;
    let mut cmd = Command::new(pg_bin(args.bin_dir, "pg_verifybackup")?);
    cmd.arg("--quiet").arg(args.data_dir);
    run(cmd, "pg_verifybackup of the restored data directory")?;
    std::fs::set_permissions(args.data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| CliError::failed(format!("chmod {}: {e}", args.data_dir.display())))?;
    // PostgreSQL runs as the data directory's owner: give the files to
    // whoever owns the directory they were restored into.
    let parent = args.data_dir.parent().unwrap_or(Path::new("/"));
    let owner = std::fs::metadata(args.data_dir)
        .ok()
        .filter(|m| m.uid() != 0)
        .or_else(|| std::fs::metadata(parent).ok());
    if let Some(m) = owner {
        if nix::unistd::Uid::effective().is_root() {
            chown_tree(args.data_dir, m.uid(), m.gid())?;
        }
    }
    let mut restored = vec![json!({"what": "postgres", "into": args.data_dir})];
    for (archive, target, flag) in [
        (ASSETS_ARCHIVE, args.assets_dir, "--assets-dir"),
        (CONFIG_ARCHIVE, args.config_dir, "--config-dir"),
    ] {
        let Some(target) = target else { continue };
        let path = args.from.join(archive);
        if !path.is_file() {
            return Err(CliError::usage(format!(
                "{flag}: this backup has no {archive}"
            )));
        }
        empty_target(target, flag)?;
        tar_extract(&path, target, 0)?;
        restored.push(json!({"what": archive.trim_end_matches(".tar.gz"), "into": target}));
    }
    if as_json {
        output::print_json(&json!({"restored": restored, "manifest": manifest}));
    } else {
        outln!(
            "restored the backup of {} taken {} into {} (verified)",
            manifest["node"].as_str().unwrap_or("?"),
            manifest["created_at"].as_str().unwrap_or("?"),
            args.data_dir.display()
        );
        for r in &restored[1..] {
            outln!("  {} -> {}", r["what"].as_str().unwrap_or(""), r["into"]);
        }
        outln!(
            "done in {}; start PostgreSQL on it (as a new primary, or add standby.signal to make it follow one)",
            output::duration_secs(started.elapsed().as_secs_f64())
        );
        if args.data_dir.join("aurora.conf").is_file() {
            outln!(
                "note: aurora.conf (repl-manager's settings) came with the backup; its \
                 synchronous_standby_names makes commits wait for a standby until repl-manager \
                 manages this server (or you empty that file for a standalone one)"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn client_programs_are_found_without_the_server() {
        use super::find_pg_program;
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let exe = |p: std::path::PathBuf| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let lib = root.path().join("lib");
        // Only client programs, in two versions: the newest wins.
        exe(lib.join("13/bin/pg_verifybackup"));
        let newest = exe(lib.join("15/bin/pg_verifybackup"));
        std::fs::create_dir_all(lib.join("16/bin")).unwrap();
        let empty = root.path().join("empty-path");
        std::fs::create_dir_all(&empty).unwrap();
        let path = std::env::join_paths([&empty]).unwrap();
        let found = find_pg_program("pg_verifybackup", None, Some(&path), &lib).unwrap();
        assert_eq!(found, newest);
        // PATH first (Debian links pg_basebackup into /usr/bin).
        let on_path = exe(empty.join("pg_verifybackup"));
        assert_eq!(
            find_pg_program("pg_verifybackup", None, Some(&path), &lib).unwrap(),
            on_path
        );
        // Missing everywhere: says what to install, and no test script.
        let e = find_pg_program("pg_basebackup", None, Some(&path), &lib)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("apt-get install postgresql-client") && !e.contains("scripts/"),
            "{e}"
        );
        // backup.bin_dir set: only there.
        let e = find_pg_program(
            "pg_verifybackup",
            Some(&empty.join("nope")),
            Some(&path),
            &lib,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("backup.bin_dir"), "{e}");
    }
}
