//! The user and group database, for running a service as another user. Unix only: on
//! Windows [`SWITCHING`] is false and every lookup is `Unsupported`, so callers above need
//! no `cfg` of their own.

use std::io;

pub(crate) use super::UserEntry;

/// Whether a service can run as another user or group here.
pub(crate) const SWITCHING: bool = cfg!(unix);

#[cfg(not(unix))]
fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "users and groups are looked up only on Unix",
    )
}

/// Look up a user by name (`Ok(None)`: no such user). Blocking (NSS may read files or ask
/// a daemon): call it from the blocking pool.
pub(crate) fn user_by_name(name: &str) -> io::Result<Option<UserEntry>> {
    #[cfg(unix)]
    return super::unix::user_by_name(name);
    #[cfg(not(unix))]
    {
        let _ = name;
        Err(unsupported())
    }
}

/// Look up a user by id (`Ok(None)`: no entry, which is fine for a numeric user).
pub(crate) fn user_by_id(uid: u32) -> io::Result<Option<UserEntry>> {
    #[cfg(unix)]
    return super::unix::user_by_id(uid);
    #[cfg(not(unix))]
    {
        let _ = uid;
        Err(unsupported())
    }
}

/// Look up a group id by name (`Ok(None)`: no such group).
pub(crate) fn group_by_name(name: &str) -> io::Result<Option<u32>> {
    #[cfg(unix)]
    return super::unix::group_by_name(name);
    #[cfg(not(unix))]
    {
        let _ = name;
        Err(unsupported())
    }
}

/// The groups `user` belongs to (with `gid` first), as `initgroups` would set them
/// (macOS: only `gid`).
pub(crate) fn groups_of(user: &str, gid: u32) -> io::Result<Vec<u32>> {
    #[cfg(unix)]
    return super::unix::groups_of(user, gid);
    #[cfg(not(unix))]
    {
        let _ = (user, gid);
        Err(unsupported())
    }
}
