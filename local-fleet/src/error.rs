use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} is not installed: install it with `{install}` (scripts/lib/deps.sh in the source tree installs everything the sandbox and the tests need)")]
    Missing { what: String, install: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("{what} not ready after {secs} s{}", log.as_ref().map(|l| format!("; log {}:\n{}", l.0.display(), l.1)).unwrap_or_default())]
    Timeout {
        what: String,
        secs: u64,
        log: Option<(PathBuf, String)>,
    },
    #[error("{what} exited early ({status}); log {}:\n{tail}", log.display())]
    Exited {
        what: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
