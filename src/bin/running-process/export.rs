//! `running-process export systemd|kubernetes [-f FILE] [-o DIR] [--user] [--image [SERVICE=]IMAGE]`:
//! the service file as systemd units or Kubernetes manifests
//! ([`running_process::compose::export`]), written into a directory or printed.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use running_process::compose::export::{ExportOptions, ExportedFile, Target};
use running_process::compose::ServiceFile;

use crate::printer;

/// The export options from `--image` values: `IMAGE` for every service, `SERVICE=IMAGE`
/// for one (image references never contain `=`).
pub fn options<S: AsRef<str>>(images: &[S]) -> ExportOptions {
    images
        .iter()
        .fold(ExportOptions::default(), |options, value| {
            match value.as_ref().split_once('=') {
                Some((service, image)) => options.service_image(service, image),
                None => options.image(value.as_ref()),
            }
        })
}

/// `options` with this binary as the `running-process` that exported systemd units run for
/// `running-process wait` (its canonical path; unchanged if it cannot be found).
pub fn with_this_binary(options: ExportOptions) -> ExportOptions {
    match std::env::current_exe().and_then(std::fs::canonicalize) {
        Ok(path) => options.wait_program(path),
        Err(_) => options,
    }
}

/// Export `file` (read with `ServiceFile::load`, so its paths are absolute) to `target`.
/// With `out_dir`, each file is written there (the directory is created; a file is
/// replaced atomically) and its path printed; without, every file is printed to standard
/// output after a `# ---- NAME ----` line. Errors go to standard error, with a failing exit
/// code. Blocking (program lookup, file writes): call it outside the async runtime.
pub fn run(
    file: &ServiceFile,
    target: Target,
    options: &ExportOptions,
    out_dir: Option<&Path>,
) -> ExitCode {
    let files = match file.export(target, options) {
        Ok(files) => files,
        Err(error) => return failed(target, &error),
    };
    match out_dir {
        Some(dir) => match write_all(dir, &files) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => failed(target, &error),
        },
        None => {
            print_all(&files);
            ExitCode::SUCCESS
        }
    }
}

fn failed(target: Target, error: &dyn std::fmt::Display) -> ExitCode {
    printer::stderr().print(format!("running-process export {target}: {error}"));
    ExitCode::FAILURE
}

fn print_all(files: &[ExportedFile]) {
    let out = printer::stdout();
    for (i, file) in files.iter().enumerate() {
        if i > 0 {
            out.print(String::new());
        }
        out.print(format!("# ---- {} ----", file.name));
        out.print_raw(file.contents.clone());
    }
}

fn write_all(dir: &Path, files: &[ExportedFile]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for file in files {
        let path = dir.join(&file.name);
        write_atomic(&path, file.contents.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        printer::stdout().print(path.display().to_string());
    }
    Ok(())
}

/// Write a temporary file next to `path`, sync it, rename it over `path`: a reader sees
/// the old file or the new one, never half of one.
fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut out = std::fs::File::create(&tmp)?;
        out.write_all(contents)?;
        out.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
