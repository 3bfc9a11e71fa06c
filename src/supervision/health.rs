//! When health checks run and when a backend counts as unhealthy.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Periodic health checks of a running backend ([`Supervisor::health_check`]).
///
/// Between checks the supervisor sleeps; with no policy it never wakes for a healthy
/// backend at all (exit is reported by the kernel).
///
/// In a config file every field is optional (a missing one takes the default).
///
/// [`Supervisor::health_check`]: super::Supervisor::health_check
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthPolicy {
    /// Time between checks (the first check runs one interval after ready).
    #[serde(rename = "interval_ms", with = "crate::serde_util::duration_ms")]
    pub interval: Duration,
    /// Deadline of one check.
    #[serde(rename = "timeout_ms", with = "crate::serde_util::duration_ms")]
    pub timeout: Duration,
    /// Consecutive failed checks that make the backend unhealthy (it is then stopped and
    /// handled like an abnormal exit).
    pub failures_before_unhealthy: u32,
}

impl Default for HealthPolicy {
    /// Every 10 s, 2 s deadline, unhealthy after 3 consecutive failures (about 30 s of a
    /// hung daemon), in the spirit of Kubernetes' probe defaults.
    fn default() -> Self {
        HealthPolicy {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            failures_before_unhealthy: 3,
        }
    }
}
