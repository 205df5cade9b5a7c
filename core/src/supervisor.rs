//! One-for-one supervision decisions, with Erlang/OTP semantics.
//!
//! When a child (a client) exits, [`Supervisor::handle_exit`] decides what
//! happens to it: restart it, remove it, or — if restarts come too fast —
//! escalate: the driver stops every child and reports the budget exhausted.
//! Only the decision lives here; the driver carries it out.
//!
//! Semantics follow OTP's `supervisor` module:
//!
//! - [`RestartType`] decides *whether* an exit asks for a restart:
//!   `permanent` always, `transient` only after an abnormal exit (any
//!   [`ExitReason`] but `Normal`, including `Fatal`), `temporary` never.
//! - Only restarts count against the intensity; removals are free.
//! - Intensity "at most `max_restarts` in `max_seconds`": a restart is
//!   recorded when it is decided; if recording it would put more than
//!   `max_restarts` restarts within the last `max_seconds`, the supervisor
//!   escalates instead. So exactly `max_restarts` restarts in a window are
//!   allowed and the next one escalates; `max_restarts = 0` escalates on the
//!   first restart.
//! - The window is inclusive, as in OTP: at time `now`, a restart at `t`
//!   still counts while `now - t <= max_seconds`.
//! - After escalating, the supervisor is terminated for good: every later
//!   exit gets [`Decision::Terminated`].

use crate::exit::ExitReason;
use crate::time::Instant;
use core::fmt;
use core::time::Duration;
use heapless::Deque;

/// When a child is restarted after it exits (OTP `restart` child spec key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RestartType {
    /// Always restarted, even after a normal exit.
    Permanent,
    /// Restarted only after an abnormal exit (the default, as in the seed library).
    #[default]
    Transient,
    /// Never restarted.
    Temporary,
}

impl RestartType {
    /// `true` if a child of this type that exited with `reason` asks for a restart.
    ///
    /// ```
    /// use zenws_core::supervisor::RestartType;
    /// use zenws_core::{Error, ExitReason};
    /// assert!(RestartType::Transient.wants_restart(&ExitReason::RetriesExhausted { last: Error::Io }));
    /// // A fatal error (bad certificate, 401, protocol) can't be fixed by a restart:
    /// assert!(!RestartType::Transient.wants_restart(&ExitReason::Fatal(Error::Tls)));
    /// assert!(!RestartType::Transient.wants_restart(&ExitReason::Normal));
    /// assert!(RestartType::Permanent.wants_restart(&ExitReason::Normal));
    /// ```
    pub fn wants_restart(self, reason: &ExitReason) -> bool {
        match self {
            RestartType::Permanent => true,
            // Unlike OTP, a transient child that failed *fatally* is not
            // restarted: the failure would repeat, burn the shared restart
            // budget and escalate, stopping every healthy sibling.
            RestartType::Transient => matches!(reason, ExitReason::RetriesExhausted { .. }),
            RestartType::Temporary => false,
        }
    }
}

/// The restart budget: at most `max_restarts` restarts within `max_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RestartIntensity {
    /// Restarts allowed within the window (default 10).
    pub max_restarts: u32,
    /// Length of the sliding window (default 60 s). Named after OTP's
    /// `period`/`max_seconds`, but any resolution works.
    pub max_seconds: Duration,
}

impl RestartIntensity {
    /// At most `max_restarts` restarts within `max_seconds`.
    pub const fn new(max_restarts: u32, max_seconds: Duration) -> Self {
        RestartIntensity {
            max_restarts,
            max_seconds,
        }
    }
}

impl Default for RestartIntensity {
    fn default() -> Self {
        RestartIntensity {
            max_restarts: 10,
            max_seconds: Duration::from_secs(60),
        }
    }
}

