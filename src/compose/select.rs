//! Part of a file: the services a run asks for (`up web`: web and what it depends on) and
//! the profiles it turns on (`--profile debug`: the services of that profile, besides those
//! without a profile), as Docker Compose selects them.

use std::collections::BTreeSet;

use super::file::ServiceFile;

/// Which services of a file to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The services asked for by name, with what they depend on (directly or not); empty:
    /// every service whose profiles allow it.
    pub services: Vec<String>,
    /// The profiles turned on: a service with `profiles` runs only if one of them is here
    /// (or it is asked for by name); a service without runs always.
    pub profiles: Vec<String>,
}

/// A name a [`Selection`] asks for that the file does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no service called `{0}` in this file")]
pub struct UnknownService(pub String);

impl ServiceFile {
    /// The file with only the services `selection` runs, in file order. A service asked
    /// for by name runs whatever its profiles; so do the services a selected service
    /// depends on (Compose refuses a dependency whose profile is off: here asking for a
    /// service is asking for what it needs).
    pub fn select(&self, selection: &Selection) -> Result<ServiceFile, UnknownService> {
        let wanted: Vec<String> = if selection.services.is_empty() {
            self.services
                .iter()
                .filter(|s| {
                    s.profiles.is_empty()
                        || s.profiles.iter().any(|p| selection.profiles.contains(p))
                })
                .map(|s| s.name().to_owned())
                .collect()
        } else {
            selection.services.clone()
        };
        let keep = self.with_dependencies(&wanted)?;
        let mut selected = self.clone();
        selected.services.retain(|s| keep.contains(s.name()));
        Ok(selected)
    }

    /// `names` and every service they depend on, directly or not.
    fn with_dependencies(&self, names: &[String]) -> Result<BTreeSet<&str>, UnknownService> {
        let mut found = BTreeSet::new();
        let mut queue: Vec<String> = names.to_vec();
        while let Some(name) = queue.pop() {
            let service = self.service(&name).ok_or(UnknownService(name))?;
            if found.insert(service.name()) {
                queue.extend(service.depends_on.iter().map(|d| d.service.clone()));
            }
        }
        Ok(found)
    }

    /// Every profile the file's services name, sorted.
    pub fn profiles(&self) -> Vec<&str> {
        let all: BTreeSet<&str> = self
            .services
            .iter()
            .flat_map(|s| s.profiles.iter().map(String::as_str))
            .collect();
        all.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandSpec;
    use crate::compose::Service;
    use crate::supervision::{Condition, Dependency};

    fn file() -> ServiceFile {
        let service = |name: &str, deps: &[&str], profiles: &[&str]| {
            let mut service = Service::new(CommandSpec::new(name, "true"));
            service.depends_on = deps
                .iter()
                .map(|d| Dependency::new(*d, Condition::Ready))
                .collect();
            service.profiles = profiles.iter().map(|p| (*p).to_owned()).collect();
            service
        };
        ServiceFile {
            group: Default::default(),
            services: vec![
                service("db", &[], &[]),
                service("cache", &[], &[]),
                service("web", &["db"], &[]),
                service("debugger", &["web"], &["debug"]),
                service("tracer", &["debugger"], &["debug", "trace"]),
            ],
            ports: Default::default(),
        }
    }

    fn names(file: &ServiceFile) -> Vec<&str> {
        file.services.iter().map(|s| s.name()).collect()
    }

    #[test]
    fn profiles_turn_services_on() {
        let all = file();
        assert_eq!(
            names(&all.select(&Selection::default()).unwrap()),
            ["db", "cache", "web"]
        );
        let debug = Selection {
            profiles: vec!["trace".into()],
            ..Selection::default()
        };
        assert_eq!(
            names(&all.select(&debug).unwrap()),
            ["db", "cache", "web", "debugger", "tracer"],
            "tracer needs debugger, whose profile is off"
        );
        assert_eq!(all.profiles(), ["debug", "trace"]);
    }

    #[test]
    fn a_named_service_comes_with_what_it_depends_on() {
        let all = file();
        let web = Selection {
            services: vec!["web".into()],
            ..Selection::default()
        };
        assert_eq!(names(&all.select(&web).unwrap()), ["db", "web"]);
        let tracer = Selection {
            services: vec!["tracer".into()],
            ..Selection::default()
        };
        assert_eq!(
            names(&all.select(&tracer).unwrap()),
            ["db", "web", "debugger", "tracer"]
        );
        let missing = Selection {
            services: vec!["nope".into()],
            ..Selection::default()
        };
        assert_eq!(
            all.select(&missing).unwrap_err(),
            UnknownService("nope".into())
        );
    }
}
