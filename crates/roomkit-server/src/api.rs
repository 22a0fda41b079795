//! The REST endpoints (RFC §16.1). Each handler parses its input, calls one
//! core method and writes the answer; no rule lives here.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roomkit_core::model::{
    Access, ChannelCapabilities, ChannelCategory, ChannelDirection, ChannelId, ChannelType,
    EventContent, EventId, EventType, Identity, IdentityId, Map, ParticipantId, ParticipantRole,
    RoomId, RoomStatus, TaskId, TaskStatus, Visibility,
};
use roomkit_core::store::{RoomQuery, TaskQuery};
use roomkit_core::{
    AddParticipant, AttachOptions, BindingUpdate, CreateRoom, IdentityUpdate, RoomKitError,
    RoomUpdate, SendEvent, TimelineQuery,
};
use serde::{Deserialize, Serialize};

use crate::auth::Scope;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Cursor, Page, Params, StrictJson, nullable};
use crate::state::AppState;

fn created<T: Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn ok<T: Serialize>(value: T) -> Response {
    Json(value).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn room_id(id: String) -> RoomId {
    RoomId::from(id)
}

// ---- health and channels

/// `GET /healthz`.
pub async fn healthz() -> Response {
    ok(serde_json::json!({"status": "ok"}))
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// A registered channel as `GET /channels` lists it.
#[derive(Debug, Serialize)]
pub struct ChannelInfo {
    /// Channel id.
    pub id: ChannelId,
    /// Channel type.
    pub r#type: ChannelType,
    /// Transport or intelligence.
    pub category: ChannelCategory,
    /// Direction.
    pub direction: ChannelDirection,
    /// What it supports.
    pub capabilities: ChannelCapabilities,
}

/// `GET /channels`.
pub async fn list_channels(State(state): State<AppState>, params: Params) -> ApiResult<Response> {
    let items: Vec<ChannelInfo> = state
        .kit
        .channels()
        .into_iter()
        .map(|c| ChannelInfo {
            id: c.id().clone(),
            r#type: c.channel_type(),
            category: c.category(),
            direction: c.direction(),
            capabilities: c.capabilities(),
        })
        .collect();
    Ok(ok(Page::by_offset(items, &params)?))
}

// ---- rooms

/// Room timers in a request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimersBody {
    /// Seconds of inactivity before ACTIVE becomes PAUSED; null removes it.
    #[serde(default, deserialize_with = "nullable::deserialize")]
    pub inactive_after_seconds: Option<Option<u64>>,
    /// Seconds in PAUSED before the room closes; null removes it.
    #[serde(default, deserialize_with = "nullable::deserialize")]
    pub closed_after_seconds: Option<Option<u64>>,
}

/// Body of `POST /rooms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoomBody {
    /// Room id; generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Tenant.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// Integrator data.
    #[serde(default)]
    pub metadata: Option<Map>,
    /// Automatic transitions.
    #[serde(default)]
    pub timers: Option<TimersBody>,
}

/// `POST /rooms`.
pub async fn create_room(
    State(state): State<AppState>,
    scope: Scope,
    StrictJson(body): StrictJson<CreateRoomBody>,
) -> ApiResult<Response> {
    if body.id.as_deref().is_some_and(|i| i.trim().is_empty()) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "invalid field `id`: must not be empty",
        ));
    }
    let timers = body.timers.unwrap_or_default();
    let room = state
        .kit
        .create_room(CreateRoom {
            id: body.id.map(RoomId::from),
            organization_id: scope.owner(body.organization_id)?,
            metadata: body.metadata.unwrap_or_default(),
            inactive_after_seconds: timers.inactive_after_seconds.flatten(),
            closed_after_seconds: timers.closed_after_seconds.flatten(),
        })
        .await?;
    Ok(created(room))
}

/// `GET /rooms/{id}`.
pub async fn get_room(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(ok(state.kit.get_room(&room_id(id)).await?))
}

/// Body of `PATCH /rooms/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoomBody {
    /// New status.
    #[serde(default)]
    pub status: Option<RoomStatus>,
    /// Replace the metadata.
    #[serde(default)]
    pub metadata: Option<Map>,
    /// Change the timers.
    #[serde(default)]
    pub timers: Option<TimersBody>,
}

