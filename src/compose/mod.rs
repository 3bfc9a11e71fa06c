//! Layer 7 (a file of services): a [`ServiceFile`] describes several programs run
//! together (each a [`CommandSpec`](crate::command::CommandSpec), plus `depends_on` and the
//! set's strategy, intensity and order), and a [`Stack`] runs it. The file is translated
//! into one [`GroupSpec`](crate::supervision::GroupSpec) ([`group_spec`]) and run by the
//! supervision runtime's group engine: independent services start in parallel, dependants
//! wait for their dependencies' conditions, the strategy restarts dependants, and
//! everything stops in reverse dependency order. Status rows and events are the runtime's
//! ([`MemberStatus`](crate::supervision::MemberStatus),
//! [`Event`](crate::supervision::Event)).
//!
//! The `running-process` command line (feature `cli`) is built on this module alone; a
//! Rust program loads the same file with one call (feature `toml`):
//!
//! ```no_run
//! # #[cfg(feature = "toml")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use running_process::compose::{ServiceFile, Stack};
//!
//! let stack = Stack::start(ServiceFile::load("running-process.toml").await?)?;
//! stack.ready().await.map_err(|outcome| outcome.to_string())?;
//! # Ok(()) }
//! ```
//!
//! # The file
//!
//! ```toml
//! [group]                      # optional
//! name = "dev"                 # default "services"
//! strategy = "rest_for_one"    # one_for_one (default), rest_for_one, one_for_all
//! intensity = { max_restarts = 10, period_ms = 300000 }
//! order = "parallel"           # or "sequential": each after the one before is ready
//!
//! [services.store]             # the table key is the service's name
//! program = "redis-server"     # every key of a CommandSpec, except `name`
//! args = ["--port", "6400", "--save", ""]
//! readiness = { kind = "tcp", address = "127.0.0.1:6400" }
//!
//! [services.web]
//! program = "python3"
//! args = ["-m", "http.server", "8000", "--bind", "127.0.0.1"]
//! depends_on = { store = "ready" }   # or ["store"]: ready is the default condition
//!
//! [services.api]
//! program = "/srv/api"                # takes its socket as fd 3 (LISTEN_FDS)
//! listeners = [{ kind = "tcp", name = "http", address = "127.0.0.1:8081" }]
//! start_on_demand = true              # started by the first connection
//!
//! [services.worker]
//! command = "python3 worker.py --port 90${RUNNING_PROCESS_INSTANCE}"  # a Procfile line
//! replicas = 3                        # worker-1, worker-2, worker-3
//! env_file = ["worker.env"]           # KEY=VALUE lines, below `env`
//! env = { DATABASE_URL = "${DATABASE_URL:-postgres://localhost/dev}" }
//! profiles = ["jobs"]                 # runs only with --profile jobs
//! memory_max = "256M"                 # quotas of each instance's whole tree (below)
//! cpu_max = "50%"
//! ```
//!
//! Relative paths (`cwd`, a `program` with a `/`, output files, env files) are relative to
//! the file's directory, which is also every service's default working directory.
//!
//! # The service file's own keys
//!
//! Besides the keys of a [`CommandSpec`](crate::command::CommandSpec), a service has:
//!
//! | key | meaning | Docker Compose |
//! |---|---|---|
//! | `depends_on` | a list of names (each `ready`) or a table of name = condition: `started`, `ready`, `healthy`, `completed_successfully` | the list form waits for `started` there |
//! | `command` | a command line, run as `sh -c 'exec LINE'`; refused together with `program` or `args` | a string `command` is split, not given to a shell |
//! | `replicas` | instances `NAME-1` .. `NAME-N` (`NAME` when 1), each with `RUNNING_PROCESS_INSTANCE=k` in its environment and `${RUNNING_PROCESS_INSTANCE}` replaced by `k` in every string of its spec (so each can take its own port, directory, log file); a dependency on `NAME` waits for every instance | `deploy.replicas`, without the per-instance number |
//! | `profiles` | the service runs only when one of these is turned on (`--profile`), or when it is asked for by name, or a selected service depends on it | a dependency whose profile is off is an error there |
//! | `env_file` | files of `KEY=VALUE` lines (comments, `export`, quotes as Compose reads them) feeding the environment, below `env` | the same |
//!
//! # Quotas and what each service uses
//!
//! Four keys of a [`CommandSpec`](crate::command::CommandSpec) bound an instance's whole
//! process tree, as systemd's directives of the same meaning do; they are written to the
//! instance's cgroup v2 before its process starts there (`CLONE_INTO_CGROUP`):
//!
//! | key | value | cgroup v2 file | systemd |
//! |---|---|---|---|
//! | `memory_max` | bytes, or `"512K"`, `"256M"`, `"1.5G"` (powers of 1024) | `memory.max`: past it the OOM killer ends a process; the event `out of memory (pid N): ... at memory_max = 256M` precedes the exit, and the restart policy applies | `MemoryMax=` |
//! | `memory_high` | as `memory_max` | `memory.high`: throttled and reclaimed above it, never killed for it | `MemoryHigh=` |
//! | `cpu_max` | `"50%"` of one core (`"200%"`: two) | `cpu.max` (`50000 100000`) | `CPUQuota=` |
//! | `pids_max` | tasks (processes and threads) | `pids.max` | `TasksMax=` |
//!
//! A quota is never ignored: a service that has one and gets no cgroup (`cgroup = false`,
//! `die_with_supervisor = false`, cgroup v2 not mounted or not writable, not Linux), or whose
//! cgroup lacks the controller (a hybrid layout keeps memory, cpu and pids in cgroup v1), is
//! refused at its start with [`QuotaError`](crate::command::QuotaError), which names the quota,
//! the controller and what the cgroup offers.
//!
//! `running-process status` shows each running service's CPU share (since the previous
//! `status`, or since it became ready) and memory; `status --json` carries
//! [`ResourceUsage`](crate::supervision::ResourceUsage) (`usage`: CPU time, share, memory, its
//! peak, tasks, and where they came from: the cgroup's `cpu.stat`, `memory.current`,
//! `memory.peak`, `pids.current`, or `/proc` for what a missing controller or a process group
//! cannot give).
//!
//! # Variables
//!
//! Every string value may use `${VAR}`, `$VAR`, `${VAR:-default}` (unset or empty),
//! `${VAR-default}` (unset), `${VAR:?message}` / `${VAR?message}` (an error with the
//! message) and `$$` (a literal `$`). Values come from the process environment, then from
//! the `.env` file beside the (first) file: Compose's precedence. An unset variable
//! without a default is refused at its `file:line:column`. `${RUNNING_PROCESS_INSTANCE}`
//! is kept for the instances of a service (above).
//!
//! # Several files and part of a file
//!
//! `ServiceFile::load_merged` (feature `toml`) reads several files as one, each merged key by key over
//! the ones before (tables merge, other values, lists included, are replaced); the
//! command line merges `running-process.override.toml` (`OVERRIDE_FILE_NAME`) over
//! `running-process.toml` when it exists and no `-f` is given, as Compose does.
//! [`ServiceFile::select`] keeps the services asked for by name with what they depend on,
//! or those whose profiles are on.
//!
//! # Applying an edited file
//!
//! [`Stack::apply`] changes a running set to match an edited file through the group
//! engine's dynamic membership. A service is unchanged only if its effective spec (after
//! variables, env files and instance numbers) is the same **and** each of its running
//! processes still runs the program its spec names: the executable digest verified when
//! it started equals the digest of the file on disk now. So a program rebuilt on disk is
//! a changed service, which no peer notices; an unchanged service keeps its pid and sees
//! no event. [`Stack::plan`] says what an apply would do without doing it.

