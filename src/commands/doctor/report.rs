//! One line per check: what was found, and for anything not OK, what to do about it. The
//! JSON form has the same facts under stable keys for scripts and site monitoring.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    /// Works, but something is degraded or some feature (not `exec` itself) is unavailable.
    Warn,
    /// `rsing exec` cannot work on this host (for this user) until it is fixed.
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable identifier (`userns`, `fuse`, ...).
    pub name: &'static str,
    pub status: Status,
    /// What was found.
    pub message: String,
    /// What to do, for WARN and FAIL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: &'static str, message: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            message: message.into(),
            fix: None,
        }
    }

    pub fn warn(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub version: &'static str,
    pub commit: &'static str,
    /// False when any check failed (the exit status is then 1).
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Report {
        Report {
            version: env!("CARGO_PKG_VERSION"),
            commit: env!("RSING_GIT_COMMIT"),
            ok: checks.iter().all(|c| c.status != Status::Fail),
            checks,
        }
    }

    /// `STATUS name: message` and, indented below, `fix: ...`; a summary line last.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{:<4} {:<9} {}\n",
                c.status.label(),
                c.name,
                c.message
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("     {:<9} fix: {fix}\n", ""));
            }
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        out.push_str(&format!(
            "rsing {} ({}): {} OK, {} WARN, {} FAIL{}\n",
            self.version,
            self.commit,
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail),
            if self.ok {
                ""
            } else {
                ": rsing exec will not work here until the FAIL lines are fixed"
            }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_makes_report_not_ok_and_text_shows_fix() {
        let r = Report::new(vec![
            Check::ok("a", "fine"),
            Check::fail(
                "fuse",
                "/dev/fuse is not the FUSE device",
                "chmod 0666 /dev/fuse",
            ),
        ]);
        assert!(!r.ok);
        let t = r.text();
        assert!(
            t.contains("FAIL fuse      /dev/fuse is not the FUSE device\n"),
            "{t}"
        );
        assert!(t.contains("fix: chmod 0666 /dev/fuse"), "{t}");
        assert!(t.contains("1 OK, 0 WARN, 1 FAIL"), "{t}");
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["checks"][1]["status"], "FAIL");
        assert!(j["checks"][0].get("fix").is_none());
    }
}
