//! Integration tests of the core engine. Each module covers a part of the
//! RFC; test names carry the checklist ids (C-nn) they verify.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod smoke;
