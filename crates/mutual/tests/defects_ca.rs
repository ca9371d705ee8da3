//! Regression tests for issue 13's CA-side defects (items 1, 6, 7, 9, 13, 15), each run
//! through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]
