//! Forwarding a child's stdout and stderr, line by line, to tracing or a file (with
//! optional size-based rotation), keeping their last lines, and watching them for a
//! readiness line.

use crate::blocking::blocking;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::spec::{CommandSpec, Output, Readiness, StreamName};
use super::spec_error::SpecError;
use crate::platform::Stdio;
use crate::supervision::StartError;

/// The longest piece forwarded as one line. A longer line is cut into pieces of at most
/// this many bytes, so a child that never writes a newline cannot make us buffer without
/// bound.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// The read buffer of a pump (one per captured stream of every running service).
const READ_BUFFER: usize = 4 * 1024;

/// The most lines an [`OutputTail`] keeps.
pub(crate) const MAX_TAIL_LINES: usize = 20;

/// The most bytes (of line text, without newlines) an [`OutputTail`] keeps in total.
pub(crate) const MAX_TAIL_BYTES: usize = 8 * 1024;

/// The last lines written to a service's captured streams, for reporting why it died.
///
/// Cheap to clone: clones share the same lines. Both streams of one process may share
/// one tail; their lines are then interleaved in the order the pumps received them. At
/// most [`MAX_TAIL_LINES`] lines and [`MAX_TAIL_BYTES`] bytes are kept, the oldest
/// dropped first; a single longer line is cut to [`MAX_TAIL_BYTES`] between UTF-8
/// characters.
#[derive(Clone, Debug, Default)]
pub(crate) struct OutputTail(Arc<Mutex<TailLines>>);

/// The lines of an [`OutputTail`] and their total length.
#[derive(Debug, Default)]
struct TailLines {
    /// Oldest first.
    lines: VecDeque<String>,
    /// The sum of the lengths of `lines`.
    bytes: usize,
}

impl OutputTail {
    /// Keep `line`, dropping the oldest lines to stay within the limits.
    pub(crate) fn push(&self, line: &str) {
        let mut end = line.len().min(MAX_TAIL_BYTES);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let line = &line[..end];
        let mut tail = self.lock();
        while tail.lines.len() >= MAX_TAIL_LINES || tail.bytes + line.len() > MAX_TAIL_BYTES {
            let Some(old) = tail.lines.pop_front() else {
                break;
            };
            tail.bytes -= old.len();
        }
        tail.bytes += line.len();
        tail.lines.push_back(line.to_owned());
    }

    /// The lines kept, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<String> {
        self.lock().lines.iter().cloned().collect()
    }

    /// The lines, held only for a few operations. A panic while holding them cannot
    /// leave them inconsistent in a way that matters, so poisoning is ignored.
    fn lock(&self) -> std::sync::MutexGuard<'_, TailLines> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A log file the file sink appends to, rotated by size if asked.
#[derive(Debug)]
pub(crate) struct LogFile {
    /// Where the current file lives; rotated files get `.1`, `.2`, … appended.
    path: PathBuf,
    /// The current file, opened for appending.
    file: File,
    /// The current file's size: read when opened, then counted as we write.
    size: u64,
    /// `(max_bytes, keep)`: rotate before the file would grow past `max_bytes`, keeping
    /// `keep` rotated files. `None`: the file grows without bound.
    rotation: Option<(u64, u32)>,
}

