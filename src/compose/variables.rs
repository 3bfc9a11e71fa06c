//! Variables in a service file, as Docker Compose reads them: `${VAR}`, `$VAR`,
//! `${VAR:-default}` (unset or empty), `${VAR-default}` (unset), `${VAR:?message}` and
//! `${VAR?message}` (an error naming the variable), `$$` for a literal `$`; and env files
//! (`.env` beside the service file, `env_file = [...]` per service): `KEY=VALUE` lines,
//! `#` comments, an optional `export `, single quotes taken literally, double quotes with
//! `\n`, `\t`, `\\` and `\"` escapes; and `${port:KEY}`, a free loopback port chosen
//! when the file is loaded (see [`Ports`](super::Ports)). One parser for every reader of
//! the file.

// The readers are `load.rs` (feature `toml`); the instance token is used by every build.
#![cfg_attr(not(feature = "toml"), allow(dead_code))]

use std::collections::BTreeMap;

/// The variable a replicated service's instances are numbered by: left in the file as
/// written, and replaced per instance by its number.
pub const INSTANCE_VARIABLE: &str = "RUNNING_PROCESS_INSTANCE";

/// How the instance number is written in a service's strings.
pub(crate) const INSTANCE_TOKEN: &str = "${RUNNING_PROCESS_INSTANCE}";

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VariableError {
    /// `${VAR}` or `$VAR` of a variable that is not set, without a default.
    #[error("variable {name} is not set (give it a value in the environment or .env, or a default: ${{{name}:-default}})")]
    Unset {
        /// The variable.
        name: String,
    },
    /// `${VAR:?message}` (or `?`) of a variable that is not set (or empty).
    #[error("variable {name} is required: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The file's message.
        message: String,
    },
    /// `${port:KEY}`: no free loopback port could be had.
    #[error("no free loopback port for ${{port:{key}}}: {reason}")]
    Port {
        /// The key.
        key: String,
        /// What the OS said.
        reason: String,
    },
    /// A `${` without its `}`, or a name that is not one.
    #[error("bad variable reference {text:?}: {why}")]
    Syntax {
        /// The reference as written.
        text: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// Where the references of a file get their values.
pub(crate) trait Lookup {
    /// The variable `name` (`None`: not set).
    fn var(&self, name: &str) -> Option<String>;
    /// The port of `${port:KEY}`.
    fn port(&self, key: &str) -> Result<u16, VariableError>;
}

/// Variables alone (no ports: `${port:KEY}` is an error), for tests of the syntax.
impl<F: Fn(&str) -> Option<String>> Lookup for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }

    fn port(&self, key: &str) -> Result<u16, VariableError> {
        Err(VariableError::Port {
            key: key.to_owned(),
            reason: "ports are not chosen here".to_owned(),
        })
    }
}

/// The prefix of a port reference's inside: `${port:KEY}`.
const PORT_PREFIX: &str = "port:";

