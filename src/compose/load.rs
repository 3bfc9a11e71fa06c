//! Reading a [`ServiceFile`] from TOML (feature `toml`), with the line, column and key of
//! every problem. The document is parsed once into a tree that keeps every key's and
//! value's position; each service table is then read into a [`CommandSpec`] from that
//! tree, so serde's own errors (an unknown key, a wrong type) keep their positions too.

// A `FileError` is 144 bytes (file, position, key, line, problem): returned once per file
// read, it is not worth a box in every signature.
#![allow(clippy::result_large_err)]

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use std::collections::BTreeMap;

use super::check::{check_dependencies, check_programs, KeyedProblem, Problem};
use super::error::FileError;
use super::file::{command_conflict, FileKeys, GroupSettings, Service, ServiceFile, FILE_KEYS};
use super::ports::Ports;
use super::variables::{interpolate, parse_env_file, Lookup, VariableError};
use crate::command::CommandSpec;

/// The name of the env file beside a service file whose variables `${VAR}` can use.
pub const DOTENV_FILE_NAME: &str = ".env";

/// The file merged over `running-process.toml` when it exists beside it and no file is
/// named (Docker Compose's `docker-compose.override.yml`).
pub const OVERRIDE_FILE_NAME: &str = "running-process.override.toml";

impl ServiceFile {
    /// Read a service file from TOML text: its types, its keys (an unknown one is an error)
    /// and its dependencies (they exist, no cycle, reachable conditions). `file` is only
    /// for the messages. Programs are not looked up: [`ServiceFile::load`] does that.
    ///
    /// `${VAR}` references take their values from the process environment; an unset one
    /// without a default is an error at its position. [`ServiceFile::load`] also reads the
    /// `.env` file beside the file.
    pub fn from_toml_str(text: &str, file: impl Into<PathBuf>) -> Result<ServiceFile, FileError> {
        let source = Source::new(vec![(file.into(), text)]);
        read(&source, &BTreeMap::new(), &LoadOptions::default(), |_| {
            Ok(())
        })
    }

    /// Read and check the file at `path`, as `running-process check` does: everything
    /// [`ServiceFile::from_toml_str`] checks (with the variables of the `.env` file beside
    /// it, below the environment's), then relative paths resolved against the file's
    /// directory ([`ServiceFile::resolve_paths`]), env files read and every program looked
    /// up. On the blocking pool.
    pub async fn load(path: impl Into<PathBuf>) -> Result<ServiceFile, FileError> {
        ServiceFile::load_merged(vec![path.into()]).await
    }

    /// Read several files as one (`-f a.toml -f b.toml`): each later file merged key by
    /// key over the ones before it (a table merges into a table, any other value
    /// replaces; a service only in a later file is added after the others), then checked
    /// as [`ServiceFile::load`] checks one. Relative paths and `.env` are those of the
    /// first file's directory, as in Docker Compose. Every problem names the file and the
    /// line where the key at fault was last written.
    pub async fn load_merged(paths: Vec<PathBuf>) -> Result<ServiceFile, FileError> {
        ServiceFile::load_with(paths, LoadOptions::default()).await
    }

    /// [`ServiceFile::load_merged`] with `options`: variables that override the
    /// environment's, and the ports of an earlier load to keep.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), running_process::compose::FileError> {
    /// use running_process::compose::{LoadOptions, ServiceFile};
    ///
    /// let first = ServiceFile::load("running-process.toml").await?;
    /// // The edited file, on the ports the running set already uses.
    /// let edited = ServiceFile::load_with(
    ///     vec!["running-process.toml".into()],
    ///     LoadOptions::default().ports(first.ports.clone()),
    /// )
    /// .await?;
    /// assert_eq!(edited.ports.get("redis"), first.ports.get("redis"));
    /// # Ok(()) }
    /// ```
    pub async fn load_with(
        paths: Vec<PathBuf>,
        options: LoadOptions,
    ) -> Result<ServiceFile, FileError> {
        crate::blocking::blocking(move || load_blocking(&paths, &options)).await
    }
}