impl LogFile {
    /// Open (creating if needed) `path` for appending. Blocking: run it on the blocking
    /// pool.
    ///
    /// With `rotation = Some((max_bytes, keep))`, writes that would take the file past
    /// `max_bytes` first rotate it like logrotate: `path.{keep}` is deleted, `path.{n}`
    /// renamed to `path.{n+1}`, `path` to `path.1`, and a fresh `path` started; with
    /// `keep == 0` the file is just emptied. Rotation happens between lines, never
    /// inside one; a line longer than `max_bytes` goes whole into a fresh file.
    pub(crate) fn open(path: &Path, rotation: Option<(u64, u32)>) -> io::Result<LogFile> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_owned(),
            file,
            size,
            rotation,
        })
    }

    /// Append `batch`, whole lines each ending in `\n`, rotating between lines as
    /// needed. Blocking.
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        let Some((max_bytes, _)) = self.rotation else {
            self.file.write_all(batch)?;
            self.size += batch.len() as u64;
            return Ok(());
        };
        // `batch[start..end]`: lines that still fit in the current file, written at once.
        let (mut start, mut end) = (0, 0);
        for line in batch.split_inclusive(|&byte| byte == b'\n') {
            let pending = self.size + (end - start) as u64;
            if pending > 0 && pending + line.len() as u64 > max_bytes {
                self.write(&batch[start..end])?;
                self.rotate()?;
                start = end;
            }
            end += line.len();
        }
        self.write(&batch[start..end])
    }

    /// Append `bytes` to the current file.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Move the current file aside (or empty it, keeping none) and start a fresh one.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.rotation.map_or(0, |(_, keep)| keep);
        if keep == 0 {
            // Truncating through the append handle is not allowed everywhere (Windows
            // grants it no plain write access): empty the file through a second handle.
            File::create(&self.path)?;
        } else {
            remove_if_present(&rotated(&self.path, keep))?;
            for n in (1..keep).rev() {
                match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                    Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Open `path` for appending, creating it if needed.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `path` with `.{n}` appended to its file name.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    name.into()
}

/// Delete `path`; that it does not exist is no error.
fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Where [`pump_lines`] sends each line.
#[derive(Debug)]
pub(crate) enum LineSink {
    /// A `tracing` info event with target `running_process::output` and the fields
    /// `service` and `stream`.
    Tracing,
    /// Appended to the file as `line\n`, written on the blocking pool and rotated as the
    /// [`LogFile`] says. After a write error the rest of the output is discarded (one
    /// warning, not one per line).
    File(LogFile),
    /// Dropped. The output is still read, so the child never blocks on a full pipe, and
    /// still checked against the [`LineWatch`].
    Discard,
}

/// Waits for the first line containing `pattern` (a plain substring).
#[derive(Debug)]
pub(crate) struct LineWatch {
    /// The substring to look for.
    pub pattern: String,
    /// Receives the first matching line; dropped unsent if the stream ends without one.
    pub found: oneshot::Sender<String>,
}

/// Spawn a task that reads `reader` line by line until EOF (or a read error, logged),
/// sends every line to `sink` and `tail` and checks it against `watch`.
///
/// Every line is in `tail` before the task ends, so once the task has finished (the
/// stream reached EOF) the tail is complete.
///
/// Invalid UTF-8 is replaced (U+FFFD) and one trailing `\r` is dropped. Lines longer
/// than [`MAX_LINE`] bytes are forwarded in pieces, cut between UTF-8 characters; a
/// pattern that straddles a cut is not found.
pub(crate) fn pump_lines<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    service: Arc<str>,
    stream: &'static str,
    sink: LineSink,
    watch: Option<LineWatch>,
    tail: Option<OutputTail>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = Lines {
            service,
            stream,
            sink,
            watch,
            tail,
            batch: Vec::new(),
        };
        let result = read_lines(reader, &mut lines).await;
        lines.flush().await;
        if let Err(error) = result {
            tracing::debug!(service = %lines.service, stream, error = %crate::report::Chain(&error), "cannot read output");
        }
    })
}

/// Split `reader` into lines and pieces of at most [`MAX_LINE`] bytes.
async fn read_lines<R: AsyncRead + Unpin>(reader: R, lines: &mut Lines) -> io::Result<()> {
    // A small read buffer: a long line grows `line` instead, so an idle service's pump
    // costs the supervisor a few KiB, not `MAX_LINE`.
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    let mut line = Vec::new();
    loop {
        if reader.buffer().is_empty() {
            // The next read may wait for the child: write what we have first.
            lines.flush().await;
        }
        let (used, complete) = {
            let chunk = reader.fill_buf().await?;
            if chunk.is_empty() {
                break;
            }
            // One byte past the room is searched, so a line of exactly MAX_LINE bytes is
            // not cut: a full `line` is cut only once a byte other than `\n` follows.
            let room = MAX_LINE - line.len();
            let window = &chunk[..chunk.len().min(room + 1)];
            match window.iter().position(|&byte| byte == b'\n') {
                Some(end) => {
                    line.extend_from_slice(&window[..end]);
                    (end + 1, true)
                }
                None => {
                    let take = window.len().min(room);
                    line.extend_from_slice(&window[..take]);
                    (take, false)
                }
            }
        };
        reader.consume(used);
        if complete {
            let text = line.strip_suffix(b"\r").unwrap_or(&line);
            lines.send(text).await;
            line.clear();
        } else if used == 0 {
            // `line` is full and the line goes on.
            let cut = MAX_LINE - incomplete_utf8_tail(&line);
            lines.send(&line[..cut]).await;
            line.drain(..cut);
        }
    }
    if !line.is_empty() {
        lines.send(&line).await;
    }
    Ok(())
}

