//! A service file as Kubernetes manifests: one Pod (or a one-replica Deployment) per group,
//! one container per service, written as YAML with `#` comments by a small emitter.

use std::collections::BTreeMap;

use crate::command::{
    CommandSpec, GroupRef, HealthCheck, KillMode, Output, Readiness, StopSignal, UserRef,
};
use crate::compose::{Service, ServiceFile};
use crate::supervision::{Condition, StartOrder};
use crate::supervision::{RestartKind, Strategy};

use super::yaml::{comment, field, render_map, Entry, Yaml};
use super::{
    awaited_completion, describe_health, describe_readiness, human_duration, path_text, seconds_up,
    signal_name, ExportError, ExportOptions, ExportedFile, Target,
};

/// The image written when [`ExportOptions`] names none, with a comment to replace it.
pub const PLACEHOLDER_IMAGE: &str = "example.invalid/replace-me:latest";

/// The set as one Kubernetes object in `<group>.yaml`: a Pod with one container per
/// service, so the services share `localhost` (and `127.0.0.1:port` addresses keep
/// working) as they do under the supervisor on one machine. When the Pod's restart policy
/// is `Always` the Pod is the template of a Deployment with one replica and the `Recreate`
/// strategy (rescheduled if its node goes away); otherwise a bare Pod, because a
/// Deployment only allows `Always`. For one Deployment per service, split the containers
/// and give each a `Service`; the addresses in the file then change. The output passes
/// `kubernetes-validate --strict` (the published OpenAPI schemas) in CI. Pure: no I/O.
///
/// | service file | manifest |
/// |---|---|
/// | a service | a container, named after the service (lowercase, other characters as `-`) |
/// | target of a `completed_successfully` dependency | an init container: it runs to exit 0 before the other containers start (all of them, not only its dependants) |
/// | `program`, `args` | `command: [program]`, `args` (a `program` path is the exporting machine's: a comment says the image must have it) |
/// | (none) | `image`: [`ExportOptions::image`], [`ExportOptions::images`], else [`PLACEHOLDER_IMAGE`] with a comment |
/// | `env` | `env` (name, value) |
/// | `cwd` | `workingDir` |
/// | `restart.kind` | the Pod's `restartPolicy`: `Always` if a container is permanent, else `OnFailure` if one is transient, else `Never`; a container whose kind differs gets a comment |
/// | `readiness` tcp, http, exec | `startupProbe` (fails after `ready_timeout_ms`: the container restarts, as a start that timed out) and `readinessProbe`: `tcpSocket`, `httpGet`, `exec`; `periodSeconds` from the exec interval, else 1 |
/// | `health` tcp, http, exec | `livenessProbe`: `periodSeconds` the interval, `timeoutSeconds` the timeout, `failureThreshold` the failures before unhealthy |
/// | `user`, `group` as ids | `securityContext.runAsUser`, `runAsGroup` (names: comment, Kubernetes wants ids) |
/// | `stop.grace` | the Pod's `terminationGracePeriodSeconds` (the longest of its services) |
/// | everything else (the identity handshake, sd_notify, Unix socket, log line, file and delay readiness, ping, Unix socket and watchdog health, `depends_on` started/ready/healthy, strategy, intensity, backoff, order, umask, limits, supplementary groups, output files, stop signal and request, kill mode) | a comment where it applies |
pub fn kubernetes_manifests(
    file: &ServiceFile,
    options: &ExportOptions,
) -> Result<Vec<ExportedFile>, ExportError> {
    let group_name = dns_label(&file.group.name)?;
    let names = container_names(file)?;
    let (init, main): (Vec<&Service>, Vec<&Service>) = file
        .services
        .iter()
        .partition(|s| awaited_completion(file, s.name()));
    let policy = pod_restart_policy(&main);
    let mut pod = Vec::new();
    group_notes(&mut pod, file);
    pod.push(field("restartPolicy", Yaml::str(policy)));
    let grace = file
        .services
        .iter()
        .map(|s| s.spec.stop.grace)
        .max()
        .unwrap_or_default();
    pod.push(comment(
        "The longest stop grace of the services (Kubernetes has one per Pod).",
    ));
    pod.push(field(
        "terminationGracePeriodSeconds",
        Yaml::Int(seconds_up(grace)),
    ));
    let build = |services: &[&Service], init: bool| -> Result<Yaml, ExportError> {
        services
            .iter()
            .map(|s| container(file, s, &names[s.name()], options, policy, init).map(Yaml::Map))
            .collect::<Result<Vec<_>, _>>()
            .map(Yaml::Seq)
    };
    if !init.is_empty() {
        pod.push(field("initContainers", build(&init, true)?));
    }
    pod.push(field("containers", build(&main, false)?));
    let mut contents = String::new();
    render_map(&object(file, &group_name, policy, pod), 0, &mut contents);
    Ok(vec![ExportedFile {
        name: format!("{group_name}.yaml"),
        contents,
    }])
}

