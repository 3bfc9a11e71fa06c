//! Who a program runs as and within which limits: user, groups, umask, resource limits.
//! All of it is applied in the child between fork and exec (Unix), the parent-death signal
//! last, after the user change that would otherwise reset it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A user, by name (looked up in the user database when the program is started) or by
/// numeric id. In a file: `"postgres"` or `101`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserRef {
    /// A numeric user id.
    Id(u32),
    /// A user name.
    Name(String),
}

/// A group, by name or numeric id. In a file: `"postgres"` or `104`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GroupRef {
    /// A numeric group id.
    Id(u32),
    /// A group name.
    Name(String),
}

impl From<&str> for UserRef {
    fn from(name: &str) -> Self {
        UserRef::Name(name.to_owned())
    }
}

impl From<String> for UserRef {
    fn from(name: String) -> Self {
        UserRef::Name(name)
    }
}

impl From<u32> for UserRef {
    fn from(id: u32) -> Self {
        UserRef::Id(id)
    }
}

impl From<&str> for GroupRef {
    fn from(name: &str) -> Self {
        GroupRef::Name(name.to_owned())
    }
}

impl From<String> for GroupRef {
    fn from(name: String) -> Self {
        GroupRef::Name(name)
    }
}

impl From<u32> for GroupRef {
    fn from(id: u32) -> Self {
        GroupRef::Id(id)
    }
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserRef::Id(id) => write!(f, "uid {id}"),
            UserRef::Name(name) => write!(f, "user {name:?}"),
        }
    }
}

impl fmt::Display for GroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupRef::Id(id) => write!(f, "gid {id}"),
            GroupRef::Name(name) => write!(f, "group {name:?}"),
        }
    }
}

/// A file mode creation mask. In a file: an octal string (`"027"`, `"0o027"`) or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Umask(pub u32);

impl Serialize for Umask {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{:04o}", self.0))
    }
}

impl<'de> Deserialize<'de> for Umask {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Octal(String),
        }
        let value = match Raw::deserialize(deserializer)? {
            Raw::Number(n) => n,
            Raw::Octal(text) => {
                let digits = text.trim_start_matches("0o");
                u32::from_str_radix(digits, 8).map_err(|_| {
                    serde::de::Error::custom(format!("umask {text:?} is not an octal number"))
                })?
            }
        };
        if value > 0o777 {
            return Err(serde::de::Error::custom(format!(
                "umask {value:o} is larger than 0777"
            )));
        }
        Ok(Umask(value))
    }
}

/// One resource limit: soft and hard value, `None` meaning unlimited. In a file: a number
/// (both), `"infinity"`, or `{ soft = 1024, hard = 4096 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// The value the process is held to (`None`: unlimited).
    pub soft: Option<u64>,
    /// The ceiling the process may raise the soft value to (`None`: unlimited).
    pub hard: Option<u64>,
}

impl Limit {
    /// The same soft and hard value.
    pub fn both(value: u64) -> Limit {
        Limit {
            soft: Some(value),
            hard: Some(value),
        }
    }

    /// No limit at all.
    pub fn unlimited() -> Limit {
        Limit {
            soft: None,
            hard: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum LimitValue {
    Number(u64),
    Word(String),
}

impl LimitValue {
    fn of(value: Option<u64>) -> LimitValue {
        match value {
            Some(n) => LimitValue::Number(n),
            None => LimitValue::Word("infinity".into()),
        }
    }

    fn value<E: serde::de::Error>(self) -> Result<Option<u64>, E> {
        match self {
            LimitValue::Number(n) => Ok(Some(n)),
            LimitValue::Word(word) if word == "infinity" || word == "unlimited" => Ok(None),
            LimitValue::Word(word) => Err(E::custom(format!(
                "limit {word:?} is neither a number nor \"infinity\""
            ))),
        }
    }
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Pair {
            soft: LimitValue,
            hard: LimitValue,
        }
        if self.soft == self.hard {
            LimitValue::of(self.soft).serialize(serializer)
        } else {
            Pair {
                soft: LimitValue::of(self.soft),
                hard: LimitValue::of(self.hard),
            }
            .serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Pair {
            soft: LimitValue,
            hard: LimitValue,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(LimitValue),
            Pair(Pair),
        }
        let limit = match Raw::deserialize(deserializer)? {
            Raw::One(value) => {
                let value = value.value()?;
                Limit {
                    soft: value,
                    hard: value,
                }
            }
            Raw::Pair(pair) => Limit {
                soft: pair.soft.value()?,
                hard: pair.hard.value()?,
            },
        };
        if let (Some(soft), Some(hard)) = (limit.soft, limit.hard) {
            if soft > hard {
                return Err(serde::de::Error::custom(format!(
                    "soft limit {soft} is above the hard limit {hard}"
                )));
            }
        }
        Ok(limit)
    }
}

/// Resource limits applied with `setrlimit` before exec (systemd's `LimitNOFILE=`,
/// `LimitNPROC=`, `LimitCORE=`). Unset ones are inherited from the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// `RLIMIT_NOFILE`: open file descriptors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<Limit>,
    /// `RLIMIT_NPROC`: processes (threads) of the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Limit>,
    /// `RLIMIT_CORE`: core dump size in bytes (0 disables core dumps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_size: Option<Limit>,
}

impl ResourceLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.open_files.is_none() && self.processes.is_none() && self.core_size.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_numbers_words_and_pairs() {
        let limits: ResourceLimits = serde_json::from_str(
            r#"{"open_files": 4096, "processes": "infinity", "core_size": {"soft": 0, "hard": "unlimited"}}"#,
        )
        .unwrap();
        assert_eq!(limits.open_files, Some(Limit::both(4096)));
        assert_eq!(limits.processes, Some(Limit::unlimited()));
        assert_eq!(
            limits.core_size,
            Some(Limit {
                soft: Some(0),
                hard: None
            })
        );
        let back: ResourceLimits =
            serde_json::from_str(&serde_json::to_string(&limits).unwrap()).unwrap();
        assert_eq!(back, limits);
    }

    #[test]
    fn bad_limits_are_refused_with_the_reason() {
        let error = serde_json::from_str::<Limit>(r#"{"soft": 10, "hard": 5}"#).unwrap_err();
        assert!(
            error.to_string().contains("above the hard limit"),
            "{error}"
        );
        assert!(serde_json::from_str::<Limit>(r#""lots""#).is_err());
        assert!(serde_json::from_str::<ResourceLimits>(r#"{"open_file": 1}"#).is_err());
    }

    #[test]
    fn umask_reads_octal_strings_and_numbers() {
        assert_eq!(
            serde_json::from_str::<Umask>(r#""027""#).unwrap(),
            Umask(0o27)
        );
        assert_eq!(
            serde_json::from_str::<Umask>(r#""0o077""#).unwrap(),
            Umask(0o77)
        );
        assert_eq!(serde_json::from_str::<Umask>("18").unwrap(), Umask(18));
        assert_eq!(serde_json::to_string(&Umask(0o27)).unwrap(), r#""0027""#);
        assert!(serde_json::from_str::<Umask>(r#""089""#).is_err());
        assert!(serde_json::from_str::<Umask>("4096").is_err());
    }

    #[test]
    fn users_and_groups_are_names_or_ids() {
        assert_eq!(
            serde_json::from_str::<UserRef>(r#""postgres""#).unwrap(),
            UserRef::Name("postgres".into())
        );
        assert_eq!(
            serde_json::from_str::<GroupRef>("104").unwrap(),
            GroupRef::Id(104)
        );
    }
}
