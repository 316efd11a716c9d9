//! The house's rules, read from the sources:
//! - every task of the node library has an owner: no `tokio::spawn` in
//!   `node/src` outside `tasks.rs`;
//! - no function over 80 lines outside tests and the dev crate, but those
//!   named in [`LONG`];
//! - no protocol driver (a file under `node/src/protocols`) over 300 lines
//!   of non-test code, but those named in [`BIG_DRIVERS`].
//!
//! Both lists may only shrink: the test says when one of them has been split.

mod common;

use std::collections::BTreeSet;

/// Functions still over [`MAX_LINES`] ("crate-dir/path.rs::name"), to be
/// split: none now. A function that grows past the limit fails the test;
/// one named here that shrinks under it must leave the list.
const LONG: &[&str] = &[];

/// Protocol drivers still over [`MAX_DRIVER_LINES`] (paths under
/// `node/src/protocols`), to be split: none now; the test keeps it so.
const BIG_DRIVERS: &[&str] = &[];

/// The longest protocol driver allowed, in lines of non-test code.
const MAX_DRIVER_LINES: usize = 300;

/// The longest function allowed, in lines from `fn` to its closing brace.
const MAX_LINES: usize = 80;

/// The crates held to the size rule (the dev crate and tests are not).
const CRATES: &[&str] = &["proto", "protocol", "ledger-adapter", "node", "ledgermesh"];

#[test]
fn every_task_of_the_node_has_an_owner() {
    let src = common::workspace().join("node/src");
    let mut bare = vec![];
    for (rel, code) in common::non_test_code(&src) {
        if rel.as_os_str() == "tasks.rs" {
            continue;
        }
        for pattern in ["tokio::spawn", "task::spawn(", "spawn_local("] {
            for (i, _) in code.match_indices(pattern) {
                let line = code[..i].lines().count();
                bare.push(format!("node/src/{}:{line}", rel.display()));
            }
        }
    }
    assert!(
        bare.is_empty(),
        "tasks spawned outside the owner (use crate::tasks::Tasks, or a NodeHandle's spawn): {bare:#?}"
    );
}

#[test]
fn no_function_is_over_80_lines_but_the_named_ones() {
    let mut over = BTreeSet::new();
    let mut seen = 0;
    for krate in CRATES {
        let src = common::workspace().join(krate).join("src");
        for (rel, code) in common::non_test_code(&src) {
            for f in functions(&code) {
                seen += 1;
                if f.lines > MAX_LINES {
                    over.insert((
                        format!("{krate}/src/{}::{}", rel.display(), f.name),
                        f.lines,
                    ));
                }
            }
        }
    }
    assert!(seen > 500, "read the functions: {seen}");
    let known: BTreeSet<&str> = LONG.iter().copied().collect();
    let new: Vec<_> = (over.iter())
        .filter(|(name, _)| !known.contains(name.as_str()))
        .collect();
    assert!(
        new.is_empty(),
        "functions over {MAX_LINES} lines (split them): {new:#?}"
    );
    let split: Vec<_> = (known.iter())
        .filter(|k| !over.iter().any(|(name, _)| name == *k))
        .collect();
    assert!(
        split.is_empty(),
        "no longer over {MAX_LINES} lines (or gone): take them out of LONG in node/tests/house.rs: {split:#?}"
    );
}

#[test]
fn no_protocol_driver_is_over_300_lines_but_the_named_ones() {
    let src = common::workspace().join("node/src/protocols");
    let over: BTreeSet<String> = (common::non_test_code(&src).into_iter())
        .filter(|(_, code)| code.lines().count() > MAX_DRIVER_LINES)
        .map(|(rel, _)| rel.display().to_string())
        .collect();
    let known: BTreeSet<String> = BIG_DRIVERS.iter().map(|s| s.to_string()).collect();
    let new: Vec<_> = over.difference(&known).collect();
    assert!(
        new.is_empty(),
        "protocol drivers over {MAX_DRIVER_LINES} lines (split them): {new:?}"
    );
    let split: Vec<_> = known.difference(&over).collect();
    assert!(
        split.is_empty(),
        "no longer over {MAX_DRIVER_LINES} lines (or gone): take them out of BIG_DRIVERS in node/tests/house.rs: {split:?}"
    );
}

/// A function found in source: its name and its length in lines.
#[derive(Debug, PartialEq)]
struct Function {
    name: String,
    lines: usize,
}

/// Every function with a body in `code`, nested ones too (each counted
/// from its `fn` line to its closing brace, inclusive).
fn functions(code: &str) -> Vec<Function> {
    let plain = blank_comments_and_literals(code);
    let bytes = plain.as_bytes();
    let line_at = |i: usize| plain[..i].matches('\n').count();
    let mut out = vec![];
    let mut from = 0;
    while let Some(at) = plain[from..].find("fn ") {
        let start = from + at;
        from = start + 3;
        let word_before =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if word_before {
            continue;
        }
        let name: String = plain[start + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue; // `fn(` as a type
        }
        // The body opens at the first `{` outside parentheses and angle
        // brackets; a `;` first means a declaration without one.
        let mut depth = 0i32;
        let mut open = None;
        for (j, &b) in bytes.iter().enumerate().skip(start + 3 + name.len()) {
            match b {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b';' if depth == 0 => break,
                b'{' if depth == 0 => {
                    open = Some(j);
                    break;
                }
                _ => {}
            }
        }
        let Some(open) = open else { continue };
        let mut braces = 0i32;
        for (j, &b) in bytes.iter().enumerate().skip(open) {
            match b {
                b'{' => braces += 1,
                b'}' => {
                    braces -= 1;
                    if braces == 0 {
                        out.push(Function {
                            name: name.clone(),
                            lines: line_at(j) - line_at(start) + 1,
                        });
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// `code` with comments, string and char literals blanked (newlines kept),
/// so that braces inside them do not count.
fn blank_comments_and_literals(code: &str) -> String {
    let c: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r' && (next == Some('"') || next == Some('#')) && raw_start(&c, i) {
            let hashes = c[i + 1..].iter().take_while(|&&h| h == '#').count();
            i += 2 + hashes;
            while i < c.len() {
                if c[i] == '"'
                    && c[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == '#')
                        .count()
                        == hashes
                {
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                if let Some(&ch) = c.get(i) {
                    blank(&mut out, ch);
                }
                i += 1;
            }
            i += 1;
        } else if c[i] == '\'' && (next == Some('\\') || c.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\u{7f}'); otherwise a lifetime.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Whether the `r` at `i` starts a raw string (not the end of a word).
fn raw_start(c: &[char], i: usize) -> bool {
    let after = c[i + 1..].iter().find(|&&h| h != '#');
    let word_before = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
    after == Some(&'"') && !word_before
}

#[test]
fn the_function_reader_measures_bodies_not_their_text() {
    let code = r##"
fn short() { let s = "}}}"; let c = '}'; }
/// fn not_one() {}
pub(crate) async fn long<'a>(x: &'a str) -> Result<(), ()>
where
    'a: 'static,
{
    let r = r#"{"#;
    let f: fn(u8) -> u8 = |x| { x };
    /* { */
    Ok(())
}
trait T { fn declared(&self); fn with_default(&self) { } }
"##;
    let found = functions(code);
    let names: Vec<_> = found.iter().map(|f| (f.name.as_str(), f.lines)).collect();
    assert_eq!(
        names,
        [("short", 1), ("long", 9), ("with_default", 1)],
        "{found:?}"
    );
}
