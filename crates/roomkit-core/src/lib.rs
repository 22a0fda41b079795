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
mod hook_api;
pub mod hooks;
mod identity;
mod identity_pipeline;
mod kit;
mod lane;
pub mod lock;
mod pipeline;
pub mod resilience;
pub mod router;
pub mod store;
pub mod telemetry;
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
pub use identity::normalize_address;
pub use identity_pipeline::{
    AddressResolver, DEFAULT_RESOLVER_TIMEOUT, DeliveryStatusUpdate, IdentityAction, IdentityError,
    IdentityHookPayload, IdentityHookResult, IdentityResolver, IdentityResult, IdentitySettings,
};
pub use kit::{
    AddParticipant, AttachOptions, BindingUpdate, CreateRoom, KitConfig, RoomKit, RoomKitBuilder,
    RoomUpdate, TimelineQuery,
};
pub use pipeline::{EventUpdate, SendEvent};
pub use resilience::{BreakerState, Jitter, ResilienceConfig};
pub use roomkit_model as model;
pub use telemetry::{NoopTelemetry, SpanName, TelemetryProvider, TracingTelemetry};