/// Supervisor configuration: [`Default`] plus
/// [`with_intensity`](SupervisorConfig::with_intensity) and
/// [`with_restart_delay`](SupervisorConfig::with_restart_delay)
/// (`#[non_exhaustive]`: a field added later breaks nobody).
///
/// ```
/// use core::time::Duration;
/// use zenws_core::supervisor::{RestartIntensity, SupervisorConfig};
/// let config = SupervisorConfig::default()
///     .with_intensity(RestartIntensity::new(3, Duration::from_secs(10)));
/// assert_eq!(config.intensity.max_restarts, 3);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SupervisorConfig {
    /// The restart budget (default 10 in 60 s).
    pub intensity: RestartIntensity,
    /// How long after the exit a restart happens (default 0: at once). The
    /// child's own retry ladder already spaces out reconnects; this only
    /// spaces out restarts of children that gave up.
    pub restart_delay: Duration,
}

impl SupervisorConfig {
    /// Set the restart budget ([`intensity`](Self::intensity)).
    #[must_use]
    pub const fn with_intensity(mut self, intensity: RestartIntensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// Set [`restart_delay`](Self::restart_delay).
    #[must_use]
    pub const fn with_restart_delay(mut self, delay: Duration) -> Self {
        self.restart_delay = delay;
        self
    }
}

/// What the driver should do about an exited child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Start the child again at `at` (`now + restart_delay`).
    Restart {
        /// When to restart it.
        at: Instant,
    },
    /// Do not restart it (its restart type says so); forget it.
    Remove,
    /// The restart intensity is exceeded: stop all children and report the
    /// budget exhausted. The supervisor is now terminated.
    Escalate {
        /// Restarts already made within `window`; one more would exceed the budget.
        restarts: u32,
        /// The intensity window (`max_seconds`).
        window: Duration,
    },
    /// The supervisor escalated earlier and restarts nothing any more.
    Terminated,
}

/// [`Supervisor::new`] refused a configuration: the ring cannot hold
/// `max_restarts` timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CapacityError {
    /// The requested `max_restarts`.
    pub max_restarts: u32,
    /// The ring capacity, `CAP`.
    pub capacity: usize,
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max_restarts {} exceeds the supervisor's capacity {} (raise CAP)",
            self.max_restarts, self.capacity
        )
    }
}

#[cfg(feature = "std")]
extern crate std;
#[cfg(feature = "std")]
impl std::error::Error for CapacityError {}

/// A one-for-one supervisor's decision state: the restart timestamps in the
/// current window, in a ring of `CAP` entries.
///
/// Why the ring only needs `max_restarts` slots: escalation happens when
/// `max_restarts` restarts are already in the window, so a `max_restarts + 1`-th
/// timestamp is never stored. `CAP` is therefore an upper bound on
/// `max_restarts`, checked once in [`new`](Supervisor::new) with a typed error
/// instead of being clamped: silently allowing fewer restarts than configured
/// would turn a tolerable burst into a full shutdown.
///
/// One supervisor watches many children and shares one budget among them, as
/// in OTP; its size is `8 · CAP + 72` bytes on 64-bit targets.
///
/// ```
/// use zenws_core::supervisor::{Decision, RestartType, Supervisor, SupervisorConfig};
/// use zenws_core::{Error, ExitReason, Instant};
/// let mut sup: Supervisor = Supervisor::new(SupervisorConfig::default()).unwrap();
/// let now = Instant::from_millis(0);
/// let crash = ExitReason::RetriesExhausted { last: Error::ConnectionRefused };
///
/// // 10 restarts within 60 s are allowed...
/// for _ in 0..10 {
///     assert_eq!(sup.handle_exit(now, RestartType::Transient, &crash), Decision::Restart { at: now });
/// }
/// // ...the 11th escalates, and the supervisor stays terminated.
/// assert!(matches!(sup.handle_exit(now, RestartType::Transient, &crash), Decision::Escalate { restarts: 10, .. }));
/// assert!(sup.is_terminated());
/// assert_eq!(sup.handle_exit(now, RestartType::Transient, &crash), Decision::Terminated);
///
/// // A normal exit of a transient child is never restarted.
/// let mut sup: Supervisor = Supervisor::new(SupervisorConfig::default()).unwrap();
/// assert_eq!(sup.handle_exit(now, RestartType::Transient, &ExitReason::Normal), Decision::Remove);
/// ```
#[derive(Clone, Debug)]
pub struct Supervisor<const CAP: usize = 64> {
    config: SupervisorConfig,
    /// When each restart in the window was decided, oldest first.
    restarts: Deque<Instant, CAP>,
    terminated: bool,
}

