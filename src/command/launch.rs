//! From a [`CommandSpec`] to a [`SpawnPlan`]: the program resolved on `PATH`, the user and
//! groups looked up, the environment assembled; and from a failed spawn to a
//! [`StartError`] that names the program and the reason.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::spec::{CommandSpec, GroupRef, Limit, UserRef};
use super::spec_error::{QuotaError, SpecError};
use crate::platform::users::{self, UserEntry};
use crate::platform::{
    exec_errno, CgroupLimit, Credentials, ExecErrno, LimitRefused, LimitResource, ResourceLimit,
    SpawnError, SpawnPlan, SpawnStage, Stdio, TreePlan,
};
use crate::supervision::{ExecFailure, StartError};

/// The user a service runs as, once looked up.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunAs {
    /// What the child switches to (`None`: runs as the supervisor).
    pub credentials: Option<Credentials>,
    /// The service's user id, for ownership checks (the supervisor's when not switching).
    pub uid: Option<u32>,
    /// The service's primary group id.
    pub gid: Option<u32>,
    /// Variables a login would set (`HOME`, `USER`, `LOGNAME`, `SHELL`).
    pub login_env: Vec<(String, String)>,
}

/// Whether [`resolve_user`] must read the user database (else it blocks on nothing and
/// needs no trip to the blocking pool).
pub(crate) fn needs_user_lookup(spec: &CommandSpec) -> bool {
    spec.user.is_some() || spec.group.is_some() || spec.supplementary_groups.is_some()
}

/// Look up the spec's user and groups. Blocking (user database): the blocking pool, unless
/// [`needs_user_lookup`] says there is nothing to look up.
pub(crate) fn resolve_user(spec: &CommandSpec) -> Result<RunAs, StartError> {
    if !needs_user_lookup(spec) {
        return Ok(RunAs {
            uid: crate::platform::current_uid(),
            ..RunAs::default()
        });
    }
    if !users::SWITCHING {
        return Err(SpecError::NeedsUnix("user and group switching").into());
    }
    resolve_from_database(spec)
}

/// [`resolve_user`] where users can be switched: the user database.
fn resolve_from_database(spec: &CommandSpec) -> Result<RunAs, StartError> {
    let lookup = |what: String, source: std::io::Error| SpecError::Lookup { what, source };
    let user = match &spec.user {
        None => None,
        Some(UserRef::Name(name)) => Some(
            users::user_by_name(name)
                .map_err(|e| lookup(format!("user {name:?}"), e))?
                .ok_or_else(|| SpecError::UnknownUser(name.clone()))?,
        ),
        Some(UserRef::Id(uid)) => Some(
            users::user_by_id(*uid)
                .map_err(|e| lookup(format!("uid {uid}"), e))?
                .unwrap_or(UserEntry {
                    name: String::new(),
                    uid: *uid,
                    gid: *uid,
                    home: PathBuf::from("/"),
                    shell: PathBuf::from("/bin/sh"),
                }),
        ),
    };
    let gid = match &spec.group {
        Some(group) => Some(group_id(group)?),
        None => user.as_ref().map(|u| u.gid),
    };
    let groups = match (&spec.supplementary_groups, &user) {
        (Some(list), _) => Some(list.iter().map(group_id).collect::<Result<Vec<_>, _>>()?),
        (None, Some(user)) if !user.name.is_empty() => Some(
            users::groups_of(&user.name, gid.unwrap_or(user.gid))
                .map_err(|e| lookup(format!("the groups of {:?}", user.name), e))?,
        ),
        // A numeric user with no entry, or only a group given: the group alone.
        (None, Some(_)) => gid.map(|g| vec![g]),
        (None, None) => None,
    };
    let mut login_env = Vec::new();
    if let Some(user) = &user {
        login_env.push(("HOME".into(), user.home.display().to_string()));
        login_env.push(("SHELL".into(), user.shell.display().to_string()));
        if !user.name.is_empty() {
            login_env.push(("USER".into(), user.name.clone()));
            login_env.push(("LOGNAME".into(), user.name.clone()));
        }
    }
    Ok(RunAs {
        credentials: Some(Credentials {
            uid: user.as_ref().map(|u| u.uid),
            gid,
            groups,
        }),
        uid: user
            .as_ref()
            .map(|u| u.uid)
            .or_else(crate::platform::current_uid),
        gid,
        login_env,
    })
}

