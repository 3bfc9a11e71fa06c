//! Service files (`compose::ServiceFile::load`): every kind of bad file gives one message
//! with the file, line, column and key at fault; a good one resolves its paths.

// The files name Unix programs (`/bin/sh`), which the program checks look up.
#![cfg(unix)]

use std::path::Path;

use running_process::compose::{Problem, ServiceFile};
use running_process::supervision::{Condition, StartOrder};

async fn load(dir: &Path, text: &str) -> Result<ServiceFile, running_process::compose::FileError> {
    let path = dir.join("running-process.toml");
    std::fs::write(&path, text).unwrap();
    ServiceFile::load(&path).await
}

/// Load `text`, expect an error at `line:column` on `key`, and return its message.
async fn bad(text: &str, line: usize, column: usize, key: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let error = load(dir.path(), text)
        .await
        .expect_err("a bad file must be refused");
    let message = error.to_string();
    println!("{message}\n{}", error.pointer().unwrap_or_default());
    assert_eq!(error.position, Some((line, column)), "{message}");
    assert_eq!(error.key, key, "{message}");
    assert!(
        message.starts_with(&format!(
            "{}:{line}:{column}: ",
            dir.path().join("running-process.toml").display()
        )),
        "{message}"
    );
    message
}

#[tokio::test]
async fn an_unknown_key_is_named_with_its_line_and_column() {
    let message = bad(
        "[services.store]\nprogram = \"/bin/sh\"\nargz = [\"-c\", \"true\"]\n",
        3,
        1,
        "services.store.argz",
    )
    .await;
    assert!(message.contains("unknown field `argz`"), "{message}");
    assert!(
        message.contains("`depends_on`"),
        "the list offers depends_on: {message}"
    );
    assert!(
        !message.contains("`name`"),
        "name is the table key, not offered: {message}"
    );

    let message = bad(
        "[services.a]\nprogram = \"/bin/sh\"\n[groop]\nname = \"x\"\n",
        3,
        2,
        "groop",
    )
    .await;
    assert!(message.contains("unknown key `groop`"), "{message}");
}

#[tokio::test]
async fn a_wrong_type_is_named_at_its_value() {
    let message = bad(
        "[services.a]\nprogram = \"/bin/sh\"\nargs = \"-c\"\n",
        3,
        8,
        "services.a.args",
    )
    .await;
    assert!(message.contains("expected a sequence"), "{message}");
    let message = bad(
        "[group]\nstrategy = \"one_for_some\"\n[services.a]\nprogram = \"/bin/sh\"\n",
        2,
        12,
        "group.strategy",
    )
    .await;
    assert!(message.contains("one_for_some"), "{message}");
}

