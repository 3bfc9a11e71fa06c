//! File facts that differ between Unix and Windows: execute permission, the owner of a
//! file, Unix sockets on disk, private lock files. Each function has one meaning on every
//! OS (what Windows lacks, it answers neutrally), so callers above need no `cfg`.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::path::Path;

/// Whether `path` is a regular file this OS would execute (Unix: any execute bit; Windows:
/// any file, the extension decides at spawn).
pub(crate) fn is_executable_file(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// The user id owning the file of `meta` (`None` on Windows, which has no numeric owners).
pub(crate) fn owner_uid(meta: &Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(meta.uid())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Whether `meta` is a Unix socket's (always `false` on Windows).
pub(crate) fn is_socket(meta: &Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        meta.file_type().is_socket()
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

/// Make `options` create a file only its owner can read (`0600`) and refuse to follow a
/// symlink in the last component (Unix; Windows files are private by their directory).
pub(crate) fn private_no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
    }
    #[cfg(not(unix))]
    {
        options
    }
}

/// Whether `path` still names the open `file` (not removed or replaced since it was
/// opened). Windows does not remove a file that is open without `FILE_SHARE_DELETE`: it
/// always does.
pub(crate) fn still_names(path: &Path, file: &File) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let ours = file.metadata()?;
        match std::fs::symlink_metadata(path) {
            Ok(now) => Ok(now.dev() == ours.dev() && now.ino() == ours.ino()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, file);
        Ok(true)
    }
}

/// Give `path` to user `uid` (and group `gid`, when given). Unix; `Unsupported` elsewhere.
pub(crate) fn chown(path: &Path, uid: u32, gid: Option<u32>) -> io::Result<()> {
    #[cfg(unix)]
    {
        let uid = Some(rustix::process::Uid::from_raw(uid));
        let gid = gid.map(rustix::process::Gid::from_raw);
        Ok(rustix::fs::chown(path, uid, gid)?)
    }
    #[cfg(not(unix))]
    {
        let _ = (path, uid, gid);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "file owners are numeric only on Unix",
        ))
    }
}

/// Connect to the Unix stream socket at `path` and close the connection at once (a
/// health or readiness check). `Unsupported` on Windows.
pub(crate) async fn connect_unix(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        tokio::net::UnixStream::connect(path).await.map(drop)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "Unix sockets are connected only on Unix",
        ))
    }
}

/// Whether [`connect_unix`] can succeed here.
pub(crate) const UNIX_SOCKETS: bool = cfg!(unix);
