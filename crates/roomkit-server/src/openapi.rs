//! The OpenAPI 3.1 document served at `/openapi.json`.
//!
//! It is generated from [`ROUTES`], the table of every endpoint with its
//! body and answers; a test drives the real router with each entry, so the
//! document cannot name an endpoint the server does not serve.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One documented endpoint.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    /// HTTP method, lower case.
    pub method: &'static str,
    /// Path template, `{name}` for parameters.
    pub path: &'static str,
    /// Operation id.
    pub operation: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Schema name of the request body, if any.
    pub body: Option<&'static str>,
    /// Success status and schema name of its body (`None` for no body).
    pub success: (u16, Option<&'static str>),
    /// Query parameters.
    pub query: &'static [(&'static str, &'static str)],
    /// Error statuses it can answer besides 401/429.
    pub errors: &'static [u16],
    /// Whether the bearer key is required (when one is configured).
    pub authenticated: bool,
}

const PAGE: &[(&str, &str)] = &[
    (
        "limit",
        "Page size: default 50, at most 500 (larger is clamped), at least 1.",
    ),
    (
        "cursor",
        "Opaque cursor from the previous page's `next_cursor`.",
    ),
];

macro_rules! route {
    ($m:literal $p:literal $op:literal $s:literal, body: $b:expr, ok: $st:literal $r:expr, query: $q:expr, errors: $e:expr) => {
        RouteDoc {
            method: $m,
            path: $p,
            operation: $op,
            summary: $s,
            body: $b,
            success: ($st, $r),
            query: $q,
            errors: $e,
            authenticated: true,
        }
    };
}

