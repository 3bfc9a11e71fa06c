//! Forwarding a child's stdout and stderr, line by line, to tracing or a file, and
//! watching them for a readiness line.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest piece forwarded as one line. A longer line is cut into pieces of at most
/// this many bytes, so a child that never writes a newline cannot make us buffer without
/// bound.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Where [`pump_lines`] sends each line.
#[derive(Debug)]
pub(crate) enum LineSink {
    /// A `tracing` info event with target `running_process::output` and the fields
    /// `service` and `stream`.
    Tracing,
    /// Appended to the file as `line\n`, written on the blocking pool. After a write
    /// error the rest of the output is discarded (one warning, not one per line).
    File(File),
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
/// sends every line to `sink` and checks it against `watch`.
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
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = Lines {
            service,
            stream,
            sink,
            watch,
            batch: Vec::new(),
        };
        let result = read_lines(reader, &mut lines).await;
        lines.flush().await;
        if let Err(error) = result {
            tracing::debug!(service = %lines.service, stream, %error, "cannot read output");
        }
    })
}

/// Split `reader` into lines and pieces of at most [`MAX_LINE`] bytes.
async fn read_lines<R: AsyncRead + Unpin>(reader: R, lines: &mut Lines) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(MAX_LINE, reader);
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
    service: Arc<str>,
    stream: &'static str,
    sink: LineSink,
    watch: Option<LineWatch>,
    /// Lines for the file sink not yet written: one blocking-pool write per read from the
    /// child, not one per line.
    batch: Vec<u8>,
}

impl Lines {
    async fn send(&mut self, bytes: &[u8]) {
        let line = String::from_utf8_lossy(bytes);
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
        let written = tokio::task::spawn_blocking(move || {
            let result = file.write_all(&batch);
            (file, batch, result)
        })
        .await;
        match written {
            Ok((file, mut batch, Ok(()))) => {
                self.sink = LineSink::File(file);
                batch.clear();
                self.batch = batch;
            }
            Ok((_, _, Err(error))) => {
                tracing::warn!(service = %self.service, stream = self.stream, %error,
                    "cannot write output file; discarding the rest of this stream");
            }
            Err(error) => {
                tracing::warn!(service = %self.service, stream = self.stream, %error,
                    "output writer failed; discarding the rest of this stream");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    const DEADLINE: Duration = Duration::from_secs(30);

    async fn finish(task: JoinHandle<()>) {
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the pump did not end within the deadline")
            .unwrap();
    }

    /// Pump `input` into a fresh file and return the file's lines.
    async fn pump_to_file(input: Vec<u8>, watch: Option<LineWatch>) -> Vec<String> {
        let file = tempfile::NamedTempFile::new().unwrap();
        let sink = LineSink::File(file.reopen().unwrap());
        finish(pump_lines(
            Cursor::new(input),
            "svc".into(),
            "stdout",
            sink,
            watch,
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
        let task = pump_lines(ours, "svc".into(), "stdout", LineSink::Tracing, Some(watch));
        child.write_all(b"hello\nworld\n").await.unwrap();
        drop(child);
        finish(task).await;
        assert!(found.await.is_err(), "the watch should end unsent");
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
