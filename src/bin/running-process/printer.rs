//! One thread per stream writes everything the CLI shows, in the order it was sent:
//! service lines and events interleave correctly, and a slow terminal (or the detached
//! supervisor's log file) never blocks a tokio worker. Every line the program prints goes
//! through [`stdout`] or [`stderr`]; `main` waits for both ([`finish`]) before it exits.

use std::io::Write;
use std::sync::{mpsc, OnceLock};

enum Message {
    /// A line (its newline added).
    Line(String),
    /// Text written as it is (a file that may not end with a newline).
    Raw(String),
    /// Everything sent before is written: say so.
    Flushed(mpsc::Sender<()>),
}

#[derive(Clone)]
pub struct Printer {
    tx: mpsc::Sender<Message>,
}

/// The printer of standard output.
pub fn stdout() -> &'static Printer {
    static STDOUT: OnceLock<Printer> = OnceLock::new();
    STDOUT.get_or_init(|| Printer::start(|| Box::new(std::io::stdout().lock())))
}

/// The printer of standard error.
pub fn stderr() -> &'static Printer {
    static STDERR: OnceLock<Printer> = OnceLock::new();
    STDERR.get_or_init(|| Printer::start(|| Box::new(std::io::stderr().lock())))
}

/// Wait until everything sent to either stream is written (before the process exits:
/// the writing threads die with it).
pub fn finish() {
    stdout().finish();
    stderr().finish();
}

impl Printer {
    fn start(lock: fn() -> Box<dyn Write>) -> Printer {
        let (tx, rx) = mpsc::channel::<Message>();
        std::thread::spawn(move || {
            while let Ok(message) = rx.recv() {
                let mut out = lock();
                let mut next = Some(message);
                // Write what is queued now, then flush once.
                while let Some(message) = next {
                    match message {
                        // A closed stdout (a pipe whose reader left) loses the lines only.
                        Message::Line(line) => drop(writeln!(out, "{line}")),
                        Message::Raw(text) => drop(out.write_all(text.as_bytes())),
                        Message::Flushed(ack) => {
                            let _ = out.flush();
                            let _ = ack.send(());
                        }
                    }
                    next = rx.try_recv().ok();
                }
                let _ = out.flush();
            }
        });
        Printer { tx }
    }

    /// Print `line` and a newline.
    pub fn print(&self, line: String) {
        let _ = self.tx.send(Message::Line(line));
    }

    /// Print `text` as it is.
    pub fn print_raw(&self, text: String) {
        let _ = self.tx.send(Message::Raw(text));
    }

    /// Wait until everything sent so far is written.
    pub fn finish(&self) {
        let (ack, done) = mpsc::channel();
        if self.tx.send(Message::Flushed(ack)).is_ok() {
            let _ = done.recv();
        }
    }
}
