//! The commands that talk to a detached supervisor: find it through its manifest, verify
//! its identity like any backend (`BackendHandle::try_from_manifest`: same boot, start
//! time, executable and digest, a fresh nonce answered by a peer with our credentials),
//! then send one request of `requests.rs`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use running_process::command::{CommandSpec, Output, Readiness, SharedDaemon};
use running_process::handle::BackendHandle;
use running_process::protocol::CacheManifest;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::file::{self, Loaded};
use crate::output::{time_of_day, Style};
use crate::printer;
use crate::requests::{Reply, Request};
use crate::state::StateDir;
use crate::table;
use running_process::report::Chain;

/// How long `up --detach` waits for the supervisor to answer (its own start, not the
/// services': those are waited for without a deadline of ours, with their own).
const SUPERVISOR_START: Duration = Duration::from_secs(60);

/// How long a supervisor that outlived its failed start may take to stop before SIGKILL.
const SUPERVISOR_STOP_GRACE: Duration = Duration::from_secs(10);

/// Exit code when no supervisor runs for the file.
const NOT_RUNNING: u8 = 3;

/// `up --detach`: adopt the file's verified supervisor or start one (under the shared
/// daemon lock, so two at once end with one), then wait until every service is ready. A
/// supervisor that was running already is given the file to apply. A supervisor started
/// here whose set fails to start exits; what it leaves in the state directory is removed
/// (its log stays).
pub async fn up_detached(loaded: Loaded, dry_run: bool, watch: bool) -> ExitCode {
    if dry_run {
        return dry_run_plan(&loaded).await;
    }
    // A file the hard open-files limit cannot hold fails here, before anything exists
    // (counted as the supervisor will run it: the output it reads included).
    let mut counted = loaded.file.clone();
    crate::output::capture_inherited_output(&mut counted);
    if let Err(error) = running_process::compose::check_open_files(&counted) {
        return fail(Chain(&error).to_string());
    }
    // The shared daemon's lock creates the private state directory.
    let state = StateDir::of(&loaded.path);
    let acquired = match acquire_supervisor(&loaded, &state, watch).await {
        Ok(acquired) => acquired,
        Err(message) => {
            remove_leftovers(&loaded.path, &state).await;
            return fail(message);
        }
    };
    let handle = acquired.handle().clone();
    let spawned = acquired.was_spawned();
    let what = if spawned {
        "started the supervisor"
    } else {
        "the supervisor"
    };
    let how = if spawned {
        ""
    } else {
        " is already running: applying the file to it"
    };
    printer::stdout().print(format!(
        "{what} (pid {}) for {}{how}",
        handle.pid(),
        loaded.path.display()
    ));
    let wait = if spawned {
        Request::WaitReady
    } else {
        apply_request(&loaded, false)
    };
    let (code, failed) = match request(&handle, &wait).await {
        Ok(replies) => print_replies_failed(replies).await,
        Err(error) => (
            fail(format!("the supervisor did not answer: {error}")),
            true,
        ),
    };
    if let Ok(replies) = request(&handle, &Request::Status).await {
        print_replies(replies).await;
    }
    if failed && spawned {
        // Its set did not start: it stops what it started and exits. Wait for that (the
        // kernel says when; past the deadline, stop it: SIGTERM, then SIGKILL, which its
        // services follow), then remove what it could not.
        if tokio::time::timeout(SUPERVISOR_START, handle.exited())
            .await
            .is_err()
        {
            let _ = handle.stop(SUPERVISOR_STOP_GRACE).await;
        }
        remove_leftovers(&loaded.path, &state).await;
        printer::stderr().print(format!(
            "(nothing is left running; the supervisor's log: {})",
            state.log().display()
        ));
    }
    code
}

/// Adopt the file's verified supervisor, or start one; the error says why not, with the
/// supervisor's log.
async fn acquire_supervisor(
    loaded: &Loaded,
    state: &StateDir,
    watch: bool,
) -> Result<running_process::command::Acquired, String> {
    let exe = std::env::current_exe()
        .map_err(|error| format!("cannot find this program's path: {error}"))?;
    let spec = CommandSpec::new("running-process-supervisor", exe)
        .args(supervisor_args(loaded, watch))
        .readiness(Readiness::Manifest {
            path: state.manifest(),
        })
        .ready_timeout(SUPERVISOR_START)
        .stdout(Output::file(state.log()))
        .stderr(Output::file(state.log()));
    let shared = SharedDaemon::new(spec)
        .map_err(|error| Chain(&error).to_string())?
        .lock_timeout(SUPERVISOR_START * 2);
    shared.acquire().await.map_err(|error| {
        format!(
            "{}\n(the supervisor's log: {})",
            Chain(&error),
            state.log().display()
        )
    })
}

