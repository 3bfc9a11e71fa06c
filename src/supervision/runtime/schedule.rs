//! Which children may start now: each pending child's dependencies against the states of
//! the members they name. A child whose dependencies are met starts; one whose
//! dependencies may still get there waits; one whose dependency can no longer get there
//! without a request from outside is blocked (and starts by itself once that changes).

use std::collections::HashMap;

use tokio::time::Instant;

use super::child::{ChildState, Dep};
use super::group_loop::Group;
use crate::supervision::dependency::{Condition, Dependency, Graph};
use crate::supervision::event::EventKind;

/// What a pending child's dependencies say.
enum Verdict {
    Go,
    Wait(Vec<Dependency>),
    Blocked(Dependency, &'static str),
}

/// How far one member is towards a condition.
enum Progress {
    Reached,
    Pending,
    Never(&'static str),
}

impl Group {
    /// Children by the names dependencies use (an instance under its template's name).
    fn by_member_name(&self) -> HashMap<&str, Vec<usize>> {
        let mut names: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, child) in self.children.iter().enumerate() {
            names.entry(child.member_name()).or_default().push(i);
        }
        names
    }

    /// Start what may start, and mark what waits or is blocked (each change reported
    /// once). Backoff delays that are over end here too.
    pub(super) fn schedule(&mut self) {
        let now = Instant::now();
        for i in 0..self.children.len() {
            if self.children[i].wake_at().is_some_and(|until| until <= now) {
                self.children[i].enter(ChildState::Idle, &self.registry);
            }
        }
        if !self.children.iter().any(|c| c.is_pending()) {
            return;
        }
        // Blocked spreads along chains: repeat until nothing changes (at most once per
        // child, plus one pass to see it).
        for _ in 0..=self.children.len() {
            if !self.schedule_pass() {
                break;
            }
        }
    }

    /// One pass over the pending children (each judged on the states before the pass);
    /// whether anything changed.
    fn schedule_pass(&mut self) -> bool {
        let verdicts: Vec<(usize, Verdict)> = {
            let names = self.by_member_name();
            (0..self.children.len())
                .filter(|&i| self.children[i].is_pending())
                .map(|i| (i, self.verdict(i, &names)))
                .collect()
        };
        let mut changed = false;
        let mut starting = self
            .children
            .iter()
            .filter(|c| matches!(c.state(), ChildState::Starting(start) if !start.listening))
            .count();
        for (i, verdict) in verdicts {
            let child = &self.children[i];
            match verdict {
                // At the group's limit of starts at once: it goes when one of them is done.
                Verdict::Go if starting >= self.max_starting => {
                    if matches!(child.state(), ChildState::Idle) {
                        continue;
                    }
                    self.children[i].enter(ChildState::Idle, &self.registry);
                }
                Verdict::Go => {
                    starting += 1;
                    self.begin_start(i);
                }
                Verdict::Wait(on) => {
                    if matches!(child.state(), ChildState::Waiting(prev) if *prev == on) {
                        continue;
                    }
                    // A sequential group's own order is not news; an explicit wait is.
                    let explicit: Vec<Dependency> = on
                        .iter()
                        .filter(|d| {
                            child
                                .deps
                                .iter()
                                .any(|dep| !dep.implicit && dep.dependency == **d)
                        })
                        .cloned()
                        .collect();
                    if !explicit.is_empty() {
                        child.sink.emit(EventKind::Waiting { on: explicit });
                    }
                    self.children[i].enter(ChildState::Waiting(on), &self.registry);
                }
                Verdict::Blocked(dependency, reason) => {
                    if matches!(child.state(), ChildState::Blocked(prev, _) if *prev == dependency)
                    {
                        continue;
                    }
                    child.sink.emit(EventKind::Blocked {
                        dependency: Box::new(dependency.clone()),
                        reason,
                    });
                    self.children[i].enter(ChildState::Blocked(dependency, reason), &self.registry);
                }
            }
            changed = true;
        }
        changed
    }