impl<const CAP: usize> Supervisor<CAP> {
    /// A supervisor with no restarts yet, or an error if
    /// `config.intensity.max_restarts > CAP`.
    pub fn new(config: SupervisorConfig) -> Result<Self, CapacityError> {
        if usize::try_from(config.intensity.max_restarts).map_or(true, |m| m > CAP) {
            return Err(CapacityError {
                max_restarts: config.intensity.max_restarts,
                capacity: CAP,
            });
        }
        Ok(Supervisor {
            config,
            restarts: Deque::new(),
            terminated: false,
        })
    }

    /// A child of type `restart` exited with `reason` at `now`: what to do.
    ///
    /// `now` should not go backwards between calls; if it does, the earlier
    /// restarts simply count as being in the window (the safe direction).
    pub fn handle_exit(
        &mut self,
        now: Instant,
        restart: RestartType,
        reason: &ExitReason,
    ) -> Decision {
        if self.terminated {
            return Decision::Terminated;
        }
        if !restart.wants_restart(reason) {
            return Decision::Remove;
        }
        self.expire(now);
        let intensity = self.config.intensity;
        // After `expire`, every stored restart is in the window.
        if self.restarts.len() >= intensity.max_restarts as usize {
            self.terminated = true;
            log::warn!(
                "supervisor: restart intensity exceeded ({} restarts in {:?}), escalating after {}",
                self.restarts.len(),
                intensity.max_seconds,
                reason
            );
            return Decision::Escalate {
                restarts: self.restarts.len() as u32,
                window: intensity.max_seconds,
            };
        }
        // Cannot fail: len < max_restarts <= CAP, checked in `new`.
        let _ = self.restarts.push_back(now);
        Decision::Restart {
            at: now + self.config.restart_delay,
        }
    }

    /// Restarts decided within the window ending at `now` (for health and metrics).
    pub fn restarts_in_window(&self, now: Instant) -> u32 {
        let window = self.config.intensity.max_seconds;
        self.restarts
            .iter()
            .filter(|&&t| now.saturating_since(t) <= window)
            .count() as u32
    }