/// `PATCH /rooms/{id}`: the status move first (so an illegal one changes
/// nothing), then metadata and timers.
pub async fn update_room(
    State(state): State<AppState>,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<UpdateRoomBody>,
) -> ApiResult<Response> {
    let id = room_id(id);
    let kit = &state.kit;
    let mut room = kit.get_room(&id).await?;
    if let Some(status) = body.status {
        room = kit.set_room_status(&id, status).await?;
    }
    let timers = body.timers.unwrap_or_default();
    if body.metadata.is_some()
        || timers.inactive_after_seconds.is_some()
        || timers.closed_after_seconds.is_some()
    {
        room = kit
            .update_room(
                &id,
                RoomUpdate {
                    metadata: body.metadata,
                    inactive_after_seconds: timers.inactive_after_seconds,
                    closed_after_seconds: timers.closed_after_seconds,
                },
            )
            .await?;
    }
    Ok(ok(room))
}

/// `DELETE /rooms/{id}`.
pub async fn delete_room(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.kit.delete_room(&room_id(id)).await?;
    Ok(no_content())
}

/// `GET /rooms?organization_id=&status=`.
pub async fn list_rooms(
    State(state): State<AppState>,
    scope: Scope,
    params: Params,
) -> ApiResult<Response> {
    let limit = params.limit()?;
    let requested = params.text("organization_id");
    if let Some(org) = scope.organization()
        && requested.is_some_and(|r| r != org)
    {
        // Another organization's rooms do not exist for a tenant key.
        return Ok(ok(Page::<roomkit_core::model::Room> {
            items: Vec::new(),
            next_cursor: None,
        }));
    }
    let query = RoomQuery {
        organization_id: scope.organization().or(requested).map(str::to_owned),
        status: params.parsed::<RoomStatus>("status")?,
        after: params.cursor('r')?.map(RoomId::from),
        limit: Some(limit + 1),
    };
    let mut rooms = state.kit.list_rooms(&query).await?;
    let next_cursor = if rooms.len() > limit {
        rooms.truncate(limit);
        rooms.last().map(|r| Cursor::encode('r', r.id.as_str()))
    } else {
        None
    };
    Ok(ok(Page {
        items: rooms,
        next_cursor,
    }))
}

// ---- bindings

/// Body of `POST /rooms/{id}/channels`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachBody {
    /// The registered channel to attach.
    pub channel_id: String,
    /// Access; `read_write` by default.
    #[serde(default)]
    pub access: Option<Access>,
    /// Visibility of what it writes; `all` by default.
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// Start muted.
    #[serde(default)]
    pub muted: Option<bool>,
    /// Binding metadata.
    #[serde(default)]
    pub metadata: Option<Map>,
}

/// `POST /rooms/{id}/channels`.
pub async fn attach_channel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<AttachBody>,
) -> ApiResult<Response> {
    let binding = state
        .kit
        .attach_channel(
            &room_id(id),
            &ChannelId::from(body.channel_id),
            AttachOptions {
                access: body.access.unwrap_or_default(),
                visibility: body.visibility.unwrap_or_default(),
                muted: body.muted.unwrap_or(false),
                metadata: body.metadata.unwrap_or_default(),
                ..AttachOptions::default()
            },
        )
        .await?;
    Ok(created(binding))
}

/// `GET /rooms/{id}/channels`.
pub async fn list_bindings(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let items = state.kit.list_bindings(&room_id(id)).await?;
    Ok(ok(Page::by_offset(items, &params)?))
}

/// Binding operations answer 404 for a channel that is not attached: the
/// URL names a resource that does not exist.
fn binding_error(e: RoomKitError) -> ApiError {
    let not_attached = matches!(e, RoomKitError::ChannelNotAttached { .. });
    let mut api = ApiError::from(e);
    if not_attached {
        api.status = StatusCode::NOT_FOUND;
    }
    api
}

/// Body of `PATCH /rooms/{id}/channels/{cid}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBindingBody {
    /// New access.
    #[serde(default)]
    pub access: Option<Access>,
    /// New visibility.
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// Replace the metadata.
    #[serde(default)]
    pub metadata: Option<Map>,
}

/// `PATCH /rooms/{id}/channels/{cid}`.
pub async fn update_binding(
    State(state): State<AppState>,
    Path((id, cid)): Path<(String, String)>,
    StrictJson(body): StrictJson<UpdateBindingBody>,
) -> ApiResult<Response> {
    let binding = state
        .kit
        .update_binding(
            &room_id(id),
            &ChannelId::from(cid),
            BindingUpdate {
                access: body.access,
                visibility: body.visibility,
                metadata: body.metadata,
                ..BindingUpdate::default()
            },
        )
        .await
        .map_err(binding_error)?;
    Ok(ok(binding))
}

