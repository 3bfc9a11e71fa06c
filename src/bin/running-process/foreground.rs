//! `running-process up`: the services in the foreground, their output prefixed with their
//! names and interleaved with the events; Ctrl-C stops everything in reverse dependency
//! order, a second Ctrl-C forces it.

use std::process::ExitCode;
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use running_process::compose::Stack;
use running_process::supervision::{MemberState, Outcome};

use crate::file::Loaded;
use crate::output::{capture_inherited_output, catch_lines, Prefixes, Style};
use crate::printer::Printer;
use crate::table;

/// Exit code after a second Ctrl-C (128 + SIGINT, as shells report it).
const FORCED: u8 = 130;

pub async fn up(loaded: Loaded) -> ExitCode {
    // The same services twice would fight over their ports and files.
    if let Ok(Some(supervisor)) = crate::client::running(&loaded.path).await {
        eprintln!(
            "{}: a detached supervisor (pid {}) runs {} already: see `running-process status`, \
             or `running-process stop` it first",
            Style::stderr().error("error"),
            supervisor.pid(),
            loaded.path.display()
        );
        return ExitCode::FAILURE;
    }
    let mut file = loaded.file;
    capture_inherited_output(&mut file);
    let style = Style::stdout();
    let prefixes = Arc::new(Prefixes::new(&file, style));
    let printer = Printer::stdout();
    {
        let (printer, prefixes, warn) = (printer.clone(), prefixes.clone(), printer.clone());
        catch_lines(
            move |line| printer.print(format!("{}{}", prefixes.of(&line.service), line.text)),
            move |warning| warn.print(style.error(&warning)),
        );
    }
    let count = file.services.len();
    printer.print(style.bold(&format!(
        "running-process: {count} service{} from {} (Ctrl-C stops them)",
        if count == 1 { "" } else { "s" },
        loaded.path.display()
    )));

    let stack = match Stack::start(file) {
        Ok(stack) => stack,
        Err(error) => {
            eprintln!("running-process: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut events = stack.events();
    // One listener for the whole run: a Ctrl-C that arrives while an event is printed
    // waits in it (a `ctrl_c()` future made per loop turn would miss it).
    let mut interrupt = match interrupts() {
        Ok(interrupt) => interrupt,
        Err(error) => {
            eprintln!("running-process: cannot listen for Ctrl-C: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut interrupts = 0;
    let outcome = loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => printer.print(style.dim(&format!("== {event}"))),
                Some(Err(lagged)) => printer.print(style.dim(&format!("== ({lagged})"))),
                None => break stack.outcome().await,
            },
            _ = interrupt.recv() => {
                interrupts += 1;
                if interrupts > 1 {
                    printer.print(style.error("forced: exiting now; the services die with the supervisor"));
                    printer.finish();
                    std::process::exit(i32::from(FORCED));
                }
                printer.print(style.bold("stopping every service, dependants first (Ctrl-C again to force)"));
                let stack = stack.clone();
                tokio::spawn(async move { stack.stop().await });
            }
            outcome = stack.outcome() => {
                // What happened up to the end is still queued.
                while let Some(Some(Ok(event))) = events.next().now_or_never() {
                    printer.print(style.dim(&format!("== {event}")));
                }
                break outcome;
            }
        }
    };
    let rows = stack.status();
    let clean = matches!(outcome, Outcome::Stopped | Outcome::Completed)
        && rows
            .iter()
            .all(|r| !matches!(r.state, MemberState::Failed | MemberState::Blocked));
    printer.print(String::new());
    printer.print(style.bold(&format!("summary: {outcome}")));
    for line in table::render(&rows, style) {
        printer.print(line);
    }
    printer.finish();
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(unix)]
fn interrupts() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
}

#[cfg(windows)]
fn interrupts() -> std::io::Result<tokio::signal::windows::CtrlC> {
    tokio::signal::windows::ctrl_c()
}
