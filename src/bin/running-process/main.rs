//! `running-process`: run, inspect and control the services of a service file
//! (`running-process.toml`), in the foreground or as a detached supervisor, and export the
//! file to systemd units or Kubernetes manifests. Built on the library's public API only
//! (`running_process::compose` and below).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod client;
mod detached;
mod export;
mod file;
mod foreground;
mod output;
mod printer;
mod requests;
mod run;
mod state;
mod table;
mod wait;

/// Run, inspect and control the daemons of a service file.
#[derive(Parser)]
#[command(name = "running-process", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The `-f/--file` option of every command that reads a service file.
#[derive(Args)]
struct FileArg {
    /// The service file (default: ./running-process.toml, with
    /// ./running-process.override.toml merged over it when it exists). Repeatable: each
    /// later file is merged key by key over the ones before.
    #[arg(short, long)]
    file: Vec<PathBuf>,
}

/// Which services of the file: names (with what they depend on) and profiles.
#[derive(Args)]
struct SelectArgs {
    /// Only these services, and what they depend on (default: every service whose
    /// profiles allow it).
    services: Vec<String>,
    /// Turn a profile on: its services run too (repeatable). Services without profiles
    /// always run.
    #[arg(long)]
    profile: Vec<String>,
}

impl SelectArgs {
    fn selection(self) -> running_process::compose::Selection {
        running_process::compose::Selection {
            services: self.services,
            profiles: self.profile,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Check a service file: types, keys, dependencies, programs. Starts nothing.
    Check {
        #[command(flatten)]
        file: FileArg,
    },
    /// Start the services, show their output and events; Ctrl-C stops them.
    Up {
        #[command(flatten)]
        file: FileArg,
        #[command(flatten)]
        select: SelectArgs,
        /// Run under a detached supervisor (one per file) and return once every service is
        /// ready; `status`, `logs`, `restart` and `stop` talk to it. When one runs
        /// already, apply the file to it: unchanged services keep running, changed ones
        /// are replaced, new ones added, removed ones stopped.
        #[arg(short, long)]
        detach: bool,
        /// With --detach: say what applying the file would do, and change nothing.
        #[arg(long, requires = "detach")]
        dry_run: bool,
        /// Apply the file whenever it (or its .env, an env file, or a service's program:
        /// a rebuild) changes on disk. With --detach, the supervisor started now watches.
        #[arg(long)]
        watch: bool,
    },
    /// Start the services in a private directory (each `${port:KEY}` a free port), run
    /// CMD once every one is ready, then stop them and exit with CMD's status (128+N when
    /// signal N killed it; 125 when a service failed to start or failed while CMD ran;
    /// 126/127 when CMD cannot be run; 130 on Ctrl-C). CMD gets RUNNING_PROCESS_PORT_<KEY>
    /// and RUNNING_PROCESS_RUN_DIR; service output goes to log files, shown for a failure.
    Run(run::RunArgs),
    /// Print the effective file: variables resolved, files merged, services selected.
    Config {
        #[command(flatten)]
        file: FileArg,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Change how many instances of a service the detached supervisor runs (NAME=N).
    Scale {
        /// `NAME=N`, repeatable.
        #[arg(required = true)]
        counts: Vec<String>,
        #[command(flatten)]
        file: FileArg,
    },
    /// Show the services of the detached supervisor: state, pid, uptime, restarts, last
    /// exit, readiness and health.
    Status {
        #[command(flatten)]
        file: FileArg,
        /// Print JSON (the supervisor's pid and every service's status) for programs.
        #[arg(long)]
        json: bool,
    },
    /// Restart a service of the detached supervisor (a stopped one starts again).
    Restart {
        /// The service.
        name: String,
        #[command(flatten)]
        file: FileArg,
    },
    /// Start services of the detached supervisor that are not running.
    Start {
        /// The services.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        file: FileArg,
    },
    /// Stop a service of the detached supervisor, or, without a name, every service and the
    /// supervisor itself.
    #[command(visible_alias = "down")]
    Stop {
        /// The service (default: all of them, and the supervisor).
        name: Option<String>,
        #[command(flatten)]
        file: FileArg,
    },
    /// Show the last lines a service of the detached supervisor wrote.
    Logs {
        /// The service.
        name: String,
        /// Keep showing new lines.
        #[arg(short = 'F', long)]
        follow: bool,
        /// How many of the last lines.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        #[command(flatten)]
        file: FileArg,
    },
    /// Show the detached supervisor's events as they happen.
    Events {
        #[command(flatten)]
        file: FileArg,
    },
    /// Write the service file as systemd units or Kubernetes manifests; what they cannot
    /// express is a comment in the output.
    Export {
        /// `systemd` or `kubernetes` (`k8s`).
        #[arg(value_parser = clap::value_parser!(running_process::compose::export::Target))]
        target: running_process::compose::export::Target,
        #[command(flatten)]
        file: FileArg,
        /// Write the files into this directory (default: print them).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The container image: `IMAGE` for every service, `SERVICE=IMAGE` for one
        /// (Kubernetes; repeatable).
        #[arg(long)]
        image: Vec<String>,
        /// systemd: user units, for `systemctl --user` (`~/.config/systemd/user/`):
        /// `WantedBy=default.target`, no `User=`.
        #[arg(long)]
        user: bool,
    },
    /// Wait until a readiness check passes (the checks of a service file's `readiness`):
    /// exit 0 once it does, 1 with the reason when the timeout ends first. Exported systemd
    /// units run it as ExecStartPost=.
    Wait {
        /// How long to wait at most (`500ms`, `30s`, `2min`; a bare number is seconds).
        #[arg(long, global = true, value_parser = wait::parse_duration, default_value = wait::DEFAULT_TIMEOUT)]
        timeout: std::time::Duration,
        #[command(subcommand)]
        check: wait::Check,
    },
    /// The detached supervisor itself (started by `up --detach`).
    #[command(hide = true, name = "__supervise")]
    Supervise {
        #[arg(long, required = true)]
        file: Vec<PathBuf>,
        #[arg(long)]
        service: Vec<String>,
        #[arg(long)]
        profile: Vec<String>,
        #[arg(long)]
        watch: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let code = match runtime {
        Ok(runtime) => runtime.block_on(run(cli.command)),
        Err(error) => {
            printer::stderr().print(format!(
                "running-process: cannot start the async runtime: {error}"
            ));
            ExitCode::FAILURE
        }
    };
    printer::finish();
    code
}

/// `check`: load and check the file, start nothing.
async fn check(files: Vec<PathBuf>) -> ExitCode {
    match file::load(files, Default::default()).await {
        Ok(loaded) => {
            printer::stdout().print(format!(
                "{}: {} services, ok",
                loaded.path.display(),
                loaded.file.services.len()
            ));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Check { file } => check(file.file).await,
        Command::Up {
            file,
            select,
            detach,
            dry_run,
            watch,
        } => match file::load(file.file, select.selection()).await {
            Ok(loaded) if detach => client::up_detached(loaded, dry_run, watch).await,
            Ok(loaded) => foreground::up(loaded, watch).await,
            Err(code) => code,
        },
        Command::Run(args) => run::run(args).await,
        Command::Config { file, select } => match file::load(file.file, select.selection()).await {
            Ok(loaded) => file::print_config(&loaded),
            Err(code) => code,
        },
        Command::Scale { counts, file } => client::scale(file.file, counts).await,
        Command::Status { file, json } => client::status(file.file, json).await,
        Command::Restart { name, file } => client::restart(file.file, name).await,
        Command::Start { names, file } => client::start(file.file, names).await,
        Command::Stop { name, file } => client::stop(file.file, name).await,
        Command::Logs {
            name,
            follow,
            lines,
            file,
        } => client::logs(file.file, name, lines, follow).await,
        Command::Events { file } => client::events(file.file).await,
        Command::Export {
            target,
            file,
            output,
            image,
            user,
        } => match file::load(file.file, Default::default()).await {
            // Blocking (program lookup, file writes): off the async workers.
            Ok(loaded) => tokio::task::spawn_blocking(move || {
                let options = export::with_this_binary(export::options(&image)).user_units(user);
                export::run(&loaded.file, target, &options, output.as_deref())
            })
            .await
            .unwrap_or(ExitCode::FAILURE),
            Err(code) => code,
        },
        Command::Wait { timeout, check } => wait::run(check, timeout).await,
        Command::Supervise {
            file,
            service,
            profile,
            watch,
        } => {
            let selection = running_process::compose::Selection {
                services: service,
                profiles: profile,
            };
            detached::supervise(file, selection, watch).await
        }
    }
}
