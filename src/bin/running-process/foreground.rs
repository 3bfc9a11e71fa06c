//! `running-process up`: the services in the foreground, their output prefixed with their
//! names and interleaved with the events; Ctrl-C stops everything in reverse dependency
//! order, a second Ctrl-C forces it.

use std::process::ExitCode;
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use running_process::compose::Stack;
use running_process::supervision::{EventStream, MemberState, Outcome};

use crate::file::Loaded;
use crate::output::{capture_inherited_output, catch_lines, outcome_text, Prefixes, Style};
use crate::printer::{self, Printer};
use crate::table;

/// Exit code after a second Ctrl-C (128 + SIGINT, as shells report it).
const FORCED: u8 = 130;

pub async fn up(loaded: Loaded, watch: bool) -> ExitCode {
    // The same services twice would fight over their ports and files.
    if let Ok(Some(supervisor)) = crate::client::running(&loaded.path).await {
        printer::stderr().print(format!(
            "{}: a detached supervisor (pid {}) runs {} already: see `running-process status`, \
             or `running-process stop` it first",
            Style::stderr().error("error"),
            supervisor.pid(),
            loaded.path.display()
        ));
        return ExitCode::FAILURE;
    }
    let mut file = loaded.file;
    capture_inherited_output(&mut file);
    // The soft open-files limit raised to the hard one, and the file checked against it,
    // before anything starts.
    if let Err(error) = running_process::compose::check_open_files(&file) {
        return failed(format!(
            "{}: {}",
            Style::stderr().error("error"),
            running_process::report::Chain(&error)
        ));
    }
    let style = Style::stdout();
    let prefixes = Arc::new(Prefixes::new(&file, style));
    let out = printer::stdout();
    {
        let (lines, prefixes, warn) = (out.clone(), prefixes.clone(), out.clone());
        catch_lines(
            move |line| lines.print(format!("{}{}", prefixes.of(&line.service), line.text)),
            move |warning| warn.print(style.error(&warning)),
        );
    }
    let count = file.services.len();
    out.print(style.bold(&format!(
        "running-process: {count} service{} from {} (Ctrl-C stops them)",
        if count == 1 { "" } else { "s" },
        loaded.path.display()
    )));

    let stack = match Stack::start(file) {
        Ok(stack) => stack,
        Err(error) => return failed(format!("running-process: {error}")),
    };
    // Subscribed at once: the services start meanwhile.
    let events = stack.events();
    let _watch = match watch {
        true => {
            let report = out.clone();
            Some(
                stack
                    .watch(
                        loaded.paths.clone(),
                        loaded.selection.clone(),
                        capture_inherited_output,
                        move |done| report.print(style.dim(&format!("== watch: {done}"))),
                    )
                    .await,
            )
        }
        false => None,
    };
    // One listener for the whole run: a Ctrl-C that arrives while an event is printed
    // waits in it (a `ctrl_c()` future made per loop turn would miss it).
    let interrupt = match interrupts() {
        Ok(interrupt) => interrupt,
        Err(error) => {
            return failed(format!(
                "running-process: cannot listen for Ctrl-C: {error}"
            ))
        }
    };
    let outcome = run(&stack, events, interrupt, out, style).await;
    summary(&stack, &outcome, out, style)
}

fn failed(message: String) -> ExitCode {
    printer::stderr().print(message);
    ExitCode::FAILURE
}

/// Print the events until the stack ends: stop it at the first Ctrl-C, exit at once at the
/// second.
async fn run(
    stack: &Stack,
    mut events: EventStream,
    mut interrupt: Interrupts,
    out: &Printer,
    style: Style,
) -> Outcome {
    let mut interrupts = 0;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => out.print(style.dim(&format!("== {event}"))),
                Some(Err(lagged)) => out.print(style.dim(&format!("== ({lagged})"))),
                None => return stack.outcome().await,
            },
            _ = interrupt.recv() => {
                interrupts += 1;
                if interrupts > 1 {
                    out.print(style.error("forced: exiting now; the services die with the supervisor"));
                    printer::finish();
                    std::process::exit(i32::from(FORCED));
                }
                out.print(style.bold("stopping every service, dependants first (Ctrl-C again to force)"));
                let stack = stack.clone();
                tokio::spawn(async move { stack.stop().await });
            }
            outcome = stack.outcome() => {
                print_queued(&mut events, out, style);
                return outcome;
            }
        }
    }
}

/// What happened up to the end is still queued: print it.
fn print_queued(events: &mut EventStream, out: &Printer, style: Style) {
    while let Some(Some(Ok(event))) = events.next().now_or_never() {
        out.print(style.dim(&format!("== {event}")));
    }
}

/// The summary table; success when the stack stopped or completed with no member failed
/// or blocked.
fn summary(stack: &Stack, outcome: &Outcome, out: &Printer, style: Style) -> ExitCode {
    let rows = stack.status();
    let clean = matches!(outcome, Outcome::Stopped | Outcome::Completed)
        && rows
            .iter()
            .all(|r| !matches!(r.state, MemberState::Failed | MemberState::Blocked));
    out.print(String::new());
    out.print(style.bold(&format!("summary: {}", outcome_text(outcome))));
    for line in table::render(&rows, style) {
        out.print(line);
    }
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(unix)]
pub type Interrupts = tokio::signal::unix::Signal;

#[cfg(windows)]
pub type Interrupts = tokio::signal::windows::CtrlC;

#[cfg(unix)]
pub fn interrupts() -> std::io::Result<Interrupts> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
}

#[cfg(windows)]
pub fn interrupts() -> std::io::Result<Interrupts> {
    tokio::signal::windows::ctrl_c()
}
