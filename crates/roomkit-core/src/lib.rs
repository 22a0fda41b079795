//! RoomKit core engine: rooms, channels, hooks, permissions and the
//! inbound and broadcast pipelines of the RoomKit RFC (Level 0).
//!
//! The entry point is [`RoomKit`]. The core does no network I/O of its own:
//! channels, stores and hooks are values passed in.

#![warn(missing_docs)]

mod bus;
pub mod channel;
pub mod clock;
pub mod error;
pub mod hooks;
mod hook_api;
mod identity;
mod kit;
mod lane;
pub mod lock;
mod pipeline;
pub mod router;
pub mod store;
mod timers;
pub mod transcode;

pub use bus::{BUS_CAPACITY, EphemeralEvent};
pub use channel::{Channel, ChannelOutput, RoomContext, TextStream, inbound_event, response_event};
pub use error::{ChannelError, HookError, Result, RoomKitError, StoreError};
pub use hook_api::{
    AiGenerationPayload, AiHookMessage, AiResponsePayload, HookDecision, ToolCallPayload,
};
pub use hooks::{
    HookAction, HookInput, HookPayload, HookRegistration, HookResult, InjectedEvent, SideEffects,
};
pub use identity::IdentityUpdate;
pub use kit::{
    AddParticipant, AttachOptions, BindingUpdate, CreateRoom, KitConfig, RoomKit, RoomKitBuilder,
    RoomUpdate, TimelineQuery,
};
pub use pipeline::{EventUpdate, SendEvent};
pub use roomkit_model as model;
