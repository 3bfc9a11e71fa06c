//! POSIX facts shared by Linux and macOS.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;

use super::FileIdentity;

pub(crate) fn file_identity(file: &File) -> io::Result<FileIdentity> {
    let meta = file.metadata()?;
    Ok(FileIdentity {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    })
}

pub(crate) fn current_uid() -> Option<u32> {
    Some(rustix::process::geteuid().as_raw())
}