fn group_id(group: &GroupRef) -> Result<u32, StartError> {
    match group {
        GroupRef::Id(gid) => Ok(*gid),
        GroupRef::Name(name) => users::group_by_name(name)
            .map_err(|source| SpecError::Lookup {
                what: format!("group {name:?}"),
                source,
            })?
            .ok_or_else(|| SpecError::UnknownGroup(name.clone()).into()),
    }
}

/// The child's whole environment: the supervisor's (unless cleared; never its own
/// socket-activation variables `LISTEN_*`, which are not for the child), the login
/// variables of a switched user, the spec's, then the supervisor's own additions
/// (`NOTIFY_SOCKET`), each layer overriding the one before. The platform adds `LISTEN_*`
/// of the spawn when the spec has listeners.
pub(crate) fn environment(
    spec: &CommandSpec,
    run_as: &RunAs,
    extra: &[(String, String)],
) -> Vec<(OsString, OsString)> {
    let mut env: std::collections::BTreeMap<OsString, OsString> = if spec.env_clear {
        Default::default()
    } else {
        std::env::vars_os()
            .filter(|(key, _)| !INHERITED_ONLY_BY_US.iter().any(|v| key == v))
            .collect()
    };
    let pairs = |list: &[(String, String)]| -> Vec<(String, String)> { list.to_vec() };
    let layers = pairs(&run_as.login_env)
        .into_iter()
        .chain(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())))
        .chain(pairs(extra));
    for (key, value) in layers {
        env.insert(key.into(), value.into());
    }
    env.into_iter().collect()
}

