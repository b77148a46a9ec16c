//! Unix time to a UTC calendar date and time of day, by Howard Hinnant's civil-from-days
//! algorithm: the few places that print a date (`rsing --version`'s build date, `instance
//! list`'s start time, the SquashFS listing tests) need no date crate for it.
//!
//! This file names nothing else in the crate: `build.rs` includes it with `#[path]` (a build
//! script cannot use the crate it builds), so there is one copy of the algorithm.

/// A moment in UTC, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Utc {
    /// The UTC calendar moment of Unix time `secs` (negative: before 1970).
    pub fn at(secs: i64) -> Utc {
        let z = secs.div_euclid(86_400) + 719_468;
        let rem = secs.rem_euclid(86_400);
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Utc {
            year: yoe + era * 400 + i64::from(month <= 2),
            month: month as u32,
            day: day as u32,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        }
    }

    /// `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `HH:MM`.
    pub fn hour_minute(&self) -> String {
        format!("{:02}:{:02}", self.hour, self.minute)
    }
}

#[cfg(test)]
mod tests {
    use super::Utc;

    #[test]
    fn dates_and_times() {
        assert_eq!(Utc::at(0).date(), "1970-01-01");
        let leap = Utc::at(1_709_210_096);
        assert_eq!(leap.date(), "2024-02-29");
        assert_eq!((leap.hour, leap.minute, leap.second), (12, 34, 56));
        assert_eq!(leap.hour_minute(), "12:34");
        assert_eq!(Utc::at(951_782_400).date(), "2000-02-29");
        assert_eq!(Utc::at(-1).date(), "1969-12-31");
        assert_eq!(Utc::at(-1).second, 59);
        assert_eq!(Utc::at(253_402_300_799).date(), "9999-12-31");
    }
}
