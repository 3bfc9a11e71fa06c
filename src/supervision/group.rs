//! Groups: children supervised in order with an OTP strategy, themselves usable as
//! children (trees).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::dependency::{Condition, Dependency, Graph, StartOrder};
pub use super::error::Outcome;
pub use super::policy::Strategy;
use super::policy::{Intensity, RestartKind, RestartPolicy};
use super::supervisor::Supervisor;

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
    /// When no child can run any more without a request from outside: each has finished,
    /// failed for good, or is blocked by a dependency that did (members stopped on request
    /// count as able to run). Docker Compose's `up`, which returns once every container
    /// has exited. An addition to OTP.
    AllEnded,
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
    pub(crate) order: StartOrder,
    pub(crate) max_concurrent_starts: usize,
    pub(crate) prefix_names: bool,
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
    /// A member depends on a name no member of the group has.
    #[error("group {group}: {member} depends on {dependency:?}, which is not a member")]
    UnknownDependency {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The name it depends on.
        dependency: String,
    },
    /// The dependencies go round in a circle: none of these could ever start.
    #[error("group {group}: dependency cycle {}", cycle.join(" -> "))]
    Cycle {
        /// The group.
        group: String,
        /// The members along the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// A dependency asks for a condition its member can never reach: `healthy` of a member
    /// without a health check, `completed_successfully` of a permanent one (it is
    /// restarted, never completed).
    #[error(
        "group {group}: {member} waits for {dependency} {condition}, which it can never be ({why})"
    )]
    UnreachableCondition {
        /// The group.
        group: String,
        /// The dependant.
        member: String,
        /// The member depended on.
        dependency: String,
        /// The condition.
        condition: Condition,
        /// Why it cannot be reached.
        why: &'static str,
    },
    /// A member with replicas asked for none, or a dynamic change named no template.
    #[error("group {group}: {member}: {problem}")]
    Replicas {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// What is wrong.
        problem: &'static str,
    },
}

/// The default of [`GroupSpec::max_concurrent_starts`]: enough to start a service file's
/// independent services together, few enough that a start of 500 members on a busy
/// two-core machine does not time out its own readiness checks.
pub const DEFAULT_MAX_CONCURRENT_STARTS: usize = 16;

/// Makes the supervisor of instance `n` (1-based) of a member with replicas.
pub(crate) type MakeReplica = Arc<dyn Fn(u32) -> Arc<dyn Supervisor> + Send + Sync>;

/// One member of a group, for [`GroupSpec::member`] and the dynamic changes of a running
/// group ([`ServiceHandle::add_member`](super::ServiceHandle::add_member) and its
/// siblings): a service, a nested group, or a service with replicas, with what it depends
/// on.
///
/// ```
/// use std::sync::Arc;
/// use running_process::supervision::{Condition, GroupSpec, Member, StartOrder, SharedSupervisor};
/// # fn services() -> (SharedSupervisor, SharedSupervisor, SharedSupervisor) { unimplemented!() }
/// # fn demo() {
/// let (db, migrate, make_worker) = services();
/// let spec = GroupSpec::new("app")
///     .order(StartOrder::Parallel)
///     .member(Member::service(db))
///     .member(Member::service(migrate).depends_on("db", Condition::Ready))
///     .member(
///         Member::replicas("worker", 3, move |n| {
///             # let _ = n;
///             make_worker.clone() // instance n of 3: worker-1, worker-2, worker-3
///         })
///         .depends_on("migrate", Condition::CompletedSuccessfully),
///     );
/// # }
/// ```
#[derive(Clone)]
pub struct Member {
    pub(crate) spec: MemberSpec,
}

impl Member {
    /// A service.
    pub fn service(supervisor: Arc<dyn Supervisor>) -> Member {
        Member {
            spec: MemberSpec {
                name: supervisor.name().to_owned(),
                kind: MemberKind::Service(supervisor),
                significant: false,
                depends_on: Vec::new(),
            },
        }
    }

    /// A nested group, restarted per `policy` when it gives up or completes (see
    /// [`GroupSpec::group`]).
    pub fn group(group: GroupSpec, policy: impl Into<RestartPolicy>) -> Member {
        Member {
            spec: MemberSpec {
                name: group.name.clone(),
                kind: MemberKind::Group {
                    spec: Box::new(group),
                    policy: policy.into(),
                },
                significant: false,
                depends_on: Vec::new(),
            },
        }
    }