/// The supervisor's own socket activation (it was started with `LISTEN_FDS`): meant for
/// the supervisor's process, and wrong for any child (its `LISTEN_PID` names us).
const INHERITED_ONLY_BY_US: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Where the program is: a path with a `/` as given (relative to the working directory),
/// else the first executable file of that name on the child's `PATH`.
pub(crate) fn resolve_program(
    program: &Path,
    cwd: Option<&Path>,
    env: &[(OsString, OsString)],
) -> Result<PathBuf, StartError> {
    let not_found = |searched: String| StartError::Exec {
        program: program.to_owned(),
        reason: ExecFailure::NotFound { searched },
    };
    if program.as_os_str().is_empty() {
        return Err(SpecError::EmptyProgram.into());
    }
    if program.components().count() > 1 || program.is_absolute() {
        let resolved = match (program.is_absolute(), cwd) {
            (false, Some(dir)) => dir.join(program),
            _ => program.to_owned(),
        };
        if !resolved.exists() {
            return Err(StartError::Exec {
                program: resolved.clone(),
                reason: ExecFailure::NotFound {
                    searched: resolved.display().to_string(),
                },
            });
        }
        return Ok(resolved);
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if crate::platform::is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(not_found(format!("PATH={}", path.to_string_lossy())))
}

/// The spec's resource limits, for the platform.
pub(crate) fn limits(spec: &CommandSpec) -> Vec<ResourceLimit> {
    let one = |resource, limit: Option<Limit>| {
        limit.map(|l| ResourceLimit {
            resource,
            soft: l.soft,
            hard: l.hard,
        })
    };
    // A supervisor that raised its own soft limit (`raise_open_files_limit`) gives its
    // children the one it started with, unless the spec sets one (Linux: elsewhere a
    // spawn applies no limits).
    let inherited = spec
        .limits
        .open_files
        .is_none()
        .then(crate::platform::open_files_for_children)
        .flatten()
        .map(|(soft, hard)| ResourceLimit {
            resource: LimitResource::OpenFiles,
            soft,
            hard,
        });
    [
        inherited,
        one(LimitResource::OpenFiles, spec.limits.open_files),
        one(LimitResource::Processes, spec.limits.processes),
        one(LimitResource::CoreSize, spec.limits.core_size),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// What the platform needs to start the spec's program.
pub(crate) struct Launch {
    /// The resolved program.
    pub program: PathBuf,
    /// The plan (its streams still to be set by the caller).
    pub plan: SpawnPlan,
}

/// Build the plan for `spec`: blocking (file system, user database), for the blocking pool.
pub(crate) fn plan(
    spec: &CommandSpec,
    run_as: &RunAs,
    extra_env: &[(String, String)],
    stdout: Stdio,
    stderr: Stdio,
) -> Result<Launch, StartError> {
    let env = environment(spec, run_as, extra_env);
    let program = resolve_program(&spec.program, spec.cwd.as_deref(), &env)?;
    let plan = SpawnPlan {
        program: program.clone(),
        arg0: spec.program.clone().into_os_string(),
        args: spec.args.iter().map(OsString::from).collect(),
        env,
        cwd: spec.cwd.clone(),
        stdin: Stdio::Null,
        stdout,
        stderr,
        process_group: true,
        credentials: run_as.credentials.clone(),
        umask: spec.umask.map(|u| u.0),
        limits: limits(spec),
        die_with_parent: spec.die_with_supervisor,
        ..SpawnPlan::default()
    };
    Ok(Launch { program, plan })
}

/// [`plan`] and the instance's [`TreePlan`] (with `cgroup`, where the machine tracks
/// trees by cgroup v2): everything of a start that touches the file system, for one trip
/// to the blocking pool. A cgroup that cannot be created there is
/// [`StartError::Cgroup`], never a quiet process group.
pub(crate) fn plan_with_tree(
    spec: &CommandSpec,
    run_as: &RunAs,
    extra_env: &[(String, String)],
    stdout: Stdio,
    stderr: Stdio,
    cgroup: bool,
) -> Result<(Launch, TreePlan), StartError> {
    let launch = plan(spec, run_as, extra_env, stdout, stderr)?;
    let limits = quota_limits(spec);
    if let Some(first) = limits.first() {
        refuse_without_cgroup(spec, first.quota)?;
    }
    let tree = TreePlan::new(&spec.name, cgroup).map_err(|error| StartError::Cgroup {
        parent: error.path,
        source: error.source,
    })?;
    tree.set_limits(&limits).map_err(refused_quota)?;
    Ok((launch, tree))
}

/// The start error of a quota the instance's cgroup refused.
fn refused_quota(refused: LimitRefused) -> StartError {
    StartError::from(SpecError::Quota(match refused {
        LimitRefused::NoCgroup { limit } => QuotaError::NoCgroup {
            quota: limit.quota,
            reason: if crate::platform::HAS_CGROUPS {
                "none could be created (cgroup v2 is not mounted, or the supervisor's cgroup is not writable: root or a delegated subtree is needed)".into()
            } else {
                "cgroups are Linux's".into()
            },
        },
        LimitRefused::NoController {
            limit,
            path,
            offered,
        } => QuotaError::NoController {
            quota: limit.quota,
            controller: limit.controller,
            path,
            offered,
        },
        LimitRefused::Write {
            limit,
            path,
            source,
        } => QuotaError::Write {
            quota: limit.quota,
            value: limit.value,
            path,
            source,
        },
    }))
}

/// The spec's quotas as cgroup v2 files and values, in a fixed order.
pub(crate) fn quota_limits(spec: &CommandSpec) -> Vec<CgroupLimit> {
    let mut limits = Vec::new();
    let mut add = |quota, controller, file, value: Option<String>| {
        if let Some(value) = value {
            limits.push(CgroupLimit {
                quota,
                controller,
                file,
                value,
            });
        }
    };
    add(
        "memory_high",
        "memory",
        "memory.high",
        spec.memory_high.map(|b| b.0.to_string()),
    );
    add(
        "memory_max",
        "memory",
        "memory.max",
        spec.memory_max.map(|b| b.0.to_string()),
    );
    add(
        "cpu_max",
        "cpu",
        "cpu.max",
        spec.cpu_max.map(|q| q.cpu_max_line()),
    );
    add(
        "pids_max",
        "pids",
        "pids.max",
        spec.pids_max.map(|n| n.to_string()),
    );
    limits
}

/// Quotas need the instance's own cgroup: refuse the settings that rule it out.
fn refuse_without_cgroup(spec: &CommandSpec, quota: &'static str) -> Result<(), StartError> {
    let reason = if !spec.cgroup {
        "the service says cgroup = false"
    } else if !spec.die_with_supervisor {
        "a service that outlives the supervisor (die_with_supervisor = false) gets none"
    } else {
        return Ok(());
    };
    Err(SpecError::Quota(QuotaError::NoCgroup {
        quota,
        reason: reason.into(),
    })
    .into())
}

/// The [`StartError`] for a failed spawn of `program`: execution failures and failures
/// while preparing the child are permanent and say what failed; the rest may heal.
pub(crate) fn start_error(program: &Path, error: SpawnError) -> StartError {
    match error.stage {
        SpawnStage::Exec => {
            let reason = match exec_errno(&error.error) {
                // The program is there: its `#!` interpreter is not.
                ExecErrno::NotFound if program.exists() => ExecFailure::BadInterpreter,
                ExecErrno::NotFound => ExecFailure::NotFound {
                    searched: program.display().to_string(),
                },
                ExecErrno::PermissionDenied => ExecFailure::PermissionDenied,
                ExecErrno::BadFormat => ExecFailure::BadFormat,
                ExecErrno::Other => ExecFailure::Other(error.error),
            };
            StartError::Exec {
                program: program.to_owned(),
                reason,
            }
        }
        SpawnStage::Prepare | SpawnStage::Fork => StartError::Spawn(error.error),
        stage => StartError::Setup {
            program: program.to_owned(),
            stage: stage.as_str(),
            source: error.error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix paths and `PATH` syntax (the lookup is the same on Windows, its spelling not).
    #[cfg(unix)]
    #[test]
    fn programs_are_found_on_the_childs_path_or_named_clearly() {
        let env = vec![(
            OsString::from("PATH"),
            OsString::from("/nonexistent:/bin:/usr/bin"),
        )];
        let sh = resolve_program(Path::new("sh"), None, &env).unwrap();
        assert!(sh.ends_with("sh") && sh.is_absolute(), "{sh:?}");
        let error = resolve_program(Path::new("no-such-program-xyz"), None, &env).unwrap_err();
        assert!(error.is_permanent());
        let message = crate::report::Chain(&error).to_string();
        assert!(message.contains("no-such-program-xyz"), "{message}");
        assert!(message.contains("/nonexistent:/bin:/usr/bin"), "{message}");
        let error = resolve_program(Path::new("/no/such/dir/prog"), None, &env).unwrap_err();
        assert!(error.to_string().contains("/no/such/dir/prog"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tool"), b"").unwrap();
        assert_eq!(
            resolve_program(Path::new("./tool"), Some(dir.path()), &env).unwrap(),
            dir.path().join("./tool")
        );
    }

    #[test]
    fn the_spec_environment_overrides_the_login_variables() {
        let spec = CommandSpec::new("svc", "true")
            .env("HOME", "/custom")
            .env("ONLY", "spec");
        let mut spec = spec;
        spec.env_clear = true;
        let run_as = RunAs {
            login_env: vec![
                ("HOME".into(), "/home/u".into()),
                ("USER".into(), "u".into()),
            ],
            ..RunAs::default()
        };
        let env = environment(&spec, &run_as, &[("NOTIFY_SOCKET".into(), "/x".into())]);
        let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("HOME"), Some("/custom".into()));
        assert_eq!(get("USER"), Some("u".into()));
        assert_eq!(get("ONLY"), Some("spec".into()));
        assert_eq!(get("NOTIFY_SOCKET"), Some("/x".into()));
        assert_eq!(get("PATH"), None);
    }
}
