//! Restart policy: the pure decisions of a supervisor (no processes, no I/O, no tasks).
//! The runtime combines them in this order: a stable run resets the backoff, the
//! [`RestartKind`] decides whether to restart, the [`Intensity`] window whether to give up,
//! the [`Backoff`] how long to wait. Why the defaults are what they are, with the
//! crash-loop arithmetic: `docs/RESTART_POLICY.md`.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use tokio::time::Instant;

use crate::handle::ExitStatus;

/// Which children are restarted when one of them ends and is to be restarted (OTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the child that ended.
    #[default]
    OneForOne,
    /// Every child: the others are stopped (in reverse order) and all start again in order.
    OneForAll,
    /// The child that ended and every child that depends on it, directly or not: its
    /// dependants are stopped (dependants first), the child is restarted, then each
    /// dependant starts again once its dependencies' conditions are reached. In a
    /// [`StartOrder::Sequential`](super::StartOrder::Sequential) group every child depends on the one before it, so its
    /// dependants are the children started after it: OTP's rule exactly.
    RestForOne,
}

/// OTP restart kinds: which terminations lead to a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartKind {
    /// Always restart, whatever the termination (the default, as in OTP).
    #[default]
    Permanent,
    /// Restart only after an abnormal termination (see [`Termination::is_abnormal`]).
    Transient,
    /// Never restart.
    Temporary,
}

impl RestartKind {
    /// Whether a backend of this kind is restarted after `termination`.
    pub fn should_restart(&self, termination: &Termination) -> bool {
        match self {
            RestartKind::Permanent => true,
            RestartKind::Transient => termination.is_abnormal(),
            RestartKind::Temporary => false,
        }
    }
}

/// Why a backend stopped running, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Termination {
    /// The process ended by itself, with this status.
    Exited(ExitStatus),
    /// Health checks failed and the supervisor killed it.
    Unhealthy,
    /// Spawning it failed, or it did not become ready in time.
    StartFailed,
    /// A nested group gave up (its restart intensity was exceeded) and escalated.
    ///
    /// Abnormal (unlike OTP's `shutdown`), so a transient group is restarted, bounded by
    /// its parent's intensity.
    Escalated,
}

impl Termination {
    /// `false` only for an exit with code 0. Any other code, a signal, an unknown status
    /// (we cannot prove the exit was clean), an unhealthy kill, a failed start and an
    /// escalation are abnormal.
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, Termination::Exited(status) if status.success())
    }
}

/// Randomisation of backoff delays, so backends that failed together (say, all lost the
/// same dependency) do not all come back at the same instant.
///
/// Every kind keeps the delay at or below [`Backoff::max`].
// `Default` is implemented by hand: derive can only default to a unit variant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Jitter {
    /// The delay is exactly [`Backoff::base_delay`].
    None,
    /// Uniform in `[0, d]` where `d` is the base delay (AWS "full jitter"). Spreads the
    /// most, but can restart a crash-looping backend almost at once.
    Full,
    /// AWS "decorrelated jitter": `min(max, uniform(initial, previous * 3))`, where
    /// `previous` is the last delay given (`initial` after a reset). It grows on its own
    /// and ignores [`Backoff::multiplier`]; with a zero `initial` it stays zero.
    Decorrelated,
    /// `d * (1 ± ratio)`, uniform, where `d` is the base delay, then capped at `max`. The
    /// default, with a ratio of 0.1 (why: `docs/RESTART_POLICY.md`).
    Proportional {
        /// The relative spread, within `[0, 1]`; a config outside it is rejected, and a
        /// value set in code outside it is clamped.
        #[serde(deserialize_with = "unit_ratio")]
        ratio: f64,
    },
}

impl Default for Jitter {
    fn default() -> Self {
        Jitter::Proportional { ratio: 0.1 }
    }
}

