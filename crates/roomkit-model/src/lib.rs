//! RoomKit data model: the types of RFC §5 and their JSON form.
//!
//! Everything here is plain data with serde support and no I/O. JSON field
//! names are the RFC's in snake_case; enum values are lower snake case
//! strings; timestamps are RFC 3339 UTC with milliseconds.

#![warn(missing_docs)]

mod binding;
mod channel_data;
mod content;
mod event;
mod framework;
mod hook;
mod ids;
mod participant;
mod room;
mod side_effects;
pub mod time;
mod visibility;

pub use binding::*;
pub use channel_data::*;
pub use content::*;
pub use event::*;
pub use framework::*;
pub use hook::*;
pub use ids::*;
pub use participant::*;
pub use room::*;
pub use side_effects::*;
pub use visibility::*;

/// A JSON object, used wherever the RFC says `map<string, any>`.
pub type Map = serde_json::Map<String, serde_json::Value>;

/// Error raised when a model value breaks one of the RFC's structural rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A composite content nests deeper than [`MAX_COMPOSITE_DEPTH`].
    #[error("composite content nested {depth} levels deep; at most {max} are allowed")]
    CompositeTooDeep {
        /// The depth found.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// A string could not be parsed as the named type.
    #[error("invalid {kind}: {value:?}")]
    Invalid {
        /// What was being parsed.
        kind: &'static str,
        /// The offending text.
        value: String,
    },
}