/// `text` with its variables replaced by `lookup`. The instance variable is kept as
/// written, for [`for_instance`].
pub(crate) fn interpolate(text: &str, lookup: &dyn Lookup) -> Result<String, VariableError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let Some(end) = closing_brace(inner) else {
                return Err(VariableError::Syntax {
                    text: rest.to_owned(),
                    why: "no closing `}`",
                });
            };
            out.push_str(&braced(&inner[..end], lookup)?);
            rest = &inner[end + 1..];
        } else {
            let len = after
                .char_indices()
                .find(|(i, c)| {
                    !(c.is_ascii_alphanumeric() || *c == '_') || (*i == 0 && c.is_ascii_digit())
                })
                .map_or(after.len(), |(i, _)| i);
            if len == 0 {
                // A lone `$` (before a space, a digit, the end): kept, as Compose does.
                out.push('$');
                rest = after;
                continue;
            }
            out.push_str(&value(&after[..len], lookup, Fallback::None)?);
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The index of the `}` that closes a `${` whose inside starts `inner` (a default may
/// hold references of its own: `${A:-${B}}`).
fn closing_brace(inner: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = inner.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' if i > 0 && bytes[i - 1] == b'$' => depth += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// What a reference does when its variable is not set.
enum Fallback<'a> {
    None,
    /// `:-` (`empty_too`) or `-`.
    Default {
        text: &'a str,
        empty_too: bool,
    },
    /// `:?` or `?`.
    Required {
        message: &'a str,
        empty_too: bool,
    },
}

/// The inside of `${...}`.
fn braced(inner: &str, lookup: &dyn Lookup) -> Result<String, VariableError> {
    if let Some(key) = port_key(inner)? {
        return lookup.port(key).map(|port| port.to_string());
    }
    let name_len = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, op) = inner.split_at(name_len);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(VariableError::Syntax {
            text: format!("${{{inner}}}"),
            why: "a name is letters, digits and `_`, not starting with a digit",
        });
    }
    if name == INSTANCE_VARIABLE && op.is_empty() {
        return Ok(INSTANCE_TOKEN.to_owned());
    }
    let fallback = if let Some(text) = op.strip_prefix(":-") {
        Fallback::Default {
            text,
            empty_too: true,
        }
    } else if let Some(text) = op.strip_prefix('-') {
        Fallback::Default {
            text,
            empty_too: false,
        }
    } else if let Some(message) = op.strip_prefix(":?") {
        Fallback::Required {
            message,
            empty_too: true,
        }
    } else if let Some(message) = op.strip_prefix('?') {
        Fallback::Required {
            message,
            empty_too: false,
        }
    } else if op.is_empty() {
        Fallback::None
    } else {
        return Err(VariableError::Syntax {
            text: format!("${{{inner}}}"),
            why: "expected `}`, `:-`, `-`, `:?` or `?` after the name",
        });
    };
    value(name, lookup, fallback)
}

/// The key of `port:KEY` (`port:-...` and `port:?...` are the variable `port` with a
/// default or a message).
fn port_key(inner: &str) -> Result<Option<&str>, VariableError> {
    let Some(key) = inner.strip_prefix(PORT_PREFIX) else {
        return Ok(None);
    };
    if key.starts_with(['-', '?']) {
        return Ok(None);
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if key.is_empty() || !key.chars().all(valid) {
        return Err(VariableError::Syntax {
            text: format!("${{{inner}}}"),
            why: "a port key is letters, digits, `_`, `-` and `.`",
        });
    }
    Ok(Some(key))
}

fn value(name: &str, lookup: &dyn Lookup, fallback: Fallback<'_>) -> Result<String, VariableError> {
    let found = lookup.var(name);
    match fallback {
        Fallback::None => found.ok_or_else(|| VariableError::Unset {
            name: name.to_owned(),
        }),
        Fallback::Default { text, empty_too } => Ok(match found {
            Some(value) if !(empty_too && value.is_empty()) => value,
            _ => interpolate(text, lookup)?,
        }),
        Fallback::Required { message, empty_too } => match found {
            Some(value) if !(empty_too && value.is_empty()) => Ok(value),
            _ => Err(VariableError::Required {
                name: name.to_owned(),
                message: message.to_owned(),
            }),
        },
    }
}

/// `text` for instance `n` of a replicated service: [`INSTANCE_TOKEN`] replaced.
pub(crate) fn for_instance(text: &str, n: u32) -> String {
    text.replace(INSTANCE_TOKEN, &n.to_string())
}

/// A problem in an env file, at its line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct EnvFileError {
    /// The line.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// The variables of an env file, in order (a later line wins).
pub(crate) fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, EnvFileError> {
    let mut vars = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let problem = |problem: &str| EnvFileError {
            line: i + 1,
            problem: problem.to_owned(),
        };
        let Some((key, value)) = line.split_once('=') else {
            return Err(problem("expected KEY=VALUE"));
        };
        let key = key.trim();
        let valid = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !valid {
            return Err(problem(
                "a name is letters, digits, `_` and `.`, not starting with a digit",
            ));
        }
        vars.insert(key.to_owned(), env_value(value.trim()).map_err(problem)?);
    }
    Ok(vars)
}

