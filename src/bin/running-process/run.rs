//! `running-process run -- CMD ARGS...`: the set started in a private directory on ports
//! of its own, CMD run against it once every service is ready, everything stopped after,
//! and CMD's exit status passed on (`docker compose run --rm`, `--exit-code-from`).

use std::io::IsTerminal;
use std::process::ExitCode;

use running_process::compose::Selection;
use running_process::testing::{EphemeralStack, RunOptions, RunReport, StackError};
use tokio_util::sync::CancellationToken;

use crate::output::Style;
use crate::printer;

/// A service failed to start, or failed while CMD ran (also with `--keep-going`).
pub const SERVICE_FAILED: u8 = 125;
/// CMD exists but cannot be executed (as shells say).
pub const CANNOT_EXECUTE: u8 = 126;
/// CMD was not found (as shells say).
pub const NOT_FOUND: u8 = 127;
/// Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
pub const INTERRUPTED: u8 = 130;

/// `run`'s arguments.
#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    file: crate::FileArg,
    /// Only this service and what it depends on (repeatable).
    #[arg(long = "service", value_name = "NAME")]
    services: Vec<String>,
    /// Turn a profile on (repeatable).
    #[arg(long)]
    profile: Vec<String>,
    /// Let CMD finish when a service fails (the run still exits with 125).
    #[arg(long)]
    keep_going: bool,
    /// Show the events as they happen and every service's output after the run.
    #[arg(short, long)]
    verbose: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

impl RunArgs {
    fn selection(&self) -> Selection {
        Selection {
            services: self.services.clone(),
            profiles: self.profile.clone(),
        }
    }
}

pub async fn run(args: RunArgs) -> ExitCode {
    let files = args.file.file.clone();
    let paths = crate::file::paths_of(files.clone());
    if files.is_empty() && !paths[0].exists() {
        // `check`'s message, with a small example file.
        return match crate::file::load(files, args.selection()).await {
            Ok(_) => ExitCode::FAILURE,
            Err(code) => code,
        };
    }
    let cancel = CancellationToken::new();
    // On a terminal CMD may be interactive (a shell, a REPL): it stays in the terminal's
    // foreground process group, where Ctrl-C reaches it from the terminal itself.
    let interactive = std::io::stdin().is_terminal();
    if let Err(error) = listen_for_interrupts(cancel.clone(), interactive) {
        return fail(
            format!("cannot listen for Ctrl-C: {error}"),
            ExitCode::FAILURE,
        );
    }
    let builder = paths
        .iter()
        .skip(1)
        .fold(EphemeralStack::builder(paths[0].clone()), |b, p| b.file(p));
    let builder = args.services.iter().fold(builder, |b, s| b.service(s));
    let builder = args.profile.iter().fold(builder, |b, p| b.profile(p));
    let builder = match args.verbose {
        true => {
            let style = Style::stderr();
            builder
                .on_event(move |event| printer::stderr().print(style.dim(&format!("== {event}"))))
        }
        false => builder,
    };
    let stack = tokio::select! {
        started = builder.start() => match started {
            Ok(stack) => stack,
            Err(error) => return start_failed(&error),
        },
        // Dropping the start kills what it started.
        _ = cancel.cancelled() => return ExitCode::from(INTERRUPTED),
    };
    let report = run_command(&stack, &args, cancel).await;
    let code = match report {
        Ok(report) => finish(&stack, &report, args.verbose).await,
        Err(code) => code,
    };
    stack.stop().await;
    code
}

/// CMD against the ready stack, or the exit code of a CMD that could not start.
async fn run_command(
    stack: &EphemeralStack,
    args: &RunArgs,
    cancel: CancellationToken,
) -> Result<RunReport, ExitCode> {
    let mut command = tokio::process::Command::new(&args.command[0]);
    command.args(&args.command[1..]);
    let options = RunOptions::default()
        .keep_going(args.keep_going)
        .own_process_group(!std::io::stdin().is_terminal())
        .cancel(cancel);
    match stack.run(command, options).await {
        Ok(report) => Ok(report),
        Err(error) => {
            let code = match error.kind() {
                std::io::ErrorKind::NotFound => NOT_FOUND,
                _ => CANNOT_EXECUTE,
            };
            Err(fail(
                format!("cannot run {}: {error}", args.command[0]),
                ExitCode::from(code),
            ))
        }
    }
}

/// Report how the run went; the exit code.
async fn finish(stack: &EphemeralStack, report: &RunReport, verbose: bool) -> ExitCode {
    if verbose {
        print_logs(stack).await;
    }
    let status = describe(&report.status);
    if let Some(failure) = &report.failure {
        let kept = stack.keep_logs().await;
        let mut message = format!("{failure}\nthe command {status}");
        if let Some(kept) = kept {
            message.push_str(&format!("; logs kept in {}", kept.display()));
        }
        return fail(message, ExitCode::from(SERVICE_FAILED));
    }
    if report.interrupted {
        printer::stderr().print(format!(
            "running-process: interrupted; the command {status}"
        ));
        return ExitCode::from(INTERRUPTED);
    }
    ExitCode::from(exit_code(&report.status))
}

/// CMD's exit code, or 128 + the signal that killed it.
fn exit_code(status: &std::process::ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + signal).unwrap_or(255);
        }
    }
    1
}

fn describe(status: &std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with {code}"),
        None => format!("ended: {status}"),
    }
}

/// The first Ctrl-C cancels `cancel` (CMD gets SIGINT, then the set stops); a second one
/// exits at once (the services die with this process). With CMD on the terminal
/// (`interactive`), Ctrl-C is CMD's: the terminal sends it SIGINT itself, and the set stops
/// when CMD exits.
fn listen_for_interrupts(cancel: CancellationToken, interactive: bool) -> std::io::Result<()> {
    let mut interrupts = crate::foreground::interrupts()?;
    tokio::spawn(async move {
        if interactive {
            while interrupts.recv().await.is_some() {}
            return;
        }
        interrupts.recv().await;
        cancel.cancel();
        interrupts.recv().await;
        printer::finish();
        std::process::exit(i32::from(INTERRUPTED));
    });
    Ok(())
}

fn start_failed(error: &StackError) -> ExitCode {
    let style = Style::stderr();
    let mut message = format!("{}: {error}", style.error("error"));
    if let StackError::File(error) = error {
        if let Some(pointer) = error.pointer() {
            message.push('\n');
            message.push_str(&pointer);
        }
        printer::stderr().print(format!("{message}\nnothing was started"));
        return ExitCode::from(crate::file::BAD_FILE);
    }
    match error {
        // Not a service's failure: the machine's limit.
        StackError::OpenFiles(_) => {
            printer::stderr().print(format!("{message}\nnothing was started"));
            ExitCode::FAILURE
        }
        _ => {
            printer::stderr().print(format!("{message}\nwhat had started was stopped"));
            ExitCode::from(SERVICE_FAILED)
        }
    }
}

/// `--verbose`: every service's log after the run.
async fn print_logs(stack: &EphemeralStack) {
    let style = Style::stderr();
    for service in &stack.stack().file().services {
        let text = stack.logs(service.name()).await;
        printer::stderr().print(style.bold(&format!("== {} ==", service.name())));
        for line in text.lines() {
            printer::stderr().print(line.to_owned());
        }
    }
}

fn fail(message: String, code: ExitCode) -> ExitCode {
    printer::stderr().print(format!(
        "{}: {message}",
        Style::stderr().error("running-process")
    ));
    code
}
