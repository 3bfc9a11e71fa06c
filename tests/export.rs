//! `running-process export`: a realistic service file as systemd units and Kubernetes
//! manifests, checked by the tools those projects publish: `systemd-analyze verify`
//! (Debian's systemd) and `kubernetes-validate --strict` (the published OpenAPI schemas,
//! from PyPI). `.ci/run` installs both; a test whose tool is missing says SKIPPED. Each
//! validator is also shown a broken file, which it must reject, so these tests can fail.

#[allow(dead_code)]
#[path = "../src/bin/running-process/export.rs"]
mod export_cli;
/// The CLI's output thread, which `export_cli` prints through.
#[allow(dead_code)]
#[path = "../src/bin/running-process/printer.rs"]
mod printer;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use running_process::compose::export::{ExportOptions, Target};
use running_process::compose::ServiceFile;

/// A set as a small web application would have it: a one-shot migration, a redis store
/// (TCP readiness and health, limits, a user), a Python web server (HTTP readiness and
/// health, an output file, depends on both), a notify daemon with a watchdog and a worker
/// with exec checks.
const FILE: &str = r#"
[group]
name = "shop"
strategy = "rest_for_one"
intensity = { max_restarts = 5, period_ms = 60000 }

[services.migrate]
program = "sh"
args = ["-c", "echo migrating; exit 0"]
restart = { kind = "temporary" }

[services.store]
program = "redis-server"
args = ["--port", "6400", "--save", "", "--appendonly", "no"]
readiness = { kind = "tcp", address = "127.0.0.1:6400" }
ready_timeout_ms = 10000
health = { interval_ms = 5000, timeout_ms = 1000, failures_before_unhealthy = 3, check = { kind = "tcp", address = "127.0.0.1:6400" } }
user = 1000
group = 1000
umask = "027"
limits = { open_files = 4096, core_size = 0, processes = { soft = 512, hard = "infinity" } }
stop = { signal = "SIGTERM", grace_ms = 10000, kill_mode = "mixed" }
depends_on = { migrate = "completed_successfully" }

[services.web]
program = "python3"
args = ["-m", "http.server", "8000", "--bind", "127.0.0.1"]
env = { PYTHONUNBUFFERED = "1", GREETING = "hello \"world\" at 100% of $$HOME" }
readiness = { kind = "http", url = "http://127.0.0.1:8000/" }
health = { interval_ms = 10000, timeout_ms = 2000, failures_before_unhealthy = 3, check = { kind = "http", url = "http://127.0.0.1:8000/" } }
stdout = { kind = "file", path = "logs/web.log", rotate = { max_bytes = 1048576, keep = 3 } }
restart = { kind = "permanent", backoff = { initial_ms = 500, multiplier = 2.0, max_ms = 30000 } }
depends_on = { store = "healthy", migrate = "completed_successfully" }

[services.notifier]
program = "sh"
args = ["-c", "systemd-notify --ready; while true; do systemd-notify WATCHDOG=1; sleep 5; done"]
readiness = { kind = "notify" }
health = { check = { kind = "watchdog", timeout_ms = 30000 } }
stop = { signal = "SIGINT", grace_ms = 3000 }
restart = { kind = "transient" }
supplementary_groups = ["adm"]
depends_on = ["store"]

[services.api]
program = "python3"
args = ["-c", "import socket; s = socket.fromfd(3, socket.AF_INET, socket.SOCK_STREAM); s.accept()"]
listeners = [{ kind = "tcp", name = "http", address = "127.0.0.1:8081" }, { kind = "unix", name = "ctl", path = "/run/shop/api.sock" }]
start_on_demand = true
fd_store_max = 16

[services.worker]
program = "sh"
args = ["-c", "touch ready.flag; exec sleep infinity"]
readiness = { kind = "exec", command = ["test", "-e", "ready.flag"], interval_ms = 500 }
health = { check = { kind = "exec", command = ["test", "-e", "ready.flag"] } }
stderr = { kind = "null" }
depends_on = { store = "ready", web = "started" }
"#;

