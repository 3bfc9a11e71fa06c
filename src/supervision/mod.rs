//! Layer 5: supervision. A small [`Supervisor`] trait (how to spawn, probe, check and stop
//! one backend) and the runtime that owns the hard loop around it: adopt or spawn, wait
//! until ready, watch liveness and health, restart by policy with backoff and intensity
//! limits, ordered groups with OTP strategies, a typed event stream, clean stops.
//!
//! Vocabulary follows Erlang/OTP's `supervisor` (restart kinds, strategies, intensity,
//! significant children) and systemd's service units.
//!
//! Each child of a group is in exactly one [`MemberState`] (idle, waiting, blocked,
//! listening, starting, running, backoff, stopping, stopped, finished, failed), changed in
//! one place by the runtime; the same changes emit the [`EventKind`]s and update
//! [`ServiceHandle::status`], so the two always agree.
//!
//! The runtime is the crate's **one group engine**: member dependencies with conditions,
//! strategy, intensity, stop order and dynamic membership live here and nowhere else. The
//! service file ([`compose`](crate::compose)) is translated into a [`GroupSpec`] and run by
//! it.
//!
//! ```no_run
//! use std::sync::Arc;
//! use running_process::supervision::{
//!     supervise_group, Condition, GroupSpec, Member, SharedSupervisor, StartOrder, Strategy,
//! };
//! # async fn demo(db: SharedSupervisor, api: SharedSupervisor, web: SharedSupervisor) -> Result<(), Box<dyn std::error::Error>> {
//! let group = supervise_group(
//!     GroupSpec::new("app")
//!         .order(StartOrder::Parallel)
//!         .strategy(Strategy::RestForOne)      // a crash of db restarts api and web too
//!         .member(Member::service(db))
//!         .member(Member::service(api).depends_on("db", Condition::Ready))
//!         .member(Member::service(web).depends_on("api", Condition::Healthy)),
//! )?;
//! group.ready().await.map_err(|outcome| outcome.to_string())?;
//! group.scale("web", 1).await.ok();                // only members with replicas scale
//! group.stop().await;                              // web, then api, then db
//! # Ok(()) }
//! ```
//!
//! # OTP semantics, point by point
//!
//! | rule | Erlang/OTP `supervisor` | this crate |
//! |---|---|---|
//! | restart kinds | permanent, transient (abnormal exits only), temporary (never) | the same ([`RestartKind`]); "abnormal" is anything but exit code 0, an unknown status included |
//! | a temporary child stopped by a sibling's death (one_for_all, rest_for_one) | not restarted; its spec is deleted | the same: it becomes `Finished` |
//! | a terminated non-temporary sibling under one_for_all / rest_for_one | restarted with the others (its spec is kept) | the same: a finished transient or permanent member in the affected range starts again |
//! | a child fails to start while the supervisor starts | `start_link` fails; children already started are terminated in reverse order; the error names the child | the same: [`Outcome::StartFailed`] names the member and its [`StartError`]; **opt-in** [`RestartPolicy::retry_start_up`] / [`GroupSpec::retry_start_up`] retries by the policy instead |
//! | a child fails to start on a restart | retried, counted against intensity | the same (as a `StartFailed` termination), for errors retrying can fix; for a permanent [`StartError`] see the row below
//! | intensity and period | the supervisor's; more than `intensity` restarts in `period` s: terminate all children, exit with `shutdown` | the group's ([`GroupSpec::intensity`]; a single service: its policy's); more than `max_restarts` in `period`: stop all, [`Outcome::GaveUp`]. A child's own [`RestartPolicy::intensity`] is not used inside a group |
//! | restart delay | none | **addition**: exponential backoff with jitter and a reset after stable uptime, per child ([`Backoff`]), nested groups included |
//! | a supervisor that gave up, as seen by its parent | exit reason `shutdown`: a transient parent spec leaves it down | **deviation**: an abnormal end ([`Termination::Escalated`]), so a transient group is restarted, bounded by the parent's intensity: escalation should not be mistaken for a clean end |
//! | `auto_shutdown` | `never` (default), `any_significant`, `all_significant` | the same ([`AutoShutdown`]); with `Never` a group whose children have all ended keeps running, empty, until stopped |
//! | significant children | only transient or temporary; a permanent significant child spec is rejected | the same: [`GroupSpec::validate`] (called by [`supervise_group`]) refuses it, and two members with one name; nested groups can be significant ([`GroupSpec::significant_group`]) |
//! | start order, stop order | in order, each `start_link` returning before the next; stop in reverse | the same for a [`StartOrder::Sequential`] group (the default): each member depends on the one before it, met once that one's start has returned, whatever came of it; "returned" means ready (identity handshake, sd_notify, a port of its own, ...). Stop is by dependency level, dependants first; the members of one level stop together |
//! | dependencies | none: only the order of the child list | **addition**, Docker Compose's `depends_on`: [`Member::depends_on`] a member reaching a [`Condition`] (`started`, `ready`, `healthy`, `completed_successfully`); independent members start together in a [`StartOrder::Parallel`] group. Unknown names, cycles and conditions that can never be reached are refused by [`GroupSpec::validate`]. A member whose dependency can no longer get there without a request from outside is [`MemberState::Blocked`] (event [`EventKind::Blocked`]) and starts by itself once that changes. Compose users: the list form waits for `ready`, not `started` |
//! | rest_for_one | restart the child and the children started after it | restart the child and its **dependants** (in a sequential group: exactly the later children, OTP's rule). OTP's order: the dependants are stopped (dependants first), the child restarts, then the dependants start as their conditions are reached again ([`EventKind::StrategyRestart`] names them). Docker Compose has no strategy; its `restart` of one service leaves its dependants running |
//! | shutdown | `brutal_kill`, a timeout, or `infinity` | the supervisor's `stop` ([`Supervisor::stop`]; for commands: signal, grace, SIGKILL to the tree) |
//! | `start_child` | add a child to a running supervisor; returns once it started | [`ServiceHandle::add_member`] (checked like the spec; starts as its dependencies allow; returns once accepted: its `Ready` event tells when it runs; in a sequential group it depends on the last member) |
//! | `terminate_child` / `restart_child` / `delete_child` | stop a child and keep its spec / start it again / forget it; siblings untouched | [`ServiceHandle::stop_member`] ([`MemberState::Stopped`]), [`ServiceHandle::start_member`], [`ServiceHandle::remove_member`]. **Deviation**: dependants follow the strategy: under rest_for_one and one_for_all they are stopped too and wait (or, after a removal, are blocked), as they could not run correctly without it |
//! | replacing a child's spec | `delete_child` then `start_child` | [`ServiceHandle::replace_member`]: the strategy's members stopped first, the new spec in the old one's place, all started again as their dependencies allow |
//! | manual restart | `restart_child` only restarts a terminated child | [`ServiceHandle::restart_member`] restarts a running one too, with the members the strategy restarts with it; [`ServiceHandle::restart`] restarts all. Both bring every member back except a finished temporary one; manual restarts do not count towards intensity |
//! | `which_children` / `count_children` | pids and states | [`ServiceHandle::status`]: state, pid, since, restarts, last exit, last start error, in start order |
//! | adopting a running process | no | **addition**: [`Supervisor::adopt`] adopts a verified running backend instead of spawning |
//! | `simple_one_for_one` | one child spec, instances started with arguments | [`Member::replicas`]: `N` instances of a template made from their instance number, named `NAME-1` .. `NAME-N` (`NAME` alone when `N` is 1), scaled while running with [`ServiceHandle::scale`] (the highest numbers stop first; instance 1 is renamed between `NAME` and `NAME-1`, and keeps running). Each instance is an ordinary member (restart, strategy); a dependency on `NAME` waits for every instance. supervisord's `numprocs`, Compose's `replicas` |
//! | intensity across sources | every restart of the supervisor's children | the same: one window per group counts each automatic restart once, whether the member was there from the start, added later, or a replica; the members a strategy restarts with it are not counted again |
//! | a permanent start error after start-up | retried (a `start_link` error is a crash) | **deviation**: the member is [`MemberState::Failed`] and kept down (retrying cannot help); the group runs on, unless the member is significant (then the group ends with [`Outcome::StartFailed`], as a single supervised service does) |
//! | `auto_shutdown` when nothing can run | no such setting | **addition**, [`AutoShutdown::AllEnded`]: the group completes once every member has finished, failed or is blocked (Docker Compose's `up` returns once every container exited); the service file uses it |
//! | start on demand | no | **addition**, systemd's socket activation: a member whose [`Supervisor::demand`] says so waits in [`MemberState::Listening`] until a client connects; a clean exit (an idle timeout) returns it there instead of finishing or counting as a restart |

