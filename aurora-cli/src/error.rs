//! The CLI's two kinds of failure, and the exit status each maps to:
//! 2 for a usage or config error (the operator must change the command or
//! the config), 1 for an operation that was tried and failed.

use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or config: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The operation failed: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn usage(msg: impl Into<String>) -> Self {
        Self::Usage(one_line(msg.into()))
    }

    /// A failed operation. The first line is the summary; more lines (a
    /// log's tail when a process did not start) may follow.
    pub fn failed(msg: impl Into<String>) -> Self {
        Self::Failed(msg.into().trim().to_string())
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) => ExitCode::from(sidecar_kit::cli::EXIT_CONFIG),
            Self::Failed(_) => ExitCode::from(sidecar_kit::cli::EXIT_FAILURE),
        }
    }
}

/// Every message is one line: the first thing an operator reads, and what a
/// script greps.
fn one_line(s: String) -> String {
    let s = s.trim();
    if s.contains('\n') {
        s.split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        s.to_string()
    }
}

impl From<local_fleet::Error> for CliError {
    fn from(e: local_fleet::Error) -> Self {
        match e {
            local_fleet::Error::Missing { .. } => Self::usage(e.to_string()),
            other => Self::failed(other.to_string()),
        }
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;