/// `POST /rooms/{id}/channels/{cid}/mute`.
pub async fn mute(
    State(state): State<AppState>,
    Path((id, cid)): Path<(String, String)>,
) -> ApiResult<Response> {
    let b = state
        .kit
        .mute_channel(&room_id(id), &ChannelId::from(cid))
        .await
        .map_err(binding_error)?;
    Ok(ok(b))
}

/// `POST /rooms/{id}/channels/{cid}/unmute`.
pub async fn unmute(
    State(state): State<AppState>,
    Path((id, cid)): Path<(String, String)>,
) -> ApiResult<Response> {
    let b = state
        .kit
        .unmute_channel(&room_id(id), &ChannelId::from(cid))
        .await
        .map_err(binding_error)?;
    Ok(ok(b))
}

/// `DELETE /rooms/{id}/channels/{cid}`.
pub async fn detach_channel(
    State(state): State<AppState>,
    Path((id, cid)): Path<(String, String)>,
) -> ApiResult<Response> {
    state
        .kit
        .detach_channel(&room_id(id), &ChannelId::from(cid))
        .await
        .map_err(binding_error)?;
    Ok(no_content())
}

// ---- events

/// Body of `POST /rooms/{id}/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendEventBody {
    /// Source channel (attached to the room, or `system`).
    pub channel_id: String,
    /// Content.
    pub content: EventContent,
    /// Event type; derived from the content when absent.
    #[serde(default, rename = "type")]
    pub event_type: Option<EventType>,
    /// Sender address (recorded on the participant).
    #[serde(default)]
    pub sender_id: Option<String>,
    /// Participant to attribute the event to.
    #[serde(default)]
    pub participant_id: Option<String>,
    /// Duplicate-prevention key, per room.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Correlation reference.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Event metadata.
    #[serde(default)]
    pub metadata: Option<Map>,
    /// Intelligence channels asked to act.
    #[serde(default)]
    pub addressed_to: Option<Vec<ChannelId>>,
    /// Narrower visibility than the source binding's.
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// Provider-specific data, kept as given.
    #[serde(default)]
    pub channel_data: Option<Map>,
}

/// `POST /rooms/{id}/events`: 200 with the pipeline's result, also when
/// it blocked the event.
pub async fn send_event(
    State(state): State<AppState>,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<SendEventBody>,
) -> ApiResult<Response> {
    if body.channel_id.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "invalid field `channel_id`: must not be empty",
        ));
    }
    let result = state
        .kit
        .send_event(SendEvent {
            room_id: room_id(id),
            channel_id: ChannelId::from(body.channel_id),
            content: Some(body.content),
            event_type: body.event_type,
            sender_id: body.sender_id,
            participant_id: body.participant_id.map(ParticipantId::from),
            idempotency_key: body.idempotency_key,
            correlation_id: body.correlation_id,
            metadata: body.metadata.unwrap_or_default(),
            addressed_to: body.addressed_to,
            visibility: body.visibility,
            channel_data: body.channel_data.unwrap_or_default(),
        })
        .await?;
    Ok(ok(result))
}

/// `GET /rooms/{id}/timeline?after_index=&limit=&visibility=&cursor=`.
pub async fn timeline(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let limit = params.limit()?;
    let mut after_index = params.u64("after_index")?;
    if let Some(c) = params.cursor('i')? {
        let last: u64 = c.parse().map_err(|_| {
            ApiError::bad_request("invalid_cursor", "query parameter `cursor` is not valid")
        })?;
        after_index = Some(after_index.map_or(last, |a| a.max(last)));
    }
    let visible_to = params.text("visibility").map(ChannelId::from);
    let mut events = state
        .kit
        .timeline(
            &room_id(id),
            TimelineQuery {
                after_index,
                limit: Some(limit + 1),
                visible_to,
            },
        )
        .await
        .map_err(|e| match e {
            RoomKitError::ChannelNotRegistered(c) => ApiError::not_found(
                "channel_not_found",
                format!("query parameter `visibility`: channel {c} is not registered"),
            ),
            other => other.into(),
        })?;
    let next_cursor = if events.len() > limit {
        events.truncate(limit);
        events
            .last()
            .map(|e| Cursor::encode('i', &e.index.to_string()))
    } else {
        None
    };
    let items: Vec<&roomkit_core::model::RoomEvent> = events.iter().map(|e| &**e).collect();
    Ok(ok(Page { items, next_cursor }))
}

