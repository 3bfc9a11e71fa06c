//! Dynamic membership (OTP's `start_child`, `terminate_child`, `restart_child`,
//! `delete_child`, and `simple_one_for_one`'s scaling): changes to a running group,
//! carried out by its loop between two events, so they never race a restart.

use super::child::{ChildState, Dep};
use super::group_loop::{instance_name, Group};
use crate::supervision::event::EventKind;
use crate::supervision::group::{GroupSpecError, MemberKind, MemberSpec};

/// A change to a running group ([`ServiceHandle`](super::ServiceHandle)'s methods).
pub(crate) enum Change {
    Add(MemberSpec),
    Replace(MemberSpec),
    Remove(String),
    Stop(String),
    Start(String),
    Scale(String, u32),
}

/// Why a change to a running group was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemberError {
    /// The group has no member of that name.
    #[error("group {group} has no member {member:?}")]
    NoSuchMember {
        /// The group.
        group: String,
        /// The name asked for.
        member: String,
    },
    /// The member asked to scale has no replicas (it was not added with
    /// [`Member::replicas`](crate::supervision::Member::replicas)).
    #[error("group {group}: {member} is not a member with replicas")]
    NotReplicated {
        /// The group.
        group: String,
        /// The member.
        member: String,
    },
    /// The new member, or the group with it, is not a valid spec (a name taken, an
    /// unknown dependency, a cycle, ...).
    #[error(transparent)]
    Invalid(#[from] GroupSpecError),
    /// Supervision has ended: there is no group to change.
    #[error("supervision has ended")]
    Ended,
}

impl Group {
    pub(super) async fn change(&mut self, change: Change) -> Result<bool, MemberError> {
        match change {
            Change::Add(spec) => self.add(spec).map(|()| true),
            Change::Replace(spec) => self.replace(spec).await.map(|()| true),
            Change::Remove(name) => self.remove(&name).await.map(|()| true),
            Change::Stop(name) => self.stop_member(&name).await,
            Change::Start(name) => self.start_member(&name),
            Change::Scale(name, replicas) => self.scale(&name, replicas).await,
        }
    }

    fn no_such(&self, name: &str) -> MemberError {
        MemberError::NoSuchMember {
            group: self.name.clone(),
            member: name.to_owned(),
        }
    }

    /// The children of member `name` (one, or its template's instances), in order.
    fn children_of(&self, name: &str) -> Result<Vec<usize>, MemberError> {
        let name = self.local_name(name);
        let found: Vec<usize> = (0..self.children.len())
            .filter(|&i| self.children[i].member_name() == name || self.children[i].local == name)
            .collect();
        if found.is_empty() && !self.templates.iter().any(|t| t.name == name) {
            return Err(self.no_such(name));
        }
        Ok(found)
    }