/// After a failed `up --detach`: remove the manifest, the socket and the lock file of a
/// supervisor that is gone (under its lock, so a concurrent `up` is never disturbed),
/// unless a live, verified supervisor owns them. The log stays.
async fn remove_leftovers(path: &std::path::Path, state: &StateDir) {
    if let Ok(Some(_live)) = running(path).await {
        return;
    }
    let manifest = state.manifest();
    let mut lock_path = manifest.clone().into_os_string();
    lock_path.push(".lock");
    let socket = state.socket();
    let removed = tokio::task::spawn_blocking(move || {
        let Ok(lock) = std::fs::OpenOptions::new().write(true).open(&lock_path) else {
            return;
        };
        // Someone else holds it: an `up` starting a supervisor now. Leave everything.
        if lock.try_lock().is_err() {
            return;
        }
        for leftover in [&manifest, &socket, &PathBuf::from(&lock_path)] {
            let _ = std::fs::remove_file(leftover);
        }
    });
    let _ = removed.await;
}

/// The detached supervisor's arguments: the files and the selection.
fn supervisor_args(loaded: &Loaded, watch: bool) -> Vec<String> {
    let mut args = vec!["__supervise".to_owned()];
    if watch {
        args.push("--watch".to_owned());
    }
    for path in &loaded.paths {
        args.extend(["--file".to_owned(), path.display().to_string()]);
    }
    for service in &loaded.selection.services {
        args.extend(["--service".to_owned(), service.clone()]);
    }
    for profile in &loaded.selection.profiles {
        args.extend(["--profile".to_owned(), profile.clone()]);
    }
    args
}

fn apply_request(loaded: &Loaded, dry_run: bool) -> Request {
    Request::Apply {
        files: loaded.paths.clone(),
        services: loaded.selection.services.clone(),
        profiles: loaded.selection.profiles.clone(),
        dry_run,
    }
}

/// `up --detach --dry-run`: the running supervisor's plan, or what a start would start.
async fn dry_run_plan(loaded: &Loaded) -> ExitCode {
    match running(&loaded.path).await {
        Ok(Some(handle)) => match request(&handle, &apply_request(loaded, true)).await {
            Ok(replies) => print_replies(replies).await,
            Err(error) => fail(format!("the supervisor did not answer: {error}")),
        },
        Ok(None) => {
            let out = printer::stdout();
            for service in &loaded.file.services {
                out.print(format!("{}: added", service.name()));
            }
            out.print("(dry run: no supervisor runs for this file; nothing was started)".into());
            ExitCode::SUCCESS
        }
        Err(message) => fail(message),
    }
}

pub async fn status(file: Vec<PathBuf>, json: bool) -> ExitCode {
    if !json {
        return simple(file, Request::Status).await;
    }
    let handle = match find(file).await {
        Ok(handle) => handle,
        Err(code) => return code,
    };
    let mut replies = match request(&handle, &Request::Status).await {
        Ok(replies) => replies,
        Err(error) => return fail(format!("the supervisor did not answer: {error}")),
    };
    match replies.recv().await {
        Some(Ok(Reply::Status { services, ports })) => {
            let report = serde_json::json!({
                "supervisor": { "pid": handle.pid() },
                "services": services,
                "ports": ports,
            });
            printer::stdout().print(report.to_string());
            ExitCode::SUCCESS
        }
        Some(Ok(Reply::Error { message })) | Some(Err(message)) => fail(message),
        Some(Ok(_)) => fail("the supervisor answered something other than a status".into()),
        None => fail("the supervisor closed the connection without answering".into()),
    }
}

pub async fn restart(file: Vec<PathBuf>, service: String) -> ExitCode {
    simple(file, Request::Restart { service }).await
}

pub async fn start(file: Vec<PathBuf>, services: Vec<String>) -> ExitCode {
    let handle = match find(file).await {
        Ok(handle) => handle,
        Err(code) => return code,
    };
    let mut code = ExitCode::SUCCESS;
    for service in services {
        code = match request(&handle, &Request::Start { service }).await {
            Ok(replies) => print_replies(replies).await,
            Err(error) => fail(format!("the supervisor did not answer: {error}")),
        };
    }
    code
}

/// `scale NAME=N ...`.
pub async fn scale(file: Vec<PathBuf>, counts: Vec<String>) -> ExitCode {
    let mut parsed = Vec::new();
    for count in &counts {
        let (service, replicas) = match count.split_once('=') {
            Some((service, n)) => (service, n.parse::<u32>()),
            None => (count.as_str(), "".parse::<u32>()),
        };
        match replicas {
            Ok(replicas) => parsed.push((service.to_owned(), replicas)),
            Err(_) => {
                return fail(format!(
                    "`{count}`: expected NAME=N, N a number of instances"
                ))
            }
        }
    }
    let handle = match find(file).await {
        Ok(handle) => handle,
        Err(code) => return code,
    };
    let mut code = ExitCode::SUCCESS;
    for (service, replicas) in parsed {
        code = match request(&handle, &Request::Scale { service, replicas }).await {
            Ok(replies) => print_replies(replies).await,
            Err(error) => fail(format!("the supervisor did not answer: {error}")),
        };
    }
    code
}

