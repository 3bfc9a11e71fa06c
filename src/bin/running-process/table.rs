//! The status table: name, state, pid, uptime, restarts, CPU and memory, last exit,
//! readiness, health and how the service's process tree is tracked.

use std::time::SystemTime;

use running_process::supervision::{
    HealthView, MemberState, MemberStatus, ResourceUsage, TreeTracking,
};
use running_process::ExitStatus;

use crate::output::Style;

const HEADERS: [&str; 11] = [
    "NAME",
    "STATE",
    "PID",
    "UPTIME",
    "RESTARTS",
    "CPU",
    "MEM",
    "LAST EXIT",
    "READY",
    "HEALTH",
    "TREE",
];

/// The table's lines, header first, columns aligned.
pub fn render(rows: &[MemberStatus], style: Style) -> Vec<String> {
    let now = SystemTime::now();
    let cells: Vec<[String; 11]> = rows
        .iter()
        .map(|row| {
            let running = row.pid.is_some();
            [
                row.name.clone(),
                state(row, now),
                row.pid.map_or("-".into(), |p| p.to_string()),
                if running {
                    uptime(now.duration_since(row.since).unwrap_or_default().as_secs())
                } else {
                    "-".into()
                },
                row.restarts.to_string(),
                cpu(row.usage.as_ref()),
                memory(row.usage.as_ref()),
                row.last_exit.map_or("-".into(), exit),
                if row.is_ready() {
                    "yes".into()
                } else {
                    "no".into()
                },
                match &row.health {
                    HealthView::Unknown => "-".into(),
                    HealthView::Healthy => "healthy".into(),
                    HealthView::Unhealthy { reason } => format!("unhealthy: {reason}"),
                    _ => "?".into(),
                },
                tree(row.tree.as_ref()),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        text.trim_end().to_owned()
    };
    let mut lines = vec![style.bold(&line(&HEADERS.map(String::from)))];
    lines.extend(cells.iter().map(|row| line(row)));
    lines
}

/// The state, with its detail (what it waits for, why it failed) or its restart delay.
fn state(row: &MemberStatus, now: SystemTime) -> String {
    let left = row
        .restart_at
        .filter(|_| row.state == MemberState::Backoff)
        .map(|at| at.duration_since(now).unwrap_or_default());
    match (&row.detail, left) {
        (Some(detail), _) => format!("{} ({detail})", row.state),
        (None, Some(left)) => format!("{} ({left:.1?} left)", row.state),
        (None, None) => row.state.to_string(),
    }
}

/// How the tree is tracked, in a word or two (`status --json` has the path or the reason).
fn tree(tracking: Option<&TreeTracking>) -> String {
    match tracking {
        None => "-".into(),
        Some(TreeTracking::Cgroup { .. }) => "cgroup".into(),
        Some(TreeTracking::ProcessGroup { .. }) => "process group".into(),
        Some(other) => other.to_string(),
    }
}

fn uptime(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
    }
}

fn exit(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(code) => format!("exit {code}"),
        ExitStatus::Signal(signal) => format!("signal {signal}"),
        _ => "unknown".into(),
    }
}

/// The CPU share over the last interval (`12.5%`), or `-`.
fn cpu(usage: Option<&ResourceUsage>) -> String {
    usage
        .and_then(|u| u.cpu_percent)
        .map_or("-".into(), |p| format!("{p:.1}%"))
}

/// Memory in use, with its peak where known (`12.3M (peak 40.0M)`), or `-`.
fn memory(usage: Option<&ResourceUsage>) -> String {
    let Some(now) = usage.and_then(|u| u.memory_bytes) else {
        return "-".into();
    };
    match usage.and_then(|u| u.memory_peak_bytes) {
        Some(peak) => format!("{} (peak {})", bytes(now), bytes(peak)),
        None => bytes(now),
    }
}

/// Bytes in binary units, one decimal (`512K`, `12.3M`, `1.0G`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(12 * 1024 * 1024 + 300 * 1024), "12M");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0G");
    }
}
