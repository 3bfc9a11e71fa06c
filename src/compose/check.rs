//! The checks of a service file beyond its types: dependencies that exist, no cycle,
//! conditions a dependency can reach, programs that can be found. Each problem names the
//! key at fault, so a reader of the source file can point at its line.

use std::path::{Path, PathBuf};

use super::file::ServiceFile;
use crate::command::{launch, CommandSpec};
use crate::supervision::Condition;
use crate::supervision::{ExecFailure, RestartKind, StartError};

/// What is wrong with a service file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The file could not be read.
    #[error("cannot read the file")]
    Read(#[source] std::io::Error),
    /// It is not valid TOML (a duplicate service is a duplicate key).
    #[error("{0}")]
    Syntax(String),
    /// A key is unknown, a value has the wrong type, or a required key is missing.
    #[error("{0}")]
    Invalid(String),
    /// A service has a `name` key: its table key is its name.
    #[error("`name` is not a key of a service: the table's key is its name")]
    NameKey,
    /// `depends_on` names a service the file does not have.
    #[error("unknown service `{0}`")]
    UnknownDependency(String),
    /// Services depend on each other in a circle.
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// `healthy` on a service without a health check.
    #[error("`{0}` has no `health` check, so it never becomes healthy")]
    NoHealthCheck(String),
    /// `completed_successfully` on a permanent service.
    #[error("`{0}` is permanent (restarted whenever it ends), so it never completes; make it transient or temporary")]
    NeverCompletes(String),
    /// A `${VAR}` reference that cannot be resolved.
    #[error("{0}")]
    Variable(#[from] super::variables::VariableError),
    /// An env file that cannot be read, or a line of it that is not `KEY=VALUE`.
    #[error("env file {}: {problem}", path.display())]
    EnvFile {
        /// The env file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// `command` together with `program` or `args`.
    #[error("`command` and `{0}` together: give one or the other")]
    CommandConflict(&'static str),
    /// The program does not exist, or is not an executable file.
    #[error("program `{program}` {reason}")]
    Program {
        /// The program as written.
        program: PathBuf,
        /// What is wrong: not found in the `PATH` searched, not a file, not executable.
        reason: String,
    },
}

/// A [`Problem`] and the key it is at (`services.web.depends_on.db`), as a list of keys.
pub(crate) struct KeyedProblem {
    pub key: Vec<String>,
    pub problem: Problem,
}

fn at(key: &[&str], problem: Problem) -> KeyedProblem {
    KeyedProblem {
        key: key.iter().map(|k| (*k).to_owned()).collect(),
        problem,
    }
}

/// The dependency checks, in file order; the first problem found.
pub(crate) fn check_dependencies(file: &ServiceFile) -> Result<(), KeyedProblem> {
    for service in &file.services {
        for dependency in &service.depends_on {
            let key = [
                "services",
                service.name(),
                "depends_on",
                &dependency.service,
            ];
            let Some(target) = file.service(&dependency.service) else {
                return Err(at(
                    &key,
                    Problem::UnknownDependency(dependency.service.clone()),
                ));
            };
            match dependency.condition {
                Condition::Healthy if target.spec.health.is_none() => {
                    return Err(at(&key, Problem::NoHealthCheck(dependency.service.clone())));
                }
                Condition::CompletedSuccessfully
                    if target.spec.restart.kind == RestartKind::Permanent =>
                {
                    return Err(at(
                        &key,
                        Problem::NeverCompletes(dependency.service.clone()),
                    ));
                }
                _ => {}
            }
        }
    }
    if let Some(cycle) = find_cycle(file) {
        let key = ["services", &cycle[0], "depends_on", &cycle[1]];
        return Err(at(&key, Problem::Cycle(cycle.clone())));
    }
    Ok(())
}

/// A cycle as `[a, b, ..., a]`, if there is one (depth-first search, file order).
fn find_cycle(file: &ServiceFile) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        file: &ServiceFile,
        i: usize,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        marks[i] = Mark::OnPath;
        path.push(i);
        for dependency in &file.services[i].depends_on {
            let Some(j) = file
                .services
                .iter()
                .position(|s| s.name() == dependency.service)
            else {
                continue;
            };
            match marks[j] {
                Mark::OnPath => {
                    let from = path.iter().position(|&k| k == j).unwrap_or(0);
                    let mut cycle: Vec<String> = path[from..]
                        .iter()
                        .map(|&k| file.services[k].name().to_owned())
                        .collect();
                    cycle.push(file.services[j].name().to_owned());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(file, j, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[i] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; file.services.len()];
    for i in 0..file.services.len() {
        if marks[i] == Mark::New {
            if let Some(cycle) = visit(file, i, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

/// Every service's program can be executed: a path is an executable file; a bare name is
/// found in the service's `PATH` (its own `env.PATH`, else the supervisor's). Reads the
/// file system: call it from a blocking context.
pub(crate) fn check_programs(file: &ServiceFile) -> Result<(), KeyedProblem> {
    for service in &file.services {
        let spec = &service.spec;
        if let Err(reason) = find_program(spec) {
            return Err(at(
                &["services", service.name(), "program"],
                Problem::Program {
                    program: spec.program.clone(),
                    reason,
                },
            ));
        }
    }
    Ok(())
}

/// The file a service's program names, found exactly as its spawn finds it (the command
/// layer's `resolve_program`, on the environment the child would get), then checked to be
/// an executable file, so `check` reports what exec would refuse. `Err` says why it cannot
/// be executed. Reads the file system.
pub(crate) fn find_program(spec: &CommandSpec) -> Result<PathBuf, String> {
    let env = launch::environment(spec, &launch::RunAs::default(), &[]);
    let found =
        launch::resolve_program(&spec.program, spec.cwd.as_deref(), &env).map_err(|error| {
            match error {
                StartError::Exec {
                    reason: ExecFailure::NotFound { searched },
                    ..
                } => match searched.strip_prefix("PATH=") {
                    Some(path) => format!("not found in PATH ({path})"),
                    None => "does not exist".to_owned(),
                },
                other => other.to_string(),
            }
        })?;
    executable(&found).map(|()| found)
}

fn executable(path: &Path) -> Result<(), String> {
    let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".to_owned(),
        _ => format!("cannot be read ({e})"),
    })?;
    if !metadata.is_file() {
        return Err("is not a file".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if metadata.permissions().mode() & 0o111 == 0 {
            return Err("is not executable".into());
        }
    }
    Ok(())
}