/// How [`ServiceFile::load_with`] reads a file beyond the file itself.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Variables for `${VAR}` that take precedence over the environment and `.env` (a
    /// run's own directory, say).
    pub variables: BTreeMap<String, String>,
    /// Ports an earlier load chose: a `${port:KEY}` with a key in here gets the same
    /// number again; other keys get free ones.
    pub ports: Ports,
}

impl LoadOptions {
    /// Set the variable `name` (over the environment's and `.env`'s).
    pub fn variable(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.insert(name.into(), value.into());
        self
    }

    /// Keep these ports for the keys the file still uses.
    pub fn ports(mut self, ports: Ports) -> Self {
        self.ports = ports;
        self
    }
}

/// Where a file being read gets its variables (the options', then the environment's,
/// then `.env`'s: Compose's precedence) and its ports.
struct FileLookup<'a> {
    options: &'a LoadOptions,
    dotenv: &'a BTreeMap<String, String>,
    chosen: std::cell::RefCell<Ports>,
}

impl Lookup for FileLookup<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.options
            .variables
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .or_else(|| self.dotenv.get(name).cloned())
    }

    fn port(&self, key: &str) -> Result<u16, VariableError> {
        self.chosen
            .borrow_mut()
            .resolve(key, &self.options.ports)
            .map_err(|error| VariableError::Port {
                key: key.to_owned(),
                reason: error.to_string(),
            })
    }
}

/// Read the merged `source`, its variables from `options`, the process environment, then
/// `dotenv` (Compose's precedence); `finish` does what needs the file system (its
/// problems are located like the others).
fn read(
    source: &Source<'_>,
    dotenv: &BTreeMap<String, String>,
    options: &LoadOptions,
    finish: impl FnOnce(&mut ServiceFile) -> Result<(), KeyedProblem>,
) -> Result<ServiceFile, FileError> {
    let mut root = source.parse()?;
    let lookup = FileLookup {
        options,
        dotenv,
        chosen: Default::default(),
    };
    let mut key = Vec::new();
    interpolate_table(source, &mut root, &lookup, &mut key)?;
    let mut parsed = read_root(source, &root)?;
    parsed.ports = lookup.chosen.into_inner();
    check_dependencies(&parsed).map_err(|p| source.keyed(&root, p))?;
    finish(&mut parsed).map_err(|p| source.keyed(&root, p))?;
    Ok(parsed)
}

/// Replace the variables of every string value (keys are left as written).
fn interpolate_table(
    source: &Source<'_>,
    table: &mut DeTable<'_>,
    lookup: &dyn Lookup,
    key: &mut Vec<String>,
) -> Result<(), FileError> {
    for (name, value) in table.iter_mut() {
        key.push(name.get_ref().to_string());
        interpolate_value(source, value, lookup, key)?;
        key.pop();
    }
    Ok(())
}