/// The file, loaded as `running-process` loads it (paths resolved, programs found), in a
/// temporary directory; `None` (with SKIPPED) when one of its programs is not installed.
async fn service_file() -> Option<(tempfile::TempDir, ServiceFile)> {
    for program in ["sh", "redis-server", "python3"] {
        if find(program).is_none() {
            println!("SKIPPED: `{program}` is not installed (the service file runs it)");
            return None;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("running-process.toml");
    std::fs::write(&path, FILE).unwrap();
    let file = ServiceFile::load(&path).await.expect("the file loads");
    Some((dir, file))
}

/// `program` in `PATH`.
fn find(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// The command-line binary of this build.
const RUNNING_PROCESS: &str = env!("CARGO_BIN_EXE_running-process");

/// Export with the command line's own function into `out`; the files written.
fn export_into(
    file: &ServiceFile,
    target: Target,
    options: &ExportOptions,
    out: &Path,
) -> Vec<PathBuf> {
    // The units' readiness waits run the command line built with these tests.
    let options = options.clone().wait_program(RUNNING_PROCESS);
    assert_eq!(
        export_cli::run(file, target, &options, Some(out)),
        ExitCode::SUCCESS
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Run a validator, print and return its exit status and output (stdout then stderr);
/// `None` (with SKIPPED) when it is not installed.
fn run_validator(tool: &str, install: &str, args: &[&std::ffi::OsStr]) -> Option<(bool, String)> {
    let Some(path) = find(tool) else {
        println!("SKIPPED: {tool} is not installed ({install})");
        return None;
    };
    let output = Command::new(path)
        .args(args)
        .output()
        .expect("the validator runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{tool}: {}\n{text}", output.status);
    Some((output.status.success(), text))
}

/// `systemd-analyze verify` on `units`: `Err` with its output unless it exits 0 **and**
/// prints nothing. Verify exits 0 for an unknown directive or a value it cannot parse (it
/// warns and ignores the line, as systemd does when loading), so silence is the criterion.
/// `--man=no`: a container may have no man pages; `--generators=no`: nothing of this
/// machine (its fstab) is generated into the check.
fn systemd_verify(units: &[PathBuf]) -> Option<Result<(), String>> {
    let mut args: Vec<&std::ffi::OsStr> = ["verify", "--man=no", "--generators=no"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
    args.extend(units.iter().map(|p| p.as_os_str()));
    let (success, text) = run_validator("systemd-analyze", "Debian package `systemd`", &args)?;
    Some(if success && text.trim().is_empty() {
        Ok(())
    } else {
        Err(text)
    })
}

/// `kubernetes-validate --strict` (unknown fields are errors) on `manifest`: `Err` with its
/// output unless it exits 0 without an `ERROR` line.
fn kubernetes_validate(manifest: &Path) -> Option<Result<(), String>> {
    let args = ["--strict".as_ref(), manifest.as_os_str()];
    let (success, text) = run_validator(
        "kubernetes-validate",
        "`pip install kubernetes-validate`",
        &args,
    )?;
    Some(if success && !text.contains("ERROR") {
        Ok(())
    } else {
        Err(text)
    })
}

/// The validators accept `units` (or are not installed).
fn assert_verified(units: &[PathBuf]) {
    if let Some(result) = systemd_verify(units) {
        result.expect("systemd-analyze verify accepts the exported units");
    }
}

/// kubernetes-validate accepts `manifest` (or is not installed).
fn assert_validated(manifest: &Path) {
    if let Some(result) = kubernetes_validate(manifest) {
        result.expect("kubernetes-validate --strict accepts the exported manifest");
    }
}

/// Every one of `texts` is in `file`.
fn assert_contains<S: AsRef<str>>(file: &str, texts: impl IntoIterator<Item = S>) {
    for text in texts {
        let text = text.as_ref();
        assert!(file.contains(text), "{text:?} in\n{file}");
    }
}

/// Every one of `lines` is a whole line of `unit`.
fn assert_lines<S: AsRef<str>>(unit: &str, lines: impl IntoIterator<Item = S>) {
    for line in lines {
        let line = line.as_ref();
        assert!(unit.lines().any(|l| l == line), "{line:?} in\n{unit}");
    }
}

/// Each broken copy of `file` (`from` replaced by `to`, written over it) is rejected by
/// `validate`: the negative control of a validator.
fn assert_rejects(
    file: &Path,
    breaks: &[(&str, &str, &str)],
    validate: impl Fn() -> Option<Result<(), String>>,
) {
    let good = read(file);
    for (from, to, what) in breaks {
        let broken = good.replace(from, to);
        assert_ne!(broken, good, "{from:?} is in\n{good}");
        std::fs::write(file, &broken).unwrap();
        let Some(result) = validate() else { return };
        assert!(result.is_err(), "the validator must reject {what}");
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // a checklist of the directives each exported unit must have
async fn systemd_units_pass_systemd_analyze_verify() {
    let Some((dir, file)) = service_file().await else {
        return;
    };
    let out = dir.path().join("units");
    let units = export_into(&file, Target::Systemd, &ExportOptions::default(), &out);
    let names: Vec<String> = units
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "shop-api-ctl.socket",
            "shop-api-http.socket",
            "shop-api.service",
            "shop-migrate.service",
            "shop-notifier.service",
            "shop-store.service",
            "shop-web.service",
            "shop-worker.service",
            "shop.target"
        ]
    );
    let unit = |name: &str| read(&out.join(name));

    // Listeners are socket units (one each, for its FileDescriptorName=); a service
    // started on demand is wanted through its sockets only.
    assert_lines(
        &unit("shop-api-http.socket"),
        [
            "ListenStream=127.0.0.1:8081",
            "FileDescriptorName=http",
            "Service=shop-api.service",
            "WantedBy=sockets.target",
        ],
    );
    assert_lines(
        &unit("shop-api-ctl.socket"),
        [
            "ListenStream=/run/shop/api.sock",
            "SocketMode=0600",
            "FileDescriptorName=ctl",
        ],
    );
    assert_lines(
        &unit("shop-api.service"),
        [
            "Requires=shop-api-http.socket",
            "After=shop-api-ctl.socket",
            "FileDescriptorStoreMax=16",
        ],
    );
    let target = unit("shop.target");
    assert_lines(
        &target,
        ["Wants=shop-api-http.socket", "Wants=shop-api-ctl.socket"],
    );
    assert!(!target.contains("shop-api.service"), "{target}");

    let migrate = unit("shop-migrate.service");
    assert_lines(
        &migrate,
        ["Type=oneshot", "RemainAfterExit=yes", "Restart=no"],
    );
    let store = unit("shop-store.service");
    let redis = find("redis-server").unwrap();
    assert_lines(
        &store,
        [
            format!(
                "ExecStart={} --port 6400 --save \"\" --appendonly no",
                redis.display()
            ),
            "Type=exec".into(),
            "After=shop-migrate.service".into(),
            "Requires=shop-migrate.service".into(),
            "PartOf=shop.target".into(),
            "StartLimitBurst=6".into(),
            "StartLimitIntervalSec=60s".into(),
            "User=1000".into(),
            "Group=1000".into(),
            "UMask=0027".into(),
            "LimitNOFILE=4096".into(),
            "LimitNPROC=512:infinity".into(),
            "LimitCORE=0".into(),
            "KillMode=mixed".into(),
            "TimeoutStopSec=10s".into(),
            "Restart=always".into(),
            "RestartSec=100ms".into(),
            format!("WorkingDirectory={}", dir.path().display()),
        ],
    );
    // What systemd cannot do is said, not dropped.
    assert_contains(
        &store,
        [
            "# readiness tcp 127.0.0.1:6400",
            "# health: tcp 127.0.0.1:6400 every 5s",
        ],
    );
    // Readiness systemd has no directive for: `running-process wait` after the start, so
    // the unit is active only once the check passes (what After= dependants wait for).
    assert_lines(
        &store,
        [format!(
            "ExecStartPost={RUNNING_PROCESS} wait --timeout 10s tcp 127.0.0.1:6400"
        )],
    );
    assert_contains(
        &store,
        [format!(
            "ExecStartPost= runs {RUNNING_PROCESS}, the binary that exported this unit"
        )],
    );
    let worker = unit("shop-worker.service");
    assert_lines(
        &worker,
        [format!(
            "ExecStartPost={RUNNING_PROCESS} wait --timeout 30s exec --interval 500ms -- test -e ready.flag"
        )],
    );
    assert!(
        !worker.contains("systemd cannot see its readiness"),
        "the wait makes store's readiness visible:\n{worker}"
    );

    let web = unit("shop-web.service");
    assert_contains(
        &web,
        [
            "Environment=\"GREETING=hello \\\"world\\\" at 100%% of $HOME\"",
            &format!(
                "StandardOutput=append:{}",
                dir.path().join("logs/web.log").display()
            ),
            "# rotation (max 1048576 bytes, keep 3)",
            "# depends_on store = \"healthy\"",
            "RestartSteps=6 RestartMaxDelaySec=30s",
        ],
    );
    assert!(
        !web.lines().any(|l| l.starts_with("RestartSteps=")),
        "systemd 252 has no RestartSteps="
    );

    let notifier = unit("shop-notifier.service");
    assert_lines(
        &notifier,
        [
            "Type=notify",
            "NotifyAccess=all",
            "WatchdogSec=30s",
            "KillSignal=SIGINT",
            "Restart=on-failure",
            "SupplementaryGroups=adm",
            "After=shop-store.service",
        ],
    );
    let target = unit("shop.target");
    assert_contains(
        &target,
        ["Wants=shop-worker.service", "# strategy rest_for_one"],
    );

    assert_verified(&units);
}

#[tokio::test]
async fn systemd_analyze_rejects_a_broken_unit() {
    let Some((dir, file)) = service_file().await else {
        return;
    };
    let out = dir.path().join("units");
    let units = export_into(&file, Target::Systemd, &ExportOptions::default(), &out);
    let breaks = [
        (
            "Restart=always",
            "Restart=sometimes",
            "a value it cannot parse",
        ),
        ("KillMode=", "KillModes=", "an unknown directive"),
        (
            "ExecStart=/",
            "ExecStart=/nonexistent/",
            "a program that does not exist",
        ),
        (
            "Requires=shop-migrate.service",
            "Requires=shop-nothing.service",
            "a dependency on a unit that does not exist",
        ),
    ];
    assert_rejects(&out.join("shop-store.service"), &breaks, || {
        systemd_verify(&units)
    });
}

#[tokio::test]
async fn kubernetes_manifests_pass_kubernetes_validate_strict() {
    let Some((dir, file)) = service_file().await else {
        return;
    };
    let out = dir.path().join("k8s");
    let options = export_cli::options(&["debian:12-slim", "store=redis:7", "web=python:3.12-slim"]);
    let manifests = export_into(&file, Target::Kubernetes, &options, &out);
    assert_eq!(manifests, [out.join("shop.yaml")]);
    let yaml = read(&manifests[0]);
    println!("{yaml}");
    let init = yaml.find("initContainers:").expect("an init container");
    let migrate = yaml.find("- name: \"migrate\"").expect("migrate");
    let containers = yaml
        .find("containers:\n        - name: \"store\"")
        .expect("containers");
    assert!(
        init < migrate && migrate < containers,
        "migrate is the init container:\n{yaml}"
    );
    assert_contains(
        &yaml,
        [
            "kind: \"Deployment\"",
            "image: \"redis:7\"",
            "image: \"python:3.12-slim\"",
            "image: \"debian:12-slim\"",
            "command:\n            - \"redis-server\"",
            "tcpSocket:\n              port: 6400",
            "httpGet:\n              path: \"/\"\n              port: 8000",
            "exec:\n              command:\n                - \"test\"",
            "runAsUser: 1000",
            "restartPolicy: \"Always\"",
            "terminationGracePeriodSeconds: 10",
            "failureThreshold: 10",
            "value: \"hello \\\"world\\\" at 100% of $HOME\"",
            // Comments for what does not map.
            "# sd_notify READY=1: Kubernetes has no such probe.",
            "# sd_notify WATCHDOG=1 within 30s: Kubernetes has no such probe.",
            "# strategy rest_for_one",
            "# umask 0027",
            "# restart transient: the Pod's restartPolicy Always",
            "the kubelet probes the Pod's IP",
        ],
    );
    assert_validated(&manifests[0]);
}

#[tokio::test]
async fn kubernetes_validate_rejects_a_broken_manifest() {
    let Some((dir, file)) = service_file().await else {
        return;
    };
    let out = dir.path().join("k8s");
    let manifests = export_into(&file, Target::Kubernetes, &ExportOptions::default(), &out);
    let breaks = [
        ("periodSeconds:", "periodSecondz:", "an unknown field"),
        ("replicas: 1", "replicas: \"one\"", "a wrong type"),
        (
            "    containers:",
            "    containerz:",
            "a missing required field",
        ),
    ];
    assert_rejects(&manifests[0], &breaks, || {
        kubernetes_validate(&manifests[0])
    });
}

/// Settings neither target can express, each of them once.
const ODD: &str = r#"
[group]
name = "odd"
order = "sequential"
strategy = "one_for_all"
intensity = { max_restarts = 4294967295 }

[services.init]
program = "sh"
args = ["-c", "exit 0"]
restart = { kind = "transient" }
user = "daemon"
supplementary_groups = []
stdout = { kind = "tracing" }
stderr = { kind = "file", path = "err 100%.log" }
stop = { request = true, signal = "SIGKILL", kill_mode = "process" }
cgroup = false
die_with_supervisor = false
readiness = { kind = "manifest", path = "m.json" }
health = { check = { kind = "ping" } }

[services.web]
program = "python3"
args = ["-m", "http.server", "it's a \"test\"", ";", ""]
readiness = { kind = "log_line", pattern = "Serving" }
health = { check = { kind = "unix_socket", path = "web.sock" } }
depends_on = { init = "completed_successfully" }
env_clear = true
env = { PATH = "/usr/bin:/bin" }
"#;

#[tokio::test]
async fn what_does_not_map_is_a_comment_and_the_output_stays_valid() {
    if find("python3").is_none() {
        println!("SKIPPED: python3 is not installed (the service file runs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("running-process.toml");
    std::fs::write(&path, ODD).unwrap();
    let file = ServiceFile::load(&path).await.expect("the file loads");

    let out = dir.path().join("units");
    let units = export_into(&file, Target::Systemd, &ExportOptions::default(), &out);
    let init = read(&out.join("odd-init.service"));
    assert_contains(
        &init,
        [
            "Type=oneshot",
            "Restart=on-failure",
            "StartLimitIntervalSec=0",
            "User=daemon",
            "StandardOutput=journal",
            "StandardError=append:",
            "err 100%%.log",
            "KillSignal=SIGKILL",
            "KillMode=process",
            "# readiness the identity handshake (manifest",
            "# supplementary_groups = []",
            "# health: a ping frame",
            "# stop.request",
            "# cgroup = false",
            "# die_with_supervisor = false",
        ],
    );
    assert!(
        !init.contains("RestartForceExitStatus"),
        "refused in a oneshot:\n{init}"
    );
    let web = read(&out.join("odd-web.service"));
    assert_contains(
        &web,
        [
            " -m http.server \"it's a \\\"test\\\"\" \\; \"\"\n",
            "# readiness a line containing \"Serving\"",
            "# health: unix socket",
        ],
    );
    assert!(
        !web.contains("# running-process passes its own environment"),
        "{web}"
    );
    let target = read(&out.join("odd.target"));
    assert_contains(&target, ["# strategy one_for_all", "# order sequential"]);
    assert_verified(&units);

    let out = dir.path().join("k8s");
    let manifests = export_into(&file, Target::Kubernetes, &ExportOptions::default(), &out);
    let yaml = read(&manifests[0]);
    assert_contains(
        &yaml,
        [
            "# user \"daemon\": Kubernetes wants a numeric runAsUser",
            "# the identity handshake (manifest",
            "# a ping frame over the daemon's socket: Kubernetes has no such probe.",
            "# stdout as tracing events",
            "# stderr to ",
            "# stop signal SIGKILL",
            "# kill_mode process",
            "# a line containing \"Serving\" on stdout: Kubernetes has no such probe.",
            "# unix socket ",
            "# order sequential",
            "# Replace with an image that has `python3`",
            "image: \"example.invalid/replace-me:latest\"",
        ],
    );
    assert_validated(&manifests[0]);
}

#[tokio::test]
async fn a_set_without_permanent_services_is_a_pod() {
    let file = ServiceFile::from_toml_str(
        "[services.job]\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"true\"]\nrestart = { kind = \"transient\" }\n",
        "running-process.toml",
    )
    .unwrap();
    let files = file
        .export(Target::Kubernetes, &ExportOptions::default())
        .unwrap();
    let yaml = &files[0].contents;
    assert_contains(
        yaml,
        [
            "kind: \"Pod\"",
            "restartPolicy: \"OnFailure\"",
            "# Replace with an image that has `/bin/sh`",
        ],
    );
}

/// A service file from TOML text, without programs looked up.
fn parse(text: &str) -> ServiceFile {
    ServiceFile::from_toml_str(text, "running-process.toml").unwrap()
}

/// The message of the export error of `file` to `target`.
fn export_error(file: &ServiceFile, target: Target) -> String {
    file.export(target, &ExportOptions::default())
        .unwrap_err()
        .to_string()
}

/// The `.service` text of `name` in an export to systemd.
fn unit_text(file: &ServiceFile, name: &str) -> String {
    let units = file.export(Target::Systemd, &ExportOptions::default());
    let units = units.unwrap();
    units.into_iter().find(|u| u.name == name).unwrap().contents
}

#[test]
fn the_strategy_chooses_wants_or_requires() {
    let services = "[services.db]\nprogram = \"/bin/sh\"\n\n[services.init]\nprogram = \"/bin/sh\"\nrestart = { kind = \"temporary\" }\n\n[services.app]\nprogram = \"/bin/sh\"\ndepends_on = { db = \"ready\", init = \"completed_successfully\" }\n";
    let with = |strategy: &str| {
        parse(&format!(
            "[group]\nname = \"g\"\nstrategy = \"{strategy}\"\n{services}"
        ))
    };

    let one = with("one_for_one");
    let app = unit_text(&one, "g-app.service");
    assert_lines(
        &app,
        [
            "After=g-db.service",
            "Wants=g-db.service",
            "Requires=g-init.service",
        ],
    );
    assert_lines(&unit_text(&one, "g.target"), ["Wants=g-app.service"]);

    let rest = with("rest_for_one");
    assert_lines(
        &unit_text(&rest, "g-app.service"),
        ["Requires=g-db.service", "Requires=g-init.service"],
    );
    assert_lines(&unit_text(&rest, "g.target"), ["Wants=g-db.service"]);

    let all = with("one_for_all");
    assert_lines(
        &unit_text(&all, "g-app.service"),
        ["Requires=g-db.service", "PartOf=g.target"],
    );
    let target = unit_text(&all, "g.target");
    assert_lines(
        &target,
        [
            "Requires=g-db.service",
            "Requires=g-init.service",
            "Requires=g-app.service",
        ],
    );
    assert_contains(&target, ["# strategy one_for_all"]);
}

#[test]
fn names_that_cannot_be_exported_are_errors() {
    let file = parse("[services.\"web server\"]\nprogram = \"/bin/sh\"\n");
    let error = export_error(&file, Target::Systemd);
    assert!(
        error.contains("`web server` cannot be a systemd name"),
        "{error}"
    );
    // Kubernetes makes it a label.
    let files = file.export(Target::Kubernetes, &ExportOptions::default());
    let yaml = &files.unwrap()[0].contents;
    assert!(yaml.contains("name: \"web-server\""), "{yaml}");

    let clash =
        parse("[services.a_b]\nprogram = \"/bin/sh\"\n[services.a-b]\nprogram = \"/bin/sh\"\n");
    let error = export_error(&clash, Target::Kubernetes);
    assert!(
        error.contains("would both be the container `a-b`"),
        "{error}"
    );
    assert_eq!(
        export_cli::run(&clash, Target::Kubernetes, &ExportOptions::default(), None),
        ExitCode::FAILURE
    );
}

/// `--user` units, a program found only in a directory systemd does not search, env files.
#[cfg(unix)]
#[tokio::test]
async fn user_units_portable_programs_and_env_files() {
    let dir = tempfile::tempdir().unwrap();
    // A program only a directory outside systemd's search path has.
    let home_bin = dir.path().join("home/someone/.local/bin");
    std::fs::create_dir_all(&home_bin).unwrap();
    let tool = home_bin.join("mytool");
    std::fs::write(&tool, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("plain.env"), "A=1\nB=two\n").unwrap();
    std::fs::write(dir.path().join("quoted.env"), "C=\"three\"\n").unwrap();
    let text = format!(
        r#"
[group]
name = "u"

[services.sh]
program = "sh"
args = ["-c", "exec sleep infinity"]
user = "nobody"
env_file = ["plain.env", "quoted.env"]
env = {{ D = "4" }}
readiness = {{ kind = "file", path = "ready" }}

[services.tool]
program = "mytool"
env = {{ PATH = "{}:/usr/bin:/bin" }}
readiness = {{ kind = "delay", delay_ms = 500 }}
"#,
        home_bin.display()
    );
    let path = dir.path().join("running-process.toml");
    std::fs::write(&path, text).unwrap();
    let file = ServiceFile::load(&path).await.expect("the file loads");
    let options = ExportOptions::default()
        .user_units(true)
        .wait_program("/usr/local/bin/running-process");
    let units = file.export(Target::Systemd, &options).unwrap();
    let unit = |name: &str| {
        units
            .iter()
            .find(|u| u.name == name)
            .unwrap()
            .contents
            .clone()
    };

    let sh = unit("u-sh.service");
    // Found in systemd's own search path: its standard absolute path there.
    assert!(sh.lines().any(|l| l.starts_with("ExecStart=/usr/bin/sh ") || l.starts_with("ExecStart=/bin/sh ")), "{sh}");
    assert!(!sh.contains("User="), "a user unit has no User=:\n{sh}");
    assert_contains(
        &sh,
        ["# user, group, supplementary_groups: a user unit runs as the user"],
    );
    // A plain env file is read by systemd at each start; a quoted one only at export.
    assert_lines(
        &sh,
        [
            format!("EnvironmentFile={}", dir.path().join("plain.env").display()),
            "Environment=\"C=three\"".into(),
            "Environment=\"D=4\"".into(),
        ],
    );
    assert!(!sh.contains("Environment=\"A=1\""), "{sh}");
    assert_contains(&sh, ["quoted.env: systemd does not read every line of it"]);
    // Run in WorkingDirectory=, the service file's directory: a relative path stays one.
    assert_lines(
        &sh,
        ["ExecStartPost=/usr/local/bin/running-process wait --timeout 30s file ready"],
    );

    let tool_unit = unit("u-tool.service");
    assert_lines(
        &tool_unit,
        [
            format!("ExecStart={}", tool.display()),
            "ExecStartPost=/bin/sleep 0.5".into(),
        ],
    );
    assert_contains(&tool_unit, ["a directory systemd does not search"]);

    assert_lines(&unit("u.target"), ["WantedBy=default.target"]);
    assert_contains(
        &unit("u.target"),
        ["systemctl --user start u.target", "~/.config/systemd/user/"],
    );
}

#[test]
fn quotas_become_systemd_directives_and_kubernetes_limits() {
    let file = parse(
        "[group]\nname = \"q\"\n\n[services.web]\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"exec sleep 1000\"]\n\
         memory_max = \"256M\"\nmemory_high = \"200M\"\ncpu_max = \"50%\"\npids_max = 64\n",
    );
    let unit = unit_text(&file, "q-web.service");
    assert_lines(
        &unit,
        [
            "MemoryMax=256M",
            "MemoryHigh=200M",
            "CPUQuota=50%",
            "TasksMax=64",
        ],
    );
    let out = tempfile::tempdir().unwrap();
    let units = export_into(
        &file,
        Target::Systemd,
        &ExportOptions::default(),
        out.path(),
    );
    assert_verified(&units);

    let out = tempfile::tempdir().unwrap();
    let manifests = export_into(
        &file,
        Target::Kubernetes,
        &ExportOptions::default(),
        out.path(),
    );
    let manifest = read(&manifests[0]);
    assert_contains(
        &manifest,
        [
            "resources:",
            "limits:",
            "memory: \"256Mi\"",
            "cpu: \"500m\"",
            "# memory_high = 200M",
            "# pids_max = 64",
        ],
    );
    assert_validated(&manifests[0]);
}
