//! [`Stack`]: the services of a [`ServiceFile`] run together. A translation only: the file
//! becomes one [`GroupSpec`] (each service a [`CommandSupervisor`] member with its
//! dependencies; the set's strategy, intensity and order), run by the supervision
//! runtime's one group engine, which owns dependencies, strategy, intensity and stop order.

use std::sync::Arc;

use super::file::{Service, ServiceFile};
use super::variables::{for_instance, INSTANCE_TOKEN, INSTANCE_VARIABLE};
use crate::command::{CommandSpec, CommandSupervisor};
use crate::supervision::{
    supervise_group, AutoShutdown, EventStream, GroupSpec, GroupSpecError, Member, MemberError,
    MemberStatus, Outcome, ServiceHandle, Supervisor,
};

/// The file a [`Stack`] runs, swapped whole when an apply is done.
type SharedFile = std::sync::Mutex<Arc<ServiceFile>>;

/// The services of a [`ServiceFile`], running.
///
/// ```no_run
/// # #[cfg(feature = "toml")]
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use futures_util::StreamExt;
/// use running_process::compose::{ServiceFile, Stack};
///
/// let file = ServiceFile::load("running-process.toml").await?;
/// let stack = Stack::start(file)?;
/// let mut events = stack.events();
/// tokio::spawn(async move {
///     while let Some(Ok(event)) = events.next().await {
///         println!("{event}");
///     }
/// });
/// stack.ready().await.map_err(|outcome| outcome.to_string())?;
/// for service in stack.status() {
///     println!("{} {} pid {:?}", service.name, service.state, service.pid);
/// }
/// stack.stop().await;
/// # Ok(()) }
/// ```
///
/// Clones share the stack. When the last one is dropped, every service is stopped in the
/// background, dependants first (as the runtime's [`ServiceHandle`] does).
#[derive(Clone)]
pub struct Stack {
    handle: ServiceHandle,
    /// The file it runs: replaced by [`Stack::apply`].
    file: Arc<SharedFile>,
    /// Makes the supervisor of each instance (also of those an apply adds).
    make: MakeSupervisor,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("name", &self.name())
            .field("handle", &self.handle)
            .finish()
    }
}

/// The group a service file describes: one member per service, whose `replicas`
/// instances ([`Member::replicas`]) are each a [`CommandSupervisor`] of its spec for that
/// instance (`RUNNING_PROCESS_INSTANCE` set to its number and `${RUNNING_PROCESS_INSTANCE}`
/// replaced by it in every string of the spec), depending on its `depends_on`; the `[group]` table's
/// strategy, intensity and order; rows and events named by the services alone; and, as
/// Docker Compose's `up`, the set ends by itself once no service can run any more
/// ([`AutoShutdown::AllEnded`]).
pub fn group_spec(file: &ServiceFile) -> GroupSpec {
    group_spec_with(file, &command_supervisors())
}

/// Makes the supervisor of one instance's spec: a [`CommandSupervisor`], or (the testing
/// kit's) one it keeps a reference to as well.
pub(crate) type MakeSupervisor = Arc<dyn Fn(CommandSpec) -> Arc<dyn Supervisor> + Send + Sync>;

/// The plain [`MakeSupervisor`]: a [`CommandSupervisor`] of the spec.
fn command_supervisors() -> MakeSupervisor {
    Arc::new(|spec| Arc::new(CommandSupervisor::new(spec)))
}

/// [`group_spec`], each instance's supervisor made by `make`.
pub(crate) fn group_spec_with(file: &ServiceFile, make: &MakeSupervisor) -> GroupSpec {
    let settings = &file.group;
    let spec = GroupSpec::new(settings.name.clone())
        .strategy(settings.strategy)
        .intensity(settings.intensity)
        .order(settings.order)
        .auto_shutdown(AutoShutdown::AllEnded)
        .prefix_names(false);
    file.services
        .iter()
        .fold(spec, |spec, service| spec.member(member_of(service, make)))
}

/// The member a service of a file is: `replicas` instances of a [`CommandSupervisor`] of
/// its spec for that instance ([`instance_spec`]), depending on its `depends_on`.
pub(crate) fn member_of(service: &Service, make: &MakeSupervisor) -> Member {
    let template = service.spec.clone();
    let make = make.clone();
    let member = Member::replicas(service.name(), service.replicas, move |n| {
        make(instance_spec(&template, n))
    });
    service
        .depends_on
        .iter()
        .fold(member, |member, dependency| {
            member.depends_on(dependency.service.clone(), dependency.condition)
        })
}

/// The spec of instance `n` (1-based) of a service: `RUNNING_PROCESS_INSTANCE=n` in its
/// environment, and `${RUNNING_PROCESS_INSTANCE}` replaced by `n` in every string of it
/// (arguments, environment, paths, readiness and health addresses), so that each instance
/// can take its own port, directory or log file.
pub(crate) fn instance_spec(spec: &CommandSpec, n: u32) -> CommandSpec {
    let mut spec = with_instance(spec, n).unwrap_or_else(|| spec.clone());
    spec.env.insert(INSTANCE_VARIABLE.to_owned(), n.to_string());
    spec
}