/// Exponential backoff between restarts: `min(max, initial * multiplier^(attempt - 1))`,
/// jittered, with the attempt counter reset after a stable run. Default: 100 ms, × 2,
/// capped at 30 s, ± 10 %, reset after 60 s of uptime (why: `docs/RESTART_POLICY.md`).
///
/// In a config file every field is optional and an unknown one is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backoff {
    /// The delay before the first restart.
    #[serde(rename = "initial_ms", with = "crate::serde_util::duration_ms")]
    pub initial: Duration,
    /// The growth factor per attempt. Values below 1 or not finite are treated as 1 (a
    /// config with one is rejected).
    #[serde(deserialize_with = "growth_factor")]
    pub multiplier: f64,
    /// The longest delay, jitter included.
    #[serde(rename = "max_ms", with = "crate::serde_util::duration_ms")]
    pub max: Duration,
    /// How delays are randomised.
    pub jitter: Jitter,
    /// The uptime after which the attempt counter resets: a child that stayed up this long
    /// starts again from the first delay.
    #[serde(rename = "reset_after_ms", with = "crate::serde_util::duration_ms")]
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_secs(30),
            jitter: Jitter::default(),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// Restart at once, every time: zero delay, no jitter.
    pub fn none() -> Self {
        Self::fixed(Duration::ZERO)
    }

    /// The same delay `d` before every restart, without jitter.
    pub fn fixed(d: Duration) -> Self {
        Backoff {
            initial: d,
            multiplier: 1.0,
            max: d,
            jitter: Jitter::None,
            ..Self::default()
        }
    }

    /// `initial * multiplier^(attempt - 1)`, capped at `max`, with the default jitter and
    /// reset (see [`Backoff::default`]).
    pub fn exponential(initial: Duration, multiplier: f64, max: Duration) -> Self {
        Backoff {
            initial,
            multiplier,
            max,
            ..Self::default()
        }
    }

    /// This backoff with another jitter.
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// This backoff with another stable-uptime reset.
    pub fn with_reset_after(mut self, reset_after: Duration) -> Self {
        self.reset_after = reset_after;
        self
    }

    /// The delay before restart number `attempt` (1-based; 0 counts as 1), before jitter:
    /// `min(max, initial * multiplier^(attempt - 1))`. Saturates instead of overflowing,
    /// for any attempt and any multiplier.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        // A shrinking, NaN or infinite factor makes no sense as backoff: hold the delay.
        let multiplier = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        // powi may reach infinity; `scale` saturates it (and 0 * inf to zero).
        scale(self.initial, multiplier.powi(exponent)).min(self.max)
    }
}

/// The mutable backoff state of one supervised backend.
#[derive(Debug, Clone, Default)]
pub(crate) struct BackoffState {
    attempt: u32,
    /// The last delay given, which decorrelated jitter grows from.
    previous: Option<Duration>,
}

impl BackoffState {
    /// A state before any restart.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restarts since the last reset (0 before any).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next restart, with OS randomness for the jitter. Counts one
    /// more attempt.
    pub fn next_delay(&mut self, policy: &Backoff) -> Duration {
        self.next_delay_with(policy, random_unit())
    }

    /// [`next_delay`](Self::next_delay) with an explicit random number `unit` in `[0, 1)`
    /// (clamped into `[0, 1]`; NaN counts as 0), for deterministic tests.
    pub fn next_delay_with(&mut self, policy: &Backoff, unit: f64) -> Duration {
        let unit = clamp_unit(unit);
        self.attempt = self.attempt.saturating_add(1);
        let delay = match policy.jitter {
            Jitter::None => policy.base_delay(self.attempt),
            Jitter::Full => scale(policy.base_delay(self.attempt), unit),
            Jitter::Decorrelated => {
                let low = policy.initial;
                let high = self.previous.unwrap_or(low).saturating_mul(3).max(low);
                low.saturating_add(scale(high.saturating_sub(low), unit))
                    .min(policy.max)
            }
            Jitter::Proportional { ratio } => {
                let factor = 1.0 + clamp_unit(ratio) * (2.0 * unit - 1.0);
                scale(policy.base_delay(self.attempt), factor).min(policy.max)
            }
        };
        self.previous = Some(delay);
        delay
    }

    /// Back to the state before any restart: the next delay is the first one again.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Report how long the backend ran before it stopped. Resets the state and returns
    /// `true` when `uptime` reached [`Backoff::reset_after`].
    pub fn note_uptime(&mut self, policy: &Backoff, uptime: Duration) -> bool {
        let stable = uptime >= policy.reset_after;
        if stable {
            self.reset();
        }
        stable
    }
}

/// Restart intensity, as in OTP: more than `max_restarts` restarts within `period` gives up.
/// Default: 10 within 300 s, which a crash loop under the default [`Backoff`] reaches about
/// 81 s in, and ordinary churn never does (the arithmetic: `docs/RESTART_POLICY.md`).
///
/// In a config file every field is optional and an unknown one is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Intensity {
    /// The restarts tolerated within `period`; one more gives up. 0 gives up on the first
    /// restart; `u32::MAX` never gives up (and records nothing).
    pub max_restarts: u32,
    /// The sliding window. A restart exactly `period` old no longer counts.
    #[serde(rename = "period_ms", with = "crate::serde_util::duration_ms")]
    pub period: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity::new(10, Duration::from_secs(300))
    }
}