pub(crate) mod dependency;
pub(crate) mod error;
pub(crate) mod event;
pub(crate) mod group;
pub(crate) mod health;
pub(crate) mod policy;
mod runtime;
pub(crate) mod supervisor;
pub(crate) mod usage;

pub use dependency::{Condition, Dependency, StartOrder};
pub use error::{ExecFailure, HealthError, LastOutput, OutOfMemory, StartError};
pub use event::{Event, EventKind, EventStream, Lagged};
pub use group::{
    AutoShutdown, GroupSpec, GroupSpecError, Member, Outcome, Strategy,
    DEFAULT_MAX_CONCURRENT_STARTS,
};
pub use health::HealthPolicy;
pub use policy::{
    Backoff, Intensity, IntensityExceeded, Jitter, RestartKind, RestartPolicy, Termination,
};
pub use runtime::{
    supervise, supervise_group, HealthView, MemberError, MemberState, MemberStatus, ServiceHandle,
    TreeTracking,
};
pub use supervisor::{
    Demand, SharedSupervisor, SpawnContext, Supervisor, DEFAULT_HEALTH_TIMEOUT,
    DEFAULT_READY_TIMEOUT, DEFAULT_STOP_GRACE,
};
pub use usage::{ResourceUsage, UsageSampler, UsageSource};
