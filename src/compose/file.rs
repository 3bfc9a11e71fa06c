//! The service file's model: [`ServiceFile`], its [`Service`]s and their [`Dependency`]s, as
//! plain serde data. Reading it from TOML with locations is `load.rs`; checking it is
//! `check.rs`.

use std::path::{Path, PathBuf};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ports::Ports;
use crate::command::CommandSpec;
use crate::supervision::{Condition, Dependency, Intensity, StartOrder, Strategy};

/// The file name `running-process` looks for in the current directory.
pub const DEFAULT_FILE_NAME: &str = "running-process.toml";

/// A set of services run together: the `[group]` table and one `[services.NAME]` table per
/// service, in file order.
///
/// Every key a [`CommandSpec`] has is a key of a service's table (except `name`: the table
/// key is the name), plus `depends_on`. An unknown key anywhere is an error.
///
/// ```
/// # #[cfg(feature = "toml")] {
/// use running_process::compose::ServiceFile;
/// use running_process::supervision::Condition;
///
/// let file = ServiceFile::from_toml_str(r#"
///     [group]
///     strategy = "rest_for_one"
///
///     [services.store]
///     program = "redis-server"
///     args = ["--port", "6400", "--save", ""]
///     readiness = { kind = "tcp", address = "127.0.0.1:6400" }
///
///     [services.web]
///     program = "python3"
///     args = ["-m", "http.server", "8000", "--bind", "127.0.0.1"]
///     depends_on = { store = "ready" }
/// "#, "running-process.toml")?;
/// assert_eq!(file.services[1].depends_on[0].service, "store");
/// assert_eq!(file.services[1].depends_on[0].condition, Condition::Ready);
/// # }
/// # Ok::<(), running_process::compose::FileError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    /// How the services are run together.
    #[serde(default)]
    pub group: GroupSettings,
    /// The services, in file order.
    #[serde(with = "services_map")]
    pub services: Vec<Service>,
    /// The ports its `${port:KEY}` references were given when it was loaded (not a key of
    /// the file).
    #[serde(skip)]
    pub ports: Ports,
}

/// The `[group]` table: the set's name, restart strategy, restart intensity and start order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupSettings {
    /// The set's name (events, the detached supervisor's manifest). Default: `services`.
    pub name: String,
    /// Which services restart with a service that restarts (see [`Strategy`]): with
    /// `rest_for_one` the ones that depend on it, directly or not; with `one_for_all`
    /// every other one. They are stopped first (dependants first), and start again once
    /// their dependencies are ready again.
    pub strategy: Strategy,
    /// More than `max_restarts` restarts of services within `period_ms`, counted over the
    /// whole set, stop every service: the set gives up.
    pub intensity: Intensity,
    /// Whether services start in parallel where `depends_on` allows (`parallel`, the
    /// default here), or one by one in file order (`sequential`).
    pub order: StartOrder,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            name: "services".into(),
            strategy: Strategy::default(),
            intensity: Intensity::default(),
            // Docker Compose's order, not a library group's (sequential, as OTP's).
            order: StartOrder::Parallel,
        }
    }
}

/// One service: the command, what it waits for, and the service file's own keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// What to run (its `name` is the service's name).
    pub spec: CommandSpec,
    /// The services it starts after, and when.
    pub depends_on: Vec<Dependency>,
    /// How many instances run (`replicas`, default 1): `NAME-1` .. `NAME-N`, or `NAME`
    /// alone when 1, each with `RUNNING_PROCESS_INSTANCE` set.
    pub replicas: u32,
    /// The profiles it belongs to (`profiles`): without any, it always runs; with some,
    /// only when one of them is asked for.
    pub profiles: Vec<String>,
    /// Env files whose `KEY=VALUE` lines feed its environment (`env_file`), below its own
    /// `env` (which wins), relative to the file's directory.
    pub env_files: Vec<PathBuf>,
}

impl Service {
    /// A service running `spec`, one instance, no dependencies, no profiles.
    pub fn new(spec: CommandSpec) -> Service {
        Service {
            spec,
            depends_on: Vec::new(),
            replicas: 1,
            profiles: Vec::new(),
            env_files: Vec::new(),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The spec with the file's keys applied (`command` becomes `sh -c 'exec ...'`).
    pub(crate) fn from_keys(mut spec: CommandSpec, keys: FileKeys) -> Service {
        if let Some(command) = keys.command {
            spec.program = PathBuf::from("sh");
            spec.args = vec!["-c".into(), format!("exec {command}")];
        }
        Service {
            spec,
            depends_on: keys.depends_on,
            replicas: keys.replicas,
            profiles: keys.profiles,
            env_files: keys.env_file,
        }
    }
}

/// The keys of a service's table that are the service file's, not its `CommandSpec`'s.
pub(crate) const FILE_KEYS: [&str; 5] =
    ["depends_on", "replicas", "profiles", "env_file", "command"];

/// The values of [`FILE_KEYS`] in a service's table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileKeys {
    #[serde(default, deserialize_with = "deserialize_depends_on")]
    pub depends_on: Vec<Dependency>,
    #[serde(default = "one", deserialize_with = "at_least_one")]
    pub replicas: u32,
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub env_file: Vec<PathBuf>,
    #[serde(default)]
    pub command: Option<String>,
}

fn one() -> u32 {
    1
}

fn at_least_one<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    match u32::deserialize(deserializer)? {
        0 => Err(D::Error::custom(
            "replicas must be at least 1 (`running-process scale NAME=0` stops them all)",
        )),
        n => Ok(n),
    }
}