    /// `replicas` instances of one service (OTP's `simple_one_for_one`; supervisord's
    /// `numprocs`), made by `make` from their instance number (1-based). They are named
    /// `NAME-1` .. `NAME-N`, or `NAME` when there is one, and can be scaled while the group
    /// runs ([`ServiceHandle::scale`](super::ServiceHandle::scale)). Each is an ordinary
    /// member (restarts, strategy, intensity); a dependency on `NAME` waits for all.
    pub fn replicas(
        name: impl Into<String>,
        replicas: u32,
        make: impl Fn(u32) -> Arc<dyn Supervisor> + Send + Sync + 'static,
    ) -> Member {
        Member {
            spec: MemberSpec {
                name: name.into(),
                kind: MemberKind::Replicas {
                    replicas,
                    make: Arc::new(make),
                },
                significant: false,
                depends_on: Vec::new(),
            },
        }
    }

    /// Start it only once the member called `name` has reached `condition` (and stop it
    /// before that member). Call once per dependency.
    pub fn depends_on(mut self, name: impl Into<String>, condition: Condition) -> Member {
        self.spec.depends_on.push(Dependency::new(name, condition));
        self
    }

    /// Significant (see [`AutoShutdown`]): its end can end the group. Its restart kind
    /// must let it end (transient or temporary).
    pub fn significant(mut self) -> Member {
        self.spec.significant = true;
        self
    }

    /// Its name in the group.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.spec.name)
            .field("depends_on", &self.spec.depends_on)
            .field("significant", &self.spec.significant)
            .finish()
    }
}

#[derive(Clone)]
pub(crate) struct MemberSpec {
    pub(crate) name: String,
    pub(crate) kind: MemberKind,
    pub(crate) significant: bool,
    pub(crate) depends_on: Vec<Dependency>,
}

#[derive(Clone)]
pub(crate) enum MemberKind {
    Service(Arc<dyn Supervisor>),
    Group {
        spec: Box<GroupSpec>,
        policy: RestartPolicy,
    },
    /// A template: the runtime makes one `Service` member per instance.
    Replicas {
        replicas: u32,
        make: MakeReplica,
    },
}