impl Intensity {
    /// Never give up.
    pub fn unlimited() -> Self {
        Intensity::new(u32::MAX, Duration::ZERO)
    }

    /// At most `max_restarts` restarts within `period`.
    pub fn new(max_restarts: u32, period: Duration) -> Self {
        Intensity {
            max_restarts,
            period,
        }
    }

    fn is_unlimited(&self) -> bool {
        self.max_restarts == u32::MAX
    }
}

/// The restarts inside the sliding window of an [`Intensity`].
///
/// Uses [`tokio::time::Instant`], so tests can drive it with paused time.
#[derive(Debug, Clone, Default)]
pub(crate) struct IntensityWindow {
    /// Restart times, oldest first.
    restarts: VecDeque<Instant>,
}

impl IntensityWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a restart at `now`. `Err` when this restart makes more than
    /// `policy.max_restarts` within `policy.period` (OTP semantics: R restarts in T are
    /// allowed, the R+1st gives up).
    pub fn record(&mut self, policy: &Intensity, now: Instant) -> Result<(), IntensityExceeded> {
        if policy.is_unlimited() {
            // Could never be exceeded; storing times would only grow memory.
            return Ok(());
        }
        // The window is (now - period, now]. A `now` earlier than a recorded time (a
        // caller mixing clocks) counts as age zero rather than panicking.
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_duration_since(oldest) < policy.period {
                break;
            }
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        let allowed = usize::try_from(policy.max_restarts).unwrap_or(usize::MAX);
        // Only the newest R+1 times decide anything: keep memory bounded when a caller
        // goes on recording after an Err.
        while self.restarts.len() > allowed.saturating_add(1) {
            self.restarts.pop_front();
        }
        if self.restarts.len() > allowed {
            Err(IntensityExceeded {
                max_restarts: policy.max_restarts,
                period: policy.period,
            })
        } else {
            Ok(())
        }
    }

    /// The restarts in the window as of the last [`record`](Self::record).
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.restarts.len()
    }
}

/// The restart intensity was exceeded: the supervisor gives up and escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("more than {max_restarts} restarts within {period:?}")]
pub struct IntensityExceeded {
    /// The restarts tolerated.
    pub max_restarts: u32,
    /// Within this window.
    pub period: Duration,
}

/// The restart policy of one backend: which terminations restart it, how long to wait,
/// and when to give up. `{}` in a config file gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// Which terminations lead to a restart.
    #[serde(default)]
    pub kind: RestartKind,
    /// The delay before each restart.
    #[serde(default)]
    pub backoff: Backoff,
    /// When to give up. Inside a group only the group's intensity counts, as in OTP
    /// (where intensity is the supervisor's, not the child's): this one applies to a
    /// service supervised on its own ([`supervise`](crate::supervision::supervise)).
    #[serde(default)]
    pub intensity: Intensity,
    /// Retry a failed first start by this policy instead of failing the group's start-up.
    /// Off by default: as in OTP, a member that cannot start while its group starts makes
    /// the group's start fail ([`Outcome::StartFailed`](crate::supervision::Outcome)), and
    /// the members already started are stopped.
    #[serde(default)]
    pub retry_start_up: bool,
}

impl From<RestartKind> for RestartPolicy {
    /// `kind` with the default backoff and intensity.
    fn from(kind: RestartKind) -> Self {
        RestartPolicy {
            kind,
            ..RestartPolicy::default()
        }
    }
}

/// `d * factor`, rounded to the nanosecond: zero when the product is zero, negative or NaN,
/// and saturating at `Duration::MAX`.
fn scale(d: Duration, factor: f64) -> Duration {
    let nanos = d.as_nanos() as f64 * factor;
    if nanos.is_nan() || nanos <= 0.0 {
        Duration::ZERO
    } else if nanos < u64::MAX as f64 {
        // Integer nanoseconds keep round values exact (100 ms * 0.9 is 90 ms, not 89.99…).
        Duration::from_nanos(nanos.round() as u64)
    } else {
        Duration::try_from_secs_f64(nanos / 1e9).unwrap_or(Duration::MAX)
    }
}

