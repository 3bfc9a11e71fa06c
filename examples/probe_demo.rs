fn main() {
    let t = std::time::Instant::now();
    let d = running_process::DaemonProcess::current_process(running_process::Endpoint::new("a", "/tmp/x"), None).unwrap();
    println!("{:?} {}", t.elapsed(), d.exe_sha256_hex());
    let t = std::time::Instant::now();
    let _ = std::fs::read("/proc/self/exe").unwrap();
    println!("read {:?}", t.elapsed());
}
