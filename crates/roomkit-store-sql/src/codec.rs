//! How model values become rows and back: JSON documents with full
//! nanosecond timestamps, enum names, and integer conversions.
//!
//! The model's JSON form writes timestamps with millisecond precision (the
//! API's format). A store must hand back what it was given, so documents
//! written here carry every timestamp with nanoseconds; the model's reader
//! accepts any RFC 3339 form.

use chrono::SecondsFormat;
use roomkit_core::StoreError;
use roomkit_model::time::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::corrupt;

/// Nanoseconds since the epoch (saturating outside 1677..2262).
pub(crate) fn nanos(ts: &Timestamp) -> i64 {
    ts.timestamp_nanos_opt().unwrap_or(if ts.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// The timestamp of a nanosecond count.
pub(crate) fn from_nanos(ns: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_nanos(ns)
}

/// A count or index as a database integer.
pub(crate) fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| {
        StoreError::Backend(format!("value {v} exceeds the range of a database integer"))
    })
}

/// A database integer as a count or index.
pub(crate) fn to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt("counter", format!("negative value {v}")))
}

/// A limit as a database integer; `None` means no limit.
pub(crate) fn limit(v: Option<usize>) -> i64 {
    v.map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// The JSON name of a unit enum variant (`"active"`, `"blocked"`, ...).
pub(crate) fn name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn precise(ts: &Timestamp) -> Value {
    Value::String(ts.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

/// Replaces a timestamp field (found by path) with its nanosecond form.
fn set_ts(doc: &mut Value, path: &[&str], ts: Option<&Timestamp>) {
    let Some(ts) = ts else { return };
    let mut at = doc;
    for key in path {
        match at.get_mut(*key) {
            Some(next) => at = next,
            None => return,
        }
    }
    *at = precise(ts);
}

fn write(doc: Value) -> Result<String, StoreError> {
    Ok(doc.to_string())
}

fn to_doc<T: Serialize>(what: &str, v: &T) -> Result<Value, StoreError> {
    serde_json::to_value(v)
        .map_err(|e| StoreError::Backend(format!("{what} does not serialise: {e}")))
}

/// Decodes a stored document.
pub(crate) fn read<T: DeserializeOwned>(what: &str, data: &str) -> Result<T, StoreError> {
    serde_json::from_str(data).map_err(|e| corrupt(what, e))
}

/// The stored form of a room (its counters are columns, see `store`).
pub(crate) fn room(r: &roomkit_model::Room) -> Result<String, StoreError> {
    let mut d = to_doc("room", r)?;
    set_ts(&mut d, &["created_at"], Some(&r.created_at));
    set_ts(&mut d, &["updated_at"], Some(&r.updated_at));
    set_ts(&mut d, &["closed_at"], r.closed_at.as_ref());
    set_ts(
        &mut d,
        &["timers", "last_activity_at"],
        r.timers.last_activity_at.as_ref(),
    );
    set_ts(
        &mut d,
        &["timers", "paused_at"],
        r.timers.paused_at.as_ref(),
    );
    write(d)
}

/// The stored form of an event.
pub(crate) fn event(e: &roomkit_model::RoomEvent) -> Result<String, StoreError> {
    let mut d = to_doc("event", e)?;
    set_ts(&mut d, &["created_at"], Some(&e.created_at));
    for (channel, result) in &e.delivery_results {
        set_ts(
            &mut d,
            &["delivery_results", channel.as_str(), "retry_after"],
            result.retry_after.as_ref(),
        );
    }
    write(d)
}

/// The stored form of a binding.
pub(crate) fn binding(b: &roomkit_model::ChannelBinding) -> Result<String, StoreError> {
    let mut d = to_doc("binding", b)?;
    set_ts(&mut d, &["attached_at"], Some(&b.attached_at));
    write(d)
}

/// The stored form of a participant.
pub(crate) fn participant(p: &roomkit_model::Participant) -> Result<String, StoreError> {
    let mut d = to_doc("participant", p)?;
    set_ts(&mut d, &["joined_at"], Some(&p.joined_at));
    set_ts(&mut d, &["resolved_at"], p.resolved_at.as_ref());
    write(d)
}

/// The stored form of an identity.
pub(crate) fn identity(i: &roomkit_model::Identity) -> Result<String, StoreError> {
    write(to_doc("identity", i)?)
}

/// The stored form of a task.
pub(crate) fn task(t: &roomkit_model::Task) -> Result<String, StoreError> {
    let mut d = to_doc("task", t)?;
    set_ts(&mut d, &["created_at"], Some(&t.created_at));
    write(d)
}

/// The stored form of an observation.
pub(crate) fn observation(o: &roomkit_model::Observation) -> Result<String, StoreError> {
    let mut d = to_doc("observation", o)?;
    set_ts(&mut d, &["created_at"], Some(&o.created_at));
    write(d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use roomkit_model::{Room, RoomId};

    #[test]
    fn room_round_trip_keeps_nanoseconds() {
        let t = from_nanos(1_700_000_000_123_456_789);
        let mut r = Room::new(RoomId::from("r1"), t);
        r.timers.last_activity_at = Some(t);
        let back: Room = read("room", &room(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(nanos(&back.created_at), 1_700_000_000_123_456_789);
    }
}
