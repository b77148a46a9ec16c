//! The low-speed time-out of blob downloads (curl's `--speed-limit`/`--speed-time`): a
//! transfer that moves fewer than `limit` bytes per second for `time` is abandoned and retried,
//! so a registry that trickles bytes cannot keep a batch job silent for hours. The read
//! time-out alone does not catch it: one byte a minute resets it.

use std::time::{Duration, Instant};

/// Bytes per second below which a transfer counts as stalled (`RSING_PULL_LOW_SPEED_LIMIT`).
pub const DEFAULT_LIMIT: u64 = 1024;
/// How long a transfer may stay below the limit (`RSING_PULL_LOW_SPEED_TIME`, seconds).
pub const DEFAULT_TIME: Duration = Duration::from_secs(30);

/// The limit and the time it may be undercut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowSpeed {
    pub limit: u64,
    pub time: Duration,
}

impl Default for LowSpeed {
    fn default() -> LowSpeed {
        LowSpeed {
            limit: DEFAULT_LIMIT,
            time: DEFAULT_TIME,
        }
    }
}

impl LowSpeed {
    /// The defaults, overridden by `RSING_PULL_LOW_SPEED_LIMIT` (bytes/s; 0 turns the check
    /// off) and `RSING_PULL_LOW_SPEED_TIME` (seconds, at least 1) where they parse.
    pub fn from_env() -> LowSpeed {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse().ok());
        let mut s = LowSpeed::default();
        if let Some(limit) = var("RSING_PULL_LOW_SPEED_LIMIT") {
            s.limit = limit;
        }
        if let Some(secs) = var("RSING_PULL_LOW_SPEED_TIME") {
            s.time = Duration::from_secs(secs.max(1));
        }
        s
    }

    /// A watch over one transfer attempt, starting now.
    pub fn watch(&self) -> Watch {
        Watch {
            rule: *self,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }
}

/// Bytes seen in the current window of `rule.time`.
pub struct Watch {
    rule: LowSpeed,
    window_start: Instant,
    window_bytes: u64,
}

impl Watch {
    /// How long to wait for the next chunk: until the current window ends (a long time when
    /// the check is off).
    pub fn wait(&self) -> Duration {
        if self.rule.limit == 0 {
            return Duration::from_secs(24 * 3600);
        }
        (self.window_start + self.rule.time)
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10))
    }

    /// Counts `bytes` just received; at the end of a window, fails if the window's rate was
    /// below the limit, else starts the next window.
    pub fn check(&mut self, bytes: u64) -> Result<(), String> {
        self.window_bytes += bytes;
        if self.rule.limit == 0 {
            return Ok(());
        }
        let elapsed = self.window_start.elapsed();
        if elapsed < self.rule.time {
            return Ok(());
        }
        let needed = self
            .rule
            .limit
            .saturating_mul(self.rule.time.as_secs().max(1));
        if self.window_bytes < needed {
            return Err(format!(
                "transfer too slow: {} bytes in {} s, less than {} bytes/s (the low-speed \
                 limit, RSING_PULL_LOW_SPEED_LIMIT/RSING_PULL_LOW_SPEED_TIME)",
                self.window_bytes,
                elapsed.as_secs(),
                self.rule.limit
            ));
        }
        self.window_start = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_window_fails_and_a_fast_one_resets() {
        let rule = LowSpeed {
            limit: 100,
            time: Duration::from_millis(1000),
        };
        let mut w = rule.watch();
        assert!(w.check(50).is_ok(), "within the window");
        w.window_start -= Duration::from_secs(2);
        let err = w.check(10).unwrap_err();
        assert!(
            err.contains("60 bytes in 2 s, less than 100 bytes/s"),
            "{err}"
        );

        let mut w = rule.watch();
        w.window_start -= Duration::from_secs(1);
        assert!(w.check(500).is_ok(), "fast enough");
        assert_eq!(w.window_bytes, 0, "a new window");
        assert!(w.wait() > Duration::from_millis(900));
    }

    #[test]
    fn zero_limit_turns_the_check_off() {
        let mut w = LowSpeed {
            limit: 0,
            time: Duration::from_secs(1),
        }
        .watch();
        w.window_start -= Duration::from_secs(100);
        assert!(w.check(0).is_ok());
        assert!(w.wait() >= Duration::from_secs(3600));
    }
}