/// `x` clamped into `[0, 1]`, NaN as 0.
fn clamp_unit(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// A uniform random number in `[0, 1)` from the OS.
fn random_unit() -> f64 {
    match getrandom::u64() {
        // The top 53 bits fill an f64 mantissa exactly.
        Ok(bits) => (bits >> 11) as f64 / (1u64 << 53) as f64,
        // Only when the OS has no entropy source at all. Jitter is a nicety: the midpoint
        // keeps the delay bounded and loses only the spread.
        Err(_) => 0.5,
    }
}

/// Deserialize a [`Jitter::Proportional`] ratio, rejecting values outside `[0, 1]`.
fn unit_ratio<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let ratio = f64::deserialize(deserializer)?;
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(serde::de::Error::custom(format!(
            "jitter ratio must be within [0, 1], got {ratio}"
        )))
    }
}

/// Deserialize a [`Backoff::multiplier`], rejecting values below 1 or not finite.
fn growth_factor<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let multiplier = f64::deserialize(deserializer)?;
    if multiplier.is_finite() && multiplier >= 1.0 {
        Ok(multiplier)
    } else {
        Err(serde::de::Error::custom(format!(
            "backoff multiplier must be a finite number of at least 1, got {multiplier}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::time::advance;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The default backoff without jitter: the exact sequence the docs compute with.
    fn plain_default() -> Backoff {
        Backoff::default().with_jitter(Jitter::None)
    }

    /// Simulate a backend that runs `uptime` before each crash, under the default intensity
    /// and `backoff`, in the order the module docs give. Returns the restarts made before
    /// giving up (or `limit` if it never gave up) and the time from the first crash to the
    /// decision to give up.
    async fn crash_loop(backoff: &Backoff, uptime: Duration, limit: u32) -> (u32, Duration) {
        let intensity = Intensity::default();
        let mut state = BackoffState::new();
        let mut window = IntensityWindow::new();
        let mut restarts = 0;
        advance(uptime).await;
        let first_crash = Instant::now();
        while restarts < limit {
            state.note_uptime(backoff, uptime);
            if window.record(&intensity, Instant::now()).is_err() {
                break;
            }
            advance(state.next_delay(backoff)).await;
            restarts += 1;
            advance(uptime).await;
        }
        (restarts, first_crash.elapsed())
    }

    #[test]
    fn backoff_sequence_without_jitter_doubles_then_caps() {
        let policy = plain_default();
        let mut state = BackoffState::new();
        assert_eq!(state.attempt(), 0);
        let delays: Vec<u64> = (0..12)
            .map(|_| state.next_delay(&policy).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]
        );
        assert_eq!(state.attempt(), 12);
    }

    #[test]
    fn backoff_none_is_always_zero() {
        let policy = Backoff::none();
        let mut state = BackoffState::new();
        for _ in 0..100 {
            assert_eq!(state.next_delay(&policy), Duration::ZERO);
        }
        assert_eq!(state.attempt(), 100);
    }

    #[test]
    fn fixed_backoff_repeats_its_delay() {
        let policy = Backoff::fixed(ms(250));
        let mut state = BackoffState::new();
        for _ in 0..20 {
            assert_eq!(state.next_delay(&policy), ms(250));
        }
    }

    #[test]
    fn exponential_constructor_keeps_default_jitter_and_reset() {
        let policy = Backoff::exponential(ms(10), 3.0, ms(1000));
        assert_eq!(policy.jitter, Jitter::default());
        assert_eq!(policy.reset_after, Backoff::default().reset_after);
        assert_eq!(policy.base_delay(1), ms(10));
        assert_eq!(policy.base_delay(3), ms(90));
        assert_eq!(policy.base_delay(6), ms(1000));
        assert_eq!(policy.base_delay(0), ms(10), "attempt 0 counts as 1");
    }

    /// Draw `rounds` runs of 20 delays each with real randomness, checking each against
    /// `bounds(base_delay, previous_delay)`; returns every sample.
    fn sample_jitter(
        policy: &Backoff,
        bounds: impl Fn(Duration, Option<Duration>) -> (Duration, Duration),
    ) -> Vec<Duration> {
        let mut samples = Vec::new();
        for _ in 0..50 {
            let mut state = BackoffState::new();
            let mut previous = None;
            for _ in 0..20 {
                let delay = state.next_delay(policy);
                let (low, high) = bounds(policy.base_delay(state.attempt()), previous);
                assert!(
                    (low..=high).contains(&delay),
                    "{delay:?} outside [{low:?}, {high:?}] at attempt {}",
                    state.attempt()
                );
                assert!(delay <= policy.max);
                previous = Some(delay);
                samples.push(delay);
            }
        }
        samples
    }

    fn not_all_equal(samples: &[Duration]) -> bool {
        samples.iter().any(|s| *s != samples[0])
    }

    #[test]
    fn no_jitter_gives_the_base_delay() {
        let policy = plain_default();
        sample_jitter(&policy, |base, _| (base, base));
    }

    #[test]
    fn full_jitter_stays_between_zero_and_base() {
        let policy = Backoff::default().with_jitter(Jitter::Full);
        let samples = sample_jitter(&policy, |base, _| (Duration::ZERO, base));
        assert!(not_all_equal(&samples));
    }

    #[test]
    fn proportional_jitter_stays_within_ratio_and_max() {
        let policy = Backoff::default().with_jitter(Jitter::Proportional { ratio: 0.25 });
        let samples = sample_jitter(&policy, |base, _| {
            (scale(base, 0.75), scale(base, 1.25).min(policy.max))
        });
        assert!(not_all_equal(&samples));
        // Spread at the cap too, not only below it.
        let at_cap: Vec<_> = samples
            .iter()
            .copied()
            .filter(|d| *d > ms(22_000))
            .collect();
        assert!(not_all_equal(&at_cap));
    }

    #[test]
    fn decorrelated_jitter_stays_between_initial_and_three_times_previous() {
        let policy = Backoff::default().with_jitter(Jitter::Decorrelated);
        let samples = sample_jitter(&policy, |_, previous| {
            let high = previous.unwrap_or(policy.initial) * 3;
            (policy.initial, high.min(policy.max))
        });
        assert!(not_all_equal(&samples));
    }

    #[test]
    fn next_delay_with_gives_exact_jittered_values() {
        let full = Backoff::default().with_jitter(Jitter::Full);
        let mut state = BackoffState::new();
        assert_eq!(state.next_delay_with(&full, 0.5), ms(50));
        assert_eq!(state.next_delay_with(&full, 0.0), Duration::ZERO);
        assert_eq!(state.next_delay_with(&full, 0.25), ms(100)); // base 400 ms

        let proportional = Backoff::default(); // ± 10 %
        let mut state = BackoffState::new();
        assert_eq!(state.next_delay_with(&proportional, 0.0), ms(90));
        assert_eq!(state.next_delay_with(&proportional, 0.5), ms(200));
        assert_eq!(state.next_delay_with(&proportional, 0.75), ms(420));

        let decorrelated = Backoff::default().with_jitter(Jitter::Decorrelated);
        let mut state = BackoffState::new();
        // [100, 300] from initial, then [100, 3 * previous].
        assert_eq!(state.next_delay_with(&decorrelated, 0.5), ms(200));
        assert_eq!(state.next_delay_with(&decorrelated, 0.5), ms(350));
        assert_eq!(state.next_delay_with(&decorrelated, 0.0), ms(100));
        state.reset();
        assert_eq!(state.next_delay_with(&decorrelated, 0.0), ms(100));
    }

    #[test]
    fn jitter_never_exceeds_max() {
        let capped = |jitter| Backoff::exponential(ms(1000), 2.0, ms(1500)).with_jitter(jitter);
        let mut state = BackoffState::new();
        let proportional = capped(Jitter::Proportional { ratio: 1.0 });
        assert_eq!(state.next_delay_with(&proportional, 0.999_999), ms(1500));
        assert_eq!(state.next_delay_with(&proportional, 0.0), Duration::ZERO);

        let mut state = BackoffState::new();
        let decorrelated = capped(Jitter::Decorrelated);
        assert_eq!(state.next_delay_with(&decorrelated, 0.999_999), ms(1500));
        assert_eq!(state.next_delay_with(&decorrelated, 0.999_999), ms(1500));

        // An initial above max is capped as well.
        let inverted =
            Backoff::exponential(ms(2000), 2.0, ms(500)).with_jitter(Jitter::Decorrelated);
        assert_eq!(BackoffState::new().next_delay_with(&inverted, 0.5), ms(500));
    }

    #[test]
    fn out_of_range_units_and_ratios_are_clamped() {
        let wild = Backoff::default().with_jitter(Jitter::Proportional { ratio: 7.0 });
        let mut state = BackoffState::new();
        assert_eq!(state.next_delay_with(&wild, f64::NAN), Duration::ZERO);
        state.reset();
        assert_eq!(state.next_delay_with(&wild, 5.0), ms(200));
        state.reset();
        assert_eq!(state.next_delay_with(&wild, -1.0), Duration::ZERO);

        let nan_ratio = Backoff::default().with_jitter(Jitter::Proportional { ratio: f64::NAN });
        assert_eq!(
            BackoffState::new().next_delay_with(&nan_ratio, 0.9),
            ms(100)
        );
    }

    #[test]
    fn note_uptime_resets_only_at_threshold() {
        let policy = plain_default();
        let mut state = BackoffState::new();
        for _ in 0..3 {
            state.next_delay(&policy);
        }
        assert!(!state.note_uptime(&policy, policy.reset_after - ms(1)));
        assert_eq!(state.attempt(), 3);
        assert_eq!(state.next_delay(&policy), ms(800), "attempt 4 continues");

        assert!(state.note_uptime(&policy, policy.reset_after));
        assert_eq!(state.attempt(), 0);
        assert_eq!(state.next_delay(&policy), ms(100), "attempt 1 again");
        assert_eq!(state.attempt(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn intensity_trips_at_r_plus_one_within_period() {
        let policy = Intensity::new(3, Duration::from_secs(10));
        let mut window = IntensityWindow::new();
        for _ in 0..3 {
            assert_eq!(window.record(&policy, Instant::now()), Ok(()));
            advance(Duration::from_secs(3)).await; // all within 10 s of the first
        }
        assert_eq!(window.count(), 3);
        assert_eq!(
            window.record(&policy, Instant::now()),
            Err(IntensityExceeded {
                max_restarts: 3,
                period: Duration::from_secs(10)
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_older_than_period_leave_the_window() {
        let period = Duration::from_secs(10);
        let policy = Intensity::new(3, period);
        let mut window = IntensityWindow::new();
        for _ in 0..3 {
            assert!(window.record(&policy, Instant::now()).is_ok());
        }
        advance(period).await; // exactly `period` old: out
        for _ in 0..3 {
            assert!(window.record(&policy, Instant::now()).is_ok());
        }
        assert_eq!(window.count(), 3);
        assert!(window.record(&policy, Instant::now()).is_err());

        // Sliding: after 5 s, one more still trips; once the burst is `period` old, not.
        advance(Duration::from_secs(5)).await;
        assert!(window.record(&policy, Instant::now()).is_err());
        advance(period).await;
        assert!(window.record(&policy, Instant::now()).is_ok());
        assert_eq!(window.count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_max_restarts_gives_up_on_the_first_restart() {
        let policy = Intensity::new(0, Duration::from_secs(60));
        let mut window = IntensityWindow::new();
        assert!(window.record(&policy, Instant::now()).is_err());
        advance(Duration::from_secs(3600)).await;
        assert!(window.record(&policy, Instant::now()).is_err());
        assert_eq!(window.count(), 1, "memory stays bounded after Err");
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_intensity_never_trips() {
        let policy = Intensity::unlimited();
        let mut window = IntensityWindow::new();
        for _ in 0..10_000 {
            assert!(window.record(&policy, Instant::now()).is_ok());
        }
        assert_eq!(window.count(), 0, "nothing is stored");
        // u32::MAX with a long period is unlimited too.
        let long = Intensity::new(u32::MAX, Duration::from_secs(3600));
        assert!(window.record(&long, Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn window_is_bounded_after_exceeding() {
        let policy = Intensity::new(2, Duration::from_secs(60));
        let mut window = IntensityWindow::new();
        for _ in 0..1000 {
            let _ = window.record(&policy, Instant::now());
        }
        assert_eq!(window.count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_now_before_recorded_times_does_not_panic() {
        let policy = Intensity::new(1, Duration::from_secs(1));
        let mut window = IntensityWindow::new();
        let earlier = Instant::now();
        advance(Duration::from_secs(5)).await;
        assert!(window.record(&policy, Instant::now()).is_ok());
        assert!(window.record(&policy, earlier).is_err());
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        let policy = Backoff::exponential(Duration::MAX, f64::MAX, Duration::MAX)
            .with_jitter(Jitter::Proportional { ratio: 1.0 });
        assert_eq!(policy.base_delay(u32::MAX), Duration::MAX);
        assert_eq!(plain_default().base_delay(u32::MAX), ms(30_000));
        assert_eq!(Backoff::none().base_delay(u32::MAX), Duration::ZERO);

        let mut state = BackoffState {
            attempt: u32::MAX - 1,
            previous: Some(Duration::MAX),
        };
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Decorrelated,
            Jitter::default(),
        ] {
            let policy = policy.clone().with_jitter(jitter);
            let _ = state.next_delay_with(&policy, 0.999_999);
            let _ = state.next_delay(&policy);
        }
        assert_eq!(state.attempt(), u32::MAX);
    }

    #[test]
    fn bad_multipliers_count_as_one() {
        for multiplier in [f64::NAN, 0.0, -2.0, 0.5, f64::INFINITY, f64::NEG_INFINITY] {
            let policy = Backoff::exponential(ms(100), multiplier, ms(30_000));
            for attempt in [1, 2, 10, u32::MAX] {
                assert_eq!(
                    policy.base_delay(attempt),
                    ms(100),
                    "{multiplier} at {attempt}"
                );
            }
        }
        // Zero initial with an enormous factor is zero, not NaN or max.
        let zero = Backoff::exponential(Duration::ZERO, f64::MAX, ms(1000));
        assert_eq!(zero.base_delay(u32::MAX), Duration::ZERO);
    }

    #[test]
    fn termination_abnormality() {
        let normal = Termination::Exited(ExitStatus::Code(0));
        assert!(!normal.is_abnormal());
        for abnormal in [
            Termination::Exited(ExitStatus::Code(1)),
            Termination::Exited(ExitStatus::Code(-1)),
            Termination::Exited(ExitStatus::Signal(9)),
            Termination::Exited(ExitStatus::Unknown),
            Termination::Unhealthy,
            Termination::StartFailed,
            Termination::Escalated,
        ] {
            assert!(abnormal.is_abnormal(), "{abnormal:?}");
        }
    }

    #[test]
    fn restart_kinds_for_every_termination() {
        use RestartKind::*;
        let cases = [
            // (termination, permanent, transient, temporary)
            (Termination::Exited(ExitStatus::Code(0)), true, false, false),
            (Termination::Exited(ExitStatus::Code(3)), true, true, false),
            (
                Termination::Exited(ExitStatus::Signal(15)),
                true,
                true,
                false,
            ),
            (Termination::Exited(ExitStatus::Unknown), true, true, false),
            (Termination::Unhealthy, true, true, false),
            (Termination::StartFailed, true, true, false),
            (Termination::Escalated, true, true, false),
        ];
        for (termination, permanent, transient, temporary) in cases {
            assert_eq!(
                Permanent.should_restart(&termination),
                permanent,
                "{termination:?}"
            );
            assert_eq!(
                Transient.should_restart(&termination),
                transient,
                "{termination:?}"
            );
            assert_eq!(
                Temporary.should_restart(&termination),
                temporary,
                "{termination:?}"
            );
        }
        assert_eq!(RestartKind::default(), Permanent);
    }

    #[test]
    fn serde_round_trip_with_exact_field_names() {
        let policy = RestartPolicy {
            kind: RestartKind::Transient,
            backoff: Backoff::exponential(ms(250), 1.5, ms(10_000))
                .with_jitter(Jitter::Proportional { ratio: 0.2 })
                .with_reset_after(ms(45_000)),
            intensity: Intensity::new(4, ms(20_000)),
            retry_start_up: false,
        };
        let value = serde_json::to_value(&policy).expect("serializable");
        assert_eq!(
            value,
            json!({
                "kind": "transient",
                "backoff": {
                    "initial_ms": 250,
                    "multiplier": 1.5,
                    "max_ms": 10000,
                    "jitter": { "kind": "proportional", "ratio": 0.2 },
                    "reset_after_ms": 45000
                },
                "intensity": { "max_restarts": 4, "period_ms": 20000 },
                "retry_start_up": false
            })
        );
        let back: RestartPolicy = serde_json::from_value(value).expect("round trip");
        assert_eq!(back, policy);

        for (jitter, text) in [
            (Jitter::None, r#"{"kind":"none"}"#),
            (Jitter::Full, r#"{"kind":"full"}"#),
            (Jitter::Decorrelated, r#"{"kind":"decorrelated"}"#),
        ] {
            assert_eq!(serde_json::to_string(&jitter).expect("serializable"), text);
            assert_eq!(
                serde_json::from_str::<Jitter>(text).expect("parses"),
                jitter
            );
        }
        for (kind, text) in [
            (RestartKind::Permanent, r#""permanent""#),
            (RestartKind::Temporary, r#""temporary""#),
        ] {
            assert_eq!(
                serde_json::from_str::<RestartKind>(text).expect("parses"),
                kind
            );
        }
    }

    #[test]
    fn empty_object_gives_the_defaults() {
        let policy: RestartPolicy = serde_json::from_str("{}").expect("parses");
        assert_eq!(policy, RestartPolicy::default());
        assert_eq!(policy.kind, RestartKind::Permanent);
        assert_eq!(policy.backoff, Backoff::default());
        assert_eq!(
            policy.intensity,
            Intensity::new(10, Duration::from_secs(300))
        );

        // Partial sections fill in the rest from the defaults.
        let partial: RestartPolicy =
            serde_json::from_str(r#"{"backoff":{"max_ms":5000},"intensity":{"max_restarts":3}}"#)
                .expect("parses");
        assert_eq!(partial.backoff.max, ms(5000));
        assert_eq!(partial.backoff.initial, ms(100));
        assert_eq!(
            partial.intensity,
            Intensity::new(3, Duration::from_secs(300))
        );
    }

    #[test]
    fn bad_configs_are_rejected_with_a_reason() {
        for (text, reason) in [
            (r#"{"backoff":{"intial_ms":5}}"#, "unknown field"),
            (r#"{"bakoff":{}}"#, "unknown field"),
            (r#"{"backoff":{"multiplier":0.5}}"#, "multiplier"),
            (
                r#"{"backoff":{"jitter":{"kind":"proportional","ratio":1.5}}}"#,
                "ratio",
            ),
            (r#"{"backoff":{"jitter":{"kind":"proportional"}}}"#, "ratio"),
            (
                r#"{"backoff":{"jitter":{"kind":"sometimes"}}}"#,
                "sometimes",
            ),
            (r#"{"backoff":{"initial_ms":-1}}"#, "-1"),
            (r#"{"kind":"forever"}"#, "forever"),
            (r#"{"intensity":{"period_ms":"5s"}}"#, "5s"),
        ] {
            let err = serde_json::from_str::<RestartPolicy>(text)
                .expect_err(text)
                .to_string();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn default_backoff_and_intensity_match_their_docs() {
        let backoff = Backoff::default();
        assert_eq!(backoff.initial, ms(100));
        assert_eq!(backoff.multiplier, 2.0);
        assert_eq!(backoff.max, ms(30_000));
        assert_eq!(backoff.jitter, Jitter::Proportional { ratio: 0.1 });
        assert_eq!(backoff.reset_after, ms(60_000));
        let sum = |n: u32| -> Duration { (1..=n).map(|a| backoff.base_delay(a)).sum() };
        assert_eq!(sum(9), ms(51_100));
        assert_eq!(sum(10), ms(81_100));
    }

    #[tokio::test(start_paused = true)]
    async fn default_policy_gives_up_on_an_instant_crash_loop_after_81_seconds() {
        let (restarts, elapsed) = crash_loop(&plain_default(), Duration::ZERO, 1000).await;
        assert_eq!(restarts, 10);
        assert_eq!(elapsed, ms(81_100));
    }

    #[tokio::test(start_paused = true)]
    async fn default_jitter_keeps_the_give_up_time_between_73_and_87_seconds() {
        // The extremes of ± 10 %, then real randomness.
        let policy = RestartPolicy::default();
        for (unit, expected) in [(0.0, ms(72_990)), (0.999_999_999, ms(86_210))] {
            let mut state = BackoffState::new();
            let mut window = IntensityWindow::new();
            let start = Instant::now();
            while window.record(&policy.intensity, Instant::now()).is_ok() {
                advance(state.next_delay_with(&policy.backoff, unit)).await;
            }
            assert_eq!(state.attempt(), 10);
            let elapsed = start.elapsed();
            assert!(
                elapsed.abs_diff(expected) < ms(1),
                "{elapsed:?} vs {expected:?}"
            );
        }
        for _ in 0..20 {
            let (restarts, elapsed) = crash_loop(&policy.backoff, Duration::ZERO, 1000).await;
            assert_eq!(restarts, 10);
            assert!((ms(72_990)..=ms(86_210)).contains(&elapsed), "{elapsed:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn default_policy_never_trips_on_a_crash_every_few_minutes() {
        let backoff = Backoff::default();
        let (restarts, _) = crash_loop(&backoff, Duration::from_secs(180), 1000).await;
        assert_eq!(restarts, 1000);
        // The documented steady limit: one restart per 30 s (uptime plus delay).
        let (restarts, _) = crash_loop(&Backoff::fixed(ms(100)), ms(29_900), 1000).await;
        assert_eq!(restarts, 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn default_policy_stops_crash_loops_shorter_than_22_seconds() {
        let backoff = plain_default();
        let (restarts, _) = crash_loop(&backoff, Duration::from_secs(21), 1000).await;
        assert_eq!(restarts, 10);
        let (restarts, _) = crash_loop(&backoff, Duration::from_secs(22), 1000).await;
        assert_eq!(restarts, 1000);
    }
}
