//! GPU inventory for the registry, from `nvidia-smi` when the node has it.
//! No GPU tool, or one that fails, means an empty inventory (logged): a
//! node without GPUs is the common case, not an error.

use std::time::Duration;

use serde_json::{json, Value};

/// The fields asked for, in order.
const QUERY: &str = "index,name,uuid,memory.total,driver_version";

/// Runs `nvidia-smi` (found on PATH) and parses its CSV.
pub async fn inventory() -> Vec<Value> {
    let Some(bin) = sidecar_kit::cli::which("nvidia-smi") else {
        return Vec::new();
    };
    let run = tokio::process::Command::new(&bin)
        .arg(format!("--query-gpu={QUERY}"))
        .arg("--format=csv,noheader,nounits")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(out)) if out.status.success() => {
            let (gpus, skipped) = parse(&String::from_utf8_lossy(&out.stdout));
            if skipped > 0 {
                tracing::warn!(
                    skipped,
                    "nvidia-smi printed lines that are not GPUs; skipped"
                );
            }
            gpus
        }
        Ok(Ok(out)) => {
            tracing::warn!(
                status = %out.status,
                stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                "nvidia-smi failed; registering no GPUs"
            );
            Vec::new()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot run nvidia-smi; registering no GPUs");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!("nvidia-smi did not answer within 10 s; registering no GPUs");
            Vec::new()
        }
    }
}

/// Parses `index, name, uuid, memory MiB, driver` lines; returns the GPUs
/// and how many lines did not parse.
pub fn parse(csv: &str) -> (Vec<Value>, usize) {
    let mut gpus = Vec::new();
    let mut skipped = 0;
    for line in csv.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let parsed = match f.as_slice() {
            [index, name, uuid, mem, driver] => index.parse::<u32>().ok().map(|index| {
                json!({
                    "index": index,
                    "name": clean(name),
                    "uuid": clean(uuid),
                    "memory_mib": mem.parse::<u64>().ok(),
                    "driver": clean(driver),
                })
            }),
            _ => None,
        };
        match parsed {
            Some(g) => gpus.push(g),
            None => skipped += 1,
        }
    }
    (gpus, skipped)
}

/// Registry values are shown to operators and rendered by other tools:
/// printable ASCII only, bounded.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(128)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nvidia_smi_csv() {
        let out = "0, NVIDIA A100-SXM4-40GB, GPU-8f2c1a3e-0000-1111-2222-333344445555, 40960, 550.54.15\n\
                   1, NVIDIA A100-SXM4-40GB, GPU-9e3d, [N/A], 550.54.15\n\
                   garbage line\n";
        let (gpus, skipped) = parse(out);
        assert_eq!(skipped, 1);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0]["name"], "NVIDIA A100-SXM4-40GB");
        assert_eq!(gpus[0]["memory_mib"], 40960);
        assert_eq!(gpus[1]["memory_mib"], serde_json::Value::Null);
        assert_eq!(gpus[1]["index"], 1);
    }

    #[test]
    fn hostile_fields_are_cleaned() {
        let (gpus, _) = parse("0, evil\u{1b}[31mname, u, 1, d\n");
        assert_eq!(gpus[0]["name"], "evil[31mname");
    }
}
