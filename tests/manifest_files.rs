//! Manifests on disk: atomic writes, and a typed error for every kind of bad file.

mod support;

use running_process::protocol::{CacheManifest, ManifestError};
use running_process::{DaemonProcess, Endpoint};

async fn write_raw(contents: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.json");
    tokio::fs::write(&path, contents).await.unwrap();
    (dir, path)
}

#[tokio::test]
async fn bad_files_give_typed_errors_and_stay_untouched() {
    let good = CacheManifest::new("svc", "1", None);
    let json = serde_json::to_vec(&good).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", json[..json.len() / 2].to_vec()),
        ("not json", b"\x00\x01 garbage".to_vec()),
        (
            "newer schema",
            br#"{"schema_version": 2, "renamed": {}}"#.to_vec(),
        ),
        (
            "invalid",
            br#"{"schema_version": 1, "service_name": 5}"#.to_vec(),
        ),
    ];
    for (name, contents) in cases {
        let (_dir, path) = write_raw(&contents).await;
        let error = CacheManifest::read(&path).await.expect_err(name);
        let expected = match name {
            "empty" => matches!(error, ManifestError::Empty { .. }),
            "truncated" => matches!(error, ManifestError::Truncated { .. }),
            "not json" => matches!(error, ManifestError::NotJson { .. }),
            "newer schema" => matches!(error, ManifestError::NewerSchema { found: 2, .. }),
            _ => matches!(error, ManifestError::Invalid { .. }),
        };
        assert!(expected, "{name}: {error}");
        assert_eq!(
            tokio::fs::read(&path).await.unwrap(),
            contents,
            "{name}: the file is left as it was"
        );
    }
}

#[tokio::test]
async fn absent_file_is_none_and_writes_replace_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private/manifest.json");
    assert!(CacheManifest::read(&path).await.unwrap().is_none());

    let me = DaemonProcess::current_process_async(Endpoint::new("ns", "/x.sock"), Some(60))
        .await
        .unwrap();
    let first = CacheManifest::new("svc", "1", None);
    first.write(&path).await.unwrap();
    let second = CacheManifest::new("svc", "2", Some(me.clone()));
    second.write(&path).await.unwrap();
    let read = CacheManifest::read(&path).await.unwrap().unwrap();
    assert_eq!(read, second);
    assert_eq!(DaemonProcess::from_manifest_current_daemon(&read), Some(me));
    // The hex digest form is what lands on disk.
    let text = tokio::fs::read_to_string(&path).await.unwrap();
    assert!(text.contains(&read.current_daemon.unwrap().exe_sha256_hex()));
    let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
    assert_eq!(leftovers, 1, "no temp files left");
}

#[tokio::test]
async fn a_write_that_fails_leaves_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.json");
    let old = CacheManifest::new("svc", "1", None);
    old.write(&path).await.unwrap();
    let invalid = CacheManifest::new(" ", "2", None);
    let error = invalid.write(&path).await.unwrap_err();
    assert_matches!(error, ManifestError::Invalid { .. });
    assert_eq!(CacheManifest::read(&path).await.unwrap(), Some(old));
}