fn interpolate_value(
    source: &Source<'_>,
    value: &mut Spanned<DeValue<'_>>,
    lookup: &dyn Lookup,
    key: &mut Vec<String>,
) -> Result<(), FileError> {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(text) if text.contains('$') => {
            let replaced = interpolate(text, lookup)
                .map_err(|e| source.at(Some(span), key.clone(), Problem::Variable(e)))?;
            *text = replaced.into();
        }
        DeValue::Table(inner) => interpolate_table(source, inner, lookup, key)?,
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                interpolate_value(source, item, lookup, key)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The variables of the `.env` file beside `path`, if there is one.
fn read_dotenv(path: &Path) -> Result<BTreeMap<String, String>, FileError> {
    let dotenv = base_dir(path).join(DOTENV_FILE_NAME);
    match std::fs::read_to_string(&dotenv) {
        Ok(text) => parse_env_file(&text).map_err(|e| {
            FileError::unlocated(
                path.to_path_buf(),
                Vec::new(),
                Problem::EnvFile {
                    path: dotenv,
                    problem: e.to_string(),
                },
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(FileError::unlocated(
            path.to_path_buf(),
            Vec::new(),
            Problem::EnvFile {
                path: dotenv,
                problem: e.to_string(),
            },
        )),
    }
}

/// Each service's env files, read into its environment below its own `env`.
fn apply_env_files(file: &mut ServiceFile) -> Result<(), KeyedProblem> {
    for service in &mut file.services {
        let mut from_files = BTreeMap::new();
        for path in &service.env_files {
            let problem = |problem: String| KeyedProblem {
                key: vec![
                    "services".into(),
                    service.spec.name.clone(),
                    "env_file".into(),
                ],
                problem: Problem::EnvFile {
                    path: path.clone(),
                    problem,
                },
            };
            let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
            from_files.extend(parse_env_file(&text).map_err(|e| problem(e.to_string()))?);
        }
        for (name, value) in from_files {
            service.spec.env.entry(name).or_insert(value);
        }
    }
    Ok(())
}

fn load_blocking(paths: &[PathBuf], options: &LoadOptions) -> Result<ServiceFile, FileError> {
    let Some(first) = paths.first() else {
        return Err(FileError::unlocated(
            PathBuf::from(super::file::DEFAULT_FILE_NAME),
            Vec::new(),
            Problem::Invalid("no file to read".into()),
        ));
    };
    let mut texts = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FileError::unlocated(path.clone(), Vec::new(), Problem::Read(e)))?;
        texts.push(text);
    }
    let source = Source::new(
        paths
            .iter()
            .cloned()
            .zip(texts.iter().map(String::as_str))
            .collect(),
    );
    let dotenv = read_dotenv(first)?;
    let absolute = std::path::absolute(first).unwrap_or_else(|_| first.clone());
    read(&source, &dotenv, options, |file| {
        file.resolve_paths(&base_dir(&absolute));
        apply_env_files(file)?;
        check_programs(file)
    })
}

/// The texts being read (a file, or a file and those merged over it), laid end to end so
/// that one offset names a place in one of them: positions in the merged tree say which
/// file and line they come from.
struct Source<'a> {
    parts: Vec<Part<'a>>,
}

struct Part<'a> {
    file: PathBuf,
    text: &'a str,
    /// Where its text begins in the texts laid end to end.
    start: usize,
}

impl<'a> Source<'a> {
    fn new(files: Vec<(PathBuf, &'a str)>) -> Source<'a> {
        let mut start = 0;
        let parts = files
            .into_iter()
            .map(|(file, text)| {
                let part = Part { file, text, start };
                start += text.len() + 1;
                part
            })
            .collect();
        Source { parts }
    }

    /// Every part parsed, its positions moved to its place, merged in order.
    fn parse(&self) -> Result<DeTable<'a>, FileError> {
        let mut merged = DeTable::new();
        for (i, part) in self.parts.iter().enumerate() {
            let alone = Source::new(vec![(part.file.clone(), part.text)]);
            let root = DeTable::parse(part.text)
                .map_err(|e| alone.toml_error(e, None, Problem::Syntax))?;
            let span = root.span();
            let root = Spanned::new(span, DeValue::Table(root.into_inner()));
            let DeValue::Table(tree) = shift(root, self.parts[i].start).into_inner() else {
                unreachable!("a document is a table");
            };
            merge(&mut merged, tree);
        }
        Ok(merged)
    }

    /// The part an offset of the texts laid end to end is in.
    fn part(&self, offset: usize) -> &Part<'a> {
        self.parts
            .iter()
            .rev()
            .find(|part| part.start <= offset)
            .unwrap_or(&self.parts[0])
    }
}

/// `value` with every position moved `by` bytes.
fn shift(value: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let span = value.span();
    let moved = span.start + by..span.end + by;
    let inner = match value.into_inner() {
        DeValue::Table(table) => DeValue::Table(
            table
                .into_iter()
                .map(|(key, value)| {
                    let key_span = key.span();
                    let key =
                        Spanned::new(key_span.start + by..key_span.end + by, key.into_inner());
                    (key, shift(value, by))
                })
                .collect(),
        ),
        DeValue::Array(items) => {
            DeValue::Array(items.into_iter().map(|item| shift(item, by)).collect())
        }
        other => other,
    };
    Spanned::new(moved, inner)
}

