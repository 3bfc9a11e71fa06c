//! Finding and loading the service file, and saying what is wrong with it.

use std::path::PathBuf;
use std::process::ExitCode;

use running_process::compose::{
    LoadOptions, Selection, ServiceFile, DEFAULT_FILE_NAME, OVERRIDE_FILE_NAME,
};

use crate::output::Style;
use crate::printer;

/// A loaded, checked service file (merged and selected) and where it came from.
pub struct Loaded {
    /// The first file: the detached supervisor is this file's.
    pub path: PathBuf,
    /// Every file read, in merge order (absolute).
    pub paths: Vec<PathBuf>,
    /// The services asked for.
    pub selection: Selection,
    /// The effective file: merged, variables resolved, only the selected services.
    pub file: ServiceFile,
}

/// Exit code for a bad or missing service file (as `sysexits`' EX_DATAERR is too exotic,
/// the conventional usage-error code).
pub const BAD_FILE: u8 = 2;

/// The first file `-f` names, else `./running-process.toml`, as an absolute path: the
/// file the detached supervisor belongs to.
pub fn path_of(files: &[PathBuf]) -> PathBuf {
    let path = files
        .first()
        .cloned()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FILE_NAME));
    std::path::absolute(&path).unwrap_or(path)
}

/// The files to read, absolute: those `-f` names, else `./running-process.toml` and, when
/// it exists beside it, `./running-process.override.toml` (Docker Compose's rule).
pub fn paths_of(files: Vec<PathBuf>) -> Vec<PathBuf> {
    let absolute = |path: PathBuf| std::path::absolute(&path).unwrap_or(path);
    if !files.is_empty() {
        return files.into_iter().map(absolute).collect();
    }
    let first = absolute(PathBuf::from(DEFAULT_FILE_NAME));
    let over = first.with_file_name(OVERRIDE_FILE_NAME);
    let mut paths = vec![first];
    if over.exists() {
        paths.push(over);
    }
    paths
}

/// Load, merge, check and select; print the problem (with its file and line) and return
/// the exit code on failure.
pub async fn load(files: Vec<PathBuf>, selection: Selection) -> Result<Loaded, ExitCode> {
    let explicit = !files.is_empty();
    let paths = paths_of(files);
    let path = paths[0].clone();
    if !explicit && !path.exists() {
        printer::stderr().print(no_file_help(&path));
        return Err(ExitCode::from(BAD_FILE));
    }
    match read(paths.clone(), &selection, LoadOptions::default()).await {
        Ok(file) => Ok(Loaded {
            path,
            paths,
            selection,
            file,
        }),
        Err(message) => {
            printer::stderr().print(message);
            Err(ExitCode::from(BAD_FILE))
        }
    }
}

/// The effective file of `paths` and `selection`, or the message that says what is wrong
/// (with its position under it) for a person.
pub async fn read(
    paths: Vec<PathBuf>,
    selection: &Selection,
    options: LoadOptions,
) -> Result<ServiceFile, String> {
    let style = Style::stderr();
    match ServiceFile::load_with(paths, options).await {
        Ok(file) => file
            .select(selection)
            .map_err(|e| format!("{}: {e}\nnothing was started", style.error("error"))),
        Err(error) => {
            let mut message = format!("{}: {error}", style.error("error"));
            if let Some(pointer) = error.pointer() {
                message.push('\n');
                message.push_str(&pointer);
            }
            message.push_str("\nnothing was started");
            Err(message)
        }
    }
}

/// `config`: the effective file as TOML (keys without a value left out: TOML has no null).
pub fn print_config(loaded: &Loaded) -> ExitCode {
    fn without_nulls(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(without_nulls);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(without_nulls),
            _ => {}
        }
    }
    let text = serde_json::to_value(&loaded.file)
        .map_err(|e| e.to_string())
        .and_then(|mut value| {
            without_nulls(&mut value);
            toml::to_string(&value).map_err(|e| e.to_string())
        });
    match text {
        Ok(text) => {
            printer::stdout().print(text.trim_end().to_owned());
            ExitCode::SUCCESS
        }
        Err(error) => {
            printer::stderr().print(format!("cannot write the file as TOML: {error}"));
            ExitCode::FAILURE
        }
    }
}

fn no_file_help(path: &std::path::Path) -> String {
    format!(
        "no service file: {} does not exist (or name one with -f FILE).\n\
         A small one:\n\n\
         [services.web]\n\
         program = \"python3\"\n\
         args = [\"-m\", \"http.server\", \"8000\", \"--bind\", \"127.0.0.1\"]\n\
         readiness = {{ kind = \"tcp\", address = \"127.0.0.1:8000\" }}\n\n\
         [services.worker]\n\
         program = \"sh\"\n\
         args = [\"-c\", \"while sleep 5; do echo working; done\"]\n\
         depends_on = [\"web\"]\n\n\
         Every key: https://docs.rs/running-process (modules compose and command).",
        path.display()
    )
}
