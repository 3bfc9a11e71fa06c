//! The detached supervisor (`running-process __supervise --file F`, started by
//! `up --detach` through the library's `SharedDaemon`): a daemon built from the crate's own
//! pieces. It binds its socket in the file's state directory, answers the crate's identity
//! handshake with a `Responder`, writes its manifest, runs the file's `Stack`, keeps the
//! last lines of every service for `logs`, and serves the requests of `requests.rs`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use running_process::command::Output;
use running_process::compose::{
    LoadOptions, Selection, ServiceChange, ServiceFile, Stack, WatchReport,
};
use running_process::identity::DaemonProcess;
use running_process::protocol::{AppConnection, CacheManifest, DaemonListener, Responder};
use running_process::report::Chain;
use running_process::supervision::EventKind;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use crate::output::{capture_inherited_output, catch_lines, outcome_text, Line};
use crate::printer::{self, Printer};
use crate::requests::{Reply, Request};
use crate::state::{StateDir, NAMESPACE};

/// Lines kept per service for `logs`.
const KEPT_LINES: usize = 1000;

/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the supervisor waits, when it ends, for replies still being written.
const REPLY_GRACE: Duration = Duration::from_secs(5);

pub async fn supervise(paths: Vec<PathBuf>, selection: Selection, watch: bool) -> ExitCode {
    let log = printer::stderr();
    match run(paths, selection, watch, log).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log.print(format!("running-process supervisor: {}", Chain(&*error)));
            ExitCode::FAILURE
        }
    }
}

/// The supervisor's life; its log lines (events, warnings) go to `log`, its standard
/// error, which `up --detach` points at the state directory's `supervisor.log`.
async fn run(
    paths: Vec<PathBuf>,
    selection: Selection,
    watch: bool,
    log: &Printer,
) -> Result<(), Box<dyn std::error::Error>> {
    let path = paths[0].clone();
    let mut file = ServiceFile::load_merged(paths.clone())
        .await?
        .select(&selection)?;
    capture_inherited_output(&mut file);
    // Before anything is bound or started: the soft limit raised, the file checked.
    running_process::compose::check_open_files(&file)?;
    let state = StateDir::of(&path);
    let endpoint = state.endpoint();
    let listener = DaemonListener::bind(&endpoint).await?;
    let me = DaemonProcess::current_process_async(endpoint, None).await?;
    let responder = Responder::new(NAMESPACE, env!("CARGO_PKG_VERSION"), me.clone());
    let shutdown = responder.shutdown_token();
    let incoming = responder.serve(listener);

    let logs = Arc::new(LogBook::new(&file));
    {
        let logs = logs.clone();
        // Warnings go to the supervisor's log, next to the events.
        catch_lines(move |line| logs.push(line), {
            let log = log.clone();
            move |warning| log.print(warning)
        });
    }
    let stack = Stack::start(file)?;
    let mut events = stack.events();
    let events_log = log.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => events_log.print(event.to_string()),
                Err(lagged) => events_log.print(format!("({lagged})")),
            }
        }
    });
    let _watch = match watch {
        true => Some(watch_files(&stack, paths, selection, &logs, log).await),
        false => None,
    };
    CacheManifest::new(NAMESPACE, env!("CARGO_PKG_VERSION"), Some(me.clone()))
        .write(state.manifest())
        .await?;
    log.print(format!(
        "supervisor {} serving {}",
        std::process::id(),
        path.display()
    ));

    let clients = Client {
        stack: stack.clone(),
        logs,
        ending: Arc::new(Notify::new()),
        answered: Arc::new(Notify::new()),
        followers: CancellationToken::new(),
    };
    serve(&stack, incoming, shutdown, clients, log).await?;
    remove_own_manifest(&state, &me).await;
    Ok(())
}

