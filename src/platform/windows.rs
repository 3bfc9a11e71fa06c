//! Windows: a process handle for the handle, Win32 queries for the facts.
//!
//! A process handle keeps the process object, and so its PID, from being reused while it is
//! open, and it is signalled once the process exits. Facts read by PID after `open` therefore
//! come from the handle's process as long as the final `has_exited` check says it still runs.

use std::ffi::{c_void, OsString};
use std::fs::File;
use std::io;
use std::os::windows::ffi::OsStringExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::path::PathBuf;
use std::ptr;
use std::sync::OnceLock;

use tokio::sync::watch;
use windows_sys::core::w;
use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_CALL_NOT_IMPLEMENTED, ERROR_INSUFFICIENT_BUFFER,
    ERROR_INVALID_PARAMETER, ERROR_NOT_SUPPORTED, ERROR_SUCCESS, FALSE, FILETIME, HANDLE,
    INVALID_HANDLE_VALUE, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::Storage::FileSystem::{
    GetFileInformationByHandle, BY_HANDLE_FILE_INFORMATION,
};
use windows_sys::Win32::System::Registry::{RegGetValueW, HKEY_LOCAL_MACHINE, RRF_RT_REG_DWORD};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, GetProcessTimes, OpenProcess, QueryFullProcessImageNameW,
    RegisterWaitForSingleObject, TerminateProcess, UnregisterWaitEx, WaitForSingleObject, INFINITE,
    PROCESS_ACCESS_RIGHTS, PROCESS_NAME_WIN32, PROCESS_QUERY_LIMITED_INFORMATION,
    PROCESS_SYNCHRONIZE, PROCESS_TERMINATE, WT_EXECUTEINWAITTHREAD, WT_EXECUTEONLYONCE,
};

use super::{ExePath, ExitStatus, FileIdentity, OpenError};

/// Longest path `QueryFullProcessImageNameW` can return (NT paths, in UTF-16 units).
const MAX_IMAGE_PATH: usize = 32_768;

#[derive(Debug)]
pub(crate) struct ProcessHandle {
    pid: u32,
    handle: OwnedHandle,
}

impl ProcessHandle {
    pub fn open(pid: u32) -> Result<Self, OpenError> {
        let access = PROCESS_SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION;
        // Without the right to terminate (another user's or an elevated process) the handle
        // still pins and watches the process, like a pidfd; only `kill` then fails.
        let handle = match open_process(pid, access | PROCESS_TERMINATE) {
            Err(e) if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) => {
                open_process(pid, access)
            }
            other => other,
        };
        let error = match handle {
            Ok(handle) => return Ok(ProcessHandle { pid, handle }),
            Err(error) => error,
        };
        match error.raw_os_error().map(|code| code as u32) {
            // What OpenProcess answers for a PID that names no process.
            Some(ERROR_INVALID_PARAMETER) => Err(OpenError::NotFound),
            // Process handles refused outright (stripped-down or emulated environments).
            Some(ERROR_NOT_SUPPORTED | ERROR_CALL_NOT_IMPLEMENTED) => {
                Err(OpenError::Unsupported(error))
            }
            _ => Err(OpenError::Other(error)),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn has_exited(&self) -> io::Result<bool> {
        has_exited(&self.handle)
    }

    /// Errors count as "pending", the safe side.
    pub fn exit_pending(&self) -> bool {
        has_exited(&self.handle).unwrap_or(true)
    }

    pub fn into_watcher(self) -> io::Result<ExitWatcher> {
        let (registration, exited) = ExitRegistration::new(self.handle)?;
        Ok(ExitWatcher {
            pid: self.pid,
            registration,
            exited,
            status: OnceLock::new(),
        })
    }
}

#[derive(Debug)]
pub(crate) struct ExitWatcher {
    pid: u32,
    registration: ExitRegistration,
    /// Set to `true` by the thread-pool wait callback. The flag lives in the channel, so a
    /// cancelled `wait` loses nothing and `wait` can take `&self`.
    exited: watch::Receiver<bool>,
    /// The confirmed end, computed once.
    status: OnceLock<ExitStatus>,
}

impl ExitWatcher {
    pub async fn wait(&self) -> ExitStatus {
        if let Some(status) = self.status.get() {
            return *status;
        }
        // Err would mean the sender is gone, which only happens once the watcher is dropped.
        let notified = self.exited.clone().wait_for(|&exited| exited).await.is_ok();
        let handle = &self.registration.process;
        // The notification is only a hint: confirm on the handle itself.
        let status = match has_exited(handle) {
            Ok(true) => exit_code(handle),
            Ok(false) => {
                // Cannot happen (a process object stays signalled); the one-shot wait cannot
                // be re-armed, so report an unknown end rather than hang forever.
                tracing::warn!(
                    pid = self.pid,
                    notified,
                    "exit notified but process not signalled"
                );
                ExitStatus::Unknown
            }
            Err(error) => {
                tracing::warn!(pid = self.pid, %error, "cannot confirm exit; assuming exited");
                ExitStatus::Unknown
            }
        };
        *self.status.get_or_init(|| status)
    }

