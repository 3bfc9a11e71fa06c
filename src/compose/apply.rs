//! Applying an edited service file to a running [`Stack`]: a diff of the two files'
//! services carried out through the group engine's dynamic membership. A service is
//! unchanged only if its effective spec is the same **and** each of its running processes
//! is still the program its spec names: the executable digest recorded when it was
//! verified equals the digest of the file on disk now, so a program rebuilt on disk counts
//! as changed.

use super::file::{Service, ServiceFile};
use super::stack::Stack;
use crate::identity::DigestCache;
use crate::supervision::{GroupSpecError, MemberError};

/// What an apply does (did) to one service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceChange {
    /// Same spec, same verified program: left running, same pid, no restart.
    Unchanged,
    /// Replaced by its new spec (its dependants follow the set's strategy); what changed.
    Replaced {
        /// The keys that differ (`args`, `env`, ...), or `program rebuilt on disk`.
        what: Vec<String>,
    },
    /// Only its number of replicas changed: scaled, the others left running.
    Scaled {
        /// Instances before.
        from: u32,
        /// Instances after.
        to: u32,
    },
    /// New in the file: started once its dependencies allow.
    Added,
    /// Gone from the file: stopped and removed.
    Removed,
}

impl std::fmt::Display for ServiceChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceChange::Unchanged => f.write_str("unchanged"),
            ServiceChange::Replaced { what } => write!(f, "replaced: {}", what.join(", ")),
            ServiceChange::Scaled { from, to } => write!(f, "scaled: {from} -> {to}"),
            ServiceChange::Added => f.write_str("added"),
            ServiceChange::Removed => f.write_str("removed"),
        }
    }
}

/// The plan of an apply: each service of the new file in its order, then the removed ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyPlan {
    /// Each service and what happens to it.
    pub services: Vec<(String, ServiceChange)>,
}

impl ApplyPlan {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.services
            .iter()
            .all(|(_, change)| *change == ServiceChange::Unchanged)
    }
}

impl std::fmt::Display for ApplyPlan {
    /// One line per service: `web: replaced: args`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, change) in &self.services {
            writeln!(f, "{name}: {change}")?;
        }
        Ok(())
    }
}