/// How many bytes at the end of `bytes` start a UTF-8 character that is not complete yet
/// (0 to 3): they begin the next piece instead of becoming U+FFFD twice.
fn incomplete_utf8_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0xc0 != 0x80 {
            // Not a continuation byte: the character starts here.
            let len = match byte {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                _ => 1,
            };
            return if len > back { back } else { 0 };
        }
    }
    0
}

/// The state of one pump: where lines go.
struct Lines {
    /// The service's name, for logging.
    service: Arc<str>,
    /// `"stdout"` or `"stderr"`, for logging.
    stream: &'static str,
    /// Where lines go.
    sink: LineSink,
    /// The readiness line looked for, until found.
    watch: Option<LineWatch>,
    /// Receives every line as it is read.
    tail: Option<OutputTail>,
    /// Lines for the file sink not yet written: one blocking-pool write per read from the
    /// child, not one per line.
    batch: Vec<u8>,
}

impl Lines {
    /// Forward one line (without its newline) to the watch, the tail and the sink.
    async fn send(&mut self, bytes: &[u8]) {
        let line = String::from_utf8_lossy(bytes);
        if let Some(tail) = &self.tail {
            tail.push(&line);
        }
        if let Some(watch) = self.watch.take_if(|watch| line.contains(&watch.pattern)) {
            // The receiver may have stopped waiting; that is its choice.
            let _ = watch.found.send(line.clone().into_owned());
        }
        match self.sink {
            LineSink::Tracing => tracing::info!(
                target: "running_process::output",
                service = %self.service,
                stream = self.stream,
                "{line}"
            ),
            LineSink::File(_) => {
                self.batch.extend_from_slice(line.as_bytes());
                self.batch.push(b'\n');
                if self.batch.len() >= MAX_LINE {
                    self.flush().await;
                }
            }
            LineSink::Discard => {}
        }
    }

    /// Write the batch to the file sink on the blocking pool.
    async fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        // The file moves to the blocking pool and back; only the file sink fills `batch`.
        let LineSink::File(mut file) = std::mem::replace(&mut self.sink, LineSink::Discard) else {
            return;
        };
        let batch = std::mem::take(&mut self.batch);
        let written = blocking(move || {
            let result = file.write_batch(&batch);
            (file, batch, result)
        })
        .await;
        match written {
            (file, mut batch, Ok(())) => {
                self.sink = LineSink::File(file);
                batch.clear();
                self.batch = batch;
            }
            (_, _, Err(error)) => {
                tracing::warn!(service = %self.service, stream = self.stream, %error,
                    "cannot write output file; discarding the rest of this stream");
            }
        }
    }
}

/// How stdout and stderr of `spec`'s child are connected, and a sink for each stream
/// whose lines are read: a pipe wherever lines are read (a sink, a readiness pattern, the
/// last lines for the exit event).
pub(crate) async fn plan_streams(
    spec: &CommandSpec,
) -> Result<([Stdio; 2], [Option<LineSink>; 2]), StartError> {
    let watched = match &spec.readiness {
        Readiness::LogLine { stream, .. } => Some(*stream),
        _ => None,
    };
    let detached = !spec.die_with_supervisor;
    let (stdout, stdout_sink) =
        plan_stream(&spec.stdout, watched == Some(StreamName::Stdout), detached).await?;
    let (stderr, stderr_sink) =
        plan_stream(&spec.stderr, watched == Some(StreamName::Stderr), detached).await?;
    Ok(([stdout, stderr], [stdout_sink, stderr_sink]))
}

