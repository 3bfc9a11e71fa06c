//! [`Endpoint`]: where a daemon listens. Part of the identity claim, so it lives here; the
//! protocol layer re-exports it.

use serde::{Deserialize, Serialize};

/// The local socket a daemon listens on.
///
/// On Unix `path` is the filesystem path of a Unix domain socket (keep it in a private,
/// 0700 directory). On Windows it is a named pipe: either a full `\\.\pipe\...` name or a
/// plain name that is placed under `\\.\pipe\`. `namespace_id` names the application or
/// tenant the daemon serves; it is part of the identity and must match exactly.
///
/// ```
/// use running_process::identity::Endpoint;
/// let endpoint = Endpoint::new("my-app", "/run/user/1000/my-app/cache.sock");
/// assert_eq!(endpoint.namespace_id, "my-app");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The application or tenant namespace this endpoint belongs to.
    pub namespace_id: String,
    /// Socket path (Unix) or pipe name (Windows).
    pub path: String,
}

impl Endpoint {
    /// Build an endpoint from a namespace and a socket path.
    pub fn new(namespace_id: impl Into<String>, path: impl Into<String>) -> Self {
        Endpoint {
            namespace_id: namespace_id.into(),
            path: path.into(),
        }
    }

    /// The name to hand to the OS: the path on Unix, a `\\.\pipe\` name on Windows.
    pub fn os_name(&self) -> String {
        if cfg!(windows) && !self.path.starts_with(r"\\.\pipe\") {
            let flat: String = self
                .path
                .chars()
                .map(|c| {
                    if matches!(c, '\\' | '/' | ':') {
                        '-'
                    } else {
                        c
                    }
                })
                .collect();
            format!(r"\\.\pipe\{}-{}", self.namespace_id, flat)
        } else {
            self.path.clone()
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.namespace_id, self.path)
    }
}