/// Serve clients (each a copy of `template`) until a stop, SIGTERM, or the end of the set.
/// A set that ended by itself before its `wait_ready` was answered (it failed to start)
/// keeps serving until it is (at most [`REQUEST_TIMEOUT`]), so `up --detach` learns why.
async fn serve(
    stack: &Stack,
    mut incoming: impl Stream<Item = AppConnection> + Unpin,
    shutdown: CancellationToken,
    template: Client,
    log: &Printer,
) -> std::io::Result<()> {
    let mut clients = tokio::task::JoinSet::new();
    let mut terminate = termination()?;
    let mut ended = false;
    let linger = tokio::time::sleep(REQUEST_TIMEOUT);
    tokio::pin!(linger);
    loop {
        tokio::select! {
            Some(connection) = incoming.next() => {
                clients.spawn(template.clone().serve(connection));
            }
            _ = shutdown.cancelled() => { stack.stop().await; break; }
            _ = terminate.recv() => { stack.stop().await; break; }
            _ = template.ending.notified() => break,
            outcome = stack.outcome(), if !ended => {
                log.print(format!("every service ended: {}", outcome_text(&outcome)));
                ended = true;
                linger.as_mut().reset(tokio::time::Instant::now() + REQUEST_TIMEOUT);
            }
            _ = template.answered.notified(), if ended => break,
            _ = &mut linger, if ended => break,
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
        }
    }
    // No new clients; followers end; replies being written get a moment.
    drop(incoming);
    template.followers.cancel();
    let _ = tokio::time::timeout(REPLY_GRACE, async {
        while clients.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// `--watch`: apply the files whenever they change; each round goes to the log.
async fn watch_files(
    stack: &Stack,
    paths: Vec<PathBuf>,
    selection: Selection,
    logs: &Arc<LogBook>,
    log: &Printer,
) -> running_process::compose::Watch {
    let (report, logs, running) = (log.clone(), logs.clone(), stack.clone());
    stack
        .watch(paths, selection, capture_inherited_output, move |done| {
            if let WatchReport::Applied(_) = &done {
                logs.track(&running.file());
            }
            report.print(format!("watch: {done}"));
        })
        .await
}

/// Remove the manifest if it still names this process (a successor may have replaced it).
async fn remove_own_manifest(state: &StateDir, me: &DaemonProcess) {
    let path = state.manifest();
    if let Ok(Some(manifest)) = CacheManifest::read(&path).await {
        if manifest.current_daemon.as_ref() == Some(me) {
            let _ = tokio::fs::remove_file(&path).await;
        }
    }
}

#[cfg(unix)]
fn termination() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
}

#[cfg(windows)]
fn termination() -> std::io::Result<tokio::signal::windows::CtrlBreak> {
    tokio::signal::windows::ctrl_break()
}

/// The last lines of every service, and the new ones as they come.
struct LogBook {
    kept: Mutex<HashMap<String, VecDeque<Line>>>,
    new: broadcast::Sender<Line>,
    /// Per service, where the streams that are not kept here go (`logs` says so).
    elsewhere: Mutex<HashMap<String, String>>,
}

impl LogBook {
    /// For `file` after `capture_inherited_output`: the streams sent to `tracing` are kept.
    fn new(file: &ServiceFile) -> LogBook {
        let book = LogBook {
            kept: Mutex::new(HashMap::new()),
            new: broadcast::Sender::new(1024),
            elsewhere: Mutex::new(HashMap::new()),
        };
        book.track(file);
        book
    }

    /// Keep the lines of the services of `file` (an applied file's new ones too).
    fn track(&self, file: &ServiceFile) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        for service in &file.services {
            kept.entry(service.name().to_owned()).or_default();
        }
        drop(kept);
        let elsewhere: HashMap<String, String> = file
            .services
            .iter()
            .filter_map(|s| {
                let notes: Vec<String> = [("stdout", &s.spec.stdout), ("stderr", &s.spec.stderr)]
                    .into_iter()
                    .filter_map(|(stream, output)| match output {
                        Output::Tracing => None,
                        Output::File { path, .. } => {
                            Some(format!("{stream} goes to {}", path.display()))
                        }
                        _ => Some(format!("{stream} is not kept")),
                    })
                    .collect();
                (!notes.is_empty()).then(|| (s.name().to_owned(), notes.join("; ")))
            })
            .collect();
        *self.elsewhere.lock().unwrap_or_else(|p| p.into_inner()) = elsewhere;
    }

    fn push(&self, line: Line) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lines) = kept.get_mut(&line.service) {
            if lines.len() == KEPT_LINES {
                lines.pop_front();
            }
            lines.push_back(line.clone());
        }
        drop(kept);
        let _ = self.new.send(line);
    }

    fn last(&self, service: &str, n: usize) -> Option<Vec<Line>> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let lines = kept.get(service)?;
        Some(
            lines
                .iter()
                .skip(lines.len().saturating_sub(n))
                .cloned()
                .collect(),
        )
    }
}

