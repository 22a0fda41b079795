//! RoomKit voice (RFC §12.1, §12.2, §12.5, §12.6): voice calls as a channel.
//!
//! A call reaches a room through a transport (a `VoiceBackend`), its audio
//! runs through `roomkit-audio`'s pipeline, speech becomes text through an
//! [`SttProvider`], and what the room answers is spoken through a
//! [`TtsProvider`]. Vendors are modules behind cargo features, as in
//! `roomkit-channels`; nothing here knows HTTP servers or rooms' storage.

#![warn(missing_docs)]

pub mod backend;
pub mod browser;
mod calls;
pub mod channel;
pub mod dial;
pub mod endpoint;
mod error;
#[cfg(feature = "fake-servers")]
pub mod fake;
mod guard;
mod listen;
#[cfg(any(feature = "espeak", feature = "pocketsphinx"))]
pub mod offline;
mod pool;
pub mod registry;
mod session;
pub mod splitter;
pub mod stt;
pub mod trace;
pub mod tts;
pub mod twilio;
pub mod twilio_rest;
pub mod vendors;

pub use error::{ProviderFailure, VoiceError};
pub use stt::{SttAudio, SttProvider, SttSession, Transcript};
pub use tts::{TtsChunk, TtsProvider, TtsStream};

pub use backend::{
    BackendEvent, Call, CallInfo, CallMedia, MediaMessage, MediaSocket, Outbound, TransportStats,
    VoiceBackend, VoiceCapabilities,
};
pub use channel::{CallHandle, CallTap, VoiceChannel, VoiceSettings};
pub use dial::{CallDialer, DialError, DialRequest, DialedCall};
pub use endpoint::{MediaEndpoint, VoiceMediaEndpoint};
pub use trace::ProtocolTrace;
