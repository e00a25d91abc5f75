//! The core's modules form a layered graph: no module imports, directly or through others, a module that imports it
//! (issue 17). This test reads `src/` and builds the graph from every `crate::module` path in the code, so a new
//! import that closes a circle fails here, naming the circle.
//!
//! A file `src/m.rs` or `src/m/…` is module `m` (a directory's files are one node: `host`, `sim`). Comments are
//! skipped, and so is each file's trailing `#[cfg(test)] mod tests`: unit tests sit above every module and may use
//! any of them.

#![allow(clippy::unwrap_used)] // a failing step panics the test, which is what it should do

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The code of a file without comments and without its trailing unit-test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules `text` names through `crate::module`.
fn imports(text: &str) -> BTreeSet<String> {
    let code = code(text);
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let preceded = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[i + "crate::".len()..];
        if preceded {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

fn walk(dir: &Path, module: Option<&str>, graph: &mut Graph) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let name = module.map(str::to_string).unwrap_or(stem);
        if path.is_dir() {
            walk(&path, Some(&name), graph);
        } else if path.extension().is_some_and(|e| e == "rs") {
            if module.is_none() && name == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let edges = graph.entry(name.clone()).or_default();
            for m in imports(&text) {
                if m != name {
                    edges.insert(m);
                }
            }
        }
    }
}

/// One cycle of `graph`, as the modules along it (first = last), if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    // 0 = unvisited, 1 = on the current path, 2 = done.
    fn visit(
        node: &str,
        graph: &Graph,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|n| n == next).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_core_modules_import_each_other_without_cycles() {
    let mut graph = Graph::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        None,
        &mut graph,
    );
    assert!(
        graph.contains_key("ids") && graph.contains_key("host"),
        "{graph:?}"
    );
    // Every import names a module that exists (a typo here would hide an edge).
    for (m, edges) in &graph {
        for e in edges {
            assert!(
                graph.contains_key(e),
                "{m} imports crate::{e}, which is no module"
            );
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle among the core's modules: {}",
            cycle.join(" -> ")
        );
    }
    // The leaf identifiers import nothing but the hash.
    assert!(
        graph["ids"].iter().all(|m| m == "hash"),
        "{:?}",
        graph["ids"]
    );
}

#[test]
fn a_cycle_is_found_and_named() {
    let mut graph = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph.entry(a.into()).or_default().insert(b.into());
        graph.entry(b.into()).or_default();
    }
    graph.entry("d".into()).or_default();
    assert_eq!(find_cycle(&graph).unwrap().join(" -> "), "a -> b -> c -> a");
    graph.get_mut("c").unwrap().remove("a");
    assert_eq!(find_cycle(&graph), None);
    assert_eq!(
        imports(concat!(
            "use crate::ids::Address; // crate::nothing\n",
            "let x = my_crate::other;\n",
            "#[cfg(test)]\nmod tests { use crate::host; }",
        )),
        BTreeSet::from(["ids".to_string()])
    );
}