/// The Pod's `restartPolicy` for its (non-init) containers: the most restarting of their
/// restart kinds.
fn pod_restart_policy(main: &[&Service]) -> &'static str {
    let any = |kind| main.iter().any(|s| s.spec.restart.kind == kind);
    if any(RestartKind::Permanent) {
        "Always"
    } else if any(RestartKind::Transient) {
        "OnFailure"
    } else {
        "Never"
    }
}

/// The object around the Pod spec `pod`: a one-replica Deployment where the policy is
/// `Always` (the only one a Deployment allows), else a bare Pod.
fn object(file: &ServiceFile, group_name: &str, policy: &str, pod: Vec<Entry>) -> Vec<Entry> {
    let labels = || Yaml::Map(vec![field("app.kubernetes.io/name", Yaml::str(group_name))]);
    let metadata = || {
        Yaml::Map(vec![
            field("name", Yaml::str(group_name)),
            field("labels", labels()),
        ])
    };
    let mut object = vec![
        comment(format!(
            "The running-process group `{}`, exported by `running-process export kubernetes`: one container per service, sharing localhost.",
            file.group.name
        )),
        comment("Lines starting with # say what Kubernetes cannot express of the service file."),
    ];
    if policy == "Always" {
        object.extend([
            field("apiVersion", Yaml::str("apps/v1")),
            field("kind", Yaml::str("Deployment")),
            field("metadata", metadata()),
            field(
                "spec",
                Yaml::Map(vec![
                    field("replicas", Yaml::Int(1)),
                    comment("One instance at a time, as under the supervisor."),
                    field(
                        "strategy",
                        Yaml::Map(vec![field("type", Yaml::str("Recreate"))]),
                    ),
                    field("selector", Yaml::Map(vec![field("matchLabels", labels())])),
                    field(
                        "template",
                        Yaml::Map(vec![
                            field("metadata", metadata()),
                            field("spec", Yaml::Map(pod)),
                        ]),
                    ),
                ]),
            ),
        ]);
    } else {
        object.extend([
            comment(format!(
                "A bare Pod: a Deployment allows only restartPolicy Always, and this set's is {policy}."
            )),
            field("apiVersion", Yaml::str("v1")),
            field("kind", Yaml::str("Pod")),
            field("metadata", metadata()),
            field("spec", Yaml::Map(pod)),
        ]);
    }
    object
}

/// A name as a DNS-1123 label (what container and object names must be): lowercase, any
/// other character as `-`, at most 63 characters.
fn dns_label(name: &str) -> Result<String, ExportError> {
    let mapped: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    let label: String = mapped.trim_matches('-').chars().take(63).collect();
    let label = label.trim_end_matches('-').to_owned();
    if label.is_empty() {
        return Err(ExportError::Name {
            name: name.to_owned(),
            target: Target::Kubernetes,
            reason: "it has no letter or digit".into(),
        });
    }
    Ok(label)
}