    /// `name` without the group's prefix (`group/member` is accepted too).
    fn local_name<'a>(&self, name: &'a str) -> &'a str {
        name.strip_prefix(self.sink.service())
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(name)
    }

    /// The specs of the members as they are now (templates once), `skip` left out and
    /// `with` added: what validation looks at.
    fn specs_with(&self, skip: Option<&str>, with: &MemberSpec) -> Vec<MemberSpec> {
        let mut specs: Vec<MemberSpec> = Vec::new();
        for child in &self.children {
            let name = child.member_name();
            if Some(name) == skip || specs.iter().any(|s| s.name == name) {
                continue;
            }
            let mut spec = match &child.template {
                Some((template, _)) => self.templates.iter().find(|t| t.name == *template).cloned(),
                None => Some(child.spec.clone()),
            }
            .unwrap_or_else(|| child.spec.clone());
            // The group's own order is a dependency too (for cycles).
            for dep in child.deps.iter().filter(|d| d.implicit) {
                spec.depends_on.push(dep.dependency.clone());
            }
            specs.push(spec);
        }
        for template in &self.templates {
            if Some(template.name.as_str()) != skip
                && !specs.iter().any(|s| s.name == template.name)
            {
                specs.push(template.clone());
            }
        }
        specs.retain(|s| s.name != with.name);
        specs.push(with.clone());
        specs
    }

    fn validate(&self, skip: Option<&str>, spec: &MemberSpec) -> Result<(), MemberError> {
        let probe = crate::supervision::GroupSpec::new(self.name.clone());
        probe.validate_member(spec)?;
        probe.validate_dependencies(&self.specs_with(skip, spec))?;
        Ok(())
    }

    /// OTP's `start_child`: a new member, started as its dependencies allow.
    fn add(&mut self, spec: MemberSpec) -> Result<(), MemberError> {
        let taken = self
            .children
            .iter()
            .any(|c| c.member_name() == spec.name || c.local == spec.name)
            || self.templates.iter().any(|t| t.name == spec.name);
        if taken {
            return Err(GroupSpecError::DuplicateName {
                group: self.name.clone(),
                member: spec.name.clone(),
            }
            .into());
        }
        self.validate(None, &spec)?;
        for i in self.insert(spec, None) {
            self.children[i].sink.emit(EventKind::MemberAdded);
        }
        Ok(())
    }

    /// A new spec for a member: its old children stopped (with the strategy's members,
    /// dependants first), the new ones in their place; all start again as their
    /// dependencies allow.
    async fn replace(&mut self, spec: MemberSpec) -> Result<(), MemberError> {
        let old = self.children_of(&spec.name)?;
        self.validate(Some(&spec.name), &spec)?;
        let affected = self.stop_with_strategy(&old).await;
        let at = old.first().copied();
        for &i in &old {
            let child = &self.children[i];
            self.retiring
                .push((child.member_name().to_owned(), child.spec.clone()));
        }
        self.delete(&old);
        self.templates.retain(|t| t.name != spec.name);
        let at = at.map(|at| at.min(self.children.len()));
        let added = self.insert(spec, at);
        for &i in &added {
            self.children[i].sink.emit(EventKind::MemberReplaced);
        }
        let shift = added.len();
        for j in affected {
            // Indices after the replaced member moved by the difference.
            let j = if at.is_some_and(|at| j >= at) {
                j + shift - old.len()
            } else {
                j
            };
            self.bring_back(j);
        }
        Ok(())
    }

    /// OTP's `terminate_child` then `delete_child`: stopped and gone. Its dependants
    /// follow the strategy: stopped too under rest_for_one and one_for_all (then blocked:
    /// what they wait for was removed), left running under one_for_one.
    async fn remove(&mut self, name: &str) -> Result<(), MemberError> {
        let targets = self.children_of(name)?;
        let affected = self.stop_with_strategy(&targets).await;
        for &i in &targets {
            self.children[i].sink.emit(EventKind::MemberRemoved);
        }
        let local = self.local_name(name).to_owned();
        self.rewire_order(&local);
        let removed_before = |j: usize| targets.iter().filter(|&&t| t < j).count();
        let affected: Vec<usize> = affected
            .into_iter()
            .map(|j| j - removed_before(j))
            .collect();
        self.delete(&targets);
        self.templates.retain(|t| t.name != local);
        for j in affected {
            self.bring_back(j);
        }
        Ok(())
    }

    /// OTP's `terminate_child`: stopped and kept down (`Stopped`) until started again.
    /// Dependants follow the strategy as for [`Group::remove`], and wait for it.
    async fn stop_member(&mut self, name: &str) -> Result<bool, MemberError> {
        let targets = self.children_of(name)?;
        let affected = self.stop_with_strategy(&targets).await;
        for j in affected {
            self.bring_back(j);
        }
        Ok(!targets.is_empty())
    }

    /// OTP's `restart_child` of a stopped child: a member that is stopped, finished,
    /// failed or blocked starts again as its dependencies allow (a temporary one too: it
    /// was asked for). `false` when none of it needed starting.
    fn start_member(&mut self, name: &str) -> Result<bool, MemberError> {
        let targets = self.children_of(name)?;
        let mut started = false;
        for i in targets {
            let child = &mut self.children[i];
            if child.has_ended()
                || matches!(child.state(), ChildState::Stopped | ChildState::Blocked(..))
            {
                child.enter(ChildState::Idle, &self.registry);
                started = true;
            }
        }
        Ok(started)
    }

    /// Stop `targets` with the members the strategy stops with them (one_for_one: none;
    /// otherwise their dependants), dependants first; the strategy's members, to bring
    /// back afterwards.
    async fn stop_with_strategy(&mut self, targets: &[usize]) -> Vec<usize> {
        let affected = match self.strategy {
            crate::supervision::Strategy::OneForOne => Vec::new(),
            _ => self.dependants(targets),
        };
        let affected: Vec<usize> = affected
            .into_iter()
            .filter(|&j| {
                !matches!(
                    self.children[j].state(),
                    ChildState::Stopped | ChildState::Failed
                )
            })
            .collect();
        if let Some(&first) = targets.first() {
            self.announce_strategy(first, &affected);
        }
        let mut all = affected.clone();
        all.extend_from_slice(targets);
        self.stop_in_order(&all).await;
        affected
    }

    /// Take stopped children out of the group, with their rows.
    fn delete(&mut self, targets: &[usize]) {
        for &i in targets.iter().rev() {
            let child = self.children.remove(i);
            self.registry.board.remove(child.name());
        }
    }

    /// In a sequential group, what came after `removed` now follows what came before it.
    fn rewire_order(&mut self, removed: &str) {
        let before: Option<Dep> = self
            .children
            .iter()
            .find(|c| c.member_name() == removed)
            .and_then(|c| c.deps.iter().find(|d| d.implicit).cloned());
        for child in &mut self.children {
            if child.member_name() == removed {
                continue;
            }
            let Some(at) = child
                .deps
                .iter()
                .position(|d| d.implicit && d.dependency.service == removed)
            else {
                continue;
            };
            match &before {
                Some(dep)
                    if !child
                        .deps
                        .iter()
                        .any(|d| d.dependency.service == dep.dependency.service) =>
                {
                    child.deps[at] = dep.clone()
                }
                _ => {
                    child.deps.remove(at);
                }
            }
        }
    }

    /// Scale a member with replicas to `replicas` instances: new ones start as their
    /// dependencies allow; the highest-numbered go first when scaling down (stopped, no
    /// strategy: it is no failure). Between one and more, instance 1 is renamed
    /// (`NAME` and `NAME-1`); it keeps running.
    async fn scale(&mut self, name: &str, replicas: u32) -> Result<bool, MemberError> {
        let local = self.local_name(name).to_owned();
        let Some(t) = self.templates.iter().position(|t| t.name == local) else {
            return Err(match self.children_of(name) {
                Ok(_) => MemberError::NotReplicated {
                    group: self.name.clone(),
                    member: local,
                },
                Err(error) => error,
            });
        };
        let MemberKind::Replicas {
            replicas: current,
            make,
        } = self.templates[t].kind.clone()
        else {
            unreachable!("templates are members with replicas");
        };
        if current == replicas {
            return Ok(false);
        }
        let instances = self.children_of(&local)?;
        if replicas < current {
            let gone: Vec<usize> = instances[replicas as usize..].to_vec();
            self.stop_in_order(&gone).await;
            for &i in &gone {
                self.children[i].sink.emit(EventKind::MemberRemoved);
            }
            self.delete(&gone);
        }
        if let MemberKind::Replicas {
            replicas: count, ..
        } = &mut self.templates[t].kind
        {
            *count = replicas;
        }
        self.rename_instances(&local, replicas);
        if replicas > current {
            let after = self.children_of(&local)?.last().map(|&i| i + 1);
            let at = after.unwrap_or(self.children.len());
            let template = self.templates[t].clone();
            let deps = self.instance_deps(&local, &template);
            let added = self.insert_instances(&template, deps, &make, current + 1..=replicas, at);
            for i in added {
                self.children[i].sink.emit(EventKind::MemberAdded);
            }
        }
        Ok(true)
    }

    /// The dependencies the instances of `template` have (those of one running now, or
    /// the template's own when none is left).
    fn instance_deps(&self, local: &str, template: &MemberSpec) -> Vec<Dep> {
        self.children
            .iter()
            .find(|c| c.member_name() == local)
            .map(|c| c.deps.clone())
            .unwrap_or_else(|| {
                template
                    .depends_on
                    .iter()
                    .map(|d| Dep {
                        dependency: d.clone(),
                        implicit: false,
                    })
                    .collect()
            })
    }

    /// Give the instances of `template` the names for a count of `count`.
    fn rename_instances(&mut self, template: &str, count: u32) {
        for i in 0..self.children.len() {
            let Some((name, n)) = self.children[i].template.clone() else {
                continue;
            };
            if name != template {
                continue;
            }
            let local = instance_name(&name, n, count);
            if local != self.children[i].local {
                let sink = self.child_sink(&local);
                self.children[i].rename(local, sink, &self.registry);
                self.rewatch(i);
            }
        }
    }

    /// A renamed running child's watch reports under its new name: start it again.
    fn rewatch(&mut self, i: usize) {
        let sink = self.children[i].sink.clone();
        let (registry, msg_tx) = (self.registry.clone(), self.msg_tx.clone());
        if let ChildState::Running(running) = self.children[i].state_mut() {
            running.watch.abort();
            running.watch = super::tasks::spawn_watch(
                &running.active,
                sink,
                registry,
                msg_tx,
                running.generation,
            );
        }
    }
}