/// `GET /rooms/{id}/events/{eid}`.
pub async fn get_event(
    State(state): State<AppState>,
    Path((id, eid)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = room_id(id);
    // An unknown room is reported as such, not as a missing event.
    state.kit.get_room(&id).await?;
    let event = state.kit.get_event(&id, &EventId::from(eid)).await?;
    Ok(ok(&*event))
}

// ---- participants

/// Body of `POST /rooms/{id}/participants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddParticipantBody {
    /// Id; generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Role; `member` by default.
    #[serde(default)]
    pub role: Option<ParticipantRole>,
    /// Primary channel.
    #[serde(default)]
    pub channel_id: Option<String>,
    /// Address on that channel.
    #[serde(default)]
    pub address: Option<String>,
    /// Integrator data.
    #[serde(default)]
    pub metadata: Option<Map>,
}

/// `POST /rooms/{id}/participants`.
pub async fn add_participant(
    State(state): State<AppState>,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<AddParticipantBody>,
) -> ApiResult<Response> {
    if body.id.as_deref().is_some_and(|i| i.trim().is_empty()) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "invalid field `id`: must not be empty",
        ));
    }
    let p = state
        .kit
        .add_participant(
            &room_id(id),
            AddParticipant {
                id: body.id.map(ParticipantId::from),
                display_name: body.display_name,
                role: body.role.unwrap_or_default(),
                channel_id: body.channel_id.map(ChannelId::from),
                address: body.address,
                metadata: body.metadata.unwrap_or_default(),
            },
        )
        .await?;
    Ok(created(p))
}

/// `GET /rooms/{id}/participants`.
pub async fn list_participants(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let items = state.kit.list_participants(&room_id(id)).await?;
    Ok(ok(Page::by_offset(items, &params)?))
}

/// `DELETE /rooms/{id}/participants/{pid}`: marks it `left`.
pub async fn remove_participant(
    State(state): State<AppState>,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = room_id(id);
    state.kit.get_room(&id).await?;
    state
        .kit
        .remove_participant(&id, &ParticipantId::from(pid))
        .await?;
    Ok(no_content())
}

/// Body of `POST /rooms/{id}/participants/{pid}/resolve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// The identity the participant is.
    pub identity_id: String,
}

/// `POST /rooms/{id}/participants/{pid}/resolve`.
pub async fn resolve_participant(
    State(state): State<AppState>,
    scope: Scope,
    Path((id, pid)): Path<(String, String)>,
    StrictJson(body): StrictJson<ResolveBody>,
) -> ApiResult<Response> {
    if scope.organization().is_some() {
        scoped_identity(&state, &scope, &IdentityId::from(body.identity_id.clone())).await?;
    }
    let p = state
        .kit
        .resolve_participant(
            &room_id(id),
            &ParticipantId::from(pid),
            &IdentityId::from(body.identity_id),
        )
        .await?;
    Ok(ok(p))
}

// ---- tasks and observations

/// `GET /rooms/{id}/tasks?status=`.
pub async fn list_tasks(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let query = TaskQuery {
        status: params.parsed::<TaskStatus>("status")?,
    };
    let items = state.kit.list_tasks(&room_id(id), &query).await?;
    Ok(ok(Page::by_offset(items, &params)?))
}

/// Body of `PATCH /tasks/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTaskBody {
    /// New status.
    #[serde(default)]
    pub status: Option<TaskStatus>,
    /// New title.
    #[serde(default, deserialize_with = "nullable::deserialize")]
    pub title: Option<Option<String>>,
    /// New description.
    #[serde(default, deserialize_with = "nullable::deserialize")]
    pub description: Option<Option<String>>,
    /// New assignee.
    #[serde(default, deserialize_with = "nullable::deserialize")]
    pub assigned_to: Option<Option<String>>,
    /// Replace the payload.
    #[serde(default)]
    pub data: Option<Map>,
    /// Replace the metadata.
    #[serde(default)]
    pub metadata: Option<Map>,
}

