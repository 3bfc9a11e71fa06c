//! The demo daemon, a real daemon built on running-process, used by the tests, the
//! benchmarks and the README demo. Its code and command line:
//! [`running_process::testing::demo_daemon_main`].

fn main() -> std::process::ExitCode {
    running_process::testing::demo_daemon_main()
}
