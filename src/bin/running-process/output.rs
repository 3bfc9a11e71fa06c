//! What a person sees: colors (only on a terminal, never with `NO_COLOR`), service-name
//! prefixes, and the service output lines, which the library hands over as `tracing`
//! events (`Output::Tracing`), caught here by a small subscriber.

use std::io::IsTerminal;
use std::sync::Arc;

use running_process::command::{Output, StreamName};
use running_process::compose::ServiceFile;

/// How a set ended, with the whole cause of a failed start (`web failed to start: cannot
/// create a cgroup ...: Too many open files (os error 24)`), not only the service's name.
pub fn outcome_text(outcome: &running_process::supervision::Outcome) -> String {
    use running_process::supervision::Outcome;
    match outcome {
        Outcome::StartFailed { member, error } => format!(
            "{member} failed to start: {}",
            running_process::report::Chain(&**error)
        ),
        other => other.to_string(),
    }
}

/// Colors for one stream, or none.
#[derive(Clone, Copy)]
pub struct Style {
    color: bool,
}

/// Service name colors, in turn (ANSI: cyan, yellow, green, magenta, blue, red).
const PALETTE: [u8; 6] = [36, 33, 32, 35, 34, 31];

impl Style {
    fn for_stream(is_terminal: bool) -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: is_terminal && !no_color,
        }
    }

    pub fn stdout() -> Style {
        Style::for_stream(std::io::stdout().is_terminal())
    }

    pub fn stderr() -> Style {
        Style::for_stream(std::io::stderr().is_terminal())
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn error(&self, text: &str) -> String {
        self.paint("1;31", text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    /// `name` padded to `width`, in the color of the `index`th service.
    pub fn name(&self, name: &str, index: usize, width: usize) -> String {
        let padded = format!("{name:<width$}");
        self.paint(&PALETTE[index % PALETTE.len()].to_string(), &padded)
    }
}

/// One line a service wrote.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Line {
    pub service: String,
    pub stream: StreamName,
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Capture the standard streams that would go to the supervisor's own terminal (the
/// default, `inherit`) as lines, so they can be prefixed or kept for `logs`.
pub fn capture_inherited_output(file: &mut ServiceFile) {
    for service in &mut file.services {
        for output in [&mut service.spec.stdout, &mut service.spec.stderr] {
            if *output == Output::Inherit {
                *output = Output::Tracing;
            }
        }
    }
}

/// Install a `tracing` subscriber that hands every service output line to `lines`, and
/// the library's warnings and errors, as one line of text, to `warnings`. Everything else
/// is dropped: the CLI shows the typed events instead.
pub fn catch_lines(
    lines: impl Fn(Line) + Send + Sync + 'static,
    warnings: impl Fn(String) + Send + Sync + 'static,
) {
    let subscriber = LineCatcher {
        sink: Arc::new(lines),
        warnings: Arc::new(warnings),
    };
    // Only fails if one is set already: then lines go wherever that one sends them.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

struct LineCatcher {
    sink: Arc<dyn Fn(Line) + Send + Sync>,
    warnings: Arc<dyn Fn(String) + Send + Sync>,
}

const OUTPUT_TARGET: &str = "running_process::output";

impl tracing::Subscriber for LineCatcher {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == OUTPUT_TARGET || *metadata.level() <= tracing::Level::WARN
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if event.metadata().target() != OUTPUT_TARGET {
            let level = event.metadata().level().as_str().to_lowercase();
            let mut text = format!("{level}: {}", fields.message);
            for (name, value) in &fields.others {
                text.push_str(&format!(" {name}={value}"));
            }
            (self.warnings)(text);
            return;
        }
        let stream = if fields.stream == "stderr" {
            StreamName::Stderr
        } else {
            StreamName::Stdout
        };
        (self.sink)(Line {
            service: fields.service,
            stream,
            text: fields.message,
            at_ms: now_ms(),
        });
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[derive(Default)]
struct Fields {
    service: String,
    stream: String,
    message: String,
    /// Any other field, for warnings.
    others: Vec<(&'static str, String)>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "stream" => self.stream = value.to_owned(),
            "service" => self.service = value.to_owned(),
            "message" => self.message = value.to_owned(),
            other => self.others.push((other, value.to_owned())),
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        // `service = %name` and the message arrive as Display-through-Debug values.
        let text = format!("{value:?}");
        match field.name() {
            "service" => self.service = text,
            "message" => self.message = text,
            "stream" => self.stream = text,
            other => self.others.push((other, text)),
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `HH:MM:SS` in UTC, as the events print their times.
pub fn time_of_day(at_ms: u64) -> String {
    let secs = at_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The service-name column: names in file order, each with its color and one width.
pub struct Prefixes {
    names: Vec<String>,
    width: usize,
    style: Style,
}

impl Prefixes {
    pub fn new(file: &ServiceFile, style: Style) -> Prefixes {
        let names: Vec<String> = file.services.iter().map(|s| s.name().to_owned()).collect();
        let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
        Prefixes {
            names,
            width,
            style,
        }
    }

    /// `name | ` for service `name` (a name the file does not have gets no color).
    pub fn of(&self, name: &str) -> String {
        let index = self.names.iter().position(|n| n == name);
        let painted = match index {
            Some(i) => self.style.name(name, i, self.width),
            None => format!("{name:<width$}", width = self.width),
        };
        format!("{painted} {} ", self.style.dim("|"))
    }
}
