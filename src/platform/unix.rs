//! POSIX facts shared by Linux and macOS.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;

use super::{FileIdentity, UserEntry};

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

/// Look up a user by name (`Ok(None)`: no such user). Blocking (NSS may read files or ask
/// a daemon): call it from the blocking pool.
pub(crate) fn user_by_name(name: &str) -> io::Result<Option<UserEntry>> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a user name"))?;
    lookup_passwd(|pwd, buf, len, result| {
        // SAFETY: every pointer is valid for the call: `c_name` is NUL-terminated, `pwd`
        // and `result` point to live locals of `lookup_passwd`, `buf` has `len` bytes.
        unsafe { libc::getpwnam_r(c_name.as_ptr(), pwd, buf, len, result) }
    })
}

/// Look up a user by id (`Ok(None)`: no entry, which is fine for a numeric user).
pub(crate) fn user_by_id(uid: u32) -> io::Result<Option<UserEntry>> {
    lookup_passwd(|pwd, buf, len, result| {
        // SAFETY: as in `user_by_name`.
        unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) }
    })
}

fn lookup_passwd(
    call: impl Fn(*mut libc::passwd, *mut libc::c_char, usize, *mut *mut libc::passwd) -> libc::c_int,
) -> io::Result<Option<UserEntry>> {
    let mut len = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; len];
        // SAFETY: `passwd` is plain old data; all-zero is a valid (empty) value that the
        // call overwrites.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc == libc::ERANGE && len < 1 << 20 {
            len *= 4;
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success the string fields point into `buf`, NUL-terminated, and
        // `buf` is alive until the end of this iteration.
        let text = |p: *const libc::c_char| unsafe {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        };
        return Ok(Some(UserEntry {
            name: text(pwd.pw_name),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: text(pwd.pw_dir).into(),
            shell: text(pwd.pw_shell).into(),
        }));
    }
}

/// Look up a group id by name (`Ok(None)`: no such group).
pub(crate) fn group_by_name(name: &str) -> io::Result<Option<u32>> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a group name"))?;
    let mut len = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; len];
        // SAFETY: `group` is plain old data, overwritten by the call.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: `c_name` is NUL-terminated; `grp`, `buf` (of `len` bytes) and `result`
        // are live locals.
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && len < 1 << 20 {
            len *= 4;
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        return Ok((!result.is_null()).then_some(grp.gr_gid));
    }
}

/// The groups `user` belongs to (with `gid` first), from the group database
/// (`getgrouplist`), as `initgroups` would set them.
#[cfg(target_os = "linux")]
pub(crate) fn groups_of(user: &str, gid: u32) -> io::Result<Vec<u32>> {
    let c_name = std::ffi::CString::new(user)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a user name"))?;
    let mut count: libc::c_int = 32;
    loop {
        let mut groups = vec![0 as libc::gid_t; count as usize];
        let capacity = count;
        // SAFETY: `groups` has room for `count` entries; the call writes at most that many
        // and stores the needed number in `count`.
        let rc =
            unsafe { libc::getgrouplist(c_name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return Ok(groups);
        }
        if count <= capacity {
            count = capacity * 2;
        }
        if count > 65536 {
            return Err(io::Error::other("too many groups"));
        }
    }
}

/// macOS: only the primary group (its `getgrouplist` takes `int` group ids).
#[cfg(not(target_os = "linux"))]
pub(crate) fn groups_of(_user: &str, gid: u32) -> io::Result<Vec<u32>> {
    Ok(vec![gid])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_a_missing_user_are_looked_up() {
        let root = user_by_name("root").unwrap().expect("root exists");
        assert_eq!(root.uid, 0);
        assert_eq!(user_by_id(0).unwrap().unwrap().name, "root");
        assert!(user_by_name("no-such-user-running-process")
            .unwrap()
            .is_none());
        assert!(group_by_name("no-such-group-running-process")
            .unwrap()
            .is_none());
        assert_eq!(group_by_name("root").unwrap(), Some(0));
        assert!(groups_of("root", 0).unwrap().contains(&0));
    }
}