    pub fn kill(&self) -> io::Result<()> {
        kill(&self.registration.process)
    }

    pub fn terminate(&self) -> io::Result<()> {
        Err(no_graceful_stop())
    }
}

/// What the wait callback reaches through its context pointer.
type ExitSignal = watch::Sender<bool>;

/// A `RegisterWaitForSingleObject` registration on `process` that raises a watch flag.
///
/// It owns the process handle so that, by construction, the wait is unregistered (in `drop`)
/// before the handle is closed (when the field drops afterwards).
#[derive(Debug)]
struct ExitRegistration {
    wait: HANDLE,
    context: *mut ExitSignal,
    process: OwnedHandle,
}

// SAFETY: `wait` is a thread-pool wait handle, usable from any thread; `context` points to a
// `watch::Sender` (itself Send + Sync) that this struct owns and only touches again in `drop`,
// after `UnregisterWaitEx` has waited out the callback.
unsafe impl Send for ExitRegistration {}
// SAFETY: shared access never dereferences `context` or uses `wait` (only `Debug` prints
// them); see the `Send` impl.
unsafe impl Sync for ExitRegistration {}

impl ExitRegistration {
    fn new(process: OwnedHandle) -> io::Result<(Self, watch::Receiver<bool>)> {
        let (tx, rx) = watch::channel(false);
        let context: *mut ExitSignal = Box::into_raw(Box::new(tx));
        let mut wait: HANDLE = ptr::null_mut();
        // SAFETY: `wait` is a valid out pointer; `process` is an open handle with SYNCHRONIZE
        // that outlives the registration (see the struct doc); `context` stays allocated
        // until `drop` has unregistered the wait and waited for the callback.
        let ok = unsafe {
            RegisterWaitForSingleObject(
                &mut wait,
                process.as_raw_handle(),
                Some(on_exit),
                context.cast_const().cast::<c_void>(),
                INFINITE,
                WT_EXECUTEONLYONCE | WT_EXECUTEINWAITTHREAD,
            )
        };
        if ok == FALSE {
            let error = io::Error::last_os_error();
            // SAFETY: the registration failed, so no callback holds `context`: it is ours.
            drop(unsafe { Box::from_raw(context) });
            return Err(error);
        }
        let registration = ExitRegistration {
            wait,
            context,
            process,
        };
        Ok((registration, rx))
    }
}

impl Drop for ExitRegistration {
    fn drop(&mut self) {
        // INVALID_HANDLE_VALUE: block until a callback in flight has returned. It only sets
        // a watch flag, so the wait is short.
        // SAFETY: `wait` comes from a successful RegisterWaitForSingleObject and is
        // unregistered only here, never from inside its own callback.
        let ok = unsafe { UnregisterWaitEx(self.wait, INVALID_HANDLE_VALUE) };
        if ok == FALSE {
            // The callback may still run: leak the context rather than free it under it.
            let error = io::Error::last_os_error();
            tracing::warn!(%error, "UnregisterWaitEx failed; leaking the exit-wait context");
            return;
        }
        // SAFETY: the wait is unregistered and no callback is running or can start, so the
        // box leaked in `new` is ours again, and freed exactly once.
        drop(unsafe { Box::from_raw(self.context) });
    }
}

/// Thread-pool callback: the process handle was signalled (the process exited).
unsafe extern "system" fn on_exit(context: *mut c_void, _timed_out: bool) {
    // SAFETY: `context` is the `ExitSignal` leaked in `ExitRegistration::new`, freed only
    // after `UnregisterWaitEx` has waited for this callback to return.
    let signal = unsafe { &*context.cast::<ExitSignal>() };
    // `send_replace` neither fails nor panics (no panic may cross this FFI boundary), and
    // works with no receiver left.
    signal.send_replace(true);
}

fn open_process(pid: u32, access: PROCESS_ACCESS_RIGHTS) -> io::Result<OwnedHandle> {
    // SAFETY: plain FFI call; it returns a new handle or null.
    let raw = unsafe { OpenProcess(access, FALSE, pid) };
    if raw.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a valid handle just returned by OpenProcess, owned by no one else.
    Ok(unsafe { OwnedHandle::from_raw_handle(raw) })
}

fn has_exited(handle: &OwnedHandle) -> io::Result<bool> {
    // SAFETY: `handle` is an open process handle with SYNCHRONIZE; a zero timeout never blocks.
    match unsafe { WaitForSingleObject(handle.as_raw_handle(), 0) } {
        WAIT_OBJECT_0 => Ok(true),
        WAIT_TIMEOUT => Ok(false),
        _ => Err(io::Error::last_os_error()),
    }
}

/// `TerminateProcess` with exit code 1; a process that already exited counts as killed.
fn kill(handle: &OwnedHandle) -> io::Result<()> {
    // SAFETY: `handle` is an open process handle; without PROCESS_TERMINATE the call fails
    // with ERROR_ACCESS_DENIED, which is handled below.
    if unsafe { TerminateProcess(handle.as_raw_handle(), 1) } != FALSE {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    // Terminating an exited process answers ERROR_ACCESS_DENIED.
    if error.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) && has_exited(handle)? {
        return Ok(());
    }
    Err(error)
}

fn no_graceful_stop() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "Windows has no graceful stop signal; send the shutdown request instead",
    )
}

