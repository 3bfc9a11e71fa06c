//! Checks on the runtime paths the crate trusts: the socket's directory, the socket itself,
//! a manifest and the directory it sits in. Another user must not be able to plant, replace
//! or redirect any of them; a process of the same user can, which is why every daemon is
//! still verified by its identity.
//!
//! The rule, on Unix: the directory is a real directory (not a symlink), owned by the
//! expected user (or root), and not writable by group or others; the socket or manifest
//! is of the expected type, owned by the expected user (or root), and a manifest is not
//! writable by group or others. Windows named pipes have no such path; nothing is checked
//! there.

use std::io;
use std::path::{Path, PathBuf};

/// Why a runtime path is not trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnsafePath {
    /// The path is a symlink, which another user could point anywhere.
    #[error("{path:?} is a symlink")]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// The path is owned by another user.
    #[error("{path:?} is owned by uid {owner}, expected uid {expected} (or root)")]
    WrongOwner {
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The user it should belong to.
        expected: u32,
    },
    /// The path can be written by group or others, so they could replace what it holds.
    #[error("{path:?} is writable by group or others (mode {mode:o})")]
    Writable {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path is not what it should be (a directory, a socket, a regular file).
    #[error("{path:?} is not a {expected}")]
    WrongType {
        /// The path.
        path: PathBuf,
        /// What it should be.
        expected: &'static str,
    },
    /// The path could not be inspected.
    #[error("cannot inspect {path:?}")]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl UnsafePath {
    /// A short reason, for errors that name the path themselves.
    pub fn reason(&self) -> &'static str {
        match self {
            UnsafePath::Symlink { .. } => "it is a symlink",
            UnsafePath::WrongOwner { .. } => "it is owned by another user",
            UnsafePath::Writable { .. } => "it is writable by group or others",
            UnsafePath::WrongType { .. } => "it is not of the expected type",
            UnsafePath::Unreadable { .. } => "it cannot be inspected",
        }
    }
}

/// What kind of file a checked path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) enum Kind {
    Directory,
    Socket,
    File,
}

impl Kind {
    #[cfg_attr(not(unix), allow(dead_code))]
    fn name(self) -> &'static str {
        match self {
            Kind::Directory => "directory",
            Kind::Socket => "socket",
            Kind::File => "regular file",
        }
    }
}

/// The directory `path` sits in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Check `path` (without following a final symlink) against the rule for `kind`, owned by
/// `owner` (or root). Unix only; elsewhere always `Ok`.
pub(crate) fn check(path: &Path, kind: Kind, owner: Option<u32>) -> Result<(), UnsafePath> {
    #[cfg(unix)]
    {
        check_metadata(path, &lstat(path)?, kind, owner)
    }
    #[cfg(not(unix))]
    {
        let _ = (path, kind, owner);
        Ok(())
    }
}

#[cfg(unix)]
fn lstat(path: &Path) -> Result<std::fs::Metadata, UnsafePath> {
    std::fs::symlink_metadata(path).map_err(|source| UnsafePath::Unreadable {
        path: path.to_owned(),
        source,
    })
}

/// Check already-read metadata (of an opened file, say, to avoid a second lookup).
#[cfg(unix)]
pub(crate) fn check_metadata(
    path: &Path,
    meta: &std::fs::Metadata,
    kind: Kind,
    owner: Option<u32>,
) -> Result<(), UnsafePath> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        return Err(UnsafePath::Symlink {
            path: path.to_owned(),
        });
    }
    let right_type = match kind {
        Kind::Directory => file_type.is_dir(),
        Kind::Socket => file_type.is_socket(),
        Kind::File => file_type.is_file(),
    };
    if !right_type {
        return Err(UnsafePath::WrongType {
            path: path.to_owned(),
            expected: kind.name(),
        });
    }
    if let Some(expected) = owner {
        require_owner(path, meta.uid(), expected)?;
    }
    // A socket's own mode bits do not matter on Linux once its directory is private (and
    // are ignored by connect on some BSDs); directories and files must not be writable by
    // others.
    if kind != Kind::Socket && meta.mode() & 0o022 != 0 {
        return Err(UnsafePath::Writable {
            path: path.to_owned(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// `owner` is `expected` or root.
fn require_owner(path: &Path, owner: u32, expected: u32) -> Result<(), UnsafePath> {
    if owner == expected || owner == 0 {
        Ok(())
    } else {
        Err(UnsafePath::WrongOwner {
            path: path.to_owned(),
            owner,
            expected,
        })
    }
}

/// The owners [`inspect_socket`] saw, to hold against the expected user once it is known
/// (a probe learns the daemon's uid in parallel with the path checks).
#[derive(Debug)]
pub(crate) struct Owners(Vec<(PathBuf, u32)>);

impl Owners {
    /// Every path seen is owned by `expected` (the uid of the verified process) or root.
    pub(crate) fn require(self, expected: Option<u32>) -> Result<(), UnsafePath> {
        let Some(expected) = expected else {
            return Ok(());
        };
        self.0
            .iter()
            .try_for_each(|(path, owner)| require_owner(path, *owner, expected))
    }
}

/// Check a socket path and its directory before connecting to it (no symlinks, the right
/// types, the directory private) and report their owners for [`Owners::require`].
pub(crate) fn inspect_socket(path: &Path) -> Result<Owners, UnsafePath> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mut owners = Vec::with_capacity(2);
        for (path, kind) in [
            (parent_dir(path), Kind::Directory),
            (path.to_owned(), Kind::Socket),
        ] {
            let meta = lstat(&path)?;
            check_metadata(&path, &meta, kind, None)?;
            owners.push((path, meta.uid()));
        }
        Ok(Owners(owners))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(Owners(Vec::new()))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn me() -> Option<u32> {
        crate::platform::current_uid()
    }

    #[test]
    fn a_private_directory_passes_and_each_unsafe_one_is_named() {
        let root = tempfile::tempdir().unwrap();
        let private = root.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        check(&private, Kind::Directory, me()).unwrap();

        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            check(&open, Kind::Directory, me()),
            Err(UnsafePath::Writable { mode: 0o777, .. })
        ));

        let link = root.path().join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        assert!(matches!(
            check(&link, Kind::Directory, me()),
            Err(UnsafePath::Symlink { .. })
        ));

        let file = private.join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            check(&file, Kind::Directory, me()),
            Err(UnsafePath::WrongType {
                expected: "directory",
                ..
            })
        ));

        // Owned by another user: as root, give a directory away; otherwise expect a uid
        // that owns nothing here.
        let theirs = root.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        let expected = if me() == Some(0) {
            std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).unwrap();
            Some(4243)
        } else {
            me().map(|uid| uid + 1)
        };
        assert!(matches!(
            check(&theirs, Kind::Directory, expected),
            Err(UnsafePath::WrongOwner { .. })
        ));
    }
}