/// Every string of `spec` with the instance token replaced (through its serde form, so
/// no field is forgotten); `None` if it has none.
fn with_instance(spec: &CommandSpec, n: u32) -> Option<CommandSpec> {
    fn replace(value: &mut serde_json::Value, n: u32) {
        match value {
            serde_json::Value::String(text) if text.contains(INSTANCE_TOKEN) => {
                *text = for_instance(text, n)
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| replace(v, n)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| replace(v, n)),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(spec).ok()?;
    if !value.to_string().contains(INSTANCE_TOKEN) {
        return None;
    }
    replace(&mut value, n);
    match serde_json::from_value(value) {
        Ok(spec) => Some(spec),
        Err(error) => {
            tracing::warn!(service = %spec.name, %error, "cannot apply the instance number to the spec");
            None
        }
    }
}

impl Stack {
    /// Start the services of `file` ([`group_spec`]): each once its dependencies reach
    /// their conditions, independent ones in parallel. Returns at once; see
    /// [`Stack::ready`]. Call it within a tokio runtime. A file that passed its checks
    /// (`ServiceFile::load`, feature `toml`, or [`ServiceFile::check`]) is a valid
    /// group; one that did not may be refused here (an unknown dependency, a cycle).
    /// It leaves the open-files limit alone: call
    /// [`check_open_files`](super::check_open_files) first, as the command line does, to
    /// raise it and refuse a file the hard limit cannot hold before anything starts.
    pub fn start(file: ServiceFile) -> Result<Stack, GroupSpecError> {
        Stack::start_with(file, command_supervisors())
    }

    /// [`Stack::start`], each instance's supervisor made by `make`.
    pub(crate) fn start_with(
        file: ServiceFile,
        make: MakeSupervisor,
    ) -> Result<Stack, GroupSpecError> {
        let handle = supervise_group(group_spec_with(&file, &make))?;
        Ok(Stack {
            handle,
            file: Arc::new(SharedFile::new(Arc::new(file))),
            make,
        })
    }

    /// The member a service of the running file is (for an apply).
    pub(crate) fn member_of(&self, service: &Service) -> Member {
        member_of(service, &self.make)
    }

    /// The set's name (`[group] name`).
    pub fn name(&self) -> &str {
        self.handle.name()
    }

    /// The file it runs (the last one applied).
    pub fn file(&self) -> Arc<ServiceFile> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_file(&self, file: ServiceFile) {
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(file);
    }

    /// The runtime's handle of the set's group: everything [`ServiceHandle`] offers
    /// (backends, dynamic members, ...).
    pub fn handle(&self) -> &ServiceHandle {
        &self.handle
    }

    /// The events of every service and of the set's group (named by `[group] name`). The
    /// first call gets every event since [`Stack::start`]; later calls get those from the
    /// moment of the call on.
    pub fn events(&self) -> EventStream {
        self.handle.events()
    }

    /// Wait until every service has been up at once (running, listening, or finished);
    /// `Err` with the outcome if the set ended first.
    pub async fn ready(&self) -> Result<(), Outcome> {
        self.handle.ready().await
    }

    /// Every service as it is now, in file order.
    pub fn status(&self) -> Vec<MemberStatus> {
        self.handle.status()
    }

    /// Every service as it is now, with what each uses read fresh
    /// ([`ServiceHandle::sample_usage`]: CPU, memory, tasks; on the blocking pool).
    pub async fn sample_usage(&self) -> Vec<MemberStatus> {
        self.handle.sample_usage().await
    }

    /// Restart the service called `name`, with what the set's strategy restarts with it
    /// (`rest_for_one`: its dependants, stopped first and started again once it is ready;
    /// a stopped, finished or failed service starts again too). `false` if the file has
    /// no such service.
    pub fn restart_service(&self, name: &str) -> bool {
        let known = self.file().service(name).is_some();
        if known {
            self.handle.restart_member(name);
        }
        known
    }

    /// Start the service called `name` if it is stopped, finished, failed or blocked,
    /// once its dependencies allow. `Ok(false)` if it is running or on its way already.
    pub async fn start_service(&self, name: &str) -> Result<bool, MemberError> {
        self.handle.start_member(name).await
    }

    /// Stop the service called `name` and keep it down until started or restarted. Its
    /// dependants follow the set's strategy (see [`ServiceHandle::stop_member`]).
    pub async fn stop_service(&self, name: &str) -> Result<bool, MemberError> {
        self.handle.stop_member(name).await
    }

    /// Run `replicas` instances of the service called `name` (zero included): new ones
    /// start as their dependencies allow, the highest-numbered stop first (see
    /// [`ServiceHandle::scale`]). The file the stack runs says so afterwards, so a later
    /// [`Stack::apply`] compares against it. `Ok(false)` if it had that many already.
    pub async fn scale(&self, name: &str, replicas: u32) -> Result<bool, MemberError> {
        let changed = self.handle.scale(name, replicas).await?;
        let mut file = (*self.file()).clone();
        if let Some(service) = file.services.iter_mut().find(|s| s.name() == name) {
            service.replicas = replicas;
        }
        self.set_file(file);
        Ok(changed)
    }

    /// Stop every service, dependants before what they depend on (independent ones in
    /// parallel), and wait until all have stopped.
    pub async fn stop(&self) -> Outcome {
        self.handle.stop().await
    }

    /// Wait for the set's outcome: [`Outcome::Stopped`] after [`Stack::stop`],
    /// [`Outcome::Completed`] when no service can run any more,
    /// [`Outcome::StartFailed`] when a service could not start while the set started up
    /// (everything else is stopped then), [`Outcome::GaveUp`] when the set's intensity was
    /// exceeded.
    pub async fn outcome(&self) -> Outcome {
        self.handle.outcome().await
    }

    /// The outcome, if the set has ended.
    pub fn try_outcome(&self) -> Option<Outcome> {
        self.handle.try_outcome()
    }
}