/// A `command` with a `program` or `args` beside it: which key is in the way.
pub(crate) fn command_conflict(has: impl Fn(&str) -> bool) -> Option<&'static str> {
    if !has("command") {
        return None;
    }
    ["program", "args"].into_iter().find(|key| has(key))
}

/// `depends_on = ["a", "b"]` (each [`Condition::Ready`]) or `depends_on = { a = "healthy" }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum DependsOn {
    List(Vec<String>),
    Table(std::collections::BTreeMap<String, Condition>),
}

/// Read a `depends_on` value (both forms) into dependencies, in a stable order.
pub(crate) fn deserialize_depends_on<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Dependency>, D::Error> {
    let parsed = DependsOn::deserialize(deserializer).map_err(|_| {
        D::Error::custom(
            "depends_on must be a list of service names or a table of name = condition \
             (started, ready, healthy, completed_successfully)",
        )
    })?;
    Ok(match parsed {
        DependsOn::List(names) => names
            .into_iter()
            .map(|service| Dependency {
                service,
                condition: Condition::default(),
            })
            .collect(),
        DependsOn::Table(table) => table
            .into_iter()
            .map(|(service, condition)| Dependency { service, condition })
            .collect(),
    })
}

impl ServiceFile {
    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name() == name)
    }

    /// The service a running member called `name` is an instance of: the service of that
    /// name, else, for `NAME-k` (instance `k` of a service with replicas), `NAME`. Events
    /// and status rows name instances.
    pub fn service_of(&self, name: &str) -> Option<&Service> {
        self.service(name).or_else(|| {
            let (service, number) = name.rsplit_once('-')?;
            number.parse::<u32>().ok()?;
            self.service(service)
        })
    }

    /// Resolve relative paths against `base` (the file's directory), as Compose does: a
    /// service's `cwd` (default: `base` itself), a `program` written with a `/`, and output
    /// files (relative to the service's `cwd`).
    pub fn resolve_paths(&mut self, base: &Path) {
        for service in &mut self.services {
            let spec = &mut service.spec;
            let cwd = match spec.cwd.take() {
                Some(dir) if dir.is_relative() => base.join(dir),
                Some(dir) => dir,
                None => base.to_path_buf(),
            };
            if spec.program.is_relative() && spec.program.components().count() > 1 {
                spec.program = cwd.join(&spec.program);
            }
            for output in [&mut spec.stdout, &mut spec.stderr] {
                if let crate::command::Output::File { path, .. } = output {
                    if path.is_relative() {
                        *path = cwd.join(&*path);
                    }
                }
            }
            spec.cwd = Some(cwd);
            for env_file in &mut service.env_files {
                if env_file.is_relative() {
                    *env_file = base.join(&*env_file);
                }
            }
        }
    }
}

/// `services` as a table of name -> service table, kept in file order (serde formats that
/// keep map order, as JSON, keep it; TOML is read by `load.rs`, which sorts by position).
mod services_map {
    use super::*;
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde_json::{Map, Value};

    pub fn serialize<S: Serializer>(
        services: &[Service],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(services.len()))?;
        for service in services {
            let mut body = match serde_json::to_value(&service.spec) {
                Ok(Value::Object(body)) => body,
                Ok(_) => return Err(serde::ser::Error::custom("a spec is a table")),
                Err(error) => return Err(serde::ser::Error::custom(error)),
            };
            body.remove("name");
            if service.replicas != 1 {
                body.insert("replicas".into(), Value::from(service.replicas));
            }
            if !service.profiles.is_empty() {
                body.insert("profiles".into(), Value::from(service.profiles.clone()));
            }
            if !service.env_files.is_empty() {
                let files: Vec<String> = service
                    .env_files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                body.insert("env_file".into(), Value::from(files));
            }
            if !service.depends_on.is_empty() {
                let deps: Map<String, Value> = service
                    .depends_on
                    .iter()
                    .map(|d| (d.service.clone(), Value::String(d.condition.to_string())))
                    .collect();
                body.insert("depends_on".into(), Value::Object(deps));
            }
            map.serialize_entry(service.name(), &body)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Service>, D::Error> {
        struct Services;
        impl<'de> Visitor<'de> for Services {
            type Value = Vec<Service>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of services")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Service>, A::Error> {
                let mut services: Vec<Service> = Vec::new();
                while let Some((name, body)) = map.next_entry::<String, Map<String, Value>>()? {
                    if services.iter().any(|s| s.name() == name) {
                        return Err(A::Error::custom(format!(
                            "two services are called `{name}`"
                        )));
                    }
                    services.push(service_from(name, body).map_err(A::Error::custom)?);
                }
                Ok(services)
            }
        }
        deserializer.deserialize_map(Services)
    }

    fn service_from(name: String, mut body: Map<String, Value>) -> Result<Service, String> {
        if body.contains_key("name") {
            return Err(format!(
                "services.{name}: `name` is not a key here: the table's key is the name"
            ));
        }
        if let Some(key) = command_conflict(|key| body.contains_key(key)) {
            return Err(format!(
                "services.{name}: `command` and `{key}` together: give one or the other"
            ));
        }
        let keys: Map<String, Value> = FILE_KEYS
            .iter()
            .filter_map(|key| body.remove(*key).map(|value| ((*key).to_owned(), value)))
            .collect();
        let keys: FileKeys = serde_json::from_value(Value::Object(keys))
            .map_err(|e| format!("services.{name}: {e}"))?;
        body.insert("name".into(), Value::String(name.clone()));
        if keys.command.is_some() {
            body.insert("program".into(), Value::String("sh".into()));
        }
        let spec: CommandSpec = serde_json::from_value(Value::Object(body))
            .map_err(|e| format!("services.{name}: {e}"))?;
        Ok(Service::from_keys(spec, keys))
    }
}
