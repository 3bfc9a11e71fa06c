//! Serde adapters for configuration files: durations as whole milliseconds, so a config
//! reads `"grace_ms": 5000` rather than `{"secs": 5, "nanos": 0}`.

/// `#[serde(with = "crate::serde_util::duration_ms")]` for a `Duration` field.
pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// `#[serde(with = "crate::serde_util::unix_ms")]` for a `SystemTime` field: milliseconds
/// since the Unix epoch (what JavaScript's `Date` and most tools read).
pub(crate) mod unix_ms {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        let since = value.duration_since(UNIX_EPOCH).unwrap_or_default();
        serializer.serialize_u64(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        u64::deserialize(deserializer).map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }
}

/// `#[serde(with = "crate::serde_util::unix_ms_option")]` for an `Option<SystemTime>`.
pub(crate) mod unix_ms_option {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let ms = value.map(|time| {
            let since = time
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
        match ms {
            Some(ms) => serializer.serialize_some(&ms),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        Option::<u64>::deserialize(deserializer)
            .map(|ms| ms.map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)))
    }
}