/// `PATCH /tasks/{id}`.
pub async fn update_task(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<UpdateTaskBody>,
) -> ApiResult<Response> {
    let id = TaskId::from(id);
    let mut task = state.kit.get_task(&id).await?;
    match scope.check_room(&state.kit, &task.room_id).await {
        Ok(()) => {}
        // A task of another organization's room does not exist for this key.
        Err(e) if e.code == "room_not_found" => {
            return Err(RoomKitError::NotFound {
                kind: "task",
                id: id.to_string(),
            }
            .into());
        }
        Err(e) => return Err(e),
    }
    if let Some(s) = body.status {
        task.status = s;
    }
    if let Some(v) = body.title {
        task.title = v;
    }
    if let Some(v) = body.description {
        task.description = v;
    }
    if let Some(v) = body.assigned_to {
        task.assigned_to = v;
    }
    if let Some(v) = body.data {
        task.data = v;
    }
    if let Some(v) = body.metadata {
        task.metadata = v;
    }
    Ok(ok(state.kit.update_task(task).await?))
}

/// `GET /rooms/{id}/observations`.
pub async fn list_observations(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let items = state.kit.list_observations(&room_id(id)).await?;
    Ok(ok(Page::by_offset(items, &params)?))
}

// ---- identities

/// Body of `POST /identities`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentityBody {
    /// Id; generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Tenant.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Addresses per channel type.
    #[serde(default)]
    pub channel_addresses: Option<BTreeMap<ChannelType, Vec<String>>>,
    /// External reference.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Integrator data.
    #[serde(default)]
    pub metadata: Option<Map>,
}

/// `POST /identities`.
pub async fn create_identity(
    State(state): State<AppState>,
    scope: Scope,
    StrictJson(body): StrictJson<CreateIdentityBody>,
) -> ApiResult<Response> {
    let identity = state
        .kit
        .create_identity(Identity {
            id: IdentityId::from(body.id.unwrap_or_default()),
            organization_id: scope.owner(body.organization_id)?,
            display_name: body.display_name,
            channel_addresses: body.channel_addresses.unwrap_or_default(),
            external_id: body.external_id,
            metadata: body.metadata.unwrap_or_default(),
        })
        .await?;
    Ok(created(identity))
}

/// `GET /identities/resolve?channel=&address=[&organization_id=]`.
pub async fn resolve_identity(
    State(state): State<AppState>,
    scope: Scope,
    params: Params,
) -> ApiResult<Response> {
    let channel: ChannelType = params.required("channel")?.parse().map_err(|e| {
        ApiError::bad_request("invalid_query", format!("query parameter `channel`: {e}"))
    })?;
    let address = params.required("address")?;
    let requested = params.text("organization_id");
    if let Some(org) = scope.organization()
        && requested.is_some_and(|r| r != org)
    {
        // Resolution never leaves the key's organization.
        return Err(RoomKitError::NotFound {
            kind: "identity",
            id: format!("{channel}:{address}"),
        }
        .into());
    }
    let identity = state
        .kit
        .resolve_identity(&channel, address, scope.organization().or(requested))
        .await?;
    Ok(ok(identity))
}

/// `GET /identities/{id}`.
pub async fn get_identity(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(ok(
        scoped_identity(&state, &scope, &IdentityId::from(id)).await?
    ))
}

/// Reads an identity visible in `scope`; one of another organization is
/// reported exactly like one that does not exist.
async fn scoped_identity(state: &AppState, scope: &Scope, id: &IdentityId) -> ApiResult<Identity> {
    let identity = state.kit.get_identity(id).await?;
    if scope.allows(identity.organization_id.as_deref()) {
        Ok(identity)
    } else {
        Err(RoomKitError::NotFound {
            kind: "identity",
            id: id.to_string(),
        }
        .into())
    }
}

/// Body of `PATCH /identities/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateIdentityBody {
    /// New display name.
    #[serde(default, deserialize_with = "nullable::deserialize")]
    pub display_name: Option<Option<String>>,
    /// Replace the addresses.
    #[serde(default)]
    pub channel_addresses: Option<BTreeMap<ChannelType, Vec<String>>>,
    /// New external reference.
    #[serde(default, deserialize_with = "nullable::deserialize")]
    pub external_id: Option<Option<String>>,
    /// Replace the metadata.
    #[serde(default)]
    pub metadata: Option<Map>,
}

/// `PATCH /identities/{id}`.
pub async fn update_identity(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<UpdateIdentityBody>,
) -> ApiResult<Response> {
    let id = IdentityId::from(id);
    scoped_identity(&state, &scope, &id).await?;
    let identity = state
        .kit
        .update_identity(
            &id,
            IdentityUpdate {
                display_name: body.display_name,
                channel_addresses: body.channel_addresses,
                external_id: body.external_id,
                metadata: body.metadata,
            },
        )
        .await?;
    Ok(ok(identity))
}

// ---- fallbacks

/// Unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}

/// Known paths with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take this method",
    )
}
