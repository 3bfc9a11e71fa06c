//! The spawner thread: every child is forked from one thread that lives as long as the
//! process, and the same thread reaps the children nobody waits for any more.
//!
//! Why a thread of its own: the kernel sends `PR_SET_PDEATHSIG` when the *thread* that
//! forked the child exits, not the process. A child forked from a tokio worker dies when
//! that worker retires (after `block_in_place`, or a blocking-pool thread after its idle
//! keep-alive), which kills a healthy daemon. The spawner thread never exits, so the
//! parent-death signal tracks the supervisor process, as it should.
//!
//! The thread sleeps in `poll` on an eventfd (new work) and on the pidfds of abandoned
//! children (to reap them when they exit): no timer, no wake-up while idle.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::sync::OnceLock;

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::io::Errno;
use tokio::sync::oneshot;

use super::fork_exec::{self, Forked};
use super::Pidfd;
use crate::platform::spawn::{Child, PipeReader, SpawnError, SpawnPlan, SpawnStage, Spawned};
use crate::platform::ProcessHandle;

enum Job {
    /// Run on the spawner thread.
    Run(Box<dyn FnOnce() + Send>),
    /// Reap this child when it exits.
    Reap(Pidfd),
}

struct Spawner {
    jobs: std::sync::Mutex<mpsc::Sender<Job>>,
    wake: OwnedFd,
}

fn spawner() -> io::Result<&'static Spawner> {
    static SPAWNER: OnceLock<Spawner> = OnceLock::new();
    static START: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Some(spawner) = SPAWNER.get() {
        return Ok(spawner);
    }
    let _once = START.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(spawner) = SPAWNER.get() {
        return Ok(spawner);
    }
    let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
    let thread_wake = wake.try_clone()?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("running-process-spawner".into())
        .spawn(move || run(rx, thread_wake))?;
    Ok(SPAWNER.get_or_init(|| Spawner {
        jobs: std::sync::Mutex::new(tx),
        wake,
    }))
}

impl Spawner {
    fn send(&self, job: Job) -> io::Result<()> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        rustix::io::write(&self.wake, &1u64.to_ne_bytes())?;
        Ok(())
    }
}

/// The spawner thread's loop. Never returns: the thread must outlive every child.
fn run(jobs: mpsc::Receiver<Job>, wake: OwnedFd) {
    block_all_signals();
    let mut reaping: Vec<Pidfd> = Vec::new();
    loop {
        let mut fds = Vec::with_capacity(reaping.len() + 1);
        fds.push(PollFd::new(&wake, PollFlags::IN));
        fds.extend(reaping.iter().map(|fd| PollFd::new(fd, PollFlags::IN)));
        match poll(&mut fds, None) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(error) => {
                tracing::error!(%error, "the spawner thread cannot poll");
            }
        }
        let exited: Vec<bool> = fds[1..].iter().map(|fd| !fd.revents().is_empty()).collect();
        drop(fds);
        let mut i = 0;
        reaping.retain(|fd| {
            let keep = !(exited[i] && fork_exec::try_reap(fd.as_fd()));
            i += 1;
            keep
        });
        let mut counter = [0u8; 8];
        let _ = rustix::io::read(&wake, &mut counter);
        while let Ok(job) = jobs.try_recv() {
            match job {
                Job::Run(work) => work(),
                Job::Reap(pidfd) => {
                    if !fork_exec::try_reap(pidfd.as_fd()) {
                        reaping.push(pidfd);
                    }
                }
            }
        }
    }
}

/// Process-directed signals (SIGCHLD, SIGINT for tokio's handlers) go to other threads;
/// children unblock everything before exec.
fn block_all_signals() {
    // SAFETY: `pthread_sigmask` on the calling thread with a full set built in a local.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

/// Run `work` on the spawner thread and wait for its result without blocking the caller's
/// tokio worker.
pub(crate) async fn on_spawner_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = oneshot::channel();
    spawner()?.send(Job::Run(Box::new(move || {
        let _ = tx.send(work());
    })))?;
    rx.await
        .map_err(|_| io::Error::other("the spawner thread dropped the request"))
}

/// Reap `pidfd`'s process on the spawner thread once it exits.
pub(crate) fn reap_later(pidfd: Pidfd) {
    match spawner() {
        Ok(spawner) => {
            if let Err(error) = spawner.send(Job::Reap(pidfd)) {
                tracing::warn!(%error, "cannot hand a child to the reaper; it may stay a zombie");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "no spawner thread to reap a child; it may stay a zombie")
        }
    }
}

/// Start a child per `plan` from the spawner thread.
///
/// Cancel-safe: the child is owned by an [`OwnedChild`] from the moment the fork returns,
/// on the spawner thread, so a caller that stops waiting (a ready timeout, a stop) never
/// leaves it running: it is killed and reaped wherever the result is dropped. A child
/// meant to outlive the supervisor is killed like the others until this returns.
pub(crate) async fn spawn(plan: SpawnPlan) -> Result<Spawned, SpawnError> {
    let kill_on_drop = plan.die_with_parent;
    let (prepared, pipes) = fork_exec::prepare(plan)?;
    let (mut child, pidfd) = on_spawner_thread(move || {
        let Forked { pid, pidfd } = fork_exec::fork_exec(prepared)?;
        // One descriptor, shared by the owner (reaps, kills on drop) and the handle.
        let pidfd = Pidfd::new(pidfd);
        let child = OwnedChild {
            pid,
            pidfd: Some(pidfd.clone()),
            kill_on_drop: true,
        };
        Ok::<_, SpawnError>((child, pidfd))
    })
    .await
    .map_err(|e| SpawnError::new(SpawnStage::Fork, e))??;
    child.kill_on_drop = kill_on_drop;
    let pid = child.pid;
    let handle = ProcessHandle::from_pidfd(pid, pidfd);
    let reader = |fd: Option<OwnedFd>| -> Result<Option<PipeReader>, SpawnError> {
        fd.map(|fd| {
            tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map(|r| Box::new(r) as PipeReader)
                .map_err(|e| SpawnError::new(SpawnStage::Stdio, e))
        })
        .transpose()
    };
    let stdout = reader(pipes.stdout)?;
    let stderr = reader(pipes.stderr)?;
    Ok(Spawned {
        pid,
        handle,
        child: Child::Owned(child),
        stdout,
        stderr,
    })
}

/// Our own child (Linux): its pidfd (shared with its handle), held so the child stays
/// un-reaped while we own it.
#[derive(Debug)]
pub(crate) struct OwnedChild {
    pid: u32,
    pidfd: Option<Pidfd>,
    kill_on_drop: bool,
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        if fork_exec::try_reap(pidfd.as_fd()) {
            return;
        }
        if self.kill_on_drop {
            let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
        }
        reap_later(pidfd);
    }
}