/// A value as Compose reads it: quoted, or bare with a ` #` comment cut off.
fn env_value(value: &str) -> Result<String, &'static str> {
    if let Some(inner) = value.strip_prefix('\'') {
        return inner
            .strip_suffix('\'')
            .map(str::to_owned)
            .ok_or("a single-quoted value must end with '");
    }
    if let Some(inner) = value.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or("a double-quoted value must end with \"")?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other @ ('\\' | '"')) => out.push(other),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        }
        return Ok(out);
    }
    let bare = match value.find(" #") {
        Some(at) => &value[..at],
        None => value,
    };
    Ok(bare.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn references_defaults_and_escapes() {
        let vars = [("PORT", "6400"), ("EMPTY", ""), ("HOST", "db")];
        let lookup = with(&vars);
        let run = |text: &str| interpolate(text, &lookup);
        assert_eq!(run("--port ${PORT}").unwrap(), "--port 6400");
        assert_eq!(run("$HOST:$PORT/x").unwrap(), "db:6400/x");
        assert_eq!(run("${MISSING:-5}").unwrap(), "5");
        assert_eq!(run("${EMPTY:-5}").unwrap(), "5");
        assert_eq!(run("${EMPTY-5}").unwrap(), "");
        assert_eq!(run("${MISSING-${PORT}}").unwrap(), "6400");
        assert_eq!(run("cost $$5 and $ alone").unwrap(), "cost $5 and $ alone");
        assert_eq!(run("${RUNNING_PROCESS_INSTANCE}").unwrap(), INSTANCE_TOKEN);
        assert_eq!(
            run("${MISSING}").unwrap_err(),
            VariableError::Unset {
                name: "MISSING".into()
            }
        );
        assert_eq!(
            run("${EMPTY:?set a password}").unwrap_err().to_string(),
            "variable EMPTY is required: set a password"
        );
        assert!(matches!(run("${PORT"), Err(VariableError::Syntax { .. })));
        assert!(matches!(run("${PO RT}"), Err(VariableError::Syntax { .. })));
        assert_eq!(for_instance("700${RUNNING_PROCESS_INSTANCE}", 3), "7003");
    }

    #[test]
    fn port_references() {
        struct Fixed;
        impl Lookup for Fixed {
            fn var(&self, name: &str) -> Option<String> {
                (name == "port").then(|| "env".to_owned())
            }
            fn port(&self, key: &str) -> Result<u16, VariableError> {
                Ok(match key {
                    "redis" => 6400,
                    _ => 7000,
                })
            }
        }
        let run = |text: &str| interpolate(text, &Fixed);
        assert_eq!(run("127.0.0.1:${port:redis}").unwrap(), "127.0.0.1:6400");
        assert_eq!(
            run("${port:web-api.v2}/${port:redis}").unwrap(),
            "7000/6400"
        );
        // `port` is still an ordinary variable with a default or a message.
        assert_eq!(run("${port:-1}").unwrap(), "env");
        assert_eq!(run("${port:?needed}").unwrap(), "env");
        assert_eq!(run("${port}").unwrap(), "env");
        assert!(matches!(run("${port:}"), Err(VariableError::Syntax { .. })));
        assert!(matches!(
            run("${port:a b}"),
            Err(VariableError::Syntax { .. })
        ));
        let no_ports = with(&[]);
        assert!(matches!(
            interpolate("${port:x}", &no_ports),
            Err(VariableError::Port { .. })
        ));
    }

    #[test]
    fn env_files_read_as_compose_reads_them() {
        let text = "# a comment\n\nexport A=1\nB = two words # cut\nC='lit $X # kept'\nD=\"a\\nb \\\"q\\\"\"\nA=3\n";
        let vars = parse_env_file(text).unwrap();
        assert_eq!(vars["A"], "3");
        assert_eq!(vars["B"], "two words");
        assert_eq!(vars["C"], "lit $X # kept");
        assert_eq!(vars["D"], "a\nb \"q\"");
        assert_eq!(parse_env_file("ok=1\nno equals\n").unwrap_err().line, 2);
        assert_eq!(parse_env_file("X='open\n").unwrap_err().line, 1);
    }
}