/// Why an edited file was not applied (nothing was changed then, unless the error is
/// [`ApplyError::Change`], which names the step that failed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The edited file is not a valid group (an unknown dependency, a cycle, ...).
    #[error("the edited file is not valid: {0}")]
    Invalid(#[from] GroupSpecError),
    /// The `[group]` table changed: the set's name, strategy, intensity or order cannot
    /// change while it runs.
    #[error("the [group] table changed ({0}): stop the set and start it again to apply it")]
    GroupChanged(&'static str),
    /// A step of the apply was refused by the running group.
    #[error("{service}: {error}")]
    Change {
        /// The service.
        service: String,
        /// Why.
        #[source]
        error: MemberError,
    },
}

impl Stack {
    /// What [`Stack::apply`] would do with `edited`, changing nothing. Reads the
    /// executables of the running services (on the blocking pool) to tell a rebuilt
    /// program.
    pub async fn plan(&self, edited: &ServiceFile) -> Result<ApplyPlan, ApplyError> {
        let running = self.file();
        group_unchanged(&running, edited)?;
        super::stack::group_spec(edited).validate()?;
        let mut plan = ApplyPlan::default();
        for service in &edited.services {
            let change = match running.service(service.name()) {
                None => ServiceChange::Added,
                Some(old) => self.compare(old, service).await,
            };
            plan.services.push((service.name().to_owned(), change));
        }
        for old in &running.services {
            if edited.service(old.name()).is_none() {
                plan.services
                    .push((old.name().to_owned(), ServiceChange::Removed));
            }
        }
        Ok(plan)
    }

    /// Apply an edited file to the running set: unchanged services keep running (same
    /// pid, no restart event), changed ones are replaced (their dependants follow the
    /// set's strategy), scaled ones scaled, new ones added (started once their
    /// dependencies allow), removed ones stopped. Returns the plan it carried out once
    /// every step is done (not once everything is ready: see [`Stack::ready`]). An invalid
    /// edited file changes nothing.
    pub async fn apply(&self, edited: ServiceFile) -> Result<ApplyPlan, ApplyError> {
        let plan = self.plan(&edited).await?;
        let handle = self.handle();
        let step = |service: &str| {
            let service = service.to_owned();
            move |error| ApplyError::Change { service, error }
        };
        // New services first, each after what it depends on, so that a replaced service
        // may depend on them; removals last, once nothing depends on them.
        for service in added_in_dependency_order(&edited, &plan) {
            handle
                .add_member(self.member_of(service))
                .await
                .map_err(step(service.name()))?;
        }
        for (name, change) in &plan.services {
            let Some(service) = edited.service(name) else {
                continue;
            };
            match change {
                ServiceChange::Replaced { .. } => handle
                    .replace_member(self.member_of(service))
                    .await
                    .map(|_| ())
                    .map_err(step(name))?,
                ServiceChange::Scaled { to, .. } => handle
                    .scale(name, *to)
                    .await
                    .map(|_| ())
                    .map_err(step(name))?,
                _ => {}
            }
        }
        for (name, change) in &plan.services {
            if *change == ServiceChange::Removed {
                handle.remove_member(name).await.map_err(step(name))?;
            }
        }
        self.set_file(edited);
        Ok(plan)
    }

    /// How `old` (running) and `new` differ.
    async fn compare(&self, old: &Service, new: &Service) -> ServiceChange {
        let mut what = spec_differences(old, new);
        if what.is_empty() && self.rebuilt(old.name()).await {
            what.push("program rebuilt on disk".to_owned());
        }
        match (what.is_empty(), old.replicas == new.replicas) {
            (true, true) => ServiceChange::Unchanged,
            (true, false) => ServiceChange::Scaled {
                from: old.replicas,
                to: new.replicas,
            },
            (false, _) => ServiceChange::Replaced { what },
        }
    }

    /// Whether a running instance of `service` runs an image other than the file its
    /// program names now (a rebuild replaced it).
    async fn rebuilt(&self, service: &str) -> bool {
        let file = self.file();
        let backends: Vec<_> = self
            .handle()
            .backends()
            .into_iter()
            .filter(|(name, _)| file.service_of(name).is_some_and(|s| s.name() == service))
            .map(|(_, backend)| backend.daemon().clone())
            .collect();
        let check = move || {
            backends.iter().any(|claim| {
                let on_disk = std::fs::File::open(&claim.exe_path)
                    .and_then(|file| DigestCache::global().digest_of_file(file));
                match on_disk {
                    Ok(digest) => crate::hex::encode(&digest) != claim.exe_sha256_hex(),
                    // Gone or unreadable: what runs is not what the spec would start.
                    Err(_) => true,
                }
            })
        };
        tokio::task::spawn_blocking(check).await.unwrap_or(false)
    }
}

/// The `[group]` settings that cannot change while the set runs.
fn group_unchanged(running: &ServiceFile, edited: &ServiceFile) -> Result<(), ApplyError> {
    let (a, b) = (&running.group, &edited.group);
    let changed = if a.name != b.name {
        Some("name")
    } else if a.strategy != b.strategy {
        Some("strategy")
    } else if a.intensity != b.intensity {
        Some("intensity")
    } else if a.order != b.order {
        Some("order")
    } else {
        None
    };
    changed.map_or(Ok(()), |what| Err(ApplyError::GroupChanged(what)))
}

/// The keys of two services' specs (and `depends_on`) that differ, in a stable order.
fn spec_differences(old: &Service, new: &Service) -> Vec<String> {
    let as_map = |service: &Service| match serde_json::to_value(&service.spec) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (a, b) = (as_map(old), as_map(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut what: Vec<String> = keys
        .into_iter()
        .filter(|key| a.get(*key) != b.get(*key))
        .cloned()
        .collect();
    if old.depends_on != new.depends_on {
        what.push("depends_on".into());
    }
    what
}

/// The services `plan` adds, each after the added services it depends on.
fn added_in_dependency_order<'a>(edited: &'a ServiceFile, plan: &ApplyPlan) -> Vec<&'a Service> {
    let mut pending: Vec<&Service> = plan
        .services
        .iter()
        .filter(|(_, change)| *change == ServiceChange::Added)
        .filter_map(|(name, _)| edited.service(name))
        .collect();
    let mut ordered: Vec<&Service> = Vec::new();
    while !pending.is_empty() {
        let ready = pending.iter().position(|service| {
            service
                .depends_on
                .iter()
                .all(|d| !pending.iter().any(|p| p.name() == d.service))
        });
        // A checked file has no cycle; if one slipped through, the engine refuses it.
        ordered.push(pending.remove(ready.unwrap_or(0)));
    }
    ordered
}
