//! Shared by the daemon benchmarks: the demo daemon binary, quantiles, and the report (one
//! JSON object per metric, then a table).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Build the demo daemon in release mode (benchmarks do not build examples), into the
/// target directory this benchmark was built in, and return its path.
pub fn build_demo_daemon() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let target = target_dir()?;
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--example",
            "demo_daemon",
            "--target-dir",
        ])
        .arg(&target.dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| format!("running cargo to build demo_daemon into {target}: {e}"))?;
    if !status.success() {
        return Err(format!("building demo_daemon into {target} failed ({status})").into());
    }
    demo_daemon_path()
}

/// Where [`build_demo_daemon`] puts the demo daemon; an error that says where it looked if
/// it is not there.
pub fn demo_daemon_path() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let target = target_dir()?;
    let path = demo_daemon_in(&target.dir);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("demo_daemon not found at {} ({target})", path.display()).into())
    }
}

/// The release demo daemon in target directory `target`.
pub fn demo_daemon_in(target: &Path) -> PathBuf {
    target
        .join("release/examples")
        .join(format!("demo_daemon{}", std::env::consts::EXE_SUFFIX))
}

/// A target directory and how it was found (for error messages).
pub struct TargetDir {
    pub dir: PathBuf,
    pub from: String,
}

impl std::fmt::Display for TargetDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "target directory {}, {}", self.dir.display(), self.from)
    }
}

/// The target directory cargo built this benchmark in: from its own executable
/// (`<target>/<profile>/deps/daemons-HASH`), else `CARGO_TARGET_DIR`, else `target` in the
/// package.
pub fn target_dir() -> Result<TargetDir, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe();
    if let Ok(exe) = &exe {
        if let Some(dir) = target_dir_of(exe) {
            let from = format!("from the benchmark's executable {}", exe.display());
            return Ok(TargetDir { dir, from });
        }
    }
    let exe = match exe {
        Ok(exe) => format!(
            "executable {} not under <target>/<profile>/deps",
            exe.display()
        ),
        Err(e) => format!("no executable path ({e})"),
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    Ok(match std::env::var_os("CARGO_TARGET_DIR") {
        // Relative to where cargo runs benchmarks: the package directory.
        Some(dir) => TargetDir {
            dir: manifest.join(dir),
            from: format!("from CARGO_TARGET_DIR ({exe})"),
        },
        None => TargetDir {
            dir: manifest.join("target"),
            from: format!("the package default ({exe}, no CARGO_TARGET_DIR)"),
        },
    })
}

/// The target directory of an executable cargo built in it: `<target>/<profile>/deps/NAME`
/// (or `<target>/<triple>/<profile>/deps/NAME` with `--target`) gives `<target>`; the
/// target directory is the one holding cargo's `CACHEDIR.TAG`, if either does.
pub fn target_dir_of(exe: &Path) -> Option<PathBuf> {
    let deps = exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    let profile = deps.parent()?;
    let above = profile.parent()?;
    match above.parent() {
        Some(top) if !above.join("CACHEDIR.TAG").exists() && top.join("CACHEDIR.TAG").exists() => {
            Some(top.to_path_buf())
        }
        _ => Some(above.to_path_buf()),
    }
}

/// The demo daemon's arguments for a socket and manifest named `name` in `dir`.
pub fn demo_args(dir: &std::path::Path, name: &str) -> [String; 4] {
    [
        "--endpoint".to_owned(),
        dir.join(format!("{name}.sock")).display().to_string(),
        "--manifest".to_owned(),
        dir.join(format!("{name}.json")).display().to_string(),
    ]
}

/// The `q` quantile of sorted samples (nearest rank).
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// One reported metric. `p50`/`p99` are quantiles over `n` trials; metrics that are one
/// number (a slope, a count) set `value` instead.
#[derive(Debug, Clone, Default)]
pub struct Metric {
    pub name: String,
    pub unit: String,
    pub n: usize,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub value: Option<f64>,
    /// The same statistic (p50, or `value`) of the baseline measured in the same run.
    pub baseline: Option<(String, f64)>,
    /// The aim for this machine, as text (reported, never asserted).
    pub aim: Option<String>,
    /// Anything else worth a column.
    pub note: Option<String>,
}

