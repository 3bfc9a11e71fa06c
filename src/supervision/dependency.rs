//! Dependencies between the members of a group: what a member waits for before it starts
//! ([`Dependency`], [`Condition`]), and the graph facts the runtime derives from them (stop
//! levels, dependants, cycles). Pure: no processes, no tasks.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What a dependency must have reached before its dependant starts (the names of Docker
/// Compose's conditions, without the `service_` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Its process has been spawned (or adopted), ready or not.
    Started,
    /// It passed its readiness check (or waits in
    /// [`MemberState::Listening`](super::MemberState::Listening): clients can connect).
    /// The default, and OTP's order: each child starts once the one before it returned
    /// from its start.
    #[default]
    Ready,
    /// It is ready and its health check passed (it must have a
    /// [`HealthPolicy`](super::HealthPolicy)).
    Healthy,
    /// It ran to completion with exit status 0 (a one-shot task: its restart kind must be
    /// transient or temporary).
    CompletedSuccessfully,
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Condition::Started => "started",
            Condition::Ready => "ready",
            Condition::Healthy => "healthy",
            Condition::CompletedSuccessfully => "completed_successfully",
        })
    }
}

/// A member another one waits for, and what it waits for.
///
/// A dependency on a member with replicas waits for every instance of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dependency {
    /// The member waited for (its name within the group).
    pub service: String,
    /// What it must have reached.
    pub condition: Condition,
}

impl Dependency {
    /// `service` must reach `condition`.
    pub fn new(service: impl Into<String>, condition: Condition) -> Self {
        Dependency {
            service: service.into(),
            condition,
        }
    }
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.service, self.condition)
    }
}

/// In which order the members of a group start when nothing else says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartOrder {
    /// One by one, each once the one before it is ready (OTP's order): every member
    /// depends on the one added before it, besides its own dependencies. The default for
    /// a [`GroupSpec`](super::GroupSpec).
    #[default]
    Sequential,
    /// Together: a member waits only for its own dependencies (Docker Compose's order).
    Parallel,
}

/// The dependency graph of a group, by member name: each name with the names it depends
/// on. A name nothing is called (a dependency on a removed member) has no entry.
pub(crate) struct Graph<'a> {
    edges: BTreeMap<&'a str, Vec<&'a str>>,
}

impl<'a> Graph<'a> {
    /// `members`: each name with the names it depends on.
    pub(crate) fn new(members: impl IntoIterator<Item = (&'a str, Vec<&'a str>)>) -> Self {
        Graph {
            edges: members.into_iter().collect(),
        }
    }

    /// A cycle, as the names along it (first name repeated at the end), if there is one.
    pub(crate) fn cycle(&self) -> Option<Vec<String>> {
        // 0 unseen, 1 on the current path, 2 done.
        let mut mark: BTreeMap<&str, u8> = BTreeMap::new();
        let mut path: Vec<&str> = Vec::new();
        for &start in self.edges.keys() {
            if let Some(cycle) = self.visit(start, &mut mark, &mut path) {
                return Some(cycle);
            }
        }
        None
    }

    fn visit(
        &self,
        node: &'a str,
        mark: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match mark.get(node) {
            Some(2) => return None,
            Some(1) => {
                let from = path.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle: Vec<String> = path[from..].iter().map(|n| n.to_string()).collect();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            _ => {}
        }
        mark.insert(node, 1);
        path.push(node);
        for &next in self.edges.get(node).into_iter().flatten() {
            if self.edges.contains_key(next) {
                if let Some(cycle) = self.visit(next, mark, path) {
                    return Some(cycle);
                }
            }
        }
        path.pop();
        mark.insert(node, 2);
        None
    }

    /// Each member's stop level: 0 without dependencies, else one more than its deepest
    /// dependency's. Dependants stop first (the highest level first). A cycle (which
    /// validation refuses) stops growing after as many rounds as there are members.
    pub(crate) fn levels(&self) -> BTreeMap<&'a str, usize> {
        let mut level: BTreeMap<&str, usize> = self.edges.keys().map(|&n| (n, 0)).collect();
        for _ in 0..self.edges.len() {
            let mut changed = false;
            for (&node, deps) in &self.edges {
                let deepest = deps
                    .iter()
                    .filter_map(|d| level.get(d).map(|l| l + 1))
                    .max()
                    .unwrap_or(0);
                if deepest > level[node] {
                    level.insert(node, deepest);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        level
    }

    /// The members that depend on `name`, directly or through others.
    pub(crate) fn dependants(&self, name: &str) -> BTreeSet<&'a str> {
        let mut found = BTreeSet::new();
        let mut queue = vec![name];
        while let Some(target) = queue.pop() {
            for (&node, deps) in &self.edges {
                if deps.contains(&target) && node != name && found.insert(node) {
                    queue.push(node);
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diamond() -> Graph<'static> {
        Graph::new([
            ("db", vec![]),
            ("cache", vec!["db"]),
            ("api", vec!["db"]),
            ("web", vec!["cache", "api"]),
            ("lone", vec![]),
        ])
    }

    #[test]
    fn levels_put_dependants_above_what_they_depend_on() {
        let levels = diamond().levels();
        assert_eq!(levels["db"], 0);
        assert_eq!(levels["cache"], 1);
        assert_eq!(levels["api"], 1);
        assert_eq!(levels["web"], 2);
        assert_eq!(levels["lone"], 0);
    }

    #[test]
    fn dependants_are_transitive_and_exclude_the_member() {
        let found: Vec<&str> = diamond().dependants("db").into_iter().collect();
        assert_eq!(found, ["api", "cache", "web"]);
        assert!(diamond().dependants("web").is_empty());
    }

    #[test]
    fn a_cycle_is_found_and_named() {
        assert_eq!(diamond().cycle(), None);
        let cyclic = Graph::new([("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"])]);
        assert_eq!(cyclic.cycle().unwrap(), ["a", "b", "c", "a"]);
        // A dependency on a member the graph does not have is no cycle.
        assert_eq!(Graph::new([("a", vec!["gone"])]).cycle(), None);
    }
}