/// Merge `over` into `base` key by key: tables into tables, anything else replaced (with
/// its key, so that a problem with it points at the file that wrote it last).
fn merge<'a>(base: &mut DeTable<'a>, over: DeTable<'a>) {
    for (key, value) in over {
        let existing = base
            .get_mut(key.get_ref().as_ref())
            .filter(|existing| existing.get_ref().is_table() && value.get_ref().is_table());
        if let Some(existing) = existing {
            if let (DeValue::Table(inner), DeValue::Table(value)) =
                (existing.get_mut(), value.into_inner())
            {
                merge(inner, value);
            }
            continue;
        }
        base.remove(key.get_ref().as_ref());
        base.insert(key, value);
    }
}

impl Source<'_> {
    fn at(&self, span: Option<Range<usize>>, key: Vec<String>, problem: Problem) -> FileError {
        let part = self.part(span.as_ref().map_or(0, |s| s.start));
        let mut error = FileError::unlocated(part.file.clone(), key, problem);
        if let Some(span) = span {
            let text = part.text;
            let start = span.start.saturating_sub(part.start).min(text.len());
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = text[line_start..start].chars().count() + 1;
            error.position = Some((line, column));
            error.line_text = text[line_start..].lines().next().map(str::to_owned);
        }
        error
    }

    /// A TOML or serde error: its own position, and the key found there in `root`.
    fn toml_error(
        &self,
        error: toml::de::Error,
        root: Option<&DeTable<'_>>,
        problem: fn(String) -> Problem,
    ) -> FileError {
        let span = error.span();
        let key = match (root, &span) {
            (Some(root), Some(span)) => key_at(root, span.start),
            _ => Vec::new(),
        };
        // The service's name is its table key: do not offer `name` among the keys.
        let message = error.message().replace("`name`, ", "");
        self.at(span, key, problem(message))
    }

    /// A problem found by a check, at the position of its key.
    fn keyed(&self, root: &DeTable<'_>, problem: KeyedProblem) -> FileError {
        let span = span_of(root, &problem.key);
        self.at(span, problem.key, problem.problem)
    }
}

fn read_root(source: &Source<'_>, root: &DeTable<'_>) -> Result<ServiceFile, FileError> {
    let mut file = ServiceFile {
        group: GroupSettings::default(),
        services: Vec::new(),
        ports: Ports::default(),
    };
    for (key, value) in root.iter() {
        match key.get_ref().as_ref() {
            "group" => {
                file.group = GroupSettings::deserialize_spanned(value.clone())
                    .map_err(|e| source.toml_error(e, Some(root), Problem::Invalid))?;
            }
            "services" => file.services = read_services(source, root, value)?,
            other => {
                return Err(source.at(
                    Some(key.span()),
                    vec![other.to_owned()],
                    Problem::Invalid(format!(
                        "unknown key `{other}`, expected `group` or `services`"
                    )),
                ))
            }
        }
    }
    Ok(file)
}

