//! The tests run the examples' binaries (the demo daemon above all); `cargo test --test X`
//! does not build examples, so `support::example_path` has cargo build them, and a test
//! never runs a binary older than its sources.

mod support;

use std::path::Path;
use std::time::SystemTime;

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The newest modification time of the files under `dir`.
fn newest(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_or_epoch(&path)
        } else {
            modified(&path)
        };
        newest = newest.max(time);
    }
    newest
}

fn newest_or_epoch(dir: &Path) -> SystemTime {
    if dir.is_dir() {
        newest(dir)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

#[test]
fn the_demo_daemon_a_test_runs_is_not_older_than_its_sources() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = support::demo_daemon_path();
    let built = modified(&binary);
    // Cargo rebuilds when a source is newer than the binary (or leaves an up-to-date one
    // alone), so after `example_path` no source may be newer.
    for source in [
        root.join("examples/demo_daemon.rs"),
        root.join("Cargo.toml"),
    ] {
        assert!(
            built >= modified(&source),
            "{} is older than {}",
            binary.display(),
            source.display()
        );
    }
    assert!(
        built >= newest(&root.join("src")),
        "{} is older than the library's sources",
        binary.display()
    );
}
