//! [`Stack`]: the services of a [`ServiceFile`] run together. A translation only: the file
//! becomes one [`GroupSpec`] (each service a [`CommandSupervisor`] member with its
//! dependencies; the set's strategy, intensity and order), run by the supervision
//! runtime's one group engine, which owns dependencies, strategy, intensity and stop order.

use std::sync::{Arc, Mutex};

use super::file::ServiceFile;
use crate::command::CommandSupervisor;
use crate::supervision::{
    supervise_group, AutoShutdown, EventStream, GroupSpec, GroupSpecError, Member, MemberError,
    MemberStatus, Outcome, ServiceHandle,
};

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
    file: Arc<ServiceFile>,
    /// Subscribed before anything ran: the first [`Stack::events`] call gets it, so it
    /// misses nothing since the start.
    first_events: Arc<Mutex<Option<EventStream>>>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("name", &self.name())
            .field("handle", &self.handle)
            .finish()
    }
}

/// The group a service file describes: one member per service, a
/// [`CommandSupervisor`] of its spec, depending on its `depends_on`; the `[group]`
/// table's strategy, intensity and order; rows and events named by the services alone;
/// and, as Docker Compose's `up`, the set ends by itself once no service can run any
/// more ([`AutoShutdown::AllEnded`]).
pub fn group_spec(file: &ServiceFile) -> GroupSpec {
    let settings = &file.group;
    let spec = GroupSpec::new(settings.name.clone())
        .strategy(settings.strategy)
        .intensity(settings.intensity)
        .order(settings.order)
        .auto_shutdown(AutoShutdown::AllEnded)
        .prefix_names(false);
    file.services.iter().fold(spec, |spec, service| {
        let member = Member::service(Arc::new(CommandSupervisor::new(service.spec.clone())));
        let member = service
            .depends_on
            .iter()
            .fold(member, |member, dependency| {
                member.depends_on(dependency.service.clone(), dependency.condition)
            });
        spec.member(member)
    })
}

impl Stack {
    /// Start the services of `file` ([`group_spec`]): each once its dependencies reach
    /// their conditions, independent ones in parallel. Returns at once; see
    /// [`Stack::ready`]. Call it within a tokio runtime. A file that passed its checks
    /// (`ServiceFile::load`, feature `toml`, or [`ServiceFile::check`]) is a valid
    /// group; one that did not may be refused here (an unknown dependency, a cycle).
    pub fn start(file: ServiceFile) -> Result<Stack, GroupSpecError> {
        let handle = supervise_group(group_spec(&file))?;
        let first_events = Arc::new(Mutex::new(Some(handle.events())));
        Ok(Stack {
            handle,
            file: Arc::new(file),
            first_events,
        })
    }

    /// The set's name (`[group] name`).
    pub fn name(&self) -> &str {
        &self.file.group.name
    }

    /// The file it runs.
    pub fn file(&self) -> &ServiceFile {
        &self.file
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
        self.first_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| self.handle.events())
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

    /// Restart the service called `name`, with what the set's strategy restarts with it
    /// (`rest_for_one`: its dependants, stopped first and started again once it is ready;
    /// a stopped, finished or failed service starts again too). `false` if the file has
    /// no such service.
    pub fn restart_service(&self, name: &str) -> bool {
        let known = self.file.service(name).is_some();
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
