//! The text of `rsing --version`: version, git commit, build date, target and features, from
//! the facts build.rs records. Bug reports and site inventories then name the exact build.

pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit:   ",
    env!("RSING_GIT_COMMIT"),
    "\nbuilt:    ",
    env!("RSING_BUILD_DATE"),
    " (",
    env!("RSING_BUILD_PROFILE"),
    ")\ntarget:   ",
    env!("RSING_BUILD_TARGET"),
    "\nfeatures: ",
    env!("RSING_FEATURES"),
);