/// Every endpoint of the server.
pub const ROUTES: &[RouteDoc] = &[
    RouteDoc {
        method: "get",
        path: "/healthz",
        operation: "healthz",
        summary: "Liveness check; never needs the key.",
        body: None,
        success: (200, Some("Health")),
        query: &[],
        errors: &[],
        authenticated: false,
    },
    route!("get" "/metrics" "metrics" "Prometheus text exposition of the server's counters.", body: None, ok: 200 Some("Metrics"), query: &[], errors: &[403]),
    route!("get" "/channels" "list_channels" "Registered channels.", body: None, ok: 200 Some("ChannelPage"), query: PAGE, errors: &[400]),
    route!("post" "/rooms" "create_room" "Create a room.", body: Some("CreateRoom"), ok: 201 Some("Room"), query: &[], errors: &[400, 403, 409, 413, 503]),
    route!("get" "/rooms" "list_rooms" "List rooms in id order.", body: None, ok: 200 Some("RoomPage"),
        query: &[("organization_id", "Only rooms of this organization."), ("status", "Only rooms in this status."), ("limit", "Page size."), ("cursor", "Page cursor.")], errors: &[400, 503]),
    route!("get" "/rooms/{id}" "get_room" "Read a room.", body: None, ok: 200 Some("Room"), query: &[], errors: &[404, 503]),
    route!("patch" "/rooms/{id}" "update_room" "Change status, metadata or timers. Status moves: active<->paused, any->closed, closed->active, any->archived (terminal).", body: Some("UpdateRoom"), ok: 200 Some("Room"), query: &[], errors: &[400, 404, 409, 413, 503]),
    route!("delete" "/rooms/{id}" "delete_room" "Delete a room with its timeline and bindings.", body: None, ok: 204 None, query: &[], errors: &[404, 503]),
    route!("post" "/rooms/{id}/channels" "attach_channel" "Attach a registered channel.", body: Some("AttachChannel"), ok: 201 Some("ChannelBinding"), query: &[], errors: &[400, 404, 409, 413, 422, 503]),
    route!("get" "/rooms/{id}/channels" "list_bindings" "The room's bindings in attach order.", body: None, ok: 200 Some("BindingPage"), query: PAGE, errors: &[400, 404, 503]),
    route!("patch" "/rooms/{id}/channels/{cid}" "update_binding" "Change a binding's access, visibility or metadata.", body: Some("UpdateBinding"), ok: 200 Some("ChannelBinding"), query: &[], errors: &[400, 404, 413, 503]),
    route!("delete" "/rooms/{id}/channels/{cid}" "detach_channel" "Detach a channel.", body: None, ok: 204 None, query: &[], errors: &[404, 503]),
    route!("post" "/rooms/{id}/channels/{cid}/mute" "mute_channel" "Mute a channel in the room.", body: None, ok: 200 Some("ChannelBinding"), query: &[], errors: &[404, 503]),
    route!("post" "/rooms/{id}/channels/{cid}/unmute" "unmute_channel" "Unmute a channel in the room.", body: None, ok: 200 Some("ChannelBinding"), query: &[], errors: &[404, 503]),
    route!("post" "/rooms/{id}/events" "send_event" "Inject an event through the inbound pipeline. A refusal or block is a 200 with `blocked: true`.", body: Some("SendEvent"), ok: 200 Some("InboundResult"), query: &[], errors: &[400, 404, 413, 422, 503]),
    route!("get" "/rooms/{id}/timeline" "timeline" "The room's events in index order.", body: None, ok: 200 Some("EventPage"),
        query: &[("after_index", "Only events after this index."), ("visibility", "Only what this channel may see."), ("limit", "Page size."), ("cursor", "Page cursor.")], errors: &[400, 404, 503]),
    route!("get" "/rooms/{id}/events/{eid}" "get_event" "Read one event.", body: None, ok: 200 Some("RoomEvent"), query: &[], errors: &[404, 503]),
    route!("post" "/rooms/{id}/participants" "add_participant" "Add a participant.", body: Some("AddParticipant"), ok: 201 Some("Participant"), query: &[], errors: &[400, 404, 409, 413, 503]),
    route!("get" "/rooms/{id}/participants" "list_participants" "The room's participants in join order.", body: None, ok: 200 Some("ParticipantPage"), query: PAGE, errors: &[400, 404, 503]),
    route!("delete" "/rooms/{id}/participants/{pid}" "remove_participant" "Mark a participant as left (it stays in history).", body: None, ok: 204 None, query: &[], errors: &[404, 503]),
    route!("post" "/rooms/{id}/participants/{pid}/resolve" "resolve_participant" "Resolve a participant to an identity.", body: Some("ResolveParticipant"), ok: 200 Some("Participant"), query: &[], errors: &[400, 404, 413, 503]),
    route!("get" "/rooms/{id}/tasks" "list_tasks" "The room's tasks.", body: None, ok: 200 Some("TaskPage"),
        query: &[("status", "Only tasks in this status."), ("limit", "Page size."), ("cursor", "Page cursor.")], errors: &[400, 404, 503]),
    route!("patch" "/tasks/{id}" "update_task" "Change a task.", body: Some("UpdateTask"), ok: 200 Some("Task"), query: &[], errors: &[400, 404, 413, 503]),
    route!("get" "/rooms/{id}/observations" "list_observations" "The room's observations.", body: None, ok: 200 Some("ObservationPage"), query: PAGE, errors: &[400, 404, 503]),
    route!("post" "/identities" "create_identity" "Create an identity.", body: Some("CreateIdentity"), ok: 201 Some("Identity"), query: &[], errors: &[400, 403, 409, 413, 503]),
    route!("get" "/identities/resolve" "resolve_identity" "Find the identity that owns an address; 404 when none does.", body: None, ok: 200 Some("Identity"),
        query: &[("channel", "Channel type of the address (required)."), ("address", "The address (required)."), ("organization_id", "Organization scope.")], errors: &[400, 404, 503]),
    route!("get" "/identities/{id}" "get_identity" "Read an identity.", body: None, ok: 200 Some("Identity"), query: &[], errors: &[404, 503]),
    route!("patch" "/identities/{id}" "update_identity" "Change an identity.", body: Some("UpdateIdentity"), ok: 200 Some("Identity"), query: &[], errors: &[400, 404, 409, 413, 503]),
    RouteDoc {
        method: "post",
        path: "/webhooks/{channel_type}/{provider}",
        operation: "inbound_webhook",
        summary: "Provider inbound webhook (the provider's own format, e.g. Twilio form posts), verified by the provider's signature over the public URL (or the request URL). Each message runs through the inbound pipeline with the provider's message id as idempotency key; the answer is what the provider expects (Twilio: empty TwiML). 403 for a bad or missing signature (nothing is stored), 404 for a channel type or provider no configured channel has, 429 over the configured sender limits (nothing is stored).",
        body: None,
        success: (200, None),
        query: &[(
            "channel_id",
            "Which channel, when several share this channel type and provider.",
        )],
        errors: &[400, 403, 404, 413, 429, 503],
        authenticated: false,
    },
    RouteDoc {
        method: "post",
        path: "/webhooks/{channel_type}/{provider}/status",
        operation: "status_webhook",
        summary: "Provider delivery-status callback, verified like the inbound webhook. Updates the delivery result of the event whose delivery the provider message id belongs to; an unknown id is logged and answered 200.",
        body: None,
        success: (200, None),
        query: &[(
            "channel_id",
            "Which channel, when several share this channel type and provider.",
        )],
        errors: &[400, 403, 404, 413, 503],
        authenticated: false,
    },
    RouteDoc {
        method: "get",
        path: "/voice/{provider}/media",
        operation: "voice_media",
        summary: "Media socket of a voice call (HTTP 101 upgrade) in the transport's own protocol (Twilio Media Streams for `twilio`). The upgrade must carry the provider's signature (Twilio: X-Twilio-Signature over the ws(s) URL; `browser`: the API key as `?token=` or a bearer header); 403 `invalid_signature` otherwise, 404 when no voice channel uses this transport, 400 `websocket_upgrade_required` for a signed request that is not an upgrade.",
        body: None,
        success: (101, None),
        query: &[(
            "channel_id",
            "Which voice channel, when several use this transport.",
        )],
        errors: &[400, 403, 404],
        authenticated: false,
    },
    route!("post" "/voice/calls" "create_call" "Place an outbound call through a voice channel (Twilio: the Calls API). The answered call joins `room_id`, or a room created for it (with the voice channel attached); the provider is told to fetch the channel's voice webhook with the room in its URL. 404 for an unknown channel or room, 422 for a channel that cannot place calls or lacks the settings (`outbound_not_configured`), 502 `provider_error` when the provider refuses or cannot be reached (the room created for the call is removed again).", body: Some("CreateCall"), ok: 201 Some("CallCreated"), query: &[], errors: &[400, 403, 404, 413, 422, 502, 503]),
    route!("post" "/voice/calls/{call_sid}/transfer" "transfer_call" "Hand a running call to another number or `sip:` address (a blind transfer; SIP calls send REFER and end when the target answers). 202 once asked; 404 for an unknown channel or call, 422 for a transport that cannot transfer.", body: Some("TransferCall"), ok: 202 Some("TransferAsked"), query: &[], errors: &[400, 403, 404, 413, 422, 502]),
    route!("get" "/ws/{room_id}" "websocket" "WebSocket connection to a room (HTTP 101 upgrade). See the WebSocket protocol in the API guide.", body: None, ok: 101 None,
        query: &[("channel_id", "The attached websocket channel (required)."), ("participant_id", "Participant the connection sends as."), ("after_index", "Replay what came after this index, then go live."), ("token", "The API key, for clients that cannot set headers.")], errors: &[400]),
];

