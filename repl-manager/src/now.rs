//! One reading of the clocks, passed to a decision rather than read inside
//! it: the decision is then a pure function of its state and this value,
//! and a test (or a simulation) says what time it is.

use std::time::{Duration, Instant};

/// The monotonic clock (for every interval: TTLs, grace periods) and the
/// wall clock (only for what is shown to people: "degraded since"), read
/// once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Now {
    pub mono: Instant,
    /// Seconds since the Unix epoch.
    pub unix: f64,
}

impl Now {
    /// The clocks now.
    pub fn read() -> Self {
        Self {
            mono: Instant::now(),
            unix: sidecar_kit::telemetry::unix_now(),
        }
    }

    /// The same instant `d` later on both clocks.
    pub fn after(self, d: Duration) -> Self {
        Self {
            mono: self.mono + d,
            unix: self.unix + d.as_secs_f64(),
        }
    }
}
