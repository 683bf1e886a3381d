//! What this binary was built from (set by `build.rs`): shown by
//! `spillway --version` and as `spillway_build_info` on `/metrics`.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Short git commit, or `unknown` for builds outside a git checkout.
pub const COMMIT: &str = env!("SPILLWAY_GIT_COMMIT");
/// RFC 3339, UTC; `SOURCE_DATE_EPOCH` when the build set it.
pub const BUILD_DATE: &str = env!("SPILLWAY_BUILD_DATE");
pub const RUSTC: &str = env!("SPILLWAY_RUSTC_VERSION");

/// The `--version` text after the program name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SPILLWAY_GIT_COMMIT"),
    ", built ",
    env!("SPILLWAY_BUILD_DATE"),
    ", rustc ",
    env!("SPILLWAY_RUSTC_VERSION"),
    ")"
);
