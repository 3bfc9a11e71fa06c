//! Where a program's standard output and error go.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a standard stream of the program goes.
///
/// With [`Output::File`] (and `rotate`), [`Output::Tracing`] or [`Output::Null`] the
/// stream is captured: the supervisor reads it line by line, so the last lines a process
/// wrote before it died come with its `Exited` event and its
/// [`StartError::ExitedBeforeReady`](crate::supervision::StartError::ExitedBeforeReady).
/// [`Output::Inherit`] hands the supervisor's own stream to the program and captures
/// nothing. A daemon that outlives the supervisor (`die_with_supervisor: false`) writes
/// [`Output::Null`] and [`Output::File`] itself (no pipe to a supervisor that may be gone,
/// so no last lines and no rotation for it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Output {
    /// The supervisor's own stream.
    #[default]
    Inherit,
    /// Discarded (read and dropped, so its last lines are still known).
    Null,
    /// Appended to a file, rotated by size when `rotate` is set.
    File {
        /// The file.
        path: PathBuf,
        /// Size-based rotation: keep the file under `max_bytes`, keep `keep` old ones.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rotate: Option<Rotation>,
    },
    /// Each line as a `tracing` event (target `running_process::output`) with the service
    /// name and the stream.
    Tracing,
}

impl Output {
    /// Append to `path`, without rotation.
    pub fn file(path: impl Into<PathBuf>) -> Output {
        Output::File {
            path: path.into(),
            rotate: None,
        }
    }

    /// Append to `path`, rotated by size (see [`Rotation`]).
    pub fn rotated_file(path: impl Into<PathBuf>, rotation: Rotation) -> Output {
        Output::File {
            path: path.into(),
            rotate: Some(rotation),
        }
    }
}

/// Size-based rotation of an output file, in the manner of logrotate's `size` and
/// `rotate`: when a write would take the file past `max_bytes`, `path.{keep-1}` is
/// deleted, each `path.N` becomes `path.{N+1}`, `path` becomes `path.1` and a new `path`
/// is started. A single line longer than `max_bytes` is written whole to a fresh file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// The largest size of the current file, in bytes.
    pub max_bytes: u64,
    /// How many rotated files are kept (`path.1` is the newest); 0 keeps none.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_keep() -> u32 {
    5
}

impl Rotation {
    /// Rotate past `max_bytes`, keeping five old files.
    pub fn new(max_bytes: u64) -> Rotation {
        Rotation {
            max_bytes,
            keep: default_keep(),
        }
    }

    /// How many rotated files are kept.
    pub fn keep(mut self, keep: u32) -> Rotation {
        self.keep = keep;
        self
    }
}

/// Which standard stream a log-line readiness watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamName {
    /// Standard output.
    #[default]
    Stdout,
    /// Standard error.
    Stderr,
}

impl StreamName {
    /// `"stdout"` or `"stderr"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamName::Stdout => "stdout",
            StreamName::Stderr => "stderr",
        }
    }
}
