//! Protocol traces (RFC §5.14, §15.6): a transport's record of one
//! protocol message (a SIP INVITE, a 200 OK, a BYE), routed to the
//! `on_protocol_trace` hooks of the room its call is in.
//!
//! A call's first messages cross the network before the call has a room
//! (the INVITE is answered before the voice session joins one), so traces
//! of a call without a room yet are kept, keyed by the transport's call
//! id, and replayed once the session's room is known. What is kept is
//! bounded: [`MAX_PENDING_PER_CALL`] traces per call, [`MAX_PENDING_CALLS`]
//! calls, and a call's traces are dropped when it never gets a room within
//! [`PENDING_TTL`] (a call refused or cancelled before it was answered).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

/// Traces kept for one call that has no room yet.
pub const MAX_PENDING_PER_CALL: usize = 32;
/// Calls whose traces are kept at once.
pub const MAX_PENDING_CALLS: usize = 1024;
/// How long traces of a call without a room are kept.
pub const PENDING_TTL: Duration = Duration::from_secs(120);

/// One protocol message, as a transport saw it (RFC §5.14).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProtocolTrace {
    /// The channel that emitted it.
    pub channel_id: String,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// `sip`, `rtp`, ...
    pub protocol: &'static str,
    /// One line for people (`INVITE from +1555... to +1666...`).
    pub summary: String,
    /// The whole message as it crossed the network.
    pub raw: Option<String>,
    /// Protocol details (`call_id`, `peer`, ...).
    pub metadata: Map<String, Value>,
    /// The voice session, once known.
    pub session_id: Option<String>,
    /// The room, once known.
    pub room_id: Option<String>,
    /// When it was emitted.
    pub timestamp: DateTime<Utc>,
}

impl ProtocolTrace {
    /// A trace of a message in (`inbound`) or out, stamped now.
    pub fn new(
        channel_id: &str,
        inbound: bool,
        protocol: &'static str,
        summary: String,
        raw: Option<String>,
    ) -> Self {
        Self {
            channel_id: channel_id.to_owned(),
            direction: if inbound { "inbound" } else { "outbound" },
            protocol,
            summary,
            raw,
            metadata: Map::new(),
            session_id: None,
            room_id: None,
            timestamp: Utc::now(),
        }
    }
}

/// Traces waiting for their call's room.
#[derive(Debug, Default)]
pub(crate) struct PendingTraces {
    calls: HashMap<String, (Instant, Vec<ProtocolTrace>)>,
}

impl PendingTraces {
    /// Keeps a trace of `call_id` (dropped when over the bounds).
    pub fn keep(&mut self, call_id: &str, trace: ProtocolTrace) {
        let now = Instant::now();
        self.calls
            .retain(|_, (since, _)| now.duration_since(*since) < PENDING_TTL);
        if !self.calls.contains_key(call_id) && self.calls.len() >= MAX_PENDING_CALLS {
            return;
        }
        let (_, traces) = self
            .calls
            .entry(call_id.to_owned())
            .or_insert_with(|| (now, Vec::new()));
        if traces.len() < MAX_PENDING_PER_CALL {
            traces.push(trace);
        }
    }

    /// Takes a call's kept traces.
    pub fn take(&mut self, call_id: &str) -> Vec<ProtocolTrace> {
        self.calls
            .remove(call_id)
            .map(|(_, t)| t)
            .unwrap_or_default()
    }
}