impl MemberKind {
    /// The restart kind of its children, and whether it can ever be healthy (has a health
    /// check).
    fn restart_and_health(&self) -> (RestartKind, bool) {
        match self {
            MemberKind::Service(supervisor) => (
                supervisor.restart_policy().kind,
                supervisor.health_policy().is_some(),
            ),
            MemberKind::Group { policy, .. } => (policy.kind, false),
            MemberKind::Replicas { make, .. } => {
                let sample = make(1);
                (
                    sample.restart_policy().kind,
                    sample.health_policy().is_some(),
                )
            }
        }
    }
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
            order: StartOrder::default(),
            max_concurrent_starts: DEFAULT_MAX_CONCURRENT_STARTS,
            prefix_names: true,
            members: Vec::new(),
        }
    }

    /// In which order members start when their dependencies leave it open:
    /// [`StartOrder::Sequential`] (the default, OTP's) or [`StartOrder::Parallel`].
    pub fn order(mut self, order: StartOrder) -> Self {
        self.order = order;
        self
    }

    /// The most members started at once (default [`DEFAULT_MAX_CONCURRENT_STARTS`]; at
    /// least 1). The others whose dependencies are met wait their turn, as idle members.
    /// A bound keeps a wide parallel start (hundreds of members whose dependencies are met
    /// together) from racing every readiness check against the same two cores at once.
    pub fn max_concurrent_starts(mut self, starts: usize) -> Self {
        self.max_concurrent_starts = starts;
        self
    }

    /// Whether its members' events and status rows are named `group/member` (the default)
    /// or just `member` (a top-level group whose name would only repeat itself in every
    /// line, as a service file's). Nested groups' members are always prefixed by their
    /// own group's name.
    pub fn prefix_names(mut self, prefix: bool) -> Self {
        self.prefix_names = prefix;
        self
    }

    /// Add a member: a service, a nested group or a service with replicas, with its
    /// dependencies ([`Member`]).
    pub fn member(mut self, member: Member) -> Self {
        self.members.push(member.spec);
        self
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
        self.push_service(supervisor, false)
    }

    /// Add a significant child service (see [`AutoShutdown`]). Its restart kind must let
    /// it end (transient or temporary): [`GroupSpec::validate`] refuses a permanent one.
    pub fn significant_service(self, supervisor: Arc<dyn Supervisor>) -> Self {
        self.push_service(supervisor, true)
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

    fn child_group(self, group: GroupSpec, policy: RestartPolicy, significant: bool) -> Self {
        let member = Member::group(group, policy);
        self.member(if significant {
            member.significant()
        } else {
            member
        })
    }

    /// Check the spec as OTP checks child specs (no permanent significant member, no two
    /// members with one name), and its dependencies (each names a member, no cycle, no
    /// condition its member can never reach), in this group and every nested one.
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
            self.validate_member(member)?;
        }
        self.validate_dependencies(&self.members)
    }

    /// The checks of one member that need no other member.
    pub(crate) fn validate_member(&self, member: &MemberSpec) -> Result<(), GroupSpecError> {
        let kind = match &member.kind {
            MemberKind::Service(supervisor) => supervisor.restart_policy().kind,
            MemberKind::Group { spec, policy } => {
                spec.validate()?;
                policy.kind
            }
            MemberKind::Replicas { replicas: 0, .. } => {
                return Err(GroupSpecError::Replicas {
                    group: self.name.clone(),
                    member: member.name.clone(),
                    problem: "replicas must be at least 1 (scale a running group to 0 instead)",
                })
            }
            MemberKind::Replicas { .. } => member.kind.restart_and_health().0,
        };
        if member.significant && kind == RestartKind::Permanent {
            return Err(GroupSpecError::PermanentSignificant {
                group: self.name.clone(),
                member: member.name.clone(),
            });
        }
        Ok(())
    }

    /// Every dependency of `members` names one of them, reachably, without a cycle.
    pub(crate) fn validate_dependencies(
        &self,
        members: &[MemberSpec],
    ) -> Result<(), GroupSpecError> {
        for member in members {
            for dependency in &member.depends_on {
                let Some(target) = members.iter().find(|m| m.name == dependency.service) else {
                    return Err(GroupSpecError::UnknownDependency {
                        group: self.name.clone(),
                        member: member.name.clone(),
                        dependency: dependency.service.clone(),
                    });
                };
                let (restart, has_health) = target.kind.restart_and_health();
                let why = match dependency.condition {
                    Condition::Healthy if !has_health => Some("it has no health check"),
                    Condition::CompletedSuccessfully if restart == RestartKind::Permanent => {
                        Some("it is permanent: restarted, never completed")
                    }
                    _ => None,
                };
                if let Some(why) = why {
                    return Err(GroupSpecError::UnreachableCondition {
                        group: self.name.clone(),
                        member: member.name.clone(),
                        dependency: dependency.service.clone(),
                        condition: dependency.condition,
                        why,
                    });
                }
            }
        }
        let graph = Graph::new(members.iter().map(|m| {
            let deps = m.depends_on.iter().map(|d| d.service.as_str()).collect();
            (m.name.as_str(), deps)
        }));
        match graph.cycle() {
            Some(cycle) => Err(GroupSpecError::Cycle {
                group: self.name.clone(),
                cycle,
            }),
            None => Ok(()),
        }
    }

    /// A member without the checks of [`GroupSpec::validate`] (a single supervised
    /// service is a group of one whose member is significant, whatever its kind).
    pub(crate) fn member_unchecked(
        self,
        supervisor: Arc<dyn Supervisor>,
        significant: bool,
    ) -> Self {
        self.push_service(supervisor, significant)
    }

    fn push_service(self, supervisor: Arc<dyn Supervisor>, significant: bool) -> Self {
        let member = Member::service(supervisor);
        self.member(if significant {
            member.significant()
        } else {
            member
        })
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
                MemberKind::Replicas { replicas, .. } => *replicas as usize,
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
            .field("order", &self.order)
            .field("max_concurrent_starts", &self.max_concurrent_starts)
            .field("prefix_names", &self.prefix_names)
            .field(
                "members",
                &self.members.iter().map(|m| &m.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}