impl Metric {
    /// A metric from samples, converted to `unit` by `scale`.
    pub fn from_samples<T: Copy + PartialOrd>(
        name: impl Into<String>,
        unit: &'static str,
        samples: &mut [T],
        scale: impl Fn(T) -> f64,
    ) -> Metric {
        samples.sort_by(|a, b| a.partial_cmp(b).expect("comparable samples"));
        Metric {
            name: name.into(),
            unit: unit.to_owned(),
            n: samples.len(),
            p50: Some(scale(quantile(samples, 0.50))),
            p99: Some(scale(quantile(samples, 0.99))),
            ..Metric::default()
        }
    }

    pub fn baseline(mut self, name: impl Into<String>, value: f64) -> Metric {
        self.baseline = Some((name.into(), value));
        self
    }

    pub fn aim(mut self, aim: impl Into<String>) -> Metric {
        self.aim = Some(aim.into());
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Metric {
        self.note = Some(note.into());
        self
    }

    /// A metric back from [`Metric::json`] (printed by a child process).
    pub fn from_json(v: &serde_json::Value) -> Result<Metric, String> {
        let text = |key: &str| v.get(key).and_then(|x| x.as_str()).map(str::to_owned);
        let num = |key: &str| v.get(key).and_then(serde_json::Value::as_f64);
        Ok(Metric {
            name: text("name").ok_or("metric without a name")?,
            unit: text("unit").unwrap_or_default(),
            n: v.get("n").and_then(serde_json::Value::as_u64).unwrap_or(0) as usize,
            p50: num("p50"),
            p99: num("p99"),
            value: num("value"),
            baseline: v.get("baseline").and_then(|b| {
                Some((
                    b.get("name")?.as_str()?.to_owned(),
                    b.get("value")?.as_f64()?,
                ))
            }),
            aim: text("aim"),
            note: text("note"),
        })
    }

    /// The headline number: `value`, else the median.
    fn headline(&self) -> Option<f64> {
        self.value.or(self.p50)
    }

    /// baseline / this: how many times better this is than the baseline.
    pub fn ratio(&self) -> Option<f64> {
        let (_, base) = self.baseline.as_ref()?;
        let ours = self.headline()?;
        (ours > 0.0).then(|| base / ours)
    }

    /// The metric as one line of JSON.
    pub fn json(&self) -> String {
        let mut out = format!(
            "{{\"name\":{},\"unit\":{},\"n\":{}",
            json_str(&self.name),
            json_str(&self.unit),
            self.n
        );
        let mut num = |key: &str, v: Option<f64>| {
            if let Some(v) = v {
                let _ = write!(out, ",\"{key}\":{}", json_num(v));
            }
        };
        num("p50", self.p50);
        num("p99", self.p99);
        num("value", self.value);
        if let Some((name, base)) = &self.baseline {
            let _ = write!(
                out,
                ",\"baseline\":{{\"name\":{},\"value\":{}}},\"ratio\":{}",
                json_str(name),
                json_num(*base),
                self.ratio().map_or("null".to_owned(), json_num)
            );
        }
        if let Some(aim) = &self.aim {
            let _ = write!(out, ",\"aim\":{}", json_str(aim));
        }
        if let Some(note) = &self.note {
            let _ = write!(out, ",\"note\":{}", json_str(note));
        }
        out.push('}');
        out
    }
}

/// Six significant digits (idle costs are tiny fractions of a percent).
fn json_num(v: f64) -> String {
    if !v.is_finite() {
        return "null".to_owned();
    }
    let text = format!("{v:.5e}");
    text.parse::<f64>().map_or(text, |r| r.to_string())
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// A number for the table: three significant digits or so.
fn show(v: f64) -> String {
    if v == 0.0 {
        "0".to_owned()
    } else if v.abs() < 0.001 {
        format!("{v:.1e}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// The metrics as a Markdown table.
pub fn table(metrics: &[Metric]) -> String {
    let mut out = String::from(
        "| metric | unit | n | p50 | p99 | value | baseline (same run) | ratio | aim | note |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), show);
    for m in metrics {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            m.name,
            m.unit,
            m.n,
            opt(m.p50),
            opt(m.p99),
            opt(m.value),
            m.baseline
                .as_ref()
                .map_or(String::new(), |(name, v)| format!("{name}: {}", show(*v))),
            match (m.ratio(), &m.baseline, m.headline()) {
                (Some(r), _, _) => format!("{}×", show(r)),
                (None, Some(_), Some(0.0)) => "∞ (nothing measured)".to_owned(),
                _ => String::new(),
            },
            m.aim.as_deref().unwrap_or(""),
            m.note.as_deref().unwrap_or(""),
        );
    }
    out
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// xorshift64: enough to spread kill times over a polling phase, or to fill padding.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