fn s(kind: &str) -> Value {
    json!({"type": kind})
}

fn nullable(kind: &str) -> Value {
    json!({"type": [kind, "null"]})
}

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn object(props: Value, required: &[&str], strict: bool) -> Value {
    let mut o = json!({"type": "object", "properties": props, "required": required});
    if strict {
        o["additionalProperties"] = json!(false);
    }
    o
}

fn page(item: &str) -> Value {
    object(
        json!({"items": {"type": "array", "items": r(item)}, "next_cursor": nullable("string")}),
        &["items", "next_cursor"],
        false,
    )
}

fn enumeration(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

fn schemas() -> Value {
    let timers_in = object(
        json!({"inactive_after_seconds": nullable("integer"), "closed_after_seconds": nullable("integer")}),
        &[],
        true,
    );
    let room_status = enumeration(&["active", "paused", "closed", "archived"]);
    let access = enumeration(&["read_write", "read_only", "write_only", "none"]);
    let visibility = json!({"type": "string", "description": "all | none | transport | intelligence | comma-separated channel ids"});
    json!({
        "Error": object(json!({"error": object(json!({"code": s("string"), "message": s("string")}), &["code", "message"], false)}), &["error"], false),
        "Health": object(json!({"status": enumeration(&["ok"])}), &["status"], false),
        "Metrics": {"type": "string", "description": "Prometheus text format 0.0.4."},
        "Map": {"type": "object", "additionalProperties": true},
        "RoomStatus": room_status,
        "Access": access,
        "Visibility": visibility,
        "RoomTimers": object(json!({
            "inactive_after_seconds": nullable("integer"), "closed_after_seconds": nullable("integer"),
            "last_activity_at": nullable("string"), "paused_at": nullable("string")}), &[], false),
        "Room": object(json!({
            "id": s("string"), "organization_id": nullable("string"), "status": r("RoomStatus"),
            "created_at": s("string"), "updated_at": s("string"), "closed_at": nullable("string"),
            "timers": r("RoomTimers"), "metadata": r("Map"), "event_count": s("integer"),
            "latest_index": nullable("integer")}),
            &["id", "organization_id", "status", "created_at", "updated_at", "closed_at", "timers", "metadata", "event_count", "latest_index"], false),
        "CreateRoom": object(json!({"id": s("string"), "organization_id": s("string"), "metadata": r("Map"), "timers": timers_in.clone()}), &[], true),
        "UpdateRoom": object(json!({"status": r("RoomStatus"), "metadata": r("Map"), "timers": timers_in}), &[], true),
        "Channel": object(json!({"id": s("string"), "type": s("string"), "category": enumeration(&["transport", "intelligence"]),
            "direction": enumeration(&["inbound", "outbound", "bidirectional"]), "capabilities": r("Map")}),
            &["id", "type", "category", "direction", "capabilities"], false),
        "ChannelBinding": object(json!({
            "channel_id": s("string"), "room_id": s("string"), "channel_type": s("string"),
            "category": s("string"), "direction": s("string"), "access": r("Access"), "muted": s("boolean"),
            "output_muted": s("boolean"), "visibility": r("Visibility"), "participant_id": nullable("string"),
            "last_read_index": nullable("integer"), "attached_at": s("string"), "capabilities": r("Map"),
            "rate_limit": {"type": ["object", "null"]}, "retry_policy": {"type": ["object", "null"]}, "metadata": r("Map")}),
            &["channel_id", "room_id", "channel_type", "category", "direction", "access", "muted", "output_muted", "visibility", "participant_id", "last_read_index", "attached_at", "capabilities", "rate_limit", "retry_policy", "metadata"], false),
        "AttachChannel": object(json!({"channel_id": s("string"), "access": r("Access"), "visibility": r("Visibility"), "muted": s("boolean"), "metadata": r("Map")}), &["channel_id"], true),
        "UpdateBinding": object(json!({"access": r("Access"), "visibility": r("Visibility"), "metadata": r("Map")}), &[], true),
        "EventContent": {"type": "object", "required": ["type"], "properties": {"type": enumeration(&["text", "rich", "media", "location", "audio", "video", "composite", "system", "template", "edit", "delete"])},
            "description": "Tagged by `type`, e.g. {\"type\":\"text\",\"text\":\"hi\"}."},
        "RoomEvent": object(json!({
            "id": s("string"), "room_id": s("string"), "type": s("string"), "source": r("Map"), "content": r("EventContent"),
            "status": enumeration(&["pending", "delivered", "read", "failed", "blocked"]), "blocked_by": nullable("string"),
            "visibility": r("Visibility"), "addressed_to": {"type": ["array", "null"], "items": s("string")}, "index": s("integer"),
            "chain_depth": s("integer"), "parent_event_id": nullable("string"), "correlation_id": nullable("string"),
            "idempotency_key": nullable("string"), "created_at": s("string"), "metadata": r("Map"), "channel_data": r("Map"),
            "delivery_results": r("Map")}),
            &["id", "room_id", "type", "source", "content", "status", "blocked_by", "visibility", "addressed_to", "index", "chain_depth", "parent_event_id", "correlation_id", "idempotency_key", "created_at", "metadata", "channel_data", "delivery_results"], false),
        "SendEvent": object(json!({
            "channel_id": s("string"), "content": r("EventContent"), "type": s("string"), "sender_id": s("string"),
            "participant_id": s("string"), "idempotency_key": s("string"), "correlation_id": s("string"), "metadata": r("Map"),
            "addressed_to": {"type": "array", "items": s("string")}, "visibility": r("Visibility"), "channel_data": r("Map")}),
            &["channel_id", "content"], true),
        "InboundResult": object(json!({
            "blocked": s("boolean"),
            "reason": {"type": ["string", "null"], "enum": ["room_closed", "duplicate", "not_author", "invalid_target", "process_timeout", "hook", "permission", "chain_depth", null]},
            "event": {"oneOf": [r("RoomEvent"), {"type": "null"}]}, "delivery_results": r("Map")}),
            &["blocked", "reason", "event", "delivery_results"], false),
        "Participant": object(json!({
            "id": s("string"), "room_id": s("string"), "channel_id": s("string"), "display_name": nullable("string"),
            "role": enumeration(&["owner", "agent", "member", "observer", "bot"]), "status": enumeration(&["active", "inactive", "left", "banned"]),
            "identification": enumeration(&["identified", "pending", "ambiguous", "unknown", "challenge_sent", "rejected"]),
            "identity_id": nullable("string"), "candidates": {"type": ["array", "null"]}, "connected_via": {"type": "array"},
            "external_id": nullable("string"), "resolved_at": nullable("string"), "resolved_by": nullable("string"),
            "joined_at": s("string"), "metadata": r("Map"), "address": nullable("string"), "channel_type": nullable("string")}),
            &["id", "room_id", "channel_id", "display_name", "role", "status", "identification", "identity_id", "candidates", "connected_via", "external_id", "resolved_at", "resolved_by", "joined_at", "metadata"], false),
        "AddParticipant": object(json!({"id": s("string"), "display_name": s("string"), "role": s("string"), "channel_id": s("string"), "address": s("string"), "metadata": r("Map")}), &[], true),
        "ResolveParticipant": object(json!({"identity_id": s("string")}), &["identity_id"], true),
        "Task": object(json!({"id": s("string"), "room_id": s("string"), "type": s("string"),
            "status": enumeration(&["pending", "in_progress", "completed", "failed", "cancelled"]), "title": nullable("string"),
            "description": nullable("string"), "data": r("Map"), "assigned_to": nullable("string"), "created_by": nullable("string"),
            "created_at": s("string"), "metadata": r("Map")}),
            &["id", "room_id", "type", "status", "title", "description", "data", "assigned_to", "created_by", "created_at", "metadata"], false),
        "UpdateTask": object(json!({"status": s("string"), "title": nullable("string"), "description": nullable("string"), "assigned_to": nullable("string"), "data": r("Map"), "metadata": r("Map")}), &[], true),
        "Observation": object(json!({"id": s("string"), "room_id": s("string"), "type": s("string"), "data": r("Map"),
            "source_channel_id": nullable("string"), "created_at": s("string"), "metadata": r("Map")}),
            &["id", "room_id", "type", "data", "source_channel_id", "created_at", "metadata"], false),
        "Identity": object(json!({"id": s("string"), "organization_id": nullable("string"), "display_name": nullable("string"),
            "channel_addresses": {"type": "object", "additionalProperties": {"type": "array", "items": s("string")}},
            "external_id": nullable("string"), "metadata": r("Map")}),
            &["id", "organization_id", "display_name", "channel_addresses", "external_id", "metadata"], false),
        "CreateIdentity": object(json!({"id": s("string"), "organization_id": s("string"), "display_name": s("string"),
            "channel_addresses": {"type": "object"}, "external_id": s("string"), "metadata": r("Map")}), &[], true),
        "UpdateIdentity": object(json!({"display_name": nullable("string"), "channel_addresses": {"type": "object"}, "external_id": nullable("string"), "metadata": r("Map")}), &[], true),
        "CreateCall": object(json!({"channel_id": s("string"), "to": {"type": "string", "description": "E.164 number, or a sip: or client: address"},
            "room_id": s("string"), "from": s("string"), "metadata": r("Map")}), &["channel_id", "to"], true),
        "CallCreated": object(json!({"call_sid": s("string"), "status": s("string"), "room_id": s("string"), "room_created": s("boolean"),
            "channel_id": s("string"), "to": s("string"), "from": s("string")}),
            &["call_sid", "status", "room_id", "room_created", "channel_id", "to", "from"], false),
        "TransferCall": object(json!({"channel_id": s("string"), "to": {"type": "string", "description": "E.164 number, or a sip: address"}}),
            &["channel_id", "to"], true),
        "TransferAsked": object(json!({"call_sid": s("string"), "to": s("string"), "status": s("string")}),
            &["call_sid", "to", "status"], false),
        "ChannelPage": page("Channel"),
        "RoomPage": page("Room"),
        "BindingPage": page("ChannelBinding"),
        "EventPage": page("RoomEvent"),
        "ParticipantPage": page("Participant"),
        "TaskPage": page("Task"),
        "ObservationPage": page("Observation"),
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching protocols",
        200 => "OK",
        201 => "Created",
        204 => "No content",
        400 => "Malformed JSON, an invalid field or parameter (the message names it)",
        401 => "Missing or wrong API key",
        403 => {
            "Bad or missing provider signature; or a tenant key naming another organization or calling an operator endpoint"
        }
        404 => "Unknown room, channel, event or other resource",
        409 => "Conflict: duplicate id or illegal status move",
        413 => "Body over the size limit",
        422 => {
            "Well-formed but refused (unregistered or unattached channel, a channel that cannot do this)"
        }
        429 => "Rate limited, or too many WebSocket connections for the key",
        502 => "The provider refused the request or could not be reached",
        503 => "Store unavailable, shutting down, or the server is at its connection limit",
        _ => "Error",
    }
}

/// Whether a path has a `{parameter}` segment (a segment that is not
/// UTF-8 once percent-decoded is a 400 `invalid_path`).
fn has_path_parameter(path: &str) -> bool {
    path.split('/').any(|seg| seg.starts_with('{'))
}

/// The error statuses a route can answer: its own list, plus 401 and 429
/// for the key and its rate limit, 400 `invalid_path` where the path has
/// parameters, and 503 `too_many_connections` for every route but
/// `/healthz` (the connection reserve answers it alone).
pub fn error_statuses(route: &RouteDoc) -> Vec<u16> {
    let mut errors: Vec<u16> = route.errors.to_vec();
    if route.authenticated {
        errors.extend([401, 429]);
    }
    if has_path_parameter(route.path) {
        errors.push(400);
    }
    if route.path != "/healthz" {
        errors.push(503);
    }
    errors.sort_unstable();
    errors.dedup();
    errors
}

/// The `error.code` values a route answers with `status`.
pub fn error_codes(route: &RouteDoc, status: u16) -> &'static [&'static str] {
    let webhook = route.path.starts_with("/webhooks/");
    let media = route.path == "/voice/{provider}/media";
    let ws = route.path == "/ws/{room_id}";
    match status {
        400 if ws => &[
            "websocket_upgrade_required",
            "invalid_query",
            "invalid_field",
            "invalid_path",
        ],
        400 if media => &[
            "websocket_upgrade_required",
            "invalid_request",
            "invalid_path",
        ],
        400 if webhook => &[
            "invalid_body",
            "malformed_webhook",
            "invalid_request",
            "invalid_path",
        ],
        400 => &[
            "malformed_json",
            "invalid_field",
            "invalid_query",
            "invalid_cursor",
            "invalid_path",
            "invalid_request",
        ],
        401 => &["unauthorized"],
        403 if webhook || media => &["invalid_signature"],
        403 => &["forbidden", "organization_forbidden"],
        404 if webhook => &["channel_not_found", "webhook_not_found"],
        404 if media => &["channel_not_found"],
        404 => &[
            "room_not_found",
            "event_not_found",
            "channel_not_attached",
            "channel_not_found",
            "participant_not_found",
            "identity_not_found",
            "task_not_found",
        ],
        409 => &[
            "room_exists",
            "channel_already_attached",
            "participant_exists",
            "identity_exists",
            "address_exists",
            "illegal_transition",
        ],
        413 => &["payload_too_large"],
        422 => &[
            "channel_not_registered",
            "channel_not_attached",
            "channel_rejected",
            "outbound_not_configured",
        ],
        429 if ws => &["rate_limited", "too_many_connections"],
        429 => &["rate_limited"],
        502 => &["provider_error"],
        503 => &[
            "store_unavailable",
            "lock_unavailable",
            "shutting_down",
            "too_many_connections",
        ],
        _ => &[],
    }
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for route in ROUTES {
        let mut responses = serde_json::Map::new();
        let (status, schema) = route.success;
        let mut ok = json!({"description": reason(status)});
        if let Some(name) = schema {
            let media = if name == "Metrics" {
                "text/plain"
            } else {
                "application/json"
            };
            ok["content"] = json!({media: {"schema": r(name)}});
        }
        responses.insert(status.to_string(), ok);
        for e in error_statuses(route) {
            let codes = error_codes(route, e);
            let listed = codes
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let description = if codes.is_empty() {
                reason(e).to_owned()
            } else {
                format!("{}. Codes: {listed}.", reason(e))
            };
            responses.insert(
                e.to_string(),
                json!({"description": description, "x-error-codes": codes, "content": {"application/json": {"schema": r("Error")}}}),
            );
        }
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(
                |name| json!({"name": name, "in": "path", "required": true, "schema": s("string")}),
            )
            .collect();
        for (name, description) in route.query {
            parameters.push(json!({"name": name, "in": "query", "required": false, "description": description, "schema": s("string")}));
        }
        let mut op = json!({
            "operationId": route.operation,
            "summary": route.summary,
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(body) = route.body {
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": r(body)}}});
        }
        if !route.authenticated {
            op["security"] = json!([]);
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "RoomKit server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST and WebSocket surface of RoomKit. Errors are {\"error\":{\"code\",\"message\"}}; lists are pages {\"items\",\"next_cursor\"}."
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}],
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    Json(document()).into_response()
}
