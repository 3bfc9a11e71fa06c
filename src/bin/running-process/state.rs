//! Where the detached supervisor of a service file keeps its socket, manifest and log:
//! one private (0700) directory per file, named by the SHA-256 of the file's absolute
//! path, under `$XDG_RUNTIME_DIR/running-process/` or `<temp>/running-process.<uid>/`.

use std::path::{Path, PathBuf};

use running_process::identity::Endpoint;
use sha2::{Digest, Sha256};

/// The namespace of the supervisor's endpoint (part of its verified identity).
pub const NAMESPACE: &str = "running-process";

pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    pub fn of(file: &Path) -> StateDir {
        let digest = Sha256::digest(file.as_os_str().as_encoded_bytes());
        let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        StateDir {
            dir: base().join(name),
        }
    }

    pub fn manifest(&self) -> PathBuf {
        self.dir.join("supervisor.json")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("supervisor.sock")
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(NAMESPACE, self.socket().display().to_string())
    }
}

fn base() -> PathBuf {
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(runtime).join("running-process");
    }
    #[cfg(unix)]
    let user = rustix::process::getuid().as_raw().to_string();
    #[cfg(not(unix))]
    let user = std::env::var("USERNAME").unwrap_or_else(|_| "user".into());
    std::env::temp_dir().join(format!("running-process.{user}"))
}