/// The exit code of an exited process (`GetExitCodeProcess`).
fn exit_code(handle: &OwnedHandle) -> ExitStatus {
    let mut code = 0u32;
    // SAFETY: `handle` has PROCESS_QUERY_LIMITED_INFORMATION; `code` is a valid out pointer.
    if unsafe { GetExitCodeProcess(handle.as_raw_handle(), &mut code) } == FALSE {
        return ExitStatus::Unknown;
    }
    // NTSTATUS codes of crashes (0xC0000005...) come out negative, as in `std`.
    ExitStatus::Code(code as i32)
}

fn filetime(ft: FILETIME) -> u64 {
    (u64::from(ft.dwHighDateTime) << 32) | u64::from(ft.dwLowDateTime)
}

/// The boot counter Windows keeps in the registry (`...\PrefetchParameters\BootId`, a
/// REG_DWORD incremented at each boot). Empty if unreadable: verification then fails closed.
pub(crate) fn boot_id() -> io::Result<String> {
    let mut value = 0u32;
    let mut size = std::mem::size_of::<u32>() as u32;
    // SAFETY: both strings are NUL-terminated wide literals; RRF_RT_REG_DWORD restricts the
    // value to 4 bytes, which `value` holds, and `size` says so.
    let rc = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            w!("SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Memory Management\\PrefetchParameters"),
            w!("BootId"),
            RRF_RT_REG_DWORD,
            ptr::null_mut(),
            (&mut value as *mut u32).cast::<c_void>(),
            &mut size,
        )
    };
    if rc != ERROR_SUCCESS {
        let error = io::Error::from_raw_os_error(rc as i32);
        tracing::debug!(%error, "cannot read the BootId registry value");
        return Ok(String::new());
    }
    Ok(value.to_string())
}