    fn verdict(&self, i: usize, names: &HashMap<&str, Vec<usize>>) -> Verdict {
        let mut pending: Vec<Dependency> = Vec::new();
        for dep in &self.children[i].deps {
            let targets = names.get(dep.dependency.service.as_str());
            let Some(targets) = targets else {
                // A template scaled to zero has nothing to wait for; a removed member
                // can never get there.
                let scaled_to_zero = self
                    .templates
                    .iter()
                    .any(|t| t.name == dep.dependency.service);
                if dep.implicit || scaled_to_zero {
                    continue;
                }
                return Verdict::Blocked(dep.dependency.clone(), "was removed");
            };
            for &t in targets {
                match self.progress(t, dep) {
                    Progress::Reached => {}
                    Progress::Pending => {
                        if !pending.contains(&dep.dependency) {
                            pending.push(dep.dependency.clone());
                        }
                    }
                    Progress::Never(reason) => {
                        return Verdict::Blocked(dep.dependency.clone(), reason)
                    }
                }
            }
        }
        if pending.is_empty() {
            Verdict::Go
        } else {
            Verdict::Wait(pending)
        }
    }

    /// How far child `t` is towards what `dep` asks of it.
    fn progress(&self, t: usize, dep: &Dep) -> Progress {
        let state = self.children[t].state();
        if dep.implicit {
            // Settled: its start returned, whatever came of it.
            return match state {
                ChildState::Starting(start) if start.listening => Progress::Reached,
                ChildState::Idle
                | ChildState::Waiting(_)
                | ChildState::Starting(_)
                | ChildState::Backoff { .. }
                | ChildState::Stopping => Progress::Pending,
                _ => Progress::Reached,
            };
        }
        let reached = match (dep.dependency.condition, state) {
            (_, ChildState::Finished { ok: true }) => {
                dep.dependency.condition != Condition::Healthy
            }
            (Condition::CompletedSuccessfully, _) => false,
            (Condition::Started, ChildState::Starting(start)) => start.spawned || start.listening,
            (Condition::Ready, ChildState::Starting(start)) => start.listening,
            (Condition::Started | Condition::Ready, ChildState::Running(_)) => true,
            (Condition::Healthy, ChildState::Running(running)) => running.healthy,
            _ => false,
        };
        if reached {
            return Progress::Reached;
        }
        match state {
            ChildState::Finished { .. } => Progress::Never("ended"),
            ChildState::Failed => Progress::Never("failed"),
            ChildState::Stopped => Progress::Never("was stopped"),
            ChildState::Blocked(..) => Progress::Never("is blocked"),
            _ => Progress::Pending,
        }
    }

    /// The dependency graph over the children's names in the group (an instance's
    /// dependants depend on every instance of its template).
    fn graph(&self) -> Graph<'_> {
        let names = self.by_member_name();
        Graph::new(self.children.iter().map(|child| {
            let deps = child
                .deps
                .iter()
                .flat_map(|dep| {
                    names
                        .get(dep.dependency.service.as_str())
                        .into_iter()
                        .flatten()
                })
                .map(|&j| self.children[j].local.as_str())
                .collect();
            (child.local.as_str(), deps)
        }))
    }

    /// The children that depend on any of `members`, directly or not, in start order
    /// (`members` themselves excluded).
    pub(super) fn dependants(&self, members: &[usize]) -> Vec<usize> {
        let graph = self.graph();
        let mut found = std::collections::BTreeSet::new();
        for &i in members {
            found.extend(graph.dependants(&self.children[i].local));
        }
        (0..self.children.len())
            .filter(|&j| found.contains(self.children[j].local.as_str()) && !members.contains(&j))
            .collect()
    }

    /// `members` grouped by stop level, the dependants' level first; a level's members
    /// stop together.
    pub(super) fn stop_levels(&self, members: &[usize]) -> Vec<Vec<usize>> {
        let graph = self.graph();
        let levels = graph.levels();
        let level_of = |j: usize| {
            levels
                .get(self.children[j].local.as_str())
                .copied()
                .unwrap_or(0)
        };
        let deepest = members.iter().map(|&j| level_of(j)).max().unwrap_or(0);
        (0..=deepest)
            .rev()
            .map(|level| {
                members
                    .iter()
                    .copied()
                    .filter(|&j| level_of(j) == level)
                    .collect::<Vec<_>>()
            })
            .filter(|level: &Vec<usize>| !level.is_empty())
            .collect()
    }
}
