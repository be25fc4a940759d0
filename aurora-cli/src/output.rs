//! Terminal output: aligned tables, colour only on a TTY (and never with
//! `NO_COLOR`), and the small formatters every command shares.

use std::io::{ErrorKind, IsTerminal, Write};

/// Whether stdout gets ANSI colour.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Colours a status word: green for good, yellow for attention, red for bad.
pub fn paint(word: &str) -> String {
    if !colour() {
        return word.to_string();
    }
    let code = match word {
        "passing" | "ok" | "streaming" | "primary" | "healthy" | "running" | "sync" | "yes" => "32",
        "warning" | "degraded" | "catchup" | "async" | "potential" | "stopped" | "paused" => "33",
        "critical" | "down" | "unhealthy" | "unreachable" | "lost" | "dead" | "no"
        | "partitioned" => "31",
        _ => return word.to_string(),
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

/// A plain table: a header row and left-aligned columns two spaces apart.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the table; the status-looking cells are coloured after the
    /// widths are measured, so escape codes do not break alignment.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: &[String], paint_cells: bool, out: &mut String| {
            let mut parts = Vec::new();
            for (i, cell) in cells.iter().enumerate().take(cols) {
                let pad = widths[i].saturating_sub(cell.chars().count());
                let shown = if paint_cells {
                    paint(cell)
                } else {
                    cell.clone()
                };
                if i + 1 == cells.len().min(cols) {
                    parts.push(shown);
                } else {
                    parts.push(format!("{shown}{}", " ".repeat(pad)));
                }
            }
            out.push_str(parts.join("  ").trim_end());
            out.push('\n');
        };
        line(&self.header, false, &mut out);
        for row in &self.rows {
            line(row, true, &mut out);
        }
        out
    }
}

/// `1.5 KB`, `12 MB`.
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `850 ms`, `4.2 s`, `3 min`, `2.0 h`.
pub fn duration_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Prints a JSON value for `--json` (pretty, one document).
pub fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(text) => outln!("{text}"),
        Err(e) => eprintln!("aurora-cli: cannot write the JSON document: {e}"),
    }
}

/// Writes the tool's output. When the reader went away (a pipe into `head`
/// that closed), the rest is of no use to anyone: exit 0 at once, quietly.
/// Any other failure to write (a full disk behind a redirect) exits 1 with
/// one line, since the output the operator asked for is lost.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        exit_on_write_error(&e);
    }
}

/// Flushes what was written (before a prompt or a long wait).
pub fn flush_stdout() {
    if let Err(e) = std::io::stdout().flush() {
        exit_on_write_error(&e);
    }
}

fn exit_on_write_error(e: &std::io::Error) -> ! {
    if e.kind() == ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    let _ = writeln!(
        std::io::stderr(),
        "aurora-cli: cannot write the output: {e}"
    );
    std::process::exit(1);
}

/// A progress line on stderr for a long command, redrawn in place: only
/// when stderr is a terminal and the output is not `--json`, so scripts and
/// logs stay quiet. Cleared when dropped.
pub struct Progress {
    on: bool,
    drawn: bool,
    /// Steps mode: a line whose step (the text before ` (`) changed leaves
    /// the previous one on the screen, so the phases read as a list.
    steps: bool,
    last_step: Option<String>,
}

impl Progress {
    pub fn new(as_json: bool) -> Self {
        Self {
            on: !as_json && std::io::stderr().is_terminal(),
            drawn: false,
            steps: false,
            last_step: None,
        }
    }

    /// For an operation with phases (`switchover`): each phase stays on
    /// its own line once the next begins.
    pub fn steps(as_json: bool) -> Self {
        let mut p = Self::new(as_json);
        p.steps = true;
        p
    }

    pub fn enabled(&self) -> bool {
        self.on
    }

    /// Replaces the line (in steps mode, keeps the last one when the step
    /// changed).
    pub fn show(&mut self, line: &str) {
        if self.on {
            let mut e = std::io::stderr().lock();
            if self.steps {
                let step = line.split(" (").next().unwrap_or(line).to_string();
                if self.drawn && self.last_step.as_ref().is_some_and(|l| *l != step) {
                    let _ = writeln!(e);
                }
                self.last_step = Some(step);
            }
            let _ = write!(e, "\r\x1b[2K{line}");
            let _ = e.flush();
            self.drawn = true;
        }
    }

    /// A line that stays (a phase that finished).
    pub fn done(&mut self, line: &str) {
        if self.on {
            let _ = writeln!(std::io::stderr().lock(), "\r\x1b[2K{line}");
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.drawn {
            // A finished step stays; a counter line goes.
            let end = if self.steps { "\n" } else { "\r\x1b[2K" };
            let _ = write!(std::io::stderr().lock(), "{end}");
        }
    }
}

/// Runs `work` while `poll` is called every `every` (on a terminal only:
/// `progress` decides) to draw what it reports; returns `work`'s result.
pub async fn with_progress<T, W, P, F>(
    progress: &mut Progress,
    every: std::time::Duration,
    work: W,
    mut poll: P,
) -> T
where
    W: std::future::Future<Output = T>,
    P: FnMut() -> F,
    F: std::future::Future<Output = Option<String>>,
{
    if !progress.enabled() {
        return work.await;
    }
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tokio::time::sleep(every) => {
                if let Some(line) = poll().await {
                    progress.show(&line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["NODE", "ROLE"]);
        t.row(vec!["aurora".into(), "lead".into()]);
        t.row(vec!["a".into(), "compute".into()]);
        assert_eq!(t.render(), "NODE    ROLE\naurora  lead\na       compute\n");
    }

    #[test]
    fn human_units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KB");
        assert_eq!(duration_secs(0.25), "250 ms");
        assert_eq!(duration_secs(4.21), "4.2 s");
    }
}