/// The creation time: a FILETIME, 100 ns units since 1601 (UTC).
pub(crate) fn start_time(pid: u32) -> io::Result<u64> {
    let handle = open_process(pid, PROCESS_QUERY_LIMITED_INFORMATION)?;
    let [mut creation, mut exit, mut kernel, mut user] = [FILETIME::default(); 4];
    // SAFETY: `handle` has PROCESS_QUERY_LIMITED_INFORMATION; all four are valid out pointers.
    let ok = unsafe {
        GetProcessTimes(
            handle.as_raw_handle(),
            &mut creation,
            &mut exit,
            &mut kernel,
            &mut user,
        )
    };
    if ok == FALSE {
        return Err(io::Error::last_os_error());
    }
    Ok(filetime(creation))
}

/// The image path in Win32 form. `replaced` is always false: Windows locks a running image
/// against writes and deletion, and a rename-and-replace is not detectable cheaply.
pub(crate) fn exe_path(pid: u32) -> io::Result<ExePath> {
    let handle = open_process(pid, PROCESS_QUERY_LIMITED_INFORMATION)?;
    let mut buf = vec![0u16; 1024];
    loop {
        let mut len = buf.len() as u32;
        // SAFETY: `buf` is writable for `len` UTF-16 units; on success `len` is set to the
        // number written, without the terminating NUL.
        let ok = unsafe {
            QueryFullProcessImageNameW(
                handle.as_raw_handle(),
                PROCESS_NAME_WIN32,
                buf.as_mut_ptr(),
                &mut len,
            )
        };
        if ok != FALSE {
            buf.truncate(len as usize);
            return Ok(ExePath {
                path: PathBuf::from(OsString::from_wide(&buf)),
                replaced: false,
            });
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(ERROR_INSUFFICIENT_BUFFER as i32)
            && buf.len() < MAX_IMAGE_PATH
        {
            buf.resize((buf.len() * 4).min(MAX_IMAGE_PATH), 0);
            continue;
        }
        return Err(error);
    }
}

/// Opens the image by path; there is no `/proc/PID/exe` equivalent.
pub(crate) fn open_exe(pid: u32) -> io::Result<File> {
    File::open(exe_path(pid)?.path)
}

/// Volume serial + file index (std's accessors for them are unstable), size and last write.
pub(crate) fn file_identity(file: &File) -> io::Result<FileIdentity> {
    let mut info = BY_HANDLE_FILE_INFORMATION::default();
    // SAFETY: `file` is an open file handle; `info` is a valid out pointer.
    if unsafe { GetFileInformationByHandle(file.as_raw_handle(), &mut info) } == FALSE {
        return Err(io::Error::last_os_error());
    }
    Ok(FileIdentity {
        dev: u64::from(info.dwVolumeSerialNumber),
        ino: (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow),
        size: (u64::from(info.nFileSizeHigh) << 32) | u64::from(info.nFileSizeLow),
        mtime_ns: i128::from(filetime(info.ftLastWriteTime)) * 100,
    })
}

pub(crate) fn process_uid(_pid: u32) -> io::Result<Option<u32>> {
    Ok(None)
}

pub(crate) fn is_no_such_process(err: &io::Error) -> bool {
    err.raw_os_error() == Some(ERROR_INVALID_PARAMETER as i32)
        || err.kind() == io::ErrorKind::NotFound
}