/// Every service's container name; two services may not share one.
fn container_names(file: &ServiceFile) -> Result<BTreeMap<&str, String>, ExportError> {
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    for service in &file.services {
        let label = dns_label(service.name())?;
        if let Some((first, _)) = names.iter().find(|(_, l)| **l == label) {
            return Err(ExportError::NameClash {
                first: (*first).to_owned(),
                second: service.name().to_owned(),
                container: label,
            });
        }
        names.insert(service.name(), label);
    }
    Ok(names)
}

/// The group's settings that have no Kubernetes field, as comments of the Pod spec.
fn group_notes(pod: &mut Vec<Entry>, file: &ServiceFile) {
    let group = &file.group;
    match group.strategy {
        Strategy::OneForOne => {}
        Strategy::RestForOne | Strategy::OneForAll => pod.push(comment(format!(
            "strategy {}: the kubelet restarts a container alone; a container that needs another must retry it.",
            if group.strategy == Strategy::RestForOne { "rest_for_one" } else { "one_for_all" }
        ))),
    }
    if group.intensity.max_restarts != u32::MAX {
        pod.push(comment(format!(
            "intensity: more than {} restarts within {} stop the set under running-process; the kubelet restarts forever (CrashLoopBackOff).",
            group.intensity.max_restarts,
            human_duration(group.intensity.period)
        )));
    }
    if group.order == StartOrder::Sequential {
        pod.push(comment(
            "order sequential: containers start in order but none waits for the one before to be ready.",
        ));
    }
}

fn container(
    file: &ServiceFile,
    service: &Service,
    name: &str,
    options: &ExportOptions,
    pod_policy: &str,
    init: bool,
) -> Result<Vec<Entry>, ExportError> {
    let spec = &service.spec;
    let mut c = Vec::new();
    if name != service.name() {
        c.push(comment(format!("Service `{}`.", service.name())));
    }
    if init {
        c.push(comment(
            "An init container: a dependant waits for it to complete successfully, so every container starts after it exited 0.",
        ));
    }
    c.push(field("name", Yaml::str(name)));
    image(&mut c, service, options);
    command(&mut c, service)?;
    environment(&mut c, spec);
    security(&mut c, spec);
    restart_notes(&mut c, spec, pod_policy, init);
    dependency_notes(&mut c, file, service);
    if service.replicas > 1 {
        c.push(comment(format!(
            "replicas = {}: this is one container; scale the object, or split this service into a Deployment of its own.",
            service.replicas
        )));
    }
    readiness(&mut c, spec, init);
    liveness(&mut c, spec, init);
    listener_notes(&mut c, spec);
    resources(&mut c, spec);
    output_notes(&mut c, spec);
    stop_notes(&mut c, spec);
    Ok(c)
}

/// The container's image: the one [`ExportOptions`] names, else a placeholder to replace.
fn image(c: &mut Vec<Entry>, service: &Service, options: &ExportOptions) {
    let image = options
        .images
        .get(service.name())
        .or(options.image.as_ref());
    if image.is_none() {
        c.push(comment(format!(
            "Replace with an image that has `{}` (or export with --image).",
            service.spec.program.display()
        )));
    }
    c.push(field(
        "image",
        Yaml::str(image.map_or(PLACEHOLDER_IMAGE, String::as_str)),
    ));
}

/// `command`, `args` and `workingDir`.
fn command(c: &mut Vec<Entry>, service: &Service) -> Result<(), ExportError> {
    let spec = &service.spec;
    let program = path_text(&spec.program, service.name(), "program")?;
    if spec.program.is_absolute() {
        c.push(comment(
            "A path on the exporting machine: the image must have the program there.",
        ));
    }
    c.push(field("command", Yaml::Seq(vec![Yaml::str(program)])));
    if !spec.args.is_empty() {
        c.push(field(
            "args",
            Yaml::Seq(spec.args.iter().map(Yaml::str).collect()),
        ));
    }
    if let Some(cwd) = &spec.cwd {
        let cwd = path_text(cwd, service.name(), "cwd")?;
        c.push(comment(
            "A directory of the exporting machine (by default the service file's): the image must have it.",
        ));
        c.push(field("workingDir", Yaml::str(cwd)));
    }
    Ok(())
}

