//! The node's modules form layers: no import circle among the top-level
//! modules of `node/src`. Read from the sources: every `crate::MODULE`
//! path outside test code is an edge from the file's module to MODULE.
//!
//! The last circle, `protocols` ⇄ `swarm`, went when the protocol drivers
//! took the network face (`net::Net` and each protocol's own) instead of
//! `swarm::NodeHandle`: the swarm composes the protocols' behaviours and
//! implements their faces; no protocol names the swarm.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a path under `src/` belongs to.
fn module_of(rel: &Path) -> String {
    let first = rel.components().next().expect("a path");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

/// Top-level module → the modules its non-test code names, with a file
/// that does, for the message.
fn graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let root = src();
    let tops: BTreeSet<String> = std::fs::read_dir(&root)
        .expect("src")
        .map(|e| module_of(Path::new(&e.expect("entry").file_name())))
        .collect();
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (rel, code) in common::non_test_code(&root) {
        let from = module_of(&rel);
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name != from && tops.contains(&name) {
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(name)
                    .or_insert_with(|| rel.display().to_string());
            }
        }
        edges.entry(from).or_default();
    }
    edges
}

/// The strongly connected components of more than one module (Tarjan).
fn circles(g: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<BTreeSet<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeMap<String, String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(next) = t.g.get(v) {
            for w in next.keys() {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = BTreeSet::new();
            loop {
                let w = t.stack.pop().expect("on the stack");
                t.on.remove(w);
                c.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                t.out.push(c);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on: BTreeSet::new(),
        out: vec![],
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_top_level_modules_form_layers() {
    let g = graph();
    assert!(g.len() > 10, "read the modules: {:?}", g.keys());
    let explain = |c: &BTreeSet<String>| {
        let mut lines = vec![];
        for a in c {
            for (b, file) in &g[a] {
                if c.contains(b) {
                    lines.push(format!("  {a} → {b} (e.g. {file})"));
                }
            }
        }
        lines.join("\n")
    };
    let found = circles(&g);
    let text: Vec<String> = (found.iter())
        .map(|c| format!("{c:?}:\n{}", explain(c)))
        .collect();
    assert!(
        found.is_empty(),
        "import circles among node/src modules:\n{}",
        text.join("\n")
    );
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let mut g: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e")] {
        g.entry(a.into())
            .or_default()
            .insert(b.into(), String::new());
        g.entry(b.into()).or_default();
    }
    let found = circles(&g);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0],
        ["a", "b", "c"].iter().map(|s| s.to_string()).collect()
    );
}