/// How one standard stream is connected, and `Some(sink)` when its lines are read.
///
/// A daemon that outlives the supervisor (`detached`) must not write into a pipe only the
/// supervisor reads: once the supervisor is gone, its next write would raise SIGPIPE. Its
/// discarded output goes to `/dev/null` and its file output straight to the file (no
/// rotation and no last lines then); only a log-line readiness or `tracing` still needs the
/// pipe, for as long as the supervisor lives.
async fn plan_stream(
    output: &Output,
    watched: bool,
    detached: bool,
) -> Result<(Stdio, Option<LineSink>), StartError> {
    Ok(match (output, watched) {
        (Output::Inherit, false) => (Stdio::Inherit, None),
        (Output::Null, false) if detached => (Stdio::Null, None),
        (Output::File { path, rotate }, false) if detached => {
            if rotate.is_some() {
                return Err(SpecError::RotationOfDetached(path.clone()).into());
            }
            (
                Stdio::File(open_off_workers(path, open_append).await?),
                None,
            )
        }
        // Read and dropped: the lines still reach the readiness watch and the tail.
        (Output::Null, _) => (Stdio::Pipe, Some(LineSink::Discard)),
        (Output::File { path, rotate }, _) => {
            let rotation = rotate.map(|r| (r.max_bytes, r.keep));
            let file = open_off_workers(path, move |path| LogFile::open(path, rotation)).await?;
            (Stdio::Pipe, Some(LineSink::File(file)))
        }
        // Lines must be read anyway: an inherited stream is forwarded to tracing.
        (Output::Tracing, _) | (Output::Inherit, true) => (Stdio::Pipe, Some(LineSink::Tracing)),
    })
}