#[tokio::test]
async fn a_dependency_cycle_is_refused_with_the_cycle() {
    let message = bad(
        "[services.a]\nprogram = \"/bin/sh\"\ndepends_on = [\"b\"]\n\n[services.b]\nprogram = \"/bin/sh\"\ndepends_on = { a = \"ready\" }\n",
        3,
        15,
        "services.a.depends_on.b",
    )
    .await;
    assert!(
        message.contains("dependency cycle: a -> b -> a"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unknown_dependency_is_refused() {
    let message = bad(
        "[services.a]\nprogram = \"/bin/sh\"\ndepends_on = { zz = \"started\" }\n",
        3,
        16,
        "services.a.depends_on.zz",
    )
    .await;
    assert!(message.contains("unknown service `zz`"), "{message}");
}

#[tokio::test]
async fn a_duplicate_service_is_refused() {
    let message = bad(
        "[services.a]\nprogram = \"/bin/sh\"\n[services.a]\nprogram = \"/bin/true\"\n",
        3,
        11,
        "",
    )
    .await;
    assert!(message.contains("duplicate key"), "{message}");
}

#[tokio::test]
async fn a_missing_program_is_refused_with_the_path_searched() {
    let message = bad(
        "[services.a]\nprogram = \"no-such-program-rp\"\nenv = { PATH = \"/nonexistent-bin\" }\n",
        2,
        1,
        "services.a.program",
    )
    .await;
    assert!(
        message.contains("not found in PATH (/nonexistent-bin)"),
        "{message}"
    );
    let message = bad(
        "[services.a]\nprogram = \"./bin/nothing\"\n",
        2,
        1,
        "services.a.program",
    )
    .await;
    assert!(message.contains("does not exist"), "{message}");
}

#[tokio::test]
async fn conditions_a_dependency_cannot_reach_are_refused() {
    let message = bad(
        "[services.a]\nprogram = \"/bin/sh\"\n[services.b]\nprogram = \"/bin/sh\"\ndepends_on = { a = \"healthy\" }\n",
        5,
        16,
        "services.b.depends_on.a",
    )
    .await;
    assert!(message.contains("no `health` check"), "{message}");
    let message = bad(
        "[services.a]\nprogram = \"/bin/sh\"\n[services.b]\nprogram = \"/bin/sh\"\ndepends_on = { a = \"completed_successfully\" }\n",
        5,
        16,
        "services.b.depends_on.a",
    )
    .await;
    assert!(message.contains("never completes"), "{message}");
}

#[tokio::test]
async fn a_name_key_is_refused() {
    let message = bad(
        "[services.a]\nname = \"b\"\nprogram = \"/bin/sh\"\n",
        2,
        1,
        "services.a.name",
    )
    .await;
    assert!(message.contains("the table's key is its name"), "{message}");
}

#[tokio::test]
async fn an_unreadable_file_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let error = ServiceFile::load(dir.path().join("absent.toml"))
        .await
        .unwrap_err();
    assert!(matches!(error.problem, Problem::Read(_)), "{error}");
    assert!(
        std::error::Error::source(&error).is_some(),
        "the I/O error is the cause"
    );
}

#[tokio::test]
async fn a_good_file_keeps_file_order_and_resolves_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let file = load(
        dir.path(),
        "[group]\norder = \"sequential\"\n\n[services.zeta]\nprogram = \"sh\"\ncwd = \"data\"\nstdout = { kind = \"file\", path = \"zeta.log\" }\n\n[services.alpha]\nprogram = \"/bin/sh\"\ndepends_on = [\"zeta\"]\n",
    )
    .await
    .unwrap();
    assert_eq!(file.group.order, StartOrder::Sequential);
    let names: Vec<&str> = file.services.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["zeta", "alpha"], "file order, not key order");
    let zeta = &file.services[0].spec;
    let base = std::path::absolute(dir.path()).unwrap();
    assert_eq!(zeta.cwd.as_deref(), Some(base.join("data").as_path()));
    assert_eq!(
        zeta.stdout,
        running_process::command::Output::file(base.join("data/zeta.log"))
    );
    assert_eq!(
        file.services[1].spec.cwd.as_deref(),
        Some(base.as_path()),
        "default cwd: the file's directory"
    );
    assert_eq!(
        file.services[1].depends_on[0].condition,
        Condition::Ready,
        "the list form waits for ready"
    );
}

#[test]
fn the_serde_model_reads_the_same_file_as_json() {
    let json = r#"{ "services": { "b": { "program": "/bin/sh" }, "a": { "program": "/bin/sh", "depends_on": ["b"] } } }"#;
    let file: ServiceFile = serde_json::from_str(json).unwrap();
    assert_eq!(file.services[0].name(), "b");
    assert_eq!(file.services[1].depends_on[0].service, "b");
    file.check("inline.json").unwrap();
    let back: ServiceFile = serde_json::from_str(&serde_json::to_string(&file).unwrap()).unwrap();
    assert_eq!(back, file);
    let typo = serde_json::from_str::<ServiceFile>(r#"{ "services": { "a": { "progam": "x" } } }"#)
        .unwrap_err();
    assert!(
        typo.to_string().contains("unknown field `progam`"),
        "{typo}"
    );
}

/// An undefined variable without a default is refused at its line and column, naming it.
#[tokio::test]
async fn an_undefined_variable_is_refused_at_its_line_and_column() {
    let message = bad(
        "[services.a]\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"exec sleep ${RP_TEST_SURELY_UNSET_VARIABLE}\"]\n",
        3,
        15,
        "services.a.args",
    )
    .await;
    assert!(
        message.contains("variable RP_TEST_SURELY_UNSET_VARIABLE is not set"),
        "{message}"
    );
    let message = bad(
        "[services.a]\nprogram = \"/bin/sh\"\nenv = { PASSWORD = \"${RP_TEST_UNSET_PASSWORD:?set a password}\" }\n",
        3,
        20,
        "services.a.env.PASSWORD",
    )
    .await;
    assert!(message.contains("set a password"), "{message}");
}

/// Values come from the environment first, then `.env` beside the file; `env_file` feeds
/// a service's environment below its own `env`; `command` is a shell command line;
/// `$$` is a `$`.
#[tokio::test]
async fn variables_env_files_and_command_strings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "RP_TEST_PORT=6400\nPATH=/nowhere-the-environment-wins\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("web.env"),
        "# web\nMODE=dev\nLEVEL=from-file\n",
    )
    .unwrap();
    let file = load(
        dir.path(),
        r#"
[services.web]
command = "redis-server --port ${RP_TEST_PORT} --name $${NOT_A_VARIABLE}"
env_file = ["web.env"]
env = { LEVEL = "from-env", HOME_DIR = "${RP_TEST_UNSET_DIR:-/srv}", PATH = "${PATH}" }
"#,
    )
    .await
    .unwrap();
    let spec = &file.services[0].spec;
    assert_eq!(spec.program, Path::new("sh"));
    assert_eq!(
        spec.args,
        [
            "-c",
            "exec redis-server --port 6400 --name ${NOT_A_VARIABLE}"
        ]
    );
    assert_eq!(spec.env["MODE"], "dev");
    assert_eq!(spec.env["LEVEL"], "from-env", "env wins over env_file");
    assert_eq!(spec.env["HOME_DIR"], "/srv");
    assert_eq!(
        spec.env["PATH"],
        std::env::var("PATH").unwrap(),
        "the environment wins over .env"
    );

    let message = bad(
        "[services.a]\ncommand = \"true\"\nprogram = \"/bin/sh\"\n",
        2,
        1,
        "services.a.command",
    )
    .await;
    assert!(
        message.contains("`command` and `program` together"),
        "{message}"
    );
}

