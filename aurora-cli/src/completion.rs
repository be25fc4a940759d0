//! Shell completion that knows the fleet: `aurora-cli switchover --to <TAB>`
//! offers the fleet's members, `aurora-cli logs <TAB>` this node's compose
//! services, `aurora-cli sandbox kill <TAB>` the sandbox's nodes.
//!
//! The shell script (`aurora-cli completions bash`) calls back into
//! aurora-cli with `COMPLETE=<shell>` (clap_complete's dynamic engine); the
//! candidates are read then, so they are the fleet of the moment. A
//! completion never hangs the shell and never prints an error: what cannot
//! be read (no config, a sidecar down, no docker) offers nothing.

use std::time::Duration;

use clap_complete::engine::CompletionCandidate;

use crate::api::{Api, Sidecar};
use crate::config::NodeConfig;

/// A completion waits at most this long for a sidecar.
const ASK_FOR: Duration = Duration::from_millis(800);

/// The config the command being completed will read: `$AURORA_CONFIG`,
/// else the default path. (A `--config` typed on the same line is not
/// visible to the completer.)
fn node_config() -> Option<NodeConfig> {
    let mut config = NodeConfig::load(None).ok()?;
    config.admin.timeout_secs = 1;
    Some(config)
}

/// The fleet's members, as this node's repl-manager lists them; this node
/// alone when it does not answer.
pub fn fleet_nodes() -> Vec<CompletionCandidate> {
    let Some(config) = node_config() else {
        return Vec::new();
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let members = runtime.ok().and_then(|rt| {
        rt.block_on(async {
            let api = Api::new(&config);
            let read = api.read::<aurora_api::repl::ClusterView>(Sidecar::ReplManager, "/cluster");
            tokio::time::timeout(ASK_FOR, read).await.ok()?.ok()
        })
    });
    match members {
        Some(c) => c
            .members
            .into_iter()
            .map(|m| {
                CompletionCandidate::new(m.status.node)
                    .help(Some(format!("{} {}", m.status.role, m.status.state).into()))
            })
            .collect(),
        None => vec![CompletionCandidate::new(config.node.name)],
    }
}

/// This node's compose services.
pub fn services() -> Vec<CompletionCandidate> {
    let Some(config) = node_config() else {
        return Vec::new();
    };
    crate::commands::compose::Docker::new(&config)
        .and_then(|d| d.services())
        .unwrap_or_default()
        .into_iter()
        .map(CompletionCandidate::new)
        .collect()
}

/// The sandbox's nodes (`$AURORA_SANDBOX_DIR`, else the default
/// directory).
pub fn sandbox_nodes() -> Vec<CompletionCandidate> {
    let dir = std::env::var_os("AURORA_SANDBOX_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::sandbox::DEFAULT_DIR.into());
    crate::sandbox::state::Sandbox::load(&dir)
        .map(|sb| {
            sb.nodes
                .into_iter()
                .map(|n| CompletionCandidate::new(n.name).help(Some(n.role.into())))
                .collect()
        })
        .unwrap_or_default()
}

/// The script that registers these completions with `shell`.
pub fn registration(shell: clap_complete::Shell) -> Result<String, String> {
    use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};
    use clap_complete::Shell;
    let completer: &dyn EnvCompleter = match shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
        Shell::Elvish => &Elvish,
        Shell::PowerShell => &Powershell,
        other => return Err(format!("no completions for {other}")),
    };
    let mut script = Vec::new();
    completer
        .write_registration(
            "COMPLETE",
            "aurora-cli",
            "aurora-cli",
            "aurora-cli",
            &mut script,
        )
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&script).into_owned())
}
