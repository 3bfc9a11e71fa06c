//! The testing kit outside a test: start an ephemeral demo daemon, use it, drop it.
//!
//! ```text
//! cargo run --example ephemeral_backend           # start, echo a line, drop: all cleaned up
//! cargo run --example ephemeral_backend -- --hold # print pid and dir, then wait (tests kill it)
//! ```

mod common;

use running_process::command::Readiness;
use running_process::testing::EphemeralBackend;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hold = std::env::args().any(|a| a == "--hold");
    let binary = common::demo_daemon_binary()?;
    let backend = EphemeralBackend::start(|dir| {
        running_process::command::CommandSpec::new("ephemeral", &binary)
            .args(["--endpoint", &dir.join("d.sock").display().to_string()])
            .args(["--manifest", &dir.join("d.json").display().to_string()])
            .readiness(Readiness::Manifest {
                path: dir.join("d.json"),
            })
    })
    .await?;
    println!(
        "pid {} dir {}",
        backend.handle().pid(),
        backend.dir().display()
    );
    if hold {
        std::future::pending::<()>().await;
    }
    let (read, mut write) = tokio::io::split(backend.handle().connect().await?.into_inner());
    write.write_all(b"hello\n").await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    println!("echoed: {}", line.trim_end());
    let dir = backend.dir().to_owned();
    drop(backend);
    println!("dropped; directory removed: {}", !dir.exists());
    Ok(())
}
