//! Starting one instance of a [`CommandSupervisor`](super::CommandSupervisor): [`prepare`]
//! (a [`StartPlan`]: what the child needs, made before the fork), [`launch`] (the fork from
//! the spawner thread), [`attach`] (its output and sd_notify readers). The readiness wait that follows
//! is the supervisor's `spawn`.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::instance::{Current, Instance};
use super::launch;
use super::listeners::{FdStore, Listeners};
use super::notify::{self, NotifyEndpoint};
use super::output::{self, LineSink, LineWatch, OutputTail};
use super::readiness;
use super::spec::{CommandSpec, Readiness, StreamName};
use super::stop;
use crate::blocking::blocking;
use crate::handle::BackendHandle;
use crate::platform::{self, PipeReader, ProcessTree, Tracking, TreePlan};
use crate::supervision::{SpawnContext, StartError, TreeTracking};

/// What a start needs, made before the fork.
pub(super) struct StartPlan {
    program: PathBuf,
    plan: platform::SpawnPlan,
    /// The service's user, for the ownership of a Unix-socket readiness.
    pub uid: Option<u32>,
    notify: Option<NotifyEndpoint>,
    /// Where the lines of stdout and stderr go, when they are read.
    sinks: [Option<LineSink>; 2],
    tail: Option<OutputTail>,
    tree: TreePlan,
    /// Why the spec itself asks for no cgroup, if it does.
    no_cgroup: Option<&'static str>,
}

/// A started child, not ready yet, with what [`attach`] needs.
pub(super) struct Launched {
    pub handle: BackendHandle,
    pub tree: Arc<ProcessTree>,
    /// The read ends of stdout and stderr, when piped.
    pipes: [Option<PipeReader>; 2],
    notify: Option<NotifyEndpoint>,
    sinks: [Option<LineSink>; 2],
    tail: Option<OutputTail>,
}

/// What the readiness wait listens to.
pub(super) struct Waits {
    pub notified: watch::Receiver<bool>,
    pub line: oneshot::Receiver<String>,
}

/// Step 1: clean up an abandoned instance, refuse a port someone else holds, look up
/// the user, bind the sd_notify socket, connect the streams, build the spawn plan and
/// the tree.
pub(super) async fn prepare(
    spec: &CommandSpec,
    current: &Current,
    listeners: &Listeners,
    fd_store: &FdStore,
) -> Result<StartPlan, StartError> {
    // Normally cleaned up at its exit or stop; an instance still recorded here was
    // abandoned (its runtime went away): its tree goes before a new one starts.
    if let Some(previous) = current.take_any() {
        stop::clean_up(spec.stop.kill_mode, previous).await;
    }
    // The spec's listeners are bound (once) before anything else: a port that cannot
    // be had fails the start before any process exists.
    let held = listeners.held().await?;
    readiness::check_free(&spec.readiness, &held.inodes()).await?;
    let run_as = if launch::needs_user_lookup(spec) {
        let owned = spec.clone();
        blocking(move || launch::resolve_user(&owned)).await?
    } else {
        launch::resolve_user(spec)?
    };
    let notify = if needs_notify(spec) {
        let owner = run_as.uid.map(|uid| (uid, run_as.gid));
        Some(NotifyEndpoint::bind(spec, owner).await?)
    } else {
        None
    };
    let extra_env = notify.as_ref().map(|n| n.env(spec)).unwrap_or_default();
    let ([stdout, stderr], sinks) = output::plan_streams(spec).await?;
    let tail = sinks.iter().any(Option::is_some).then(OutputTail::default);

    // Everything else that touches the file system, in one trip to the blocking pool.
    // Services that outlive the supervisor get no cgroup: the keeper kills every tree
    // under the supervisor's cgroup when the supervisor exits.
    let no_cgroup = if !spec.cgroup {
        Some("its spec turns cgroups off")
    } else if !spec.die_with_supervisor {
        Some("it outlives the supervisor")
    } else {
        None
    };
    let want_cgroup = no_cgroup.is_none();
    let owned = spec.clone();
    let for_plan = run_as.clone();
    let (launch::Launch { program, mut plan }, tree) = blocking(move || {
        launch::plan_with_tree(&owned, &for_plan, &extra_env, stdout, stderr, want_cgroup)
    })
    .await?;
    plan.listen_fds = held.for_spawn().map_err(StartError::Spawn)?;
    plan.listen_fds.extend(fd_store.for_spawn()?);
    Ok(StartPlan {
        program,
        plan,
        uid: run_as.uid,
        notify,
        sinks,
        tail,
        tree,
        no_cgroup,
    })
}

