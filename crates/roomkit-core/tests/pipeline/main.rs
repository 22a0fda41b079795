//! Integration tests of the inbound and broadcast pipelines, edit and
//! delete, routing and chain depth, plus the Appendix B conversations run
//! end to end. Test names carry the checklist ids (C-nn) they verify.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broadcast;
mod chain_depth;
mod edit_delete;
mod flows;
mod inbound;
mod routing;
mod support;
