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
//! ```
//!
//! Relative paths (`cwd`, a `program` with a `/`, output files) are relative to the file's
//! directory, which is also every service's default working directory.

mod apply;
mod check;
mod error;
pub mod export;
mod file;
#[cfg(feature = "toml")]
mod load;
mod select;
mod stack;
mod variables;

pub use apply::{ApplyError, ApplyPlan, ServiceChange};
pub use check::Problem;
pub use error::FileError;
pub use file::{
    Condition, Dependency, GroupSettings, Service, ServiceFile, StartOrder, DEFAULT_FILE_NAME,
};
#[cfg(feature = "toml")]
pub use load::{DOTENV_FILE_NAME, OVERRIDE_FILE_NAME};
pub use select::{Selection, UnknownService};
pub use stack::{group_spec, instance_spec, Stack};
pub use variables::{EnvFileError, VariableError, INSTANCE_VARIABLE};

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
