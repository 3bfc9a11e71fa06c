//! `docs/SECURITY.md` names a test for every threat: each test it names must exist, so the
//! threat model cannot silently point at a test that was renamed or removed.

use std::path::Path;

/// Every `` `path::…::name` `` reference in the document whose path is a Rust file of the
/// repository (`tests/x.rs::name`, `src/…/y.rs::tests::name`, `src/platform::tests::name`).
fn referenced_tests(doc: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for quoted in doc.split('`').skip(1).step_by(2) {
        let Some((path, rest)) = quoted.split_once("::") else {
            continue;
        };
        if !(path.starts_with("tests/") || path.starts_with("src/")) {
            continue;
        }
        let name = rest.rsplit("::").next().unwrap_or(rest);
        let file = if path.ends_with(".rs") {
            path.to_owned()
        } else {
            format!("{path}/mod.rs") // a module path such as `src/platform`
        };
        found.push((file, name.to_owned()));
    }
    found
}

#[test]
fn every_test_the_threat_model_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/SECURITY.md")).expect("docs/SECURITY.md");
    let referenced = referenced_tests(&doc);
    assert!(
        referenced.len() >= 30,
        "expected the threat model to name its tests, found {}",
        referenced.len()
    );
    let mut missing = Vec::new();
    for (file, name) in &referenced {
        let source = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        if !source.contains(&format!("fn {name}(")) {
            missing.push(format!("{file}::{name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "named in SECURITY.md but not found: {missing:#?}"
    );
}

#[test]
fn a_missing_test_is_noticed() {
    let refs = referenced_tests("see `tests/probe.rs::no_such_test` and `cargo test`");
    assert_eq!(
        refs,
        [("tests/probe.rs".to_owned(), "no_such_test".to_owned())]
    );
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe.rs"))
            .unwrap();
    assert!(!source.contains("fn no_such_test("));
}