/// Open an output file on the blocking pool; a failure names the file.
async fn open_off_workers<T: Send + 'static>(
    path: &Path,
    open: impl FnOnce(&Path) -> io::Result<T> + Send + 'static,
) -> Result<T, StartError> {
    let owned = path.to_owned();
    blocking(move || open(&owned))
        .await
        .map_err(|source| StartError::Prepare {
            what: "the output file",
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use tokio::io::AsyncWriteExt;

    use crate::test_util::DEADLINE;

    impl OutputTail {
        /// Forget every line.
        fn clear(&self) {
            let mut tail = self.lock();
            tail.lines.clear();
            tail.bytes = 0;
        }
    }

    async fn finish(task: JoinHandle<()>) {
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the pump did not end within the deadline")
            .unwrap();
    }

    /// Pump `input` into a fresh file and return the file's lines.
    async fn pump_to_file(input: Vec<u8>, watch: Option<LineWatch>) -> Vec<String> {
        let file = tempfile::NamedTempFile::new().unwrap();
        let sink = LineSink::File(LogFile::open(file.path(), None).unwrap());
        finish(pump_lines(
            Cursor::new(input),
            "svc".into(),
            "stdout",
            sink,
            watch,
            None,
        ))
        .await;
        let written = std::fs::read_to_string(file.path()).unwrap();
        assert!(written.is_empty() || written.ends_with('\n'));
        written.lines().map(str::to_owned).collect()
    }

    fn watch(pattern: &str) -> (LineWatch, oneshot::Receiver<String>) {
        let (found, receiver) = oneshot::channel();
        let pattern = pattern.to_owned();
        (LineWatch { pattern, found }, receiver)
    }

    #[tokio::test]
    async fn the_pattern_is_found_in_the_middle_of_the_output() {
        let (watch, found) = watch("listening on");
        let input = b"starting\nnow listening on 127.0.0.1:80\nlistening on again\nbye\n";
        let task = pump_lines(
            Cursor::new(input.to_vec()),
            "svc".into(),
            "stderr",
            LineSink::Discard,
            Some(watch),
            None,
        );
        finish(task).await;
        assert_eq!(found.await.unwrap(), "now listening on 127.0.0.1:80");
    }

    #[tokio::test]
    async fn the_file_sink_receives_every_line() {
        let input = b"one\r\n\ntwo \xff three\nno newline at the end".to_vec();
        assert_eq!(
            pump_to_file(input, None).await,
            ["one", "", "two \u{fffd} three", "no newline at the end"]
        );
        assert!(pump_to_file(Vec::new(), None).await.is_empty());
    }

    #[tokio::test]
    async fn a_one_mebibyte_line_is_forwarded_in_bounded_pieces() {
        let mut input = vec![b'x'; 1 << 20];
        input.extend_from_slice(b"\nready\n");
        let (watch, found) = watch("ready");
        let lines = pump_to_file(input, Some(watch)).await;
        assert_eq!(lines.len(), (1 << 20) / MAX_LINE + 1);
        let (last, pieces) = lines.split_last().unwrap();
        assert!(pieces.iter().all(|piece| piece.len() == MAX_LINE));
        assert_eq!(last, "ready");
        assert_eq!(found.await.unwrap(), "ready");
    }

    #[tokio::test]
    async fn a_line_of_exactly_max_line_bytes_is_not_cut() {
        let mut input = vec![b'x'; MAX_LINE];
        input.extend_from_slice(b"\nnext\n");
        let lines = pump_to_file(input, None).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE);
    }

    #[tokio::test]
    async fn a_cut_never_splits_a_utf8_character() {
        let mut input = vec![b'a'; MAX_LINE - 1];
        input.extend_from_slice("é€𝄞\n".as_bytes());
        let lines = pump_to_file(input, None).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE - 1);
        assert_eq!(lines[1], "é€𝄞");
    }

    #[tokio::test]
    async fn eof_ends_the_task_and_drops_an_unmatched_watch() {
        let (mut child, ours) = tokio::io::duplex(64);
        let (watch, found) = watch("never printed");
        let task = pump_lines(
            ours,
            "svc".into(),
            "stdout",
            LineSink::Tracing,
            Some(watch),
            None,
        );
        child.write_all(b"hello\nworld\n").await.unwrap();
        drop(child);
        finish(task).await;
        assert!(found.await.is_err(), "the watch should end unsent");
    }

    /// `count` lines of 10 bytes each with their newline: `line 0000\n`, `line 0001\n`, ….
    fn numbered_lines(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("line {i:04}\n")).collect()
    }

    /// Pump `input` into the log file at `path`, rotated as `rotation` says.
    async fn pump_to_log(input: String, path: &Path, rotation: Option<(u64, u32)>) {
        let sink = LineSink::File(LogFile::open(path, rotation).unwrap());
        let task = pump_lines(Cursor::new(input), "svc".into(), "stdout", sink, None, None);
        finish(task).await;
    }

    #[test]
    fn the_tail_keeps_at_most_max_tail_lines() {
        let tail = OutputTail::default();
        for i in 0..MAX_TAIL_LINES + 5 {
            tail.push(&format!("line {i}"));
        }
        let expected: Vec<_> = (5..MAX_TAIL_LINES + 5)
            .map(|i| format!("line {i}"))
            .collect();
        assert_eq!(tail.snapshot(), expected);
        tail.clear();
        assert!(tail.snapshot().is_empty());
        tail.push("again");
        assert_eq!(tail.snapshot(), ["again"]);
    }

    #[test]
    fn the_tail_keeps_at_most_max_tail_bytes() {
        let tail = OutputTail::default();
        let line = |i: usize| format!("{i}").repeat(1000);
        for i in 0..9 {
            tail.push(&line(i));
        }
        // Nine lines of 1000 bytes exceed 8 KiB: the oldest went.
        assert_eq!(tail.snapshot(), (1..9).map(line).collect::<Vec<_>>());
        tail.push(&"x".repeat(193));
        let kept = tail.snapshot();
        assert_eq!(kept.len(), 8, "1000 bytes dropped for 193");
        assert!(kept.iter().map(String::len).sum::<usize>() <= MAX_TAIL_BYTES);
    }

    #[test]
    fn a_line_longer_than_the_tail_budget_is_cut_between_characters() {
        let tail = OutputTail::default();
        tail.push("before");
        // 'é' is two bytes: the budget ends in the middle of the last one.
        let long = format!("a{}", "é".repeat(MAX_TAIL_BYTES));
        tail.push(&long);
        let kept = tail.snapshot();
        assert_eq!(kept.len(), 1, "the long line alone fills the budget");
        assert_eq!(kept[0].len(), MAX_TAIL_BYTES - 1);
        assert!(long.starts_with(&kept[0]));
    }

    #[tokio::test]
    async fn the_tail_has_every_line_once_the_pump_ends() {
        let (mut child, ours) = tokio::io::duplex(16);
        let tail = OutputTail::default();
        let task = pump_lines(
            ours,
            "svc".into(),
            "stderr",
            LineSink::Discard,
            None,
            Some(tail.clone()),
        );
        let written = ["first", "second", "", "last, without a newline"];
        child
            .write_all(written.join("\n").as_bytes())
            .await
            .unwrap();
        drop(child);
        finish(task).await;
        assert_eq!(tail.snapshot(), written);
    }

    #[tokio::test]
    async fn both_streams_share_one_tail_in_arrival_order() {
        let tail = OutputTail::default();
        let stdout = pump_lines(
            Cursor::new(b"out 1\nout 2\n".to_vec()),
            "svc".into(),
            "stdout",
            LineSink::Tracing,
            None,
            Some(tail.clone()),
        );
        finish(stdout).await;
        let dir = tempfile::tempdir().unwrap();
        let sink = LineSink::File(LogFile::open(&dir.path().join("err.log"), None).unwrap());
        let stderr = pump_lines(
            Cursor::new(b"err 1\n".to_vec()),
            "svc".into(),
            "stderr",
            sink,
            None,
            Some(tail.clone()),
        );
        finish(stderr).await;
        assert_eq!(tail.snapshot(), ["out 1", "out 2", "err 1"]);
    }

    #[tokio::test]
    async fn rotation_keeps_the_last_lines_in_keep_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let lines = numbered_lines(100);
        pump_to_log(lines.concat(), &path, Some((64, 2))).await;

        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["svc.log", "svc.log.1", "svc.log.2"]);
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        let (oldest, older, current) = (read("svc.log.2"), read("svc.log.1"), read("svc.log"));
        for file in [&oldest, &older, &current] {
            assert!(file.len() <= 64, "{} bytes", file.len());
        }
        // Six 10-byte lines fit in 64 bytes: 100 = 16 × 6 + 4, so the current file holds
        // the last 4 lines and each rotated file 6.
        assert_eq!(current.len(), 40);
        assert_eq!(oldest + &older + &current, lines[84..].concat());
    }

    #[tokio::test]
    async fn rotation_spans_batches_and_counts_what_the_file_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let lines = numbered_lines(10);
        std::fs::write(&path, lines[..5].concat()).unwrap();
        // Written a line at a time through a pipe: the lines may arrive in several batches.
        let (mut child, ours) = tokio::io::duplex(64);
        let sink = LineSink::File(LogFile::open(&path, Some((64, 1))).unwrap());
        let task = pump_lines(ours, "svc".into(), "stdout", sink, None, None);
        for line in &lines[5..] {
            child.write_all(line.as_bytes()).await.unwrap();
        }
        drop(child);
        finish(task).await;
        let read = |path: &Path| std::fs::read_to_string(path).unwrap();
        assert_eq!(read(&path.with_extension("log.1")), lines[..6].concat());
        assert_eq!(read(&path), lines[6..].concat());
        assert!(!path.with_extension("log.2").exists());
    }

    #[tokio::test]
    async fn no_rotation_under_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let lines = numbered_lines(6);
        pump_to_log(lines.concat(), &path, Some((64, 3))).await;
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), lines.concat());
    }

    #[tokio::test]
    async fn keep_zero_restarts_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let lines = numbered_lines(20);
        pump_to_log(lines.concat(), &path, Some((64, 0))).await;
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // 20 = 3 × 6 + 2.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            lines[18..].concat()
        );
    }

    #[tokio::test]
    async fn a_line_longer_than_max_bytes_goes_whole_into_a_fresh_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let long = format!("{}\n", "x".repeat(99));
        let input = format!("short\n{long}after\n");
        pump_to_log(input, &path, Some((64, 2))).await;
        let read = |n: &str| std::fs::read_to_string(dir.path().join(format!("svc.log{n}")));
        assert_eq!(read(".2").unwrap(), "short\n");
        assert_eq!(read(".1").unwrap(), long);
        assert_eq!(read("").unwrap(), "after\n");
    }

    #[test]
    fn incomplete_utf8_tails_are_measured() {
        assert_eq!(incomplete_utf8_tail(b""), 0);
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        assert_eq!(incomplete_utf8_tail("aé".as_bytes()), 0);
        assert_eq!(incomplete_utf8_tail(&"é".as_bytes()[..1]), 1);
        assert_eq!(incomplete_utf8_tail(&"€".as_bytes()[..2]), 2);
        assert_eq!(incomplete_utf8_tail(&"𝄞".as_bytes()[..3]), 3);
        assert_eq!(incomplete_utf8_tail(b"\xff"), 0);
        assert_eq!(incomplete_utf8_tail(b"\x80\x80\x80\x80"), 0);
    }
}
