//! [`FileError`]: a [`Problem`] with where it is: file, line, column and key.

use std::path::PathBuf;

use super::check::Problem;

/// A problem in a service file and where it is. Displayed as
/// `file:line:column: key: problem`, the form editors and terminals link to.
#[derive(Debug)]
#[non_exhaustive]
pub struct FileError {
    /// The file.
    pub file: PathBuf,
    /// Line and column (from 1) of the key or value at fault, when known (they are for a
    /// file read with `ServiceFile::from_toml_str` or `ServiceFile::load`, feature `toml`).
    pub position: Option<(usize, usize)>,
    /// The key at fault, dotted (`services.web.depends_on.db`); empty for the file itself.
    pub key: String,
    /// That line of the file, to show under the message.
    pub line_text: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for FileError {
    /// The problem's own cause (the I/O error of [`Problem::Read`]); the problem itself is
    /// part of this error's message.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.problem)
    }
}

impl FileError {
    pub(crate) fn unlocated(file: PathBuf, key: Vec<String>, problem: Problem) -> FileError {
        FileError {
            file,
            position: None,
            key: key.join("."),
            line_text: None,
            problem,
        }
    }

    /// A caret under the column, below the line's text: for a person reading the error.
    pub fn pointer(&self) -> Option<String> {
        let (line, column) = self.position?;
        let text = self.line_text.as_ref()?;
        let gutter = line.to_string().len();
        Some(format!(
            "{:gutter$} |\n{line} | {text}\n{:gutter$} | {:>column$}",
            "", "", "^"
        ))
    }
}
