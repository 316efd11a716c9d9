//! The docs name only what the binary has: every `ledgermesh SUBCOMMAND`
//! and every `--flag` written in `README.md` and `docs/*.md` (in code
//! blocks and inline code) exists in the binary's `--help`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ledgermesh"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run ledgermesh --help");
    assert!(out.status.success(), "ledgermesh {args:?} --help");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// The subcommands a help text lists under `Commands:`.
fn subcommands(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("Commands:") {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with("  ") {
                break;
            }
            let name = line.split_whitespace().next().unwrap_or_default();
            if !name.is_empty() && name != "help" {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// Every `--long` flag a help text shows.
fn flags(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split(['=', '<']).next().unwrap().to_string())
        .collect()
}

/// Every command path (`["channels", "report"]`) and every flag the binary has.
fn the_binary() -> (BTreeSet<Vec<String>>, BTreeSet<String>) {
    let mut commands = BTreeSet::new();
    let mut all_flags: BTreeSet<String> = flags(&help(&[])).into_iter().collect();
    let mut todo: Vec<Vec<String>> = subcommands(&help(&[]))
        .into_iter()
        .map(|s| vec![s])
        .collect();
    while let Some(path) = todo.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        all_flags.extend(flags(&text));
        for sub in subcommands(&text) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        commands.insert(path);
    }
    (commands, all_flags)
}

/// Code as the docs write it: fenced blocks and inline spans.
fn code_of(markdown: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let mut fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            // A command wrapped with `\` is one command.
            match out.last_mut() {
                Some(prev) if prev.ends_with('\\') => {
                    prev.pop();
                    prev.push(' ');
                    prev.push_str(line);
                }
                _ => out.push(line.to_string()),
            }
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find('`') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('`') else { break };
            out.push(after[..end].to_string());
            rest = &after[end + 1..];
        }
    }
    out
}

/// Flags of other programs the docs show (cargo, the scripts' own).
const NOT_OURS: &[&str] = &[
    "--release",
    "--workspace",
    "--locked",
    "--all-targets",
    "--check",
    "--no-capture",
    "--test",
    "--profile",
    "--run-ignored",
    "--features",
    "--bin",
    "--lib",
    "--force",
    "--help",
    "--version",
    "--",
];

#[test]
fn every_subcommand_and_flag_in_the_docs_exists() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let (commands, known) = the_binary();
    let tops: BTreeSet<&str> = commands.iter().map(|c| c[0].as_str()).collect();
    let mut wrong = vec![];
    let mut seen = (0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        for code in code_of(&text) {
            // A ledgermesh command line, or a flag named on its own; other
            // programs' command lines (cargo, the scripts) are theirs.
            let ours = (code.split_whitespace())
                .any(|w| w == "ledgermesh" || (w.ends_with("/ledgermesh") && !w.contains('=')));
            if !ours && !code.trim_start().starts_with("--") {
                continue;
            }
            let code = code.split('#').next().unwrap_or_default();
            let words: Vec<&str> = code.split_whitespace().collect();
            for (i, w) in words.iter().enumerate() {
                // `ledgermesh SUB [SUB2]`: SUB must be ours.
                let invoked =
                    *w == "ledgermesh" || (w.ends_with("/ledgermesh") && !w.contains('='));
                if invoked && i + 1 < words.len() {
                    let sub = words[i + 1];
                    let looks_like_one =
                        sub.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !sub.is_empty();
                    if looks_like_one && !sub.starts_with('-') {
                        seen.0 += 1;
                        if !tops.contains(sub) {
                            wrong.push(format!("{name}: `ledgermesh {sub}` is not a subcommand"));
                        }
                    }
                }
                let flag = w
                    .trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .split('=')
                    .next()
                    .unwrap_or_default();
                if flag.starts_with("--")
                    && flag.len() > 3
                    && flag[2..]
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !NOT_OURS.contains(&flag)
                {
                    seen.1 += 1;
                    if !known.contains(flag) {
                        wrong.push(format!("{name}: {flag} is no flag of ledgermesh"));
                    }
                }
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    println!(
        "{} files: {} subcommand mentions and {} flag mentions checked against {} commands and {} flags",
        files.len(),
        seen.0,
        seen.1,
        commands.len(),
        known.len()
    );
    assert!(seen.0 > 20 && seen.1 > 100, "the docs were read: {seen:?}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
