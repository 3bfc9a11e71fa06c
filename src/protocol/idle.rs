//! The daemon's idle clock: how long nobody has used it.
//!
//! Every accepted connection takes an [`IdleGuard`] for as long as it is open. The clock
//! [expires](IdleClock::expired) once no guard has been held for the whole timeout, counted
//! from the later of the clock's creation and the last time a guard was taken or dropped.
//! It knows nothing of sockets, so its logic is tested under tokio's paused time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Open guards and the time of the last change.
#[derive(Debug, Clone, Copy)]
struct Use {
    open: usize,
    since: Instant,
}

/// Counts open connections and tells when there has been none for `timeout`.
#[derive(Debug)]
pub(crate) struct IdleClock {
    timeout: Duration,
    state: Arc<watch::Sender<Use>>,
}

impl IdleClock {
    /// A clock whose idle time starts now.
    pub(crate) fn new(timeout: Duration) -> Self {
        let (state, _) = watch::channel(Use {
            open: 0,
            since: Instant::now(),
        });
        IdleClock {
            timeout,
            state: Arc::new(state),
        }
    }

    /// The idle timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Record new activity that lasts until the guard is dropped.
    pub(crate) fn guard(&self) -> IdleGuard {
        self.state.send_modify(|s| {
            s.open += 1;
            s.since = Instant::now();
        });
        IdleGuard {
            state: self.state.clone(),
        }
    }

    /// Resolves once no guard has been held for the timeout. Cancel-safe; it may be polled
    /// late without moving the deadline, which is counted from the last activity.
    pub(crate) async fn expired(&self) {
        let mut changes = self.state.subscribe();
        loop {
            let Use { open, since } = *changes.borrow_and_update();
            if open > 0 {
                // `self` owns the sender, so `changed` cannot fail while this runs.
                let _ = changes.changed().await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(since + self.timeout) => return,
                _ = changes.changed() => {}
            }
        }
    }
}

/// One open connection: the daemon is not idle while any guard exists, and dropping the
/// last one restarts the idle time.
#[derive(Debug)]
pub(crate) struct IdleGuard {
    state: Arc<watch::Sender<Use>>,
}

impl Drop for IdleGuard {
    fn drop(&mut self) {
        self.state.send_modify(|s| {
            s.open -= 1;
            s.since = Instant::now();
        });
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::{pin, Pin};

    use super::*;

    const N: Duration = Duration::from_secs(5);
    const TICK: Duration = Duration::from_millis(1);

    /// Whether `expired` has resolved, polling it once.
    async fn fired(future: &mut Pin<&mut impl Future<Output = ()>>) -> bool {
        futures::poll!(future.as_mut()).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn fires_after_the_timeout_without_activity() {
        let clock = IdleClock::new(N);
        let mut expired = pin!(clock.expired());
        assert!(!fired(&mut expired).await);
        tokio::time::advance(N - TICK).await;
        assert!(!fired(&mut expired).await, "fired early");
        tokio::time::advance(TICK).await;
        assert!(fired(&mut expired).await, "did not fire after {N:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn awaiting_it_takes_exactly_the_timeout() {
        let clock = IdleClock::new(N);
        let start = Instant::now();
        clock.expired().await;
        assert_eq!(start.elapsed(), N);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_guard_holds_it_off_until_the_timeout_after_the_last_drop() {
        let clock = IdleClock::new(N);
        let first = clock.guard();
        let second = clock.guard();
        let mut expired = pin!(clock.expired());
        tokio::time::advance(10 * N).await;
        assert!(!fired(&mut expired).await, "fired with two guards open");
        drop(first);
        tokio::time::advance(10 * N).await;
        assert!(!fired(&mut expired).await, "fired with a guard open");
        drop(second);
        tokio::time::advance(N - TICK).await;
        assert!(
            !fired(&mut expired).await,
            "fired before {N:?} after the drop"
        );
        tokio::time::advance(TICK).await;
        assert!(
            fired(&mut expired).await,
            "did not fire {N:?} after the drop"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn new_activity_restarts_the_clock() {
        let clock = IdleClock::new(N);
        let mut expired = pin!(clock.expired());
        tokio::time::advance(N - TICK).await;
        drop(clock.guard()); // a connection that came and went at once
        tokio::time::advance(N - TICK).await;
        assert!(!fired(&mut expired).await, "the activity did not reset it");
        tokio::time::advance(TICK).await;
        assert!(fired(&mut expired).await);
    }

    #[tokio::test(start_paused = true)]
    async fn activity_before_the_first_poll_counts() {
        let clock = IdleClock::new(N);
        tokio::time::advance(N - TICK).await;
        drop(clock.guard());
        let mut expired = pin!(clock.expired());
        tokio::time::advance(N - TICK).await;
        assert!(!fired(&mut expired).await);
        tokio::time::advance(TICK).await;
        assert!(fired(&mut expired).await);
    }
}