    /// `true` once the supervisor has escalated; it never restarts anything again.
    pub fn is_terminated(&self) -> bool {
        self.terminated
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &SupervisorConfig {
        &self.config
    }

    /// Forget restarts that have left the window ending at `now`.
    fn expire(&mut self, now: Instant) {
        let window = self.config.intensity.max_seconds;
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_since(oldest) <= window {
                break;
            }
            self.restarts.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest};
    use proptest::prop_oneof;
    use proptest::strategy::{Just, Strategy};

    const T0: Instant = Instant::from_millis(1_000_000);
    const NORMAL: ExitReason = ExitReason::Normal;
    const FATAL: ExitReason = ExitReason::Fatal(Error::TlsCertificate);
    const EXHAUSTED: ExitReason = ExitReason::RetriesExhausted {
        last: Error::ConnectionRefused,
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn sup(max_restarts: u32, max_seconds: Duration) -> Supervisor<16> {
        Supervisor::new(SupervisorConfig {
            intensity: RestartIntensity {
                max_restarts,
                max_seconds,
            },
            restart_delay: Duration::ZERO,
        })
        .unwrap()
    }

    #[test]
    fn defaults() {
        let c = SupervisorConfig::default();
        assert_eq!(c.intensity.max_restarts, 10);
        assert_eq!(c.intensity.max_seconds, secs(60));
        assert_eq!(c.restart_delay, Duration::ZERO);
        assert_eq!(RestartType::default(), RestartType::Transient);
    }

    #[test]
    fn restart_type_by_reason() {
        use RestartType::*;
        let restart = Decision::Restart { at: T0 };
        let table = [
            (Permanent, NORMAL, restart),
            (Permanent, FATAL, restart),
            (Permanent, EXHAUSTED, restart),
            (Transient, NORMAL, Decision::Remove),
            (Transient, FATAL, Decision::Remove),
            (Transient, EXHAUSTED, restart),
            (Temporary, NORMAL, Decision::Remove),
            (Temporary, FATAL, Decision::Remove),
            (Temporary, EXHAUSTED, Decision::Remove),
        ];
        for (ty, reason, want) in table {
            let mut s = sup(10, secs(60));
            assert_eq!(s.handle_exit(T0, ty, &reason), want, "{ty:?} {reason:?}");
            let counted = u32::from(matches!(want, Decision::Restart { .. }));
            assert_eq!(s.restarts_in_window(T0), counted, "removals are free");
        }
    }

    #[test]
    fn restart_delay_sets_the_time() {
        let mut s: Supervisor<4> = Supervisor::new(SupervisorConfig {
            restart_delay: Duration::from_millis(250),
            intensity: RestartIntensity {
                max_restarts: 3,
                ..RestartIntensity::default()
            },
        })
        .unwrap();
        assert_eq!(
            s.handle_exit(T0, RestartType::Permanent, &NORMAL),
            Decision::Restart {
                at: T0 + Duration::from_millis(250)
            }
        );
    }

    #[test]
    fn exactly_n_then_escalate() {
        for n in [0u32, 1, 3, 16] {
            let mut s = sup(n, secs(60));
            for i in 0..n {
                let now = T0 + secs(u64::from(i));
                assert!(matches!(
                    s.handle_exit(now, RestartType::Transient, &EXHAUSTED),
                    Decision::Restart { .. }
                ));
            }
            let now = T0 + secs(u64::from(n));
            assert_eq!(
                s.handle_exit(now, RestartType::Transient, &EXHAUSTED),
                Decision::Escalate {
                    restarts: n,
                    window: secs(60)
                }
            );
            assert!(s.is_terminated());
        }
    }

    #[test]
    fn terminated_stays_terminated() {
        let mut s = sup(1, secs(1));
        s.handle_exit(T0, RestartType::Permanent, &FATAL);
        assert!(matches!(
            s.handle_exit(T0, RestartType::Permanent, &FATAL),
            Decision::Escalate { .. }
        ));
        // Even long after the window, and even for exits that would only be removed.
        let later = T0 + secs(3_600);
        for ty in [
            RestartType::Permanent,
            RestartType::Transient,
            RestartType::Temporary,
        ] {
            for reason in [NORMAL, FATAL, EXHAUSTED] {
                assert_eq!(s.handle_exit(later, ty, &reason), Decision::Terminated);
            }
        }
        assert!(s.is_terminated());
    }

    #[test]
    fn window_slides() {
        let mut s = sup(3, secs(60));
        for t in [0, 10, 20] {
            s.handle_exit(T0 + secs(t), RestartType::Transient, &EXHAUSTED);
        }
        assert_eq!(s.restarts_in_window(T0 + secs(20)), 3);
        // At t = 60 the restart at 0 is exactly max_seconds old: still counted (inclusive).
        assert_eq!(s.restarts_in_window(T0 + secs(60)), 3);
        // Just after, it has expired, so one more restart fits.
        let just_after = T0 + secs(60) + Duration::from_nanos(1);
        assert_eq!(s.restarts_in_window(just_after), 2);
        assert!(matches!(
            s.handle_exit(just_after, RestartType::Transient, &EXHAUSTED),
            Decision::Restart { .. }
        ));
        // Window now holds 10, 20, 60+ε: full again.
        assert!(matches!(
            s.handle_exit(T0 + secs(70), RestartType::Transient, &EXHAUSTED),
            Decision::Escalate { restarts: 3, .. }
        ));
    }

    #[test]
    fn boundary_is_inclusive() {
        let mut s = sup(1, secs(60));
        s.handle_exit(T0, RestartType::Permanent, &NORMAL);
        let at_edge = s
            .clone()
            .handle_exit(T0 + secs(60), RestartType::Permanent, &NORMAL);
        assert!(matches!(at_edge, Decision::Escalate { .. }));
        let past = s.handle_exit(
            T0 + secs(60) + Duration::from_nanos(1),
            RestartType::Permanent,
            &NORMAL,
        );
        assert!(matches!(past, Decision::Restart { .. }));
    }

    #[test]
    fn capacity_is_checked() {
        let config = SupervisorConfig {
            intensity: RestartIntensity {
                max_restarts: 17,
                ..RestartIntensity::default()
            },
            ..SupervisorConfig::default()
        };
        assert_eq!(
            Supervisor::<16>::new(config).unwrap_err(),
            CapacityError {
                max_restarts: 17,
                capacity: 16
            }
        );
        assert!(Supervisor::<17>::new(config).is_ok());
        assert!(Supervisor::<4>::new(SupervisorConfig::default()).is_err());
    }

    #[test]
    fn sizes() {
        std::println!(
            "size_of::<Supervisor>() (CAP = 64) = {}",
            core::mem::size_of::<Supervisor>()
        );
        std::println!(
            "size_of::<Supervisor<16>>() = {}",
            core::mem::size_of::<Supervisor<16>>()
        );
        std::println!(
            "size_of::<SupervisorConfig>() = {}",
            core::mem::size_of::<SupervisorConfig>()
        );
        std::println!(
            "size_of::<Decision>() = {}",
            core::mem::size_of::<Decision>()
        );
    }

    fn any_exit() -> impl Strategy<Value = (RestartType, ExitReason)> {
        let ty = prop_oneof![
            Just(RestartType::Permanent),
            Just(RestartType::Transient),
            Just(RestartType::Temporary)
        ];
        let reason = prop_oneof![Just(NORMAL), Just(FATAL), Just(EXHAUSTED)];
        (ty, reason)
    }

    proptest! {
        #[test]
        fn restarts_never_exceed_intensity(
            max_restarts in 0u32..=16,
            window_ms in 0u64..10_000,
            exits in proptest::collection::vec((0u64..3_000, any_exit()), 0..200),
        ) {
            let window = Duration::from_millis(window_ms);
            let mut s = sup(max_restarts, window);
            let mut now = T0;
            let mut restarted = std::vec::Vec::new();
            let mut escalated = false;
            for (gap_ms, (ty, reason)) in exits {
                now = now + Duration::from_millis(gap_ms);
                // Reference model: OTP's rule stated directly over the full history.
                let in_window = restarted.iter().filter(|&&t| now - t <= window).count() as u32;
                let decision = s.handle_exit(now, ty, &reason);
                if !escalated && ty.wants_restart(&reason) {
                    prop_assert_eq!(
                        matches!(decision, Decision::Restart { .. }),
                        in_window < max_restarts
                    );
                }
                match decision {
                    Decision::Restart { .. } => {
                        prop_assert!(!escalated);
                        restarted.push(now);
                    }
                    Decision::Escalate { restarts, .. } => {
                        prop_assert!(!escalated);
                        prop_assert_eq!(restarts, max_restarts);
                        escalated = true;
                    }
                    Decision::Terminated => prop_assert!(escalated),
                    Decision::Remove => prop_assert!(!ty.wants_restart(&reason)),
                }
                prop_assert!(s.restarts_in_window(now) <= max_restarts);
            }
            // Any closed window [t, t + window] starting at a restart holds at most max_restarts.
            for (i, &start) in restarted.iter().enumerate() {
                let inside = restarted[i..].iter().take_while(|&&t| t - start <= window).count();
                prop_assert!(inside as u32 <= max_restarts, "{} restarts within {:?}", inside, window);
            }
        }
    }
}