/// Step 2: fork and exec from the spawner thread (into the tree), map a failure to
/// the start error that names the program, take the handle, report the spawn.
pub(super) async fn launch(
    spec: &CommandSpec,
    start: StartPlan,
    ctx: &SpawnContext,
) -> Result<Launched, StartError> {
    let StartPlan {
        program,
        mut plan,
        notify,
        sinks,
        tail,
        tree,
        no_cgroup,
        ..
    } = start;
    report_tracking(&tree, no_cgroup, ctx);
    let cgroup = match tree.tracking() {
        Tracking::Cgroup(path) => path,
        _ => PathBuf::new(),
    };
    tree.apply(&mut plan);
    let spawned = match platform::spawn(plan).await {
        Ok(spawned) => spawned,
        // Not allowed to start processes in our cgroups after all (delegation rules):
        // this start fails, saying so; process groups from now on, announced once.
        Err(error) if error.refused_cgroup() => {
            return Err(StartError::Cgroup {
                parent: cgroup,
                source: error.error,
            })
        }
        Err(error) => return Err(launch::start_error(&program, error)),
    };
    let pid = spawned.pid;
    let tree = Arc::new(tree.into_tree(pid));
    let pipes = [spawned.stdout, spawned.stderr];
    let name = spec.name.clone();
    let handle = BackendHandle::from_spawned(spawned.handle, spawned.child, name, "", None).await?;
    tracing::debug!(service = %spec.name, pid, program = %program.display(), tree = %tree.describe(), "spawned");
    ctx.spawned_backend(&handle);
    Ok(Launched {
        handle,
        tree,
        pipes,
        notify,
        sinks,
        tail,
    })
}

/// Tell the runtime how this instance's tree is tracked (its status row), and announce
/// the machine-wide process-group fallback the first time it applies.
fn report_tracking(tree: &TreePlan, no_cgroup: Option<&'static str>, ctx: &SpawnContext) {
    let tracking = match (tree.tracking(), no_cgroup) {
        (Tracking::Cgroup(path), _) => TreeTracking::Cgroup {
            path: path.display().to_string(),
        },
        (Tracking::ProcessGroup { .. }, Some(reason)) => TreeTracking::ProcessGroup {
            reason: reason.to_owned(),
        },
        (Tracking::ProcessGroup { machine }, None) => {
            if let Some(reason) = TreePlan::announce_fallback() {
                ctx.tree_fallback(reason);
            }
            TreeTracking::ProcessGroup {
                reason: machine.unwrap_or("no cgroups on this platform").to_owned(),
            }
        }
        (Tracking::MainProcess, _) => TreeTracking::MainProcess,
    };
    ctx.tree_tracking(tracking);
}

/// Whether the spec needs an sd_notify socket.
fn needs_notify(spec: &CommandSpec) -> bool {
    spec.fd_store_max > 0
        || matches!(spec.readiness, Readiness::Notify)
        || matches!(
            spec.health.as_ref().map(|h| &h.check),
            Some(super::spec::HealthCheck::Watchdog { .. })
        )
}

/// Step 3: read the child's output (to its sinks, its tail and a readiness pattern) and
/// its sd_notify messages (descriptors attached to them go to `fd_store`); the instance
/// that owns all of it, and what readiness waits on.
pub(super) fn attach(
    spec: &CommandSpec,
    launched: Launched,
    ctx: &SpawnContext,
    fd_store: Arc<FdStore>,
) -> (Instance, Waits) {
    let Launched {
        handle,
        tree,
        pipes,
        notify,
        sinks,
        tail,
    } = launched;
    let (line_tx, line_rx) = oneshot::channel();
    let pumps = pump_streams(spec, pipes, sinks, tail.as_ref(), line_tx);
    let (ready_tx, ready_rx) = watch::channel(false);
    let (watchdog, tasks) = match &notify {
        Some(endpoint) => {
            let (beat_tx, beat_rx) = watch::channel(Instant::now());
            let member = tree.clone();
            let pid = handle.pid();
            let belongs = move |sender: u32| sender == pid || member.contains(sender);
            let task = notify::spawn_reader(endpoint, belongs, ready_tx, beat_tx, ctx, fd_store);
            (Some(beat_rx), vec![task])
        }
        None => (None, Vec::new()),
    };
    let instance = Instance {
        main: handle,
        tree,
        tail,
        pumps,
        watchdog,
        tasks,
        memory_max: spec.memory_max.map(|b| b.0),
        _notify: notify,
    };
    let waits = Waits {
        notified: ready_rx,
        line: line_rx,
    };
    (instance, waits)
}

/// A pump per piped stream with a sink; the one a log-line readiness watches reports its
/// first matching line on `found`.
fn pump_streams(
    spec: &CommandSpec,
    pipes: [Option<PipeReader>; 2],
    sinks: [Option<LineSink>; 2],
    tail: Option<&OutputTail>,
    found: oneshot::Sender<String>,
) -> Vec<JoinHandle<()>> {
    let service: Arc<str> = spec.name.as_str().into();
    let mut found = Some(found);
    let mut pumps = Vec::new();
    let names = [StreamName::Stdout, StreamName::Stderr];
    for ((pipe, sink), name) in pipes.into_iter().zip(sinks).zip(names) {
        let (Some(pipe), Some(sink)) = (pipe, sink) else {
            continue;
        };
        let watch = match &spec.readiness {
            Readiness::LogLine { pattern, stream } if *stream == name => {
                found.take().map(|found| LineWatch {
                    pattern: pattern.clone(),
                    found,
                })
            }
            _ => None,
        };
        let tail = tail.cloned();
        pumps.push(output::pump_lines(
            pipe,
            service.clone(),
            name.as_str(),
            sink,
            watch,
            tail,
        ));
    }
    pumps
}
