//! The engine's rooms keep their imports pointing one way: no module of
//! `src/` imports one that imports it back, and no chain of imports comes
//! back to where it started. Read from the sources, as a reviewer would:
//! every `crate::` path outside tests and comments, with the names `lib.rs`
//! re-exports followed to their module. Needs no privileges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module's file, by its name (`event` for `src/model/event.rs`).
fn modules(dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            modules(&path, out);
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "mod" {
            out.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The code of a file without its tests and comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names `lib.rs` re-exports (`pub use module::{A, B}`), by module.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let lib = code(lib);
    for stmt in lib.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let (path, list) = match rest.split_once("::{") {
            Some((path, list)) => (path, list.trim_end_matches('}')),
            None => match rest.rsplit_once("::") {
                Some((path, name)) => (path, name),
                None => continue,
            },
        };
        let module = path.rsplit("::").next().unwrap().trim().to_string();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            names.insert(name.to_string(), module.clone());
        }
    }
    names
}

/// The modules a file's code names through `crate::`.
fn imports(
    code: &str,
    modules: &BTreeMap<String, String>,
    reexports: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut add = |name: &str| {
        let name = name.trim();
        if modules.contains_key(name) {
            found.insert(name.to_string());
        } else if let Some(module) = reexports.get(name) {
            found.insert(module.clone());
        }
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let list = &list[..list.find('}').unwrap_or(list.len())];
            for item in list.split(',') {
                add(item.split("::").next().unwrap_or(""));
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            add(&rest[..end]);
        }
    }
    found
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    modules(&src, &mut files);
    assert!(files.len() > 20, "{} modules", files.len());
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let reexports = reexports(&lib);
    let graph: BTreeMap<&String, BTreeSet<String>> = files
        .iter()
        .map(|(name, text)| {
            let mut deps = imports(&code(text), &files, &reexports);
            deps.remove(name);
            (name, deps)
        })
        .collect();
    // A chain of imports back to its start, found depth first.
    fn cycle_from<'a>(
        graph: &'a BTreeMap<&String, BTreeSet<String>>,
        at: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| *m == at) {
            let mut cycle: Vec<String> = path[start..].iter().map(|m| m.to_string()).collect();
            cycle.push(at.to_string());
            return Some(cycle);
        }
        if !done.insert(at) {
            return None;
        }
        path.push(at);
        for next in graph.get(&at.to_string()).into_iter().flatten() {
            if let Some(cycle) = cycle_from(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for name in graph.keys() {
        let cycle = cycle_from(&graph, name, &mut Vec::new(), &mut done);
        assert!(cycle.is_none(), "imports come back: {:?}", cycle.unwrap());
    }
    // The check sees imports: the builder names the loader.
    assert!(graph[&"builder".to_string()].contains("load"));
}
