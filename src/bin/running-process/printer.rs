//! One thread writes everything the CLI shows on a stream, in the order it was sent:
//! service lines and events interleave correctly, and a slow terminal (or the detached
//! supervisor's log file) never blocks a tokio worker.

use std::io::Write;
use std::sync::mpsc;

enum Message {
    Line(String),
    /// Everything sent before is written: say so.
    Flushed(mpsc::Sender<()>),
}

#[derive(Clone)]
pub struct Printer {
    tx: mpsc::Sender<Message>,
}

impl Printer {
    /// A printer to standard output.
    pub fn stdout() -> Printer {
        Printer::start(|| Box::new(std::io::stdout().lock()))
    }

    /// A printer to standard error.
    pub fn stderr() -> Printer {
        Printer::start(|| Box::new(std::io::stderr().lock()))
    }

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

    pub fn print(&self, line: String) {
        let _ = self.tx.send(Message::Line(line));
    }

    /// Wait until everything sent so far is written.
    pub fn finish(&self) {
        let (ack, done) = mpsc::channel();
        if self.tx.send(Message::Flushed(ack)).is_ok() {
            let _ = done.recv();
        }
    }
}
