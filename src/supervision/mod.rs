//! Layer 5: supervision. A small [`Supervisor`] trait (how to spawn, probe, check and stop
//! one backend) and the runtime that owns the hard loop around it: adopt or spawn, wait
//! until ready, watch liveness and health, restart by policy with backoff and intensity
//! limits, ordered groups with OTP strategies, a typed event stream, clean stops.
//!
//! Vocabulary follows Erlang/OTP's `supervisor` (restart kinds, strategies, intensity,
//! significant children) and systemd's service units.
//!
//! Each child of a group is in exactly one [`MemberState`] (idle, listening, starting,
//! running, backoff, stopping, finished), changed in one place by the runtime; the same changes
//! emit the [`EventKind`]s and update [`ServiceHandle::status`], so the two always agree.
//!
//! # OTP semantics, point by point
//!
//! | rule | Erlang/OTP `supervisor` | this crate |
//! |---|---|---|
//! | restart kinds | permanent, transient (abnormal exits only), temporary (never) | the same ([`RestartKind`]); "abnormal" is anything but exit code 0, an unknown status included |
//! | a temporary child stopped by a sibling's death (one_for_all, rest_for_one) | not restarted; its spec is deleted | the same: it becomes `Finished` |
//! | a terminated non-temporary sibling under one_for_all / rest_for_one | restarted with the others (its spec is kept) | the same: a finished transient or permanent member in the affected range starts again |
//! | a child fails to start while the supervisor starts | `start_link` fails; children already started are terminated in reverse order; the error names the child | the same: [`Outcome::StartFailed`] names the member and its [`StartError`]; **opt-in** [`RestartPolicy::retry_start_up`] / [`GroupSpec::retry_start_up`] retries by the policy instead |
//! | a child fails to start on a restart | retried, counted against intensity | the same (as a `StartFailed` termination); a permanent [`StartError`] (program not executable, invalid spec) ends supervision with `StartFailed` at once: **deviation**, retrying cannot help |
//! | intensity and period | the supervisor's; more than `intensity` restarts in `period` s: terminate all children, exit with `shutdown` | the group's ([`GroupSpec::intensity`]; a single service: its policy's); more than `max_restarts` in `period`: stop all, [`Outcome::GaveUp`]. A child's own [`RestartPolicy::intensity`] is not used inside a group |
//! | restart delay | none | **addition**: exponential backoff with jitter and a reset after stable uptime, per child ([`Backoff`]), nested groups included |
//! | a supervisor that gave up, as seen by its parent | exit reason `shutdown`: a transient parent spec leaves it down | **deviation**: an abnormal end ([`Termination::Escalated`]), so a transient group is restarted, bounded by the parent's intensity: escalation should not be mistaken for a clean end |
//! | `auto_shutdown` | `never` (default), `any_significant`, `all_significant` | the same ([`AutoShutdown`]); with `Never` a group whose children have all ended keeps running, empty, until stopped |
//! | significant children | only transient or temporary; a permanent significant child spec is rejected | the same: [`GroupSpec::validate`] (called by [`supervise_group`]) refuses it, and two members with one name; nested groups can be significant ([`GroupSpec::significant_group`]) |
//! | start order, stop order | in order, each `start_link` returning before the next; stop in reverse | the same; "returned" means ready (identity handshake, sd_notify, a port of its own, ...) |
//! | shutdown | `brutal_kill`, a timeout, or `infinity` | the supervisor's `stop` ([`Supervisor::stop`]; for commands: signal, grace, SIGKILL to the tree) |
//! | `restart_child` / `terminate_child` | restart a terminated child whose spec is kept | [`ServiceHandle::restart_member`] and [`ServiceHandle::restart`] both bring every member back except a finished temporary one; manual restarts do not count towards intensity |
//! | `which_children` / `count_children` | pids and states | [`ServiceHandle::status`]: state, pid, since, restarts, last exit, last start error, in start order |
//! | adopting a running process | no | **addition**: [`Supervisor::probe`] adopts a verified running backend instead of spawning |
//! | `simple_one_for_one` / dynamic children | yes | no: a group's members are fixed when it is built |
//! | start on demand | no | **addition**, systemd's socket activation: a member whose [`Supervisor::demand`] says so waits in [`MemberState::Listening`] until a client connects; a clean exit (an idle timeout) returns it there instead of finishing or counting as a restart |

pub(crate) mod dependency;
pub(crate) mod error;
pub(crate) mod event;
pub(crate) mod group;
pub(crate) mod health;
pub(crate) mod policy;
mod runtime;
pub(crate) mod supervisor;

pub use dependency::{Condition, Dependency, StartOrder};
pub use error::{ExecFailure, HealthError, LastOutput, StartError};
pub use event::{Event, EventKind, EventStream, Lagged};
pub use group::{AutoShutdown, GroupSpec, GroupSpecError, MakeReplica, Member, Outcome, Strategy};
pub use health::HealthPolicy;
pub use policy::{
    Backoff, Intensity, IntensityExceeded, Jitter, RestartKind, RestartPolicy, Termination,
};
pub use runtime::{
    supervise, supervise_group, HealthView, MemberError, MemberState, MemberStatus, ServiceHandle,
};
pub use supervisor::{
    Demand, SharedSupervisor, SpawnContext, Supervisor, DEFAULT_HEALTH_TIMEOUT,
    DEFAULT_READY_TIMEOUT, DEFAULT_STOP_GRACE,
};
