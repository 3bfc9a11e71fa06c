//! The loop that drives one group: start its children as their dependencies allow
//! (`schedule.rs`, the starts themselves in tasks: `tasks.rs`), watch them, apply the
//! restart policy and the group's strategy and intensity, obey commands (`membership.rs`
//! for the dynamic ones), stop dependants first (`stop.rs`). A single supervised service
//! is a group of one ("solo"), so both share this loop.
//!
//! OTP's rules, and where this loop keeps them (the table in the `supervision` module docs
//! lists the deviations): a child whose start fails during the group's start-up fails the
//! group's start ([`Group::start_error`]); a temporary child is never restarted, also
//! when a sibling's termination stops it ([`Group::after_end`]); with
//! `AutoShutdown::Never` the group keeps running when every child has ended.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::child::{Active, Child, ChildState, Dep, Running};
use super::tasks::{Msg, MsgTx};
use super::{Command, Registry};
use crate::supervision::dependency::{Condition, Dependency, StartOrder};
use crate::supervision::error::StartError;
use crate::supervision::event::{EventKind, EventSink};
use crate::supervision::group::{
    AutoShutdown, GroupSpec, MakeReplica, MemberKind, MemberSpec, Outcome, Strategy,
};
use crate::supervision::policy::{Intensity, IntensityWindow, RestartKind, Termination};

pub(super) struct Group {
    pub(super) name: String,
    pub(super) strategy: Strategy,
    pub(super) intensity: Intensity,
    pub(super) auto_shutdown: AutoShutdown,
    pub(super) order: StartOrder,
    pub(super) prefix_names: bool,
    pub(super) retry_start_up: bool,
    /// The most members being started at once.
    pub(super) max_starting: usize,
    pub(super) solo: bool,
    pub(super) sink: EventSink,
    pub(super) registry: Arc<Registry>,
    all_up: watch::Sender<bool>,
    pub(super) children: Vec<Child>,
    /// Members with replicas, by their template spec (its `replicas` is the current count).
    pub(super) templates: Vec<MemberSpec>,
    /// The specs of replaced members, by member name, kept until the replacement's first
    /// start is over: what their supervisors hold (a command's listening sockets) can be
    /// taken over by the new ones instead of closed in between.
    pub(super) retiring: Vec<(String, MemberSpec)>,
    window: IntensityWindow,
    pub(super) generation: u64,
    /// Every child has been up at once: the group's start-up is over.
    started_up: bool,
    began: Instant,
    pub(super) msg_tx: MsgTx,
    msg_rx: mpsc::UnboundedReceiver<Msg>,
}

impl Group {
    pub(super) fn new(
        spec: GroupSpec,
        solo: bool,
        sink: EventSink,
        registry: Arc<Registry>,
        all_up: watch::Sender<bool>,
    ) -> Group {
        let (msg_tx, msg_rx) = mpsc::unbounded_channel();
        let mut group = Group {
            name: spec.name.clone(),
            strategy: spec.strategy,
            intensity: spec.intensity,
            auto_shutdown: spec.auto_shutdown,
            order: spec.order,
            prefix_names: spec.prefix_names && !solo,
            retry_start_up: spec.retry_start_up,
            max_starting: spec.max_concurrent_starts.max(1),
            solo,
            sink,
            registry,
            all_up,
            children: Vec::new(),
            templates: Vec::new(),
            retiring: Vec::new(),
            window: IntensityWindow::new(),
            generation: 0,
            started_up: false,
            began: Instant::now(),
            msg_tx,
            msg_rx,
        };
        for member in spec.members {
            group.insert(member, None);
        }
        group
    }

    /// The sink of a child called `local`.
    pub(super) fn child_sink(&self, local: &str) -> EventSink {
        if self.solo {
            self.sink.clone()
        } else if self.prefix_names {
            self.sink.child(local)
        } else {
            self.sink.renamed(local)
        }
    }

    /// The row after which new rows of this group go (its own row, for a nested group).
    fn parent_row(&self) -> Option<String> {
        (!self.solo).then(|| self.sink.service().to_owned())
    }