/// `env` (the supervisor's own environment, which a container does not get, is a note).
fn environment(c: &mut Vec<Entry>, spec: &CommandSpec) {
    if !spec.env_clear {
        c.push(comment(
            "running-process passes its own environment on; a container gets the image's and these.",
        ));
    }
    if !spec.env.is_empty() {
        let env = spec
            .env
            .iter()
            .map(|(k, v)| {
                Yaml::Map(vec![
                    field("name", Yaml::str(k)),
                    field("value", Yaml::str(v)),
                ])
            })
            .collect();
        c.push(field("env", Yaml::Seq(env)));
    }
}

/// The health check as a `livenessProbe` (init containers have none).
fn liveness(c: &mut Vec<Entry>, spec: &CommandSpec, init: bool) {
    let Some(health) = &spec.health else {
        return;
    };
    match probe_handler(
        c,
        &describe_health(&health.check),
        health_target(&health.check),
    ) {
        Some(handler) if !init => {
            let mut probe = handler;
            probe.push(field(
                "periodSeconds",
                Yaml::Int(seconds_up(health.policy.interval).max(1)),
            ));
            probe.push(field(
                "timeoutSeconds",
                Yaml::Int(seconds_up(health.policy.timeout).max(1)),
            ));
            probe.push(field(
                "failureThreshold",
                Yaml::Int(u64::from(health.policy.failures_before_unhealthy.max(1))),
            ));
            c.push(field("livenessProbe", Yaml::Map(probe)));
        }
        Some(_) => c.push(comment("health: init containers have no liveness probe.")),
        None => {}
    }
}

/// `securityContext` from numeric ids; names, umask and limits as comments.
fn security(c: &mut Vec<Entry>, spec: &CommandSpec) {
    let mut context = Vec::new();
    match &spec.user {
        Some(UserRef::Id(id)) => context.push(field("runAsUser", Yaml::Int(u64::from(*id)))),
        Some(UserRef::Name(user)) => c.push(comment(format!(
            "user {user:?}: Kubernetes wants a numeric runAsUser (or set USER in the image)."
        ))),
        None => {}
    }
    match &spec.group {
        Some(GroupRef::Id(id)) => context.push(field("runAsGroup", Yaml::Int(u64::from(*id)))),
        Some(GroupRef::Name(group)) => c.push(comment(format!(
            "group {group:?}: Kubernetes wants a numeric runAsGroup."
        ))),
        None => {}
    }
    if let Some(groups) = &spec.supplementary_groups {
        c.push(comment(format!(
            "supplementary_groups [{}]: Kubernetes sets them per Pod (securityContext.supplementalGroups, numeric).",
            groups.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        )));
    }
    if let Some(mask) = spec.umask {
        c.push(comment(format!(
            "umask {:04o}: Kubernetes has none; set it in the image's entry point.",
            mask.0
        )));
    }
    if !spec.limits.is_empty() {
        c.push(comment(
            "limits (open files, processes, core size): Kubernetes has no rlimits; the container runtime's defaults apply.",
        ));
    }
    if !context.is_empty() {
        c.push(field("securityContext", Yaml::Map(context)));
    }
}