/// Files merged key by key (`-f a -f b`, or the override file): a table merges into a
/// table, other values are replaced, a new service is added after the others; a problem
/// in the later file is located in that file.
#[tokio::test]
async fn later_files_merge_key_by_key_and_problems_name_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("running-process.toml");
    let over = dir.path().join("running-process.override.toml");
    std::fs::write(
        &base,
        "[group]\nstrategy = \"rest_for_one\"\n\n[services.db]\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"exec sleep 1\"]\nenv = { A = \"1\", B = \"2\" }\n\n[services.web]\nprogram = \"/bin/sh\"\ndepends_on = [\"db\"]\n",
    )
    .unwrap();
    std::fs::write(
        &over,
        "[services.db]\nargs = [\"-c\", \"exec sleep 2\"]\nenv = { B = \"3\" }\n\n[services.debug]\nprogram = \"/bin/sh\"\nprofiles = [\"debug\"]\n",
    )
    .unwrap();
    let file = ServiceFile::load_merged(vec![base.clone(), over.clone()])
        .await
        .unwrap();
    let names: Vec<&str> = file.services.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["db", "web", "debug"]);
    let db = &file.services[0].spec;
    assert_eq!(db.args, ["-c", "exec sleep 2"], "replaced");
    assert_eq!(
        (db.env["A"].as_str(), db.env["B"].as_str()),
        ("1", "3"),
        "merged"
    );
    assert_eq!(file.services[2].profiles, ["debug"]);
    assert_eq!(
        file.group.strategy,
        running_process::supervision::Strategy::RestForOne
    );

    std::fs::write(&over, "[services.web]\nargz = []\n").unwrap();
    let error = ServiceFile::load_merged(vec![base, over.clone()])
        .await
        .unwrap_err();
    assert_eq!(error.file, over, "{error}");
    assert_eq!(error.position, Some((2, 1)), "{error}");
    assert_eq!(error.key, "services.web.argz");
}

/// `${port:KEY}`: one free loopback port per key, the same number everywhere in the file;
/// two loads get different ones; a load given the ports of an earlier one keeps them for
/// the keys it still uses; a bad key is refused at its position.
#[tokio::test]
async fn port_references_get_one_free_port_per_key() {
    use running_process::compose::{LoadOptions, Ports};
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[services.db]
program = "sh"
args = ["-c", "serve ${port:db}"]
readiness = { kind = "tcp", address = "127.0.0.1:${port:db}" }

[services.web]
program = "sh"
args = ["-c", "serve ${port:web} --db ${port:db}"]
"#;
    let first = load(dir.path(), text).await.unwrap();
    let (db, web) = (
        first.ports.get("db").unwrap(),
        first.ports.get("web").unwrap(),
    );
    assert_ne!(db, web);
    assert_eq!(first.services[0].spec.args[1], format!("serve {db}"));
    assert_eq!(
        first.services[1].spec.args[1],
        format!("serve {web} --db {db}")
    );
    // The port was free: it can be bound.
    drop(std::net::TcpListener::bind(("127.0.0.1", db)).unwrap());

    let second = load(dir.path(), text).await.unwrap();
    assert_ne!(
        second.ports, first.ports,
        "a second load gets ports of its own"
    );

    let path = dir.path().join("running-process.toml");
    let kept = ServiceFile::load_with(
        vec![path],
        LoadOptions::default().ports(Ports::from_iter([("db".to_owned(), db)])),
    )
    .await
    .unwrap();
    assert_eq!(kept.ports.get("db"), Some(db));
    assert_eq!(
        kept.ports.env()[0],
        ("RUNNING_PROCESS_PORT_DB".to_owned(), db.to_string())
    );

    let message = bad(
        "[services.a]\nprogram = \"sh\"\nargs = [\"${port:a b}\"]\n",
        3,
        9,
        "services.a.args",
    )
    .await;
    assert!(message.contains("port key"), "{message}");
}
