//! Finding and loading the service file, and saying what is wrong with it.

use std::path::PathBuf;
use std::process::ExitCode;

use running_process::compose::{ServiceFile, DEFAULT_FILE_NAME};

use crate::output::Style;
use crate::printer;

/// A loaded, checked service file and its absolute path.
pub struct Loaded {
    pub path: PathBuf,
    pub file: ServiceFile,
}

/// Exit code for a bad or missing service file (as `sysexits`' EX_DATAERR is too exotic,
/// the conventional usage-error code).
pub const BAD_FILE: u8 = 2;

/// The file `-f` names, else `./running-process.toml`, as an absolute path.
pub fn path_of(file: Option<PathBuf>) -> PathBuf {
    let path = file.unwrap_or_else(|| PathBuf::from(DEFAULT_FILE_NAME));
    std::path::absolute(&path).unwrap_or(path)
}

/// Load and check the file; print the problem (with its line) and return the exit code
/// on failure.
pub async fn load(file: Option<PathBuf>) -> Result<Loaded, ExitCode> {
    let explicit = file.is_some();
    let path = path_of(file);
    if !explicit && !path.exists() {
        printer::stderr().print(no_file_help(&path));
        return Err(ExitCode::from(BAD_FILE));
    }
    match ServiceFile::load(&path).await {
        Ok(file) => Ok(Loaded { path, file }),
        Err(error) => {
            let (style, err) = (Style::stderr(), printer::stderr());
            err.print(format!("{}: {error}", style.error("error")));
            if let Some(pointer) = error.pointer() {
                err.print(pointer.to_string());
            }
            err.print("nothing was started".to_owned());
            Err(ExitCode::from(BAD_FILE))
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