fn restart_notes(c: &mut Vec<Entry>, spec: &CommandSpec, pod_policy: &str, init: bool) {
    let kind = spec.restart.kind;
    let differs = match (kind, pod_policy) {
        (RestartKind::Permanent, "Always")
        | (RestartKind::Transient, "OnFailure")
        | (RestartKind::Temporary, "Never") => false,
        // Init containers are retried on failure unless the Pod's policy is Never.
        (RestartKind::Transient, "Always") => !init,
        _ => true,
    };
    if differs {
        c.push(comment(format!(
            "restart {}: the Pod's restartPolicy {pod_policy} applies to every container.",
            match kind {
                RestartKind::Permanent => "permanent",
                RestartKind::Transient => "transient",
                RestartKind::Temporary => "temporary",
            }
        )));
    }
    if kind != RestartKind::Temporary {
        let backoff = &spec.restart.backoff;
        c.push(comment(format!(
            "backoff {} x{} up to {}: the kubelet's is its own (10s doubling up to 5min).",
            human_duration(backoff.initial),
            backoff.multiplier,
            human_duration(backoff.max)
        )));
    }
}

fn dependency_notes(c: &mut Vec<Entry>, file: &ServiceFile, service: &Service) {
    for dependency in &service.depends_on {
        let init = awaited_completion(file, &dependency.service);
        if dependency.condition == Condition::CompletedSuccessfully || init {
            continue; // an init container: every container starts after it
        }
        c.push(comment(format!(
            "depends_on {} = \"{}\": containers of a Pod start without waiting for each other; the program must retry until it answers (or make it a sidecar init container with a startupProbe).",
            dependency.service, dependency.condition
        )));
    }
}

/// `startupProbe` and `readinessProbe` from the readiness check.
fn readiness(c: &mut Vec<Entry>, spec: &CommandSpec, init: bool) {
    let (target, period) = match &spec.readiness {
        Readiness::Started => return,
        Readiness::Tcp { address } => (ProbeTarget::Tcp(address), 1),
        Readiness::Http { url } => (ProbeTarget::Http(url), 1),
        Readiness::Exec { command, interval } => {
            (ProbeTarget::Exec(command), seconds_up(*interval).max(1))
        }
        _ => (ProbeTarget::None, 1),
    };
    let described = describe_readiness(&spec.readiness);
    let Some(handler) = probe_handler(c, &described, target) else {
        return;
    };
    if init {
        c.push(comment(format!(
            "readiness {described}: an init container has no probes; its exit counts."
        )));
        return;
    }
    let attempts = seconds_up(spec.ready_timeout).div_ceil(period).max(1);
    let mut startup = handler.clone();
    startup.push(field("periodSeconds", Yaml::Int(period)));
    startup.push(field("failureThreshold", Yaml::Int(attempts)));
    c.push(comment(format!(
        "Not ready within {} (ready_timeout_ms): restarted.",
        human_duration(spec.ready_timeout)
    )));
    c.push(field("startupProbe", Yaml::Map(startup)));
    let mut ready = handler;
    ready.push(field("periodSeconds", Yaml::Int(period)));
    c.push(field("readinessProbe", Yaml::Map(ready)));
}

