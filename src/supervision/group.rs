//! Groups: children supervised in order with an OTP strategy, themselves usable as
//! children (trees).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use super::error::Outcome;
use super::policy::{Intensity, RestartKind, RestartPolicy};
use super::supervisor::Supervisor;

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
    pub(crate) retry_start_up: bool,
    pub(crate) members: Vec<MemberSpec>,
}

/// Why a [`GroupSpec`] cannot be supervised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupSpecError {
    /// A significant child must be able to end: OTP rejects a permanent significant child,
    /// which could never trigger the group's auto-shutdown.
    #[error("group {group}: member {member} is significant but permanent (it can never end); make it transient or temporary")]
    PermanentSignificant {
        /// The group.
        group: String,
        /// The member.
        member: String,
    },
    /// Two members of one group have the same name (their events, status and backends
    /// would be indistinguishable).
    #[error("group {group}: two members are called {member:?}")]
    DuplicateName {
        /// The group.
        group: String,
        /// The name.
        member: String,
    },
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
        policy: RestartPolicy,
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
            retry_start_up: false,
            members: Vec::new(),
        }
    }

    /// Retry members that fail to start while the group starts up, by their restart
    /// policies, instead of failing the group's start (the default, as in OTP). Members
    /// whose [`RestartPolicy::retry_start_up`] is set are retried either way.
    pub fn retry_start_up(mut self, retry: bool) -> Self {
        self.retry_start_up = retry;
        self
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

    /// Add a significant child service (see [`AutoShutdown`]). Its restart kind must let
    /// it end (transient or temporary): [`GroupSpec::validate`] refuses a permanent one.
    pub fn significant_service(self, supervisor: Arc<dyn Supervisor>) -> Self {
        self.member(supervisor, true)
    }

    /// Add a child group, restarted per `policy` (a [`RestartKind`] alone, or a whole
    /// [`RestartPolicy`] with its backoff) when it gives up or completes. Its own
    /// intensity is the one set on it with [`GroupSpec::intensity`]; `policy.intensity` is
    /// not used (OTP keeps intensity per supervisor).
    pub fn group(self, group: GroupSpec, policy: impl Into<RestartPolicy>) -> Self {
        self.child_group(group, policy.into(), false)
    }

    /// Add a significant child group (see [`AutoShutdown`]): its completion can end this
    /// group. `policy` must let it end (transient or temporary).
    pub fn significant_group(self, group: GroupSpec, policy: impl Into<RestartPolicy>) -> Self {
        self.child_group(group, policy.into(), true)
    }

    fn child_group(mut self, group: GroupSpec, policy: RestartPolicy, significant: bool) -> Self {
        self.members.push(MemberSpec {
            name: group.name.clone(),
            kind: MemberKind::Group {
                spec: Box::new(group),
                policy,
            },
            significant,
        });
        self
    }

    /// Check the spec as OTP checks child specs: no permanent significant member, no two
    /// members with one name, in this group and every nested one.
    /// [`supervise_group`](crate::supervision::supervise_group) calls it.
    pub fn validate(&self) -> Result<(), GroupSpecError> {
        let mut seen = std::collections::HashSet::new();
        for member in &self.members {
            if !seen.insert(member.name.as_str()) {
                return Err(GroupSpecError::DuplicateName {
                    group: self.name.clone(),
                    member: member.name.clone(),
                });
            }
            let kind = match &member.kind {
                MemberKind::Service(supervisor) => supervisor.restart_policy().kind,
                MemberKind::Group { spec, policy } => {
                    spec.validate()?;
                    policy.kind
                }
            };
            if member.significant && kind == RestartKind::Permanent {
                return Err(GroupSpecError::PermanentSignificant {
                    group: self.name.clone(),
                    member: member.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// A member without the checks of [`GroupSpec::validate`] (a single supervised
    /// service is a group of one whose member is significant, whatever its kind).
    pub(crate) fn member_unchecked(
        self,
        supervisor: Arc<dyn Supervisor>,
        significant: bool,
    ) -> Self {
        self.member(supervisor, significant)
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
            .field("retry_start_up", &self.retry_start_up)
            .field(
                "members",
                &self.members.iter().map(|m| &m.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}