pub async fn stop(file: Vec<PathBuf>, service: Option<String>) -> ExitCode {
    let all = service.is_none();
    let handle = match find(file).await {
        Ok(handle) => handle,
        Err(code) => return code,
    };
    let code = match request(&handle, &Request::Stop { service }).await {
        Ok(replies) => print_replies(replies).await,
        Err(error) => return fail(format!("the supervisor did not answer: {error}")),
    };
    if all {
        // Its exit, from the kernel (the handle pins the process).
        let line = match handle.exited().await {
            running_process::ExitStatus::Unknown => {
                format!("the supervisor (pid {}) has exited", handle.pid())
            }
            status => format!("the supervisor (pid {}) exited: {status}", handle.pid()),
        };
        printer::stdout().print(line);
    }
    code
}

pub async fn logs(file: Vec<PathBuf>, service: String, lines: usize, follow: bool) -> ExitCode {
    simple(
        file,
        Request::Logs {
            service,
            lines,
            follow,
        },
    )
    .await
}

pub async fn events(file: Vec<PathBuf>) -> ExitCode {
    simple(file, Request::Events).await
}

async fn simple(file: Vec<PathBuf>, request_: Request) -> ExitCode {
    let handle = match find(file).await {
        Ok(handle) => handle,
        Err(code) => return code,
    };
    match request(&handle, &request_).await {
        Ok(replies) => print_replies(replies).await,
        Err(error) => fail(format!("the supervisor did not answer: {error}")),
    }
}

/// The verified supervisor of the file, or a message and an exit code.
async fn find(file: Vec<PathBuf>) -> Result<BackendHandle, ExitCode> {
    let path = file::path_of(&file);
    match running(&path).await {
        Ok(Some(handle)) => Ok(handle),
        Ok(None) => {
            printer::stderr().print(format!(
                "no supervisor is running for {} (start one with `running-process up --detach`)",
                path.display()
            ));
            Err(ExitCode::from(NOT_RUNNING))
        }
        Err(message) => Err(fail(message)),
    }
}

/// The verified supervisor of the file at `path` if one runs. A manifest whose process
/// is gone or fails verification is not one (it says why on standard error when the
/// check failed rather than found nothing).
pub async fn running(path: &std::path::Path) -> Result<Option<BackendHandle>, String> {
    let state = StateDir::of(path);
    let manifest = match CacheManifest::read(state.manifest()).await {
        Ok(Some(manifest)) => manifest,
        Ok(None) => return Ok(None),
        Err(error) => return Err(Chain(&error).to_string()),
    };
    match BackendHandle::try_from_manifest(&manifest).await {
        Ok(handle) => Ok(handle),
        Err(error) => {
            printer::stderr().print(format!(
                "the recorded supervisor is not trusted: {}",
                Chain(&error)
            ));
            Ok(None)
        }
    }
}

/// The replies to one request, as they arrive.
type Replies = tokio::sync::mpsc::Receiver<Result<Reply, String>>;

async fn request(handle: &BackendHandle, request: &Request) -> std::io::Result<Replies> {
    let connection = handle.connect().await.map_err(std::io::Error::other)?;
    let (read, mut write) = tokio::io::split(connection.into_inner());
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.flush().await?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        // Keep the write half open: closing it tells a follower that we left.
        let _write = write;
        let mut lines = BufReader::new(read).lines();
        loop {
            let item = match lines.next_line().await {
                Ok(Some(line)) => {
                    serde_json::from_str::<Reply>(&line).map_err(|e| format!("bad reply: {e}"))
                }
                Ok(None) => return,
                Err(error) => Err(error.to_string()),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(rx)
}

/// Print the replies; the exit code is a failure if any reply was an error.
async fn print_replies(replies: Replies) -> ExitCode {
    print_replies_failed(replies).await.0
}

/// [`print_replies`], and whether a reply was an error.
async fn print_replies_failed(mut replies: Replies) -> (ExitCode, bool) {
    // A follower (`logs -F`, `events`) prints for as long as it runs: off the workers.
    let out = printer::stdout();
    let style = Style::stdout();
    let mut code = ExitCode::SUCCESS;
    let mut failed = false;
    while let Some(reply) = replies.recv().await {
        match reply {
            Ok(Reply::Ok { message }) => out.print(message),
            Ok(Reply::Status { services, ports }) => {
                for line in table::render(&services, style) {
                    out.print(line);
                }
                if !ports.is_empty() {
                    let ports: Vec<String> = ports
                        .iter()
                        .map(|(key, port)| format!("{key}={port}"))
                        .collect();
                    out.print(format!("ports: {}", ports.join(" ")));
                }
            }
            Ok(Reply::Line { line }) => out.print(format!(
                "{} {}",
                style.dim(&time_of_day(line.at_ms)),
                line.text
            )),
            Ok(Reply::Event { text }) => out.print(text),
            Ok(Reply::Error { message }) | Err(message) => {
                // The lines before the error come first, as on a terminal.
                out.finish();
                code = fail(message);
                failed = true;
            }
        }
    }
    out.finish();
    (code, failed)
}

fn fail(message: String) -> ExitCode {
    printer::stderr().print(format!("{}: {message}", Style::stderr().error("error")));
    ExitCode::FAILURE
}
