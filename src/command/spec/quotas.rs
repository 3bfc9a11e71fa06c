//! Quotas of a service's whole tree, as systemd's `MemoryMax=`, `MemoryHigh=`,
//! `CPUQuota=` and `TasksMax=`: written to the instance's cgroup v2 before its process
//! starts there ([`CommandSpec::memory_max`](super::CommandSpec#structfield.memory_max)
//! and the fields next to it).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of memory in bytes. In a file: a number of bytes, or a string with a binary
/// suffix as systemd writes it: `"512K"`, `"256M"`, `"1.5G"`, `"1T"` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parse `"256M"`, `"1.5G"`, `"4096"` (binary suffixes K, M, G, T; an optional `B`
    /// after them, and `B` alone for bytes).
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let bad = || {
            format!("{text:?} is not an amount of memory (a number of bytes, or with K, M, G or T: \"256M\")")
        };
        let upper = text.to_ascii_uppercase();
        let upper = upper.strip_suffix('B').unwrap_or(&upper);
        let (number, shift) = match upper.chars().last() {
            Some('K') => (&upper[..upper.len() - 1], 10),
            Some('M') => (&upper[..upper.len() - 1], 20),
            Some('G') => (&upper[..upper.len() - 1], 30),
            Some('T') => (&upper[..upper.len() - 1], 40),
            _ => (upper, 0),
        };
        let number = number.trim();
        if let Ok(whole) = number.parse::<u64>() {
            return whole.checked_mul(1 << shift).map(ByteSize).ok_or_else(bad);
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        if !value.is_finite() || value < 0.0 {
            return Err(bad());
        }
        let bytes = value * (1u64 << shift) as f64;
        if bytes >= u64::MAX as f64 {
            return Err(bad());
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl std::fmt::Display for ByteSize {
    /// The largest binary suffix that divides it exactly (`256M`), else bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (suffix, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            let unit = 1u64 << shift;
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{suffix}", self.0 / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => ByteSize::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// A CPU quota in percent of one core, as systemd's `CPUQuota=`: `"50%"` is half a core,
/// `"200%"` two. Written to `cpu.max` as that share of a 100 ms period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    /// Percent of one core (at least 1).
    pub percent: u32,
}

impl CpuQuota {
    /// The cgroup's scheduling period, microseconds (the kernel's default).
    pub const PERIOD_USEC: u64 = 100_000;

    /// Parse `"50%"` (the `%` may be left out).
    pub fn parse(text: &str) -> Result<CpuQuota, String> {
        let number = text.trim().trim_end_matches('%').trim();
        match number.parse::<u32>() {
            Ok(percent) if percent > 0 => Ok(CpuQuota { percent }),
            _ => Err(format!(
                "{text:?} is not a CPU quota (percent of one core, at least 1: \"50%\", \"200%\")"
            )),
        }
    }

    /// The line for `cpu.max`: the quota and the period, microseconds.
    pub fn cpu_max_line(&self) -> String {
        format!(
            "{} {}",
            u64::from(self.percent) * Self::PERIOD_USEC / 100,
            Self::PERIOD_USEC
        )
    }
}

impl std::fmt::Display for CpuQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}%", self.percent)
    }
}

impl Serialize for CpuQuota {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for CpuQuota {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        CpuQuota::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_systemd_writes_them() {
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert_eq!(ByteSize::parse("512K"), Ok(ByteSize(512 << 10)));
        assert_eq!(ByteSize::parse("256M"), Ok(ByteSize(256 << 20)));
        assert_eq!(ByteSize::parse("256MB"), Ok(ByteSize(256 << 20)));
        assert_eq!(ByteSize::parse("1.5G"), Ok(ByteSize(3 << 29)));
        assert_eq!(ByteSize::parse("2t"), Ok(ByteSize(2 << 40)));
        for bad in ["", "M", "lots", "-1M", "1.2.3G", "99999999999T"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ByteSize(256 << 20).to_string(), "256M");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        let json: ByteSize = serde_json::from_str("\"64M\"").unwrap();
        assert_eq!(json, ByteSize(64 << 20));
        let json: ByteSize = serde_json::from_str("1024").unwrap();
        assert_eq!(serde_json::to_string(&json).unwrap(), "\"1K\"");
    }

    #[test]
    fn cpu_quotas_are_percent_of_one_core() {
        let half = CpuQuota::parse("50%").unwrap();
        assert_eq!(half.cpu_max_line(), "50000 100000");
        assert_eq!(
            CpuQuota::parse("250").unwrap().cpu_max_line(),
            "250000 100000"
        );
        assert!(CpuQuota::parse("0%").is_err());
        assert!(CpuQuota::parse("half").is_err());
        assert_eq!(serde_json::to_string(&half).unwrap(), "\"50%\"");
    }
}