    /// Add the children of `member` (one, or one per replica) before child `at` (`None`:
    /// at the end), with their rows; their indices.
    pub(super) fn insert(&mut self, member: MemberSpec, at: Option<usize>) -> Vec<usize> {
        let at = at.unwrap_or(self.children.len());
        let deps = self.deps_at(&member, at);
        if let MemberKind::Replicas { replicas, make } = &member.kind {
            let (replicas, make) = (*replicas, make.clone());
            self.templates.push(member.clone());
            return self.insert_instances(&member, deps, &make, 1..=replicas, at);
        }
        let child = Child::new(
            self.child_sink(&member.name),
            member.name.clone(),
            member,
            deps,
            self.retry_start_up,
        );
        self.children.insert(at, child);
        self.register_rows(&[at]);
        vec![at]
    }

    /// The dependencies of `member` placed at `at`: its own, and in a sequential group
    /// the member before it.
    fn deps_at(&self, member: &MemberSpec, at: usize) -> Vec<Dep> {
        let mut deps: Vec<Dep> = member
            .depends_on
            .iter()
            .map(|dependency| Dep {
                dependency: dependency.clone(),
                implicit: false,
            })
            .collect();
        if self.order == StartOrder::Sequential && at > 0 {
            let before = self.children[at - 1].member_name().to_owned();
            if !deps.iter().any(|d| d.dependency.service == before) {
                deps.push(Dep {
                    dependency: Dependency::new(before, Condition::Ready),
                    implicit: true,
                });
            }
        }
        deps
    }

    /// Add instances `numbers` of `template` before child `at`, with their rows.
    pub(super) fn insert_instances(
        &mut self,
        template: &MemberSpec,
        deps: Vec<Dep>,
        make: &MakeReplica,
        numbers: std::ops::RangeInclusive<u32>,
        at: usize,
    ) -> Vec<usize> {
        let count = match &template.kind {
            MemberKind::Replicas { replicas, .. } => *replicas,
            _ => 1,
        };
        let mut added = Vec::new();
        for n in numbers {
            let local = instance_name(&template.name, n, count);
            let spec = MemberSpec {
                kind: MemberKind::Service(make(n)),
                ..template.clone()
            };
            let mut child = Child::new(
                self.child_sink(&local),
                local,
                spec,
                deps.clone(),
                self.retry_start_up,
            );
            child.template = Some((template.name.clone(), n));
            let i = at + added.len();
            self.children.insert(i, child);
            added.push(i);
        }
        self.register_rows(&added);
        added
    }

    /// Status rows for new children, after the child before them (or the group's end).
    pub(super) fn register_rows(&self, added: &[usize]) {
        let Some(&first) = added.first() else { return };
        let names: Vec<String> = added
            .iter()
            .map(|&i| self.children[i].name().to_owned())
            .collect();
        let after = match first {
            0 => None,
            i => Some(self.children[i - 1].name().to_owned()),
        };
        match after {
            Some(after) if !self.solo => self.registry.board.register(Some(&after), &names),
            _ => self
                .registry
                .board
                .register(self.parent_row().as_deref(), &names),
        }
    }