trait DeserializeSpanned: Sized {
    fn deserialize_spanned(value: Spanned<DeValue<'_>>) -> Result<Self, toml::de::Error>;
}

impl<T: serde::de::DeserializeOwned> DeserializeSpanned for T {
    fn deserialize_spanned(value: Spanned<DeValue<'_>>) -> Result<Self, toml::de::Error> {
        T::deserialize(ValueDeserializer::from(value))
    }
}

fn read_services(
    source: &Source<'_>,
    root: &DeTable<'_>,
    value: &Spanned<DeValue<'_>>,
) -> Result<Vec<Service>, FileError> {
    let DeValue::Table(table) = value.get_ref() else {
        return Err(source.at(
            Some(value.span()),
            vec!["services".into()],
            Problem::Invalid("`services` must be a table of service tables".into()),
        ));
    };
    // File order: the tree's map may be sorted by key.
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    let mut services = Vec::with_capacity(entries.len());
    for (key, body) in entries {
        let name = key.get_ref().to_string();
        let service_key = || vec!["services".to_owned(), name.clone()];
        let DeValue::Table(fields) = body.get_ref() else {
            return Err(source.at(
                Some(body.span()),
                service_key(),
                Problem::Invalid(format!("`services.{name}` must be a table")),
            ));
        };
        let mut fields = fields.clone();
        if let Some((name_key, _)) = fields.get_key_value("name") {
            let mut key = service_key();
            key.push("name".into());
            return Err(source.at(Some(name_key.span()), key, Problem::NameKey));
        }
        if let Some(conflict) = command_conflict(|key| fields.contains_key(key)) {
            let mut key = service_key();
            key.push("command".into());
            let span = fields.get_key_value("command").map(|(k, _)| k.span());
            return Err(source.at(span, key, Problem::CommandConflict(conflict)));
        }
        let mut keys = toml::de::DeTable::new();
        for name in FILE_KEYS {
            if let Some((k, v)) = fields
                .get_key_value(name)
                .map(|(k, v)| (k.clone(), v.clone()))
            {
                fields.remove(name);
                keys.insert(k, v);
            }
        }
        let keys = FileKeys::deserialize_spanned(Spanned::new(body.span(), DeValue::Table(keys)))
            .map_err(|e| source.toml_error(e, Some(root), Problem::Invalid))?;
        if keys.command.is_some() {
            fields.insert(
                Spanned::new(key.span(), "program".into()),
                Spanned::new(key.span(), DeValue::String("sh".into())),
            );
        }
        fields.insert(
            Spanned::new(key.span(), "name".into()),
            Spanned::new(key.span(), DeValue::String(name.clone().into())),
        );
        let spec =
            CommandSpec::deserialize_spanned(Spanned::new(body.span(), DeValue::Table(fields)))
                .map_err(|e| {
                    let mut error = source.toml_error(e, Some(root), Problem::Invalid);
                    if let Problem::Invalid(message) = &mut error.problem {
                        if message.starts_with("unknown field") {
                            for key in FILE_KEYS {
                                message.push_str(&format!(", `{key}`"));
                            }
                        }
                    }
                    error
                })?;
        services.push(Service::from_keys(spec, keys));
    }
    Ok(services)
}

/// The dotted key at `offset`, as deep as the tree goes: the entry whose key or value
/// contains it, else the table whose header comes last before it (a `[services.web]`
/// header's table does not span the lines below it).
fn key_at(table: &DeTable<'_>, offset: usize) -> Vec<String> {
    let inside = |span: Range<usize>| span.start <= offset && offset < span.end.max(span.start + 1);
    let mut path = Vec::new();
    let mut current = table;
    loop {
        let hit = current
            .iter()
            .find(|(key, value)| inside(key.span()) || inside(value.span()))
            .or_else(|| {
                current
                    .iter()
                    .filter(|(key, value)| key.span().start <= offset && value.get_ref().is_table())
                    .max_by_key(|(key, _)| key.span().start)
            });
        let Some((key, value)) = hit else { break };
        path.push(key.get_ref().to_string());
        match value.get_ref() {
            DeValue::Table(inner) => current = inner,
            _ => break,
        }
    }
    path
}

/// The position of a dotted key (its deepest part found): the key itself, or for a name
/// in a list (`depends_on = ["db"]`) that element.
fn span_of(table: &DeTable<'_>, key: &[String]) -> Option<Range<usize>> {
    let mut current = table;
    let mut found = None;
    for (depth, part) in key.iter().enumerate() {
        let Some((k, value)) = current.get_key_value(part.as_str()) else {
            return found;
        };
        found = Some(k.span());
        match value.get_ref() {
            DeValue::Table(inner) => current = inner,
            DeValue::Array(items) => {
                let Some(next) = key.get(depth + 1) else {
                    return found;
                };
                return items
                    .iter()
                    .find(|item| item.get_ref().as_str() == Some(next.as_str()))
                    .map(|item| item.span())
                    .or(found);
            }
            _ => return found,
        }
    }
    found
}

/// Where the services of a file run from: the file's directory.
pub(crate) fn base_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