mod apply;
mod check;
mod error;
pub mod export;
mod file;
mod limits;
#[cfg(feature = "toml")]
mod load;
mod ports;
mod select;
mod stack;
mod variables;
#[cfg(feature = "toml")]
mod watch;

pub use apply::{ApplyError, ApplyPlan, ServiceChange};
pub use check::Problem;
pub use error::FileError;
pub use file::{GroupSettings, Service, ServiceFile, DEFAULT_FILE_NAME};
pub use limits::{check_open_files, OpenFilesError};
#[cfg(feature = "toml")]
pub use load::{LoadOptions, DOTENV_FILE_NAME, OVERRIDE_FILE_NAME};
pub(crate) use ports::free_loopback_port;
pub use ports::{Ports, PORT_VARIABLE_PREFIX};
pub use select::{Selection, UnknownService};
#[cfg(feature = "toml")]
pub(crate) use stack::MakeSupervisor;
pub use stack::{group_spec, Stack};
pub use variables::{EnvFileError, VariableError, INSTANCE_VARIABLE};
#[cfg(feature = "toml")]
pub use watch::{Watch, WatchReport, WATCH_DEBOUNCE};

impl ServiceFile {
    /// The checks beyond the types, for a file read some other way than
    /// `ServiceFile::load` (feature `toml`, which runs them): dependencies exist, no cycle, reachable
    /// conditions, programs found. The error names the key, without a position. Reads the
    /// file system (the programs).
    #[allow(clippy::result_large_err)] // see `load.rs`
    pub fn check(&self, file: impl Into<std::path::PathBuf>) -> Result<(), FileError> {
        let file = file.into();
        check::check_dependencies(self)
            .and_then(|()| check::check_programs(self))
            .map_err(|p| FileError::unlocated(file, p.key, p.problem))
    }
}
