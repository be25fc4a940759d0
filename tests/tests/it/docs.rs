//! The operator's documents name only commands that exist: every
//! `aurora-cli …` in code in the runbooks, the quick reference and the
//! README is run as `aurora-cli <command> --help`, and each flag it uses
//! must be in that help.

#![allow(clippy::unwrap_used)] // a panic is a test failure

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use aurora_tests::repo;
use testbed::tools::workspace_bin;

/// The code in a Markdown text: fenced blocks line by line, and inline
/// `spans`.
fn code_of(markdown: &str) -> Vec<String> {
    let mut out = vec![];
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            out.push(line.to_string());
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let Some(code) = parts.next() {
            out.push(code.replace("\\|", "|"));
            parts.next();
        }
    }
    out
}

/// One invocation: the command path (`["sandbox", "up"]`) and the flags it
/// uses. None when the code only names the tool or a placeholder.
fn invocation(code: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let mut found = vec![];
    let mut rest = code;
    while let Some(at) = rest.find("aurora-cli") {
        let after = &rest[at + "aurora-cli".len()..];
        let end = after.find([';', '#', '|', '&', ')']).unwrap_or(after.len());
        let words: Vec<&str> = after[..end].split_whitespace().collect();
        rest = &after[end..];
        if !after.starts_with(' ') {
            continue; // aurora-cli.md, aurora-cli's
        }
        let mut path = vec![];
        let mut flags = vec![];
        let mut i = 0;
        while i < words.len() {
            let w = words[i];
            if w.starts_with('-') {
                let flag = w.split('=').next().unwrap().to_string();
                if flag == "--config" {
                    i += 1; // its value
                }
                flags.push(flag);
            } else if w.contains(['<', '…', '$']) || w.chars().all(|c| c == '.') {
                if path.is_empty() {
                    break; // `aurora-cli <command>`: a placeholder
                }
            } else if (path.is_empty() || path == ["sandbox"])
                && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            {
                path.push(w.to_string());
            }
            i += 1;
        }
        if !path.is_empty() || !flags.is_empty() {
            found.push((path, flags));
        }
    }
    found
}

#[test]
fn docs_name_only_commands_that_exist() {
    let root = repo();
    let mut files: Vec<PathBuf> =
        vec![root.join("docs/QUICK_REFERENCE.md"), root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs/runbooks")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    assert!(files.len() >= 12, "{files:?}");
    let cli = workspace_bin("aurora-cli").unwrap();
    let mut help: BTreeMap<Vec<String>, String> = BTreeMap::new();
    let mut seen = 0;
    let mut wrong = vec![];
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for code in code_of(&text) {
            for (path, flags) in invocation(&code) {
                seen += 1;
                let h = help.entry(path.clone()).or_insert_with(|| {
                    let out = Command::new(&cli)
                        .args(&path)
                        .arg("--help")
                        .env_remove("AURORA_CONFIG")
                        .output()
                        .unwrap();
                    if out.status.success() {
                        String::from_utf8_lossy(&out.stdout).into_owned()
                    } else {
                        String::new()
                    }
                });
                let place = format!(
                    "{}: `{}`",
                    f.strip_prefix(&root).unwrap().display(),
                    code.trim()
                );
                if h.is_empty() {
                    wrong.push(format!(
                        "{place}: `aurora-cli {}` is not a command",
                        path.join(" ")
                    ));
                    continue;
                }
                for flag in flags {
                    let known = if flag.starts_with("--") {
                        h.contains(&format!("{flag} "))
                            || h.contains(&format!("{flag}\n"))
                            || h.contains(&format!("{flag},"))
                    } else {
                        h.contains(&format!("{flag},")) || h.contains(&format!("{flag} "))
                    };
                    if !known {
                        wrong.push(format!(
                            "{place}: `aurora-cli {}` has no {flag}",
                            path.join(" ")
                        ));
                    }
                }
            }
        }
    }
    assert!(
        seen >= 40,
        "only {seen} aurora-cli invocations found: the parser is broken"
    );
    assert!(
        wrong.is_empty(),
        "the docs name commands that do not exist:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_doc_parser_finds_commands_and_flags() {
    assert_eq!(
        invocation("aurora-cli --config x.toml switchover --to star --yes; echo"),
        vec![(
            vec!["switchover".to_string()],
            vec![
                "--config".to_string(),
                "--to".to_string(),
                "--yes".to_string()
            ]
        )]
    );
    assert_eq!(
        invocation("aurora-cli sandbox kill aurora"),
        vec![(vec!["sandbox".to_string(), "kill".to_string()], vec![])]
    );
    assert!(invocation("`aurora-cli` reads node.toml").is_empty());
    assert!(invocation("aurora-cli <command> --help").is_empty());
    assert_eq!(
        code_of("a `b` c `d \\| e`\n```sh\nx\n```"),
        vec!["b", "d | e", "x"]
    );
}
