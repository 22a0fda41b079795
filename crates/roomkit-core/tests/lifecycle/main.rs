//! Conformance tests of the room lifecycle, event content, indexing and
//! storage, and the cross-cutting rules of the RFC (checklist sections 3.1,
//! 3.2, 3.3 and 3.12). Test names carry the checklist ids they verify.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod concurrency;
mod content;
mod crosscut;
mod indexing;
mod model_ops;
mod participants;
mod room;
mod util;
