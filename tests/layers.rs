//! The crate's layering, checked from its sources: a module uses only the layers below its
//! own, and no two files of the crate use each other (directly or through others).
//!
//! Layers, bottom up (the front page of the crate docs has the same table):
//! utilities (`hex`, `serde_util`, `blocking`, `report`), `platform`, `identity`, `protocol`,
//! `handle`, `supervision`, `command`, `compose`, `testing`; `broker` (the compatibility paths) and
//! `lib.rs` may use everything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: &[&[&str]] = &[
    &["hex", "serde_util", "blocking", "report", "test_util"],
    &["platform"],
    &["identity"],
    &["protocol"],
    &["handle"],
    &["supervision"],
    &["command"],
    &["compose"],
    &["testing"],
    &["broker"],
];

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&top))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` -> ["a", "b"]; `src/lib.rs` -> [].
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments, string literals of doc examples, or its unit tests
/// (a test module may use anything of its own file).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module paths named in `code`: `crate::a::b::...` and `super::x::...` (resolved against
/// `own`), with `{a, b}` groups expanded one level.
fn references(code: &str, own: &[String], is_mod_rs: bool) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    for (start, prefix) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        if start > 0 && code[..start].ends_with(|c: char| ident(c) || c == ':') {
            continue; // `foo::super::` or `$crate::` are not ours
        }
        let base: Vec<String> = if prefix == "crate::" {
            Vec::new()
        } else {
            // In `a/b.rs`, `super` is `a`; in `a/b/mod.rs` (module `a::b`) it is `a` too.
            let mut base = own.to_vec();
            let _ = is_mod_rs;
            base.pop();
            base
        };
        let rest = &code[start + prefix.len()..];
        let mut path = base.clone();
        let mut chars = rest;
        loop {
            let name: String = chars.chars().take_while(|&c| ident(c)).collect();
            if name.is_empty() {
                if let Some(group) = chars.strip_prefix('{') {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    for item in group.split(',') {
                        let item: String = item.trim().chars().take_while(|&c| ident(c)).collect();
                        if !item.is_empty() {
                            let mut p = path.clone();
                            p.push(item);
                            found.push(p);
                        }
                    }
                }
                break;
            }
            chars = &chars[name.len()..];
            path.push(name);
            match chars.strip_prefix("::") {
                Some(next) => chars = next,
                None => break,
            }
        }
        found.push(path);
    }
    found
}

struct Crate {
    /// Module path -> what it names (other modules of the crate), as module paths.
    uses: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
    /// Module paths of `mod.rs` and `lib.rs` files: facades that re-export their children.
    facades: BTreeSet<Vec<String>>,
}

fn load() -> Crate {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_path(&src, f), f.clone()))
        .collect();
    let facades = files
        .iter()
        .filter(|f| f.ends_with("mod.rs") || f.ends_with("lib.rs"))
        .map(|f| module_path(&src, f))
        .collect();
    let mut uses = BTreeMap::new();
    for (module, file) in &modules {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let mut named = BTreeSet::new();
        for reference in references(&code, module, file.ends_with("mod.rs")) {
            // The longest prefix that is a module of the crate.
            let target = (1..=reference.len())
                .rev()
                .map(|n| reference[..n].to_vec())
                .find(|p| modules.contains_key(p));
            if let Some(target) = target {
                if &target != module {
                    named.insert(target);
                }
            }
        }
        uses.insert(module.clone(), named);
    }
    Crate { uses, facades }
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let krate = load();
    let mut violations = Vec::new();
    for (module, named) in &krate.uses {
        let Some(own) = module.first().and_then(|top| layer_of(top)) else {
            continue; // lib.rs
        };
        for target in named {
            let Some(theirs) = layer_of(&target[0]) else {
                violations.push(format!(
                    "{} uses unknown layer {}",
                    module.join("::"),
                    target[0]
                ));
                continue;
            };
            if theirs > own {
                violations.push(format!(
                    "{} (layer {own}) uses {} (layer {theirs})",
                    module.join("::"),
                    target.join("::")
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_two_files_use_each_other() {
    let krate = load();
    // Facades (`mod.rs`) re-export their children, which name items through them: leave
    // them out, so that only file-to-file dependencies count.
    let graph: BTreeMap<&Vec<String>, Vec<&Vec<String>>> = krate
        .uses
        .iter()
        .filter(|(m, _)| !krate.facades.contains(*m))
        .map(|(m, named)| {
            (
                m,
                named
                    .iter()
                    .filter(|t| !krate.facades.contains(*t))
                    .collect(),
            )
        })
        .collect();
    // Depth-first search for a back edge.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'a>(
        node: &'a Vec<String>,
        graph: &BTreeMap<&'a Vec<String>, Vec<&'a Vec<String>>>,
        marks: &mut BTreeMap<&'a Vec<String>, Mark>,
        stack: &mut Vec<&'a Vec<String>>,
        cycles: &mut Vec<String>,
    ) {
        marks.insert(node, Mark::Open);
        stack.push(node);
        for &next in graph.get(node).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let from = stack.iter().position(|n| *n == next).unwrap();
                    let cycle: Vec<String> = stack[from..].iter().map(|n| n.join("::")).collect();
                    cycles.push(format!("{} -> {}", cycle.join(" -> "), next.join("::")));
                }
                Some(Mark::Done) => {}
                None => visit(next, graph, marks, stack, cycles),
            }
        }
        stack.pop();
        marks.insert(node, Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut cycles = Vec::new();
    for node in graph.keys() {
        if !marks.contains_key(*node) {
            visit(node, &graph, &mut marks, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(
        cycles.is_empty(),
        "files that use each other:\n{}",
        cycles.join("\n")
    );
}

/// The checks above must be able to fail: they see the references this crate is known to
/// have.
#[test]
fn the_checks_see_known_references() {
    let krate = load();
    let named = |from: &str, to: &str| {
        let from: Vec<String> = from.split("::").map(str::to_owned).collect();
        let to: Vec<String> = to.split("::").map(str::to_owned).collect();
        krate.uses[&from].contains(&to)
    };
    assert!(named("handle::backend_handle", "handle::error"));
    assert!(named("protocol::responder", "protocol::routing"));
    assert!(named("supervision::event", "supervision::error"));
    assert!(named("command::start", "platform"));
    let refs = references(
        "use super::{a, b};\nuse crate::x::y::Z;",
        &["p".into(), "q".into()],
        false,
    );
    assert!(refs.contains(&vec!["p".to_owned(), "a".to_owned()]));
    assert!(refs.contains(&vec!["x".to_owned(), "y".to_owned(), "Z".to_owned()]));
}