    /// Group-level events; a solo group's child already reports under the same name.
    pub(super) fn emit(&self, kind: EventKind) {
        if !self.solo || matches!(kind, EventKind::GaveUp { .. }) {
            self.sink.emit(kind);
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) -> Outcome {
        self.emit(EventKind::Starting);
        loop {
            self.schedule();
            if let Some(outcome) = self.check_all_ended().await {
                return outcome;
            }
            // Reports that arrived meanwhile come first: on a multi-threaded runtime a
            // `ready()` waiter could otherwise see "all up" for a child whose exit is
            // already queued.
            if let Ok(msg) = self.msg_rx.try_recv() {
                if let Some(outcome) = self.on_msg(msg).await {
                    return outcome;
                }
                continue;
            }
            self.publish_up();
            let wake = self.children.iter().filter_map(Child::wake_at).min();
            let woken = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let done = tokio::select! {
                _ = woken => None,
                Some(msg) = self.msg_rx.recv() => self.on_msg(msg).await,
                command = commands.recv() => self.on_command(command).await,
            };
            if let Some(outcome) = done {
                return outcome;
            }
        }
    }

    /// Start child `i` in a task that reports to this loop.
    pub(super) fn begin_start(&mut self, i: usize) {
        self.generation += 1;
        let child = &self.children[i];
        let start = super::tasks::spawn_start(
            child.spec.kind.clone(),
            child.sink.clone(),
            self.registry.clone(),
            self.msg_tx.clone(),
            self.generation,
        );
        let child = &mut self.children[i];
        child.on_demand = false;
        child.enter(ChildState::Starting(start), &self.registry);
    }

    /// Tell `ready()` waiters whether every child is up; the first time, the group's
    /// start-up is over.
    fn publish_up(&mut self) {
        let up = self.children.iter().all(|c| {
            matches!(
                c.state(),
                ChildState::Running(_) | ChildState::Finished { .. } | ChildState::Stopped
            ) || matches!(c.state(), ChildState::Starting(start) if start.listening)
        });
        self.all_up.send_replace(up);
        if up && !self.started_up {
            self.started_up = true;
            self.emit(EventKind::Ready {
                pid: None,
                took: self.began.elapsed(),
            });
        }
    }

    /// [`AutoShutdown::AllEnded`]: nothing can run any more.
    async fn check_all_ended(&mut self) -> Option<Outcome> {
        let ended = self.auto_shutdown == AutoShutdown::AllEnded
            && !self.children.is_empty()
            && self
                .children
                .iter()
                .all(|c| c.has_ended() || matches!(c.state(), ChildState::Blocked(..)));
        if !ended {
            return None;
        }
        self.stop_all().await;
        if !self.solo {
            self.sink.emit(EventKind::Completed);
        }
        Some(Outcome::Completed)
    }

    /// The index of the child whose start or run is `generation`.
    fn current(&self, generation: u64) -> Option<usize> {
        self.children
            .iter()
            .position(|c| c.generation() == Some(generation))
    }

    async fn on_msg(&mut self, msg: Msg) -> Option<Outcome> {
        match msg {
            Msg::Spawned(generation) => {
                self.on_start_progress(generation, |start| start.spawned = true)
            }
            Msg::Listening(generation) => {
                if let Some(i) = self.on_start_progress(generation, |start| start.listening = true)
                {
                    self.children[i].on_demand = true;
                    self.children[i].sink.emit(EventKind::Listening);
                }
                None
            }
            Msg::Activated(generation) => {
                self.on_start_progress(generation, |start| start.listening = false)
            }
            Msg::Started(generation) => return self.on_started(generation).await,
            Msg::Health {
                generation,
                healthy,
            } => {
                if let Some(i) = self.current(generation) {
                    if let ChildState::Running(running) = self.children[i].state_mut() {
                        running.healthy = healthy;
                    }
                }
                None
            }
            Msg::Ended { generation, term } => return self.on_termination(generation, term).await,
        };
        None
    }

    /// Change a start under way (`generation`) and its row; its index, if it is current.
    fn on_start_progress(
        &mut self,
        generation: u64,
        change: impl FnOnce(&mut super::child::Start),
    ) -> Option<usize> {
        let i = self.current(generation)?;
        let ChildState::Starting(start) = self.children[i].state_mut() else {
            return None;
        };
        change(start);
        self.children[i].sync(&self.registry, false);
        Some(i)
    }

    /// A start is over: watch what it started, or handle its failure.
    async fn on_started(&mut self, generation: u64) -> Option<Outcome> {
        let i = self.current(generation)?;
        let ChildState::Starting(start) = self.children[i].state() else {
            return None;
        };
        let result = start
            .result
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let (began, ctx) = (start.began, start.ctx.clone());
        match result? {
            Ok(active) => {
                self.watch(i, generation, active, began);
                None
            }
            Err(error) => self.start_error(i, Some(&ctx), error).await,
        }
    }

    /// Child `i` could not be started: report it, then fail the group's start (during
    /// start-up, as OTP's `start_link`), keep it down (an error retrying cannot fix), or
    /// treat it as the child ending abnormally. `Some` when supervision is over.
    async fn start_error(
        &mut self,
        i: usize,
        ctx: Option<&crate::supervision::SpawnContext>,
        error: StartError,
    ) -> Option<Outcome> {
        let error = Arc::new(error);
        self.children[i].note_start_error(&error, &self.registry);
        self.children[i].sink.emit(EventKind::StartFailed {
            error: error.clone(),
        });
        if let Some(ctx) = ctx {
            super::tasks::report_abandoned(ctx).await;
        }
        if !self.started_up && !self.children[i].retry_start_up {
            self.children[i].enter(ChildState::Stopped, &self.registry);
            self.stop_all().await;
            return Some(self.failure(i, error));
        }
        if error.is_permanent() {
            self.children[i].enter(ChildState::Failed, &self.registry);
            return self.member_ended(i, Some(error)).await;
        }
        self.children[i].enter(ChildState::Idle, &self.registry);
        self.after_end(i, Termination::StartFailed, Duration::ZERO)
            .await
    }

    /// The outcome for child `i` failing to start: names the innermost member of a
    /// nested group.
    fn failure(&self, i: usize, error: Arc<StartError>) -> Outcome {
        let (member, error) = match &*error {
            StartError::Group { member, error } => (member.clone(), error.clone()),
            _ => (self.children[i].name().to_owned(), error),
        };
        Outcome::StartFailed { member, error }
    }

    /// Record a started child (its backend is visible through the handle before its
    /// `Ready` event is sent) and watch it in a task that reports its termination.
    fn watch(&mut self, i: usize, generation: u64, active: Active, attempt_began: Instant) {
        let pid = match &active {
            Active::Backend { backend, .. } => Some(backend.pid()),
            Active::Group(_) => None,
        };
        let task = super::tasks::spawn_watch(
            &active,
            self.children[i].sink.clone(),
            self.registry.clone(),
            self.msg_tx.clone(),
            generation,
        );
        self.children[i].enter(
            ChildState::Running(Running {
                generation,
                started_at: Instant::now(),
                active,
                watch: task,
                healthy: false,
            }),
            &self.registry,
        );
        if pid.is_some() {
            self.children[i].sink.emit(EventKind::Ready {
                pid,
                took: attempt_began.elapsed(),
            });
        }
    }

    async fn on_termination(&mut self, generation: u64, term: Termination) -> Option<Outcome> {
        let i = self.current(generation)?;
        if !self.children[i].is_running() {
            return None;
        }
        let ChildState::Running(running) = self.children[i].enter(ChildState::Idle, &self.registry)
        else {
            return None;
        };
        self.after_end(i, term, running.started_at.elapsed()).await
    }

    /// A child ended (it is `Idle` now): finish it, restart it by strategy, or give up.
    async fn after_end(
        &mut self,
        i: usize,
        term: Termination,
        uptime: Duration,
    ) -> Option<Outcome> {
        if self.children[i].on_demand && !term.is_abnormal() {
            // Started on demand and done for now (an idle timeout): not an end for the
            // policy. The scheduler makes it listen again.
            return None;
        }
        if !self.children[i].restart.should_restart(&term) {
            let ok = !term.is_abnormal();
            self.children[i].enter(ChildState::Finished { ok }, &self.registry);
            self.children[i].sink.emit(EventKind::Completed);
            return self.member_ended(i, None).await;
        }
        let now = Instant::now();
        if let Err(reason) = self.window.record(&self.intensity, now) {
            self.emit(EventKind::GaveUp { reason });
            self.stop_all().await;
            return Some(Outcome::GaveUp(reason));
        }
        let child = &mut self.children[i];
        child.backoff_state.note_uptime(&child.backoff, uptime);
        let delay = child.backoff_state.next_delay(&child.backoff);
        child.note_restart(&self.registry);
        child.sink.emit(EventKind::RestartScheduled {
            attempt: child.backoff_state.attempt(),
            delay,
        });
        let affected = self.restarted_with(i);
        self.announce_strategy(i, &affected);
        self.stop_in_order(&affected).await;
        let until = now + delay;
        for j in affected {
            let sibling = &mut self.children[j];
            // OTP: a temporary child is never restarted, also when a sibling's
            // termination stopped it; its spec is dropped.
            if sibling.restart == RestartKind::Temporary {
                if !sibling.has_ended() {
                    sibling.enter(ChildState::Finished { ok: false }, &self.registry);
                }
                continue;
            }
            sibling.note_restart(&self.registry);
            sibling.enter(ChildState::Backoff { until }, &self.registry);
        }
        self.children[i].enter(ChildState::Backoff { until }, &self.registry);
        None
    }

    /// The members the strategy restarts with child `i`, in start order (not `i`
    /// itself): none (one_for_one), its dependants (rest_for_one), every other
    /// (one_for_all). Members stopped on request or failed for good stay as they are.
    pub(super) fn restarted_with(&self, i: usize) -> Vec<usize> {
        let candidates: Vec<usize> = match self.strategy {
            Strategy::OneForOne => Vec::new(),
            Strategy::RestForOne => self.dependants(&[i]),
            Strategy::OneForAll => (0..self.children.len()).filter(|&j| j != i).collect(),
        };
        candidates
            .into_iter()
            .filter(|&j| {
                !matches!(
                    self.children[j].state(),
                    ChildState::Stopped | ChildState::Failed
                )
            })
            .collect()
    }

    /// Say which members the strategy restarts with child `i`.
    pub(super) fn announce_strategy(&self, i: usize, affected: &[usize]) {
        if affected.is_empty() {
            return;
        }
        self.children[i].sink.emit(EventKind::StrategyRestart {
            strategy: self.strategy,
            members: affected
                .iter()
                .map(|&j| self.children[j].name().to_owned())
                .collect(),
        });
    }

    /// Child `i` ended for good (finished, or failed: `failed`): end the group if its
    /// auto-shutdown says so. `Some` when supervision is over.
    async fn member_ended(&mut self, i: usize, failed: Option<Arc<StartError>>) -> Option<Outcome> {
        let shutdown = self.children[i].spec.significant
            && match self.auto_shutdown {
                AutoShutdown::Never | AutoShutdown::AllEnded => false,
                AutoShutdown::AnySignificant => true,
                AutoShutdown::AllSignificant => self
                    .children
                    .iter()
                    .filter(|c| c.spec.significant)
                    .all(Child::has_ended),
            };
        if !shutdown {
            // OTP `auto_shutdown => never`: a group whose children have all ended keeps
            // running, empty, until it is stopped.
            return None;
        }
        self.stop_all().await;
        match failed {
            Some(error) => Some(self.failure(i, error)),
            None => {
                if !self.solo {
                    self.sink.emit(EventKind::Completed);
                }
                Some(Outcome::Completed)
            }
        }
    }

    async fn on_command(&mut self, command: Option<Command>) -> Option<Outcome> {
        match command {
            // Every handle is gone or stop() was called.
            None | Some(Command::Stop) => {
                self.emit(EventKind::Stopping);
                self.stop_all().await;
                self.emit(EventKind::Stopped);
                Some(Outcome::Stopped)
            }
            Some(Command::Restart(None)) => {
                self.stop_all().await;
                for j in 0..self.children.len() {
                    self.bring_back(j);
                }
                None
            }
            Some(Command::Restart(Some(name))) => {
                let targets = self.find_children(&name);
                if !targets.is_empty() {
                    self.restart_by_hand(&targets).await;
                }
                None
            }
            Some(Command::Change(change, reply)) => {
                let result = self.change(change).await;
                // Before the answer: a caller that then waits for `ready()` must not see
                // the "all up" of before the change.
                self.schedule();
                self.publish_up();
                let _ = reply.send(result);
                None
            }
        }
    }

    /// A manual restart of `targets` (a member's children): the strategy's members
    /// stopped first (dependants first), then they; all start again as their
    /// dependencies allow. Not counted towards the intensity.
    pub(super) async fn restart_by_hand(&mut self, targets: &[usize]) {
        let mut affected: Vec<usize> = Vec::new();
        for &i in targets {
            for j in self.restarted_with(i) {
                if !affected.contains(&j) && !targets.contains(&j) {
                    affected.push(j);
                }
            }
        }
        affected.sort_unstable();
        self.announce_strategy(targets[0], &affected);
        let mut all = affected;
        all.extend_from_slice(targets);
        self.stop_in_order(&all).await;
        for j in all {
            self.bring_back(j);
        }
    }

    /// After a manual restart's stop: the child starts again, except a temporary one
    /// that had already finished (OTP drops its spec).
    pub(super) fn bring_back(&mut self, j: usize) {
        let child = &mut self.children[j];
        let gone = child.has_ended() && child.restart == RestartKind::Temporary;
        if !gone && !child.is_running() && !matches!(child.state(), ChildState::Starting(_)) {
            child.enter(ChildState::Idle, &self.registry);
        }
    }

    /// The children called `name`: its name in the group, its full name, or the name of
    /// the member it is an instance of (all of them).
    pub(super) fn find_children(&self, name: &str) -> Vec<usize> {
        (0..self.children.len())
            .filter(|&i| {
                let child = &self.children[i];
                child.local == name || child.name() == name || child.member_name() == name
            })
            .collect()
    }
}

impl Child {
    /// The name dependencies use for it: its template's, for an instance.
    pub(super) fn member_name(&self) -> &str {
        match &self.template {
            Some((template, _)) => template,
            None => &self.local,
        }
    }
}

/// The name of instance `n` of `count` of `template`: `NAME-n`, or `NAME` alone.
pub(super) fn instance_name(template: &str, n: u32, count: u32) -> String {
    if count == 1 {
        template.to_owned()
    } else {
        format!("{template}-{n}")
    }
}