/// What a probe checks.
enum ProbeTarget<'a> {
    Tcp(&'a str),
    Http(&'a str),
    Exec(&'a [String]),
    /// Nothing a probe can do.
    None,
}

fn health_target(check: &HealthCheck) -> ProbeTarget<'_> {
    match check {
        HealthCheck::Tcp { address } => ProbeTarget::Tcp(address),
        HealthCheck::Http { url } => ProbeTarget::Http(url),
        HealthCheck::Exec { command } => ProbeTarget::Exec(command),
        HealthCheck::Ping | HealthCheck::UnixSocket { .. } | HealthCheck::Watchdog { .. } => {
            ProbeTarget::None
        }
    }
}

/// The handler fields of a probe (`tcpSocket`, `httpGet`, `exec`), or `None` with a
/// comment saying why there is none.
fn probe_handler(
    c: &mut Vec<Entry>,
    described: &str,
    target: ProbeTarget<'_>,
) -> Option<Vec<Entry>> {
    let (host, handler) = match target {
        ProbeTarget::None => {
            c.push(comment(format!(
                "{described}: Kubernetes has no such probe."
            )));
            return None;
        }
        ProbeTarget::Exec(command) => {
            return Some(vec![field(
                "exec",
                Yaml::Map(vec![field(
                    "command",
                    Yaml::Seq(command.iter().map(Yaml::str).collect()),
                )]),
            )]);
        }
        ProbeTarget::Tcp(address) => {
            let Some((host, port)) = host_port(address, None) else {
                c.push(comment(format!("{described}: not a host:port address.")));
                return None;
            };
            (
                host,
                field("tcpSocket", Yaml::Map(vec![field("port", Yaml::Int(port))])),
            )
        }
        ProbeTarget::Http(url) => {
            let Some(rest) = url.strip_prefix("http://") else {
                c.push(comment(format!("{described}: not an http:// URL.")));
                return None;
            };
            let (authority, path) = match rest.find('/') {
                Some(at) => rest.split_at(at),
                None => (rest, "/"),
            };
            let Some((host, port)) = host_port(authority, Some(80)) else {
                c.push(comment(format!("{described}: no host:port in the URL.")));
                return None;
            };
            (
                host,
                field(
                    "httpGet",
                    Yaml::Map(vec![
                        field("path", Yaml::str(path)),
                        field("port", Yaml::Int(port)),
                    ]),
                ),
            )
        }
    };
    let note = comment(format!(
        "{described}: the kubelet probes the Pod's IP, so the service must listen on it (0.0.0.0), not only on {host}."
    ));
    // Said once when readiness and health check the same address.
    if !matches!(host.as_str(), "" | "0.0.0.0" | "::" | "*") && !c.contains(&note) {
        c.push(note);
    }
    Some(vec![handler])
}

/// `host:port` (`[v6]:port`), the port defaulting to `default`.
fn host_port(text: &str, default: Option<u64>) -> Option<(String, u64)> {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') || host.starts_with('[') => {
            (host, port.parse().ok().filter(|p| (1..=65535).contains(p))?)
        }
        _ => (text, default?),
    };
    Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

fn output_notes(c: &mut Vec<Entry>, spec: &CommandSpec) {
    for (stream, output) in [("stdout", &spec.stdout), ("stderr", &spec.stderr)] {
        match output {
            Output::Inherit => {}
            Output::Tracing => c.push(comment(format!(
                "{stream} as tracing events: Kubernetes keeps it in the container log."
            ))),
            Output::Null => c.push(comment(format!(
                "{stream} discarded: Kubernetes keeps it in the container log."
            ))),
            Output::File { path, rotate } => c.push(comment(format!(
                "{stream} to {}{}: Kubernetes keeps it in the container log; mount a volume and redirect in the image to keep a file.",
                path.display(),
                if rotate.is_some() { ", rotated" } else { "" }
            ))),
        }
    }
}

fn stop_notes(c: &mut Vec<Entry>, spec: &CommandSpec) {
    let stop = &spec.stop;
    if stop.signal != StopSignal::Sigterm {
        c.push(comment(format!(
            "stop signal {}: Kubernetes sends the image's STOPSIGNAL (SIGTERM by default).",
            signal_name(stop.signal)
        )));
    }
    if stop.request {
        c.push(comment(
            "stop.request (shutdown over the daemon's socket): use a lifecycle.preStop exec hook with a client command.",
        ));
    }
    if stop.kill_mode == KillMode::Process {
        c.push(comment(
            "kill_mode process: Kubernetes stops every process of the container.",
        ));
    }
    if !spec.die_with_supervisor {
        c.push(comment(
            "die_with_supervisor = false: a container never outlives its Pod.",
        ));
    }
    if !spec.cgroup {
        c.push(comment(
            "cgroup = false: a container is always its own cgroup.",
        ));
    }
}

/// Listeners: a TCP one is a declared container port; what Kubernetes has no form for
/// (the socket held across restarts, start on demand, the fd store) is a comment.
fn listener_notes(c: &mut Vec<Entry>, spec: &crate::command::CommandSpec) {
    if spec.listeners.is_empty() {
        return;
    }
    c.push(comment(
        "listeners: Kubernetes does not hold sockets for a container; the program binds its own (no LISTEN_FDS), and a restart refuses connections in between: run several replicas behind a Service for that.",
    ));
    let mut ports = Vec::new();
    for listener in &spec.listeners {
        match listener {
            crate::command::Listener::Tcp { name, address } => {
                let port = address
                    .rsplit_once(':')
                    .and_then(|(_, port)| port.parse::<u64>().ok());
                match port {
                    Some(port) => {
                        let mut entry = vec![field("containerPort", Yaml::Int(port))];
                        // A port name is at most 15 lowercase letters, digits and dashes.
                        let valid = name.len() <= 15
                            && name.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
                            && name.chars().any(|ch| ch.is_ascii_lowercase());
                        if valid {
                            entry.push(field("name", Yaml::str(name)));
                        }
                        ports.push(Yaml::Map(entry));
                    }
                    None => c.push(comment(format!("listener {name} ({address}): no port to declare."))),
                }
            }
            crate::command::Listener::Unix { name, path } => c.push(comment(format!(
                "listener {name} (unix {}): a Unix socket is local to the Pod; share it through an emptyDir volume.",
                path.display()
            ))),
        }
    }
    if !ports.is_empty() {
        c.push(field("ports", Yaml::Seq(ports)));
    }
    if spec.start_on_demand {
        c.push(comment(
            "start_on_demand: Kubernetes starts every container at once (scale to zero needs an add-on such as KEDA).",
        ));
    }
    if spec.fd_store_max > 0 {
        c.push(comment(
            "fd_store_max: Kubernetes keeps no descriptors across a container restart.",
        ));
    }
}

/// The quotas as `resources.limits` (`memory_max` → `memory`, `cpu_max` → `cpu` in
/// millicores); `memory_high` and `pids_max` have no per-container field: comments.
fn resources(c: &mut Vec<Entry>, spec: &CommandSpec) {
    let mut limits = Vec::new();
    if let Some(max) = spec.memory_max {
        limits.push(field("memory", Yaml::str(memory_quantity(max.0))));
    }
    if let Some(cpu) = spec.cpu_max {
        limits.push(field(
            "cpu",
            Yaml::str(format!("{}m", u64::from(cpu.percent) * 10)),
        ));
    }
    if let Some(high) = spec.memory_high {
        c.push(comment(format!(
            "memory_high = {high}: Kubernetes has no per-container memory.high (its MemoryQoS feature derives one from requests); consider resources.requests.memory."
        )));
    }
    if let Some(pids) = spec.pids_max {
        c.push(comment(format!(
            "pids_max = {pids}: Kubernetes limits processes per Pod only through the kubelet's podPidsLimit."
        )));
    }
    if !limits.is_empty() {
        c.push(field(
            "resources",
            Yaml::Map(vec![field("limits", Yaml::Map(limits))]),
        ));
    }
}

/// Bytes as a Kubernetes quantity: `Gi`, `Mi` or `Ki` where one divides them, else bytes.
fn memory_quantity(bytes: u64) -> String {
    for (suffix, shift) in [("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        let unit = 1u64 << shift;
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(dns_label("Web_API").unwrap(), "web-api");
        assert_eq!(dns_label("--x--").unwrap(), "x");
        assert!(dns_label("__").is_err());
        assert_eq!(dns_label(&"a".repeat(70)).unwrap().len(), 63);
    }

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(
            host_port("127.0.0.1:6400", None),
            Some(("127.0.0.1".into(), 6400))
        );
        assert_eq!(host_port("[::1]:80", None), Some(("::1".into(), 80)));
        assert_eq!(
            host_port("localhost", Some(80)),
            Some(("localhost".into(), 80))
        );
        assert_eq!(host_port("localhost", None), None);
        assert_eq!(host_port("h:0", None), None);
    }
}
