//! Groups: children supervised in order with an OTP strategy, themselves usable as
//! children (trees).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::policy::{Intensity, IntensityExceeded, RestartKind};
use super::supervisor::{StartError, Supervisor};

/// Which children are restarted when one of them ends and is to be restarted (OTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the child that ended.
    #[default]
    OneForOne,
    /// Every child: the others are stopped (in reverse order) and all start again in order.
    OneForAll,
    /// The child that ended and every child started after it.
    RestForOne,
}

/// When a group stops by itself because significant children ended (OTP's
/// `auto_shutdown`). "Run until the main daemon exits" is a significant child with
/// [`AutoShutdown::AnySignificant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoShutdown {
    /// Never: significant children are ordinary children.
    #[default]
    Never,
    /// When any significant child ends without being restarted.
    AnySignificant,
    /// When every significant child has ended without being restarted.
    AllSignificant,
}

/// How supervision of a service or group ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outcome {
    /// `stop()` was called (or the handle was dropped) and everything stopped.
    Stopped,
    /// It ended by itself and its policy does not restart it (a temporary service, a
    /// transient one that exited cleanly, a group whose significant children ended).
    Completed,
    /// The restart intensity was exceeded; everything was stopped.
    GaveUp(IntensityExceeded),
    /// A member failed to start in a way retrying cannot fix
    /// ([`StartError::is_permanent`]: a program that cannot be executed, an invalid spec);
    /// everything already started was stopped in reverse order.
    StartFailed {
        /// The member (`group/child` inside groups).
        member: String,
        /// Why.
        error: Arc<StartError>,
    },
}

/// Outcomes compare by kind and content; two start failures are equal when they name the
/// same member and read the same.
impl PartialEq for Outcome {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Outcome::Stopped, Outcome::Stopped) | (Outcome::Completed, Outcome::Completed) => true,
            (Outcome::GaveUp(a), Outcome::GaveUp(b)) => a == b,
            (
                Outcome::StartFailed { member, error },
                Outcome::StartFailed {
                    member: other_member,
                    error: other_error,
                },
            ) => member == other_member && error.to_string() == other_error.to_string(),
            _ => false,
        }
    }
}

impl Eq for Outcome {}

/// The description of a group: its children in start order, its strategy and intensity.
///
/// ```
/// use std::time::Duration;
/// use running_process::supervision::{AutoShutdown, GroupSpec, Intensity, Strategy};
/// # fn services() -> (running_process::supervision::SharedSupervisor, running_process::supervision::SharedSupervisor) { unimplemented!() }
/// # fn demo() {
/// let (database, app) = services();
/// let spec = GroupSpec::new("stack")
///     .strategy(Strategy::RestForOne)
///     .intensity(Intensity::new(5, Duration::from_secs(60)))
///     .auto_shutdown(AutoShutdown::AnySignificant)
///     .service(database)            // started first, stopped last
///     .significant_service(app);    // the group ends when the app ends
/// # }
/// ```
#[derive(Clone)]
pub struct GroupSpec {
    pub(crate) name: String,
    pub(crate) strategy: Strategy,
    pub(crate) intensity: Intensity,
    pub(crate) auto_shutdown: AutoShutdown,
    pub(crate) members: Vec<MemberSpec>,
}

#[derive(Clone)]
pub(crate) struct MemberSpec {
    pub(crate) name: String,
    pub(crate) kind: MemberKind,
    pub(crate) significant: bool,
}

#[derive(Clone)]
pub(crate) enum MemberKind {
    Service(Arc<dyn Supervisor>),
    Group {
        spec: Box<GroupSpec>,
        restart: RestartKind,
    },
}

impl GroupSpec {
    /// An empty group called `name`, one_for_one, default intensity, no auto-shutdown.
    pub fn new(name: impl Into<String>) -> Self {
        GroupSpec {
            name: name.into(),
            strategy: Strategy::default(),
            intensity: Intensity::default(),
            auto_shutdown: AutoShutdown::default(),
            members: Vec::new(),
        }
    }

    /// The restart strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The group's restart intensity: more than `max_restarts` restarts of its children
    /// within `period` make the group give up (and its parent see it fail).
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// When the group stops by itself.
    pub fn auto_shutdown(mut self, auto_shutdown: AutoShutdown) -> Self {
        self.auto_shutdown = auto_shutdown;
        self
    }

    /// Add a child service (started after the children added before it).
    pub fn service(self, supervisor: Arc<dyn Supervisor>) -> Self {
        self.member(supervisor, false)
    }

    /// Add a significant child service (see [`AutoShutdown`]).
    pub fn significant_service(self, supervisor: Arc<dyn Supervisor>) -> Self {
        self.member(supervisor, true)
    }

    /// Add a child group, restarted per `restart` when it gives up or completes.
    pub fn group(mut self, group: GroupSpec, restart: RestartKind) -> Self {
        self.members.push(MemberSpec {
            name: group.name.clone(),
            kind: MemberKind::Group {
                spec: Box::new(group),
                restart,
            },
            significant: false,
        });
        self
    }

    fn member(mut self, supervisor: Arc<dyn Supervisor>, significant: bool) -> Self {
        self.members.push(MemberSpec {
            name: supervisor.name().to_owned(),
            kind: MemberKind::Service(supervisor),
            significant,
        });
        self
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The services in this group and its nested groups.
    pub fn service_count(&self) -> usize {
        self.members
            .iter()
            .map(|member| match &member.kind {
                MemberKind::Service(_) => 1,
                MemberKind::Group { spec, .. } => spec.service_count(),
            })
            .sum()
    }
}

impl std::fmt::Debug for GroupSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSpec")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("intensity", &self.intensity)
            .field("auto_shutdown", &self.auto_shutdown)
            .field(
                "members",
                &self.members.iter().map(|m| &m.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}