/// One client connection: one request, its replies.
#[derive(Clone)]
struct Client {
    stack: Stack,
    logs: Arc<LogBook>,
    ending: Arc<Notify>,
    /// Notified once a `wait_ready` has been answered.
    answered: Arc<Notify>,
    followers: CancellationToken,
}

impl Client {
    async fn serve(self, connection: AppConnection) {
        let (read, mut write) = tokio::io::split(connection);
        let mut read = BufReader::new(read);
        let mut first = String::new();
        let request = match tokio::time::timeout(REQUEST_TIMEOUT, read.read_line(&mut first)).await
        {
            Ok(Ok(n)) if n > 0 => serde_json::from_str::<Request>(&first),
            _ => return,
        };
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                let _ = send(
                    &mut write,
                    &Reply::Error {
                        message: format!("bad request: {error}"),
                    },
                )
                .await;
                return;
            }
        };
        // A follower ends when the client goes away: watch for the end of its input.
        let gone = async move {
            let mut rest = String::new();
            let _ = read.read_line(&mut rest).await;
        };
        let _ = self.answer(request, &mut write, gone).await;
        let _ = write.shutdown().await;
    }

    /// Answer `request`; `gone` completes when the client leaves (it ends a follower).
    async fn answer<W: AsyncWriteExt + Unpin>(
        &self,
        request: Request,
        write: &mut W,
        gone: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        match request {
            Request::Status => self.status(write).await,
            Request::WaitReady => self.wait_ready(write).await,
            Request::Restart { service } => self.restart(write, &service).await,
            Request::Start { service } => self.start(write, &service).await,
            Request::Stop {
                service: Some(service),
            } => self.stop(write, &service).await,
            Request::Stop { service: None } => self.stop_all(write).await,
            Request::Logs {
                service,
                lines,
                follow,
            } => self.logs(write, service, lines, follow, gone).await,
            Request::Events => self.events(write, gone).await,
            Request::Apply {
                files,
                services,
                profiles,
                dry_run,
            } => {
                let selection = Selection { services, profiles };
                self.apply(write, files, selection, dry_run).await
            }
            Request::Scale { service, replicas } => self.scale(write, &service, replicas).await,
        }
    }

    async fn status<W: AsyncWriteExt + Unpin>(&self, write: &mut W) -> std::io::Result<()> {
        let services = self.stack.sample_usage().await;
        let ports = self.stack.file().ports.clone();
        send(write, &Reply::Status { services, ports }).await
    }

    async fn wait_ready<W: AsyncWriteExt + Unpin>(&self, write: &mut W) -> std::io::Result<()> {
        let reply = match self.stack.ready().await {
            Ok(()) => ok("every service is ready".into()),
            Err(outcome) => Reply::Error {
                message: outcome_text(&outcome),
            },
        };
        let sent = send(write, &reply).await;
        self.answered.notify_one();
        sent
    }

    async fn restart<W: AsyncWriteExt + Unpin>(
        &self,
        write: &mut W,
        service: &str,
    ) -> std::io::Result<()> {
        let reply = if self.stack.restart_service(service) {
            ok(format!("restarting {service}"))
        } else {
            unknown(service)
        };
        send(write, &reply).await
    }

    async fn start<W: AsyncWriteExt + Unpin>(
        &self,
        write: &mut W,
        service: &str,
    ) -> std::io::Result<()> {
        // What it depends on first (stopped ones start again too), as `up NAME` does.
        let wanted = Selection {
            services: vec![service.to_owned()],
            profiles: Vec::new(),
        };
        let Ok(closure) = self.stack.file().select(&wanted) else {
            return send(write, &unknown(service)).await;
        };
        for dependency in closure.services.iter().filter(|s| s.name() != service) {
            if let Ok(true) = self.stack.start_service(dependency.name()).await {
                send(
                    write,
                    &ok(format!("starting {} (for {service})", dependency.name())),
                )
                .await?;
            }
        }
        let reply = match self.stack.start_service(service).await {
            Ok(true) => ok(format!("starting {service}")),
            Ok(false) => ok(format!("{service} is running or waiting already")),
            Err(_) => unknown(service),
        };
        send(write, &reply).await
    }

    async fn stop<W: AsyncWriteExt + Unpin>(
        &self,
        write: &mut W,
        service: &str,
    ) -> std::io::Result<()> {
        let reply = match self.stack.stop_service(service).await {
            Ok(_) => ok(format!("stopped {service}")),
            Err(_) => unknown(service),
        };
        send(write, &reply).await
    }

    /// Stop every service, answer, then end the supervisor.
    async fn stop_all<W: AsyncWriteExt + Unpin>(&self, write: &mut W) -> std::io::Result<()> {
        let outcome = self.stack.stop().await;
        let message = format!("every service stopped ({outcome}); the supervisor exits");
        let result = send(write, &ok(message)).await;
        self.ending.notify_one();
        result
    }

    /// Apply an edited file: a line per service, then one once every service is ready
    /// (or an error naming the first that failed to start or is blocked).
    async fn apply<W: AsyncWriteExt + Unpin>(
        &self,
        write: &mut W,
        files: Vec<PathBuf>,
        selection: Selection,
        dry_run: bool,
    ) -> std::io::Result<()> {
        // On the ports the set runs on (`${port:KEY}`): an apply keeps them.
        let options = LoadOptions::default().ports(self.stack.file().ports.clone());
        let mut edited = match crate::file::read(files, &selection, options).await {
            Ok(file) => file,
            Err(message) => return send(write, &Reply::Error { message }).await,
        };
        capture_inherited_output(&mut edited);
        // Subscribed before anything changes: a failure of the new starts is seen.
        let mut events = self.stack.handle().events();
        let plan = if dry_run {
            self.stack.plan(&edited).await
        } else {
            self.logs.track(&edited);
            self.stack.apply(edited).await
        };
        let plan = match plan {
            Ok(plan) => plan,
            Err(error) => {
                let message = format!("{}; nothing else was changed", Chain(&error));
                return send(write, &Reply::Error { message }).await;
            }
        };
        for (service, change) in &plan.services {
            send(write, &ok(format!("{service}: {change}"))).await?;
        }
        if dry_run {
            return send(write, &ok("(dry run: nothing was changed)".into())).await;
        }
        let changed: Vec<&str> = plan
            .services
            .iter()
            .filter(|(_, change)| {
                !matches!(change, ServiceChange::Unchanged | ServiceChange::Removed)
            })
            .map(|(service, _)| service.as_str())
            .collect();
        self.wait_ready_or_failure(write, &mut events, &changed)
            .await
    }

    /// Reply once every service is ready, or with the first of `services` that failed to
    /// start or is blocked (`events` subscribed before the change).
    async fn wait_ready_or_failure<W: AsyncWriteExt + Unpin>(
        &self,
        write: &mut W,
        events: &mut running_process::supervision::EventStream,
        services: &[&str],
    ) -> std::io::Result<()> {
        let file = self.stack.file();
        let reply = tokio::select! {
            ready = self.stack.ready() => match ready {
                Ok(()) => ok("every service is ready".into()),
                Err(outcome) => Reply::Error { message: outcome_text(&outcome) },
            },
            failed = first_failure(events, &file, services) => Reply::Error { message: failed },
        };
        send(write, &reply).await
    }

    async fn scale<W: AsyncWriteExt + Unpin>(
        &self,
        write: &mut W,
        service: &str,
        replicas: u32,
    ) -> std::io::Result<()> {
        let mut events = self.stack.handle().events();
        let reply = match self.stack.scale(service, replicas).await {
            Ok(true) => ok(format!("{service}: scaled to {replicas}")),
            Ok(false) => ok(format!("{service}: {replicas} already")),
            Err(error) => Reply::Error {
                message: Chain(&error).to_string(),
            },
        };
        if matches!(reply, Reply::Error { .. }) {
            return send(write, &reply).await;
        }
        send(write, &reply).await?;
        self.wait_ready_or_failure(write, &mut events, &[service])
            .await
    }

    /// The last `lines` lines of `service` (and a note on the streams kept elsewhere),
    /// then, with `follow`, its new lines.
    async fn logs<W: AsyncWriteExt + Unpin>(
        &self,
        write: &mut W,
        service: String,
        lines: usize,
        follow: bool,
        gone: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        // Subscribed before the last lines are read: no line falls between the two.
        let new = self.logs.new.subscribe();
        let Some(last) = self.logs.last(&service, lines) else {
            return send(write, &unknown(&service)).await;
        };
        let note = self
            .logs
            .elsewhere
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&service)
            .cloned();
        if let Some(note) = note {
            send(write, &ok(format!("({service}: {note})"))).await?;
        }
        for line in last {
            send(write, &Reply::Line { line }).await?;
        }
        if !follow {
            return Ok(());
        }
        let lines = futures_util::stream::unfold(new, move |mut new| {
            let service = service.clone();
            async move {
                loop {
                    match new.recv().await {
                        Ok(line) if line.service == service => {
                            return Some((Reply::Line { line }, new))
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        self.follow(write, lines, gone).await
    }

    /// The events, as they happen.
    async fn events<W: AsyncWriteExt + Unpin>(
        &self,
        write: &mut W,
        gone: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let events = self.stack.events().map(|event| Reply::Event {
            text: match event {
                Ok(event) => event.to_string(),
                Err(lagged) => format!("({lagged})"),
            },
        });
        send(write, &ok("following events".into())).await?;
        self.follow(write, events, gone).await
    }

    /// Send `replies` as they come, until they end, the client leaves (`gone`) or the
    /// supervisor ends: the one loop of `logs -F` and `events`.
    async fn follow<W: AsyncWriteExt + Unpin>(
        &self,
        write: &mut W,
        replies: impl Stream<Item = Reply>,
        gone: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        tokio::pin!(replies, gone);
        loop {
            tokio::select! {
                reply = replies.next() => match reply {
                    Some(reply) => send(write, &reply).await?,
                    None => return Ok(()),
                },
                _ = &mut gone => return Ok(()),
                _ = self.followers.cancelled() => return Ok(()),
            }
        }
    }
}

/// The first start failure or block among `services` (an instance `web-2` counts for
/// `web`), as a message; pending forever if none comes.
async fn first_failure(
    events: &mut running_process::supervision::EventStream,
    file: &ServiceFile,
    services: &[&str],
) -> String {
    let ours = |name: &str| {
        file.service_of(name)
            .is_some_and(|service| services.contains(&service.name()))
    };
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        if !ours(&event.service) {
            continue;
        }
        if matches!(
            event.kind,
            EventKind::StartFailed { .. } | EventKind::Blocked { .. }
        ) {
            return format!("{} is not ready: {}", event.service, event.kind);
        }
    }
    std::future::pending().await
}

fn ok(message: String) -> Reply {
    Reply::Ok { message }
}

fn unknown(name: &str) -> Reply {
    Reply::Error {
        message: format!("no service called `{name}` in this file"),
    }
}

async fn send<W: AsyncWriteExt + Unpin>(write: &mut W, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.flush().await
}
