//! Every REST endpoint, its status codes and error shapes.

use serde_json::{Value, json};

use crate::Server;

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn health_channels_and_unknown_routes() {
    let s = Server::start().await;
    assert_eq!(s.ok("GET", "/healthz", None).await, json!({"status": "ok"}));
    let channels = s.ok("GET", "/channels", None).await;
    let items = channels["items"].as_array().unwrap();
    let ws = items.iter().find(|c| c["id"] == "ws").unwrap();
    assert_eq!(ws["type"], "websocket");
    assert_eq!(ws["category"], "transport");
    assert_eq!(ws["direction"], "bidirectional");
    assert_eq!(ws["capabilities"]["supports_typing"], true);
    let ai = items.iter().find(|c| c["id"] == "ai").unwrap();
    assert_eq!(ai["category"], "intelligence");
    assert_eq!(channels["next_cursor"], Value::Null);
    let (st, b) = s.call("GET", "/no/such/thing", None).await;
    assert_error(st, &b, 404, "not_found");
    let (st, b) = s.call("PUT", "/rooms", None).await;
    assert_error(st, &b, 405, "method_not_allowed");
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("roomkit_http_requests_total"), "{metrics}");
    let doc = s.ok("GET", "/openapi.json", None).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/rooms/{id}/events"]["post"].is_object());
}

#[tokio::test]
async fn room_lifecycle_and_status_moves() {
    let s = Server::start().await;
    let (st, room) = s
        .call(
            "POST",
            "/rooms",
            Some(
                json!({"id": "r1", "organization_id": "org-a", "metadata": {"k": 1},
                        "timers": {"inactive_after_seconds": 60}}),
            ),
        )
        .await;
    assert_eq!(st, 201, "{room}");
    for field in [
        "id",
        "organization_id",
        "status",
        "created_at",
        "updated_at",
        "closed_at",
        "timers",
        "metadata",
        "event_count",
        "latest_index",
    ] {
        assert!(room.get(field).is_some(), "room has {field}: {room}");
    }
    assert_eq!(room["status"], "active");
    assert_eq!(room["latest_index"], Value::Null);
    assert_eq!(room["timers"]["inactive_after_seconds"], 60);
    assert!(room["created_at"].as_str().unwrap().ends_with('Z'));
    let (st, b) = s.call("POST", "/rooms", Some(json!({"id": "r1"}))).await;
    assert_error(st, &b, 409, "room_exists");
    let generated = s.ok("POST", "/rooms", None).await;
    assert!(generated["id"].as_str().is_some_and(|i| !i.is_empty()));
    s.ok(
        "POST",
        "/rooms",
        Some(json!({"id": "r2", "organization_id": "org-b"})),
    )
    .await;

    let got = s.ok("GET", "/rooms/r1", None).await;
    assert_eq!(got["id"], "r1");
    let (st, b) = s.call("GET", "/rooms/nope", None).await;
    assert_error(st, &b, 404, "room_not_found");

    let listed = s.ok("GET", "/rooms?organization_id=org-a", None).await;
    let ids: Vec<_> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("r1")]);

    let patched = s
        .ok(
            "PATCH",
            "/rooms/r1",
            Some(json!({"status": "paused", "metadata": {"k": 2}})),
        )
        .await;
    assert_eq!(patched["status"], "paused");
    assert_eq!(patched["metadata"]["k"], 2);
    let listed = s.ok("GET", "/rooms?status=paused", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let (st, b) = s.call("GET", "/rooms?status=sleepy", None).await;
    assert_error(st, &b, 400, "invalid_query");
    s.ok("PATCH", "/rooms/r1", Some(json!({"status": "closed"})))
        .await;
    s.ok("PATCH", "/rooms/r1", Some(json!({"status": "active"})))
        .await;
    s.ok("PATCH", "/rooms/r1", Some(json!({"status": "archived"})))
        .await;
    let (st, b) = s
        .call("PATCH", "/rooms/r1", Some(json!({"status": "active"})))
        .await;
    assert_error(st, &b, 409, "illegal_transition");
    let (st, b) = s
        .call("PATCH", "/rooms/r1", Some(json!({"status": "gone"})))
        .await;
    assert_error(st, &b, 400, "invalid_field");
    assert!(b["error"]["message"].as_str().unwrap().contains("status"));

    let (st, _) = s.call("DELETE", "/rooms/r2", None).await;
    assert_eq!(st, 204);
    let (st, b) = s.call("DELETE", "/rooms/r2", None).await;
    assert_error(st, &b, 404, "room_not_found");
}

#[tokio::test]
async fn lists_are_pages() {
    let s = Server::start().await;
    for i in 0..7 {
        s.ok("POST", "/rooms", Some(json!({"id": format!("room-{i}")})))
            .await;
    }
    let mut seen = Vec::new();
    let mut path = "/rooms?limit=3".to_owned();
    loop {
        let page = s.ok("GET", &path, None).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/rooms?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..7).map(|i| format!("room-{i}")).collect::<Vec<_>>()
    );
    for bad in ["0", "-1", "abc"] {
        let (st, b) = s.call("GET", &format!("/rooms?limit={bad}"), None).await;
        assert_error(st, &b, 400, "invalid_query");
        assert!(b["error"]["message"].as_str().unwrap().contains("limit"));
    }
    let clamped = s.ok("GET", "/rooms?limit=100000", None).await;
    assert_eq!(clamped["items"].as_array().unwrap().len(), 7);
    let (st, b) = s.call("GET", "/rooms?cursor=zzz", None).await;
    assert_error(st, &b, 400, "invalid_cursor");
    for list in [
        "/channels",
        "/rooms/room-0/channels",
        "/rooms/room-0/participants",
        "/rooms/room-0/tasks",
        "/rooms/room-0/observations",
    ] {
        let page = s.ok("GET", list, None).await;
        assert!(page["items"].is_array(), "{list}: {page}");
        assert!(page.get("next_cursor").is_some(), "{list}: {page}");
        let (st, _) = s.call("GET", &format!("{list}?limit=0"), None).await;
        assert_eq!(st, 400, "{list}");
    }
}

#[tokio::test]
async fn bindings_attach_update_mute_detach() {
    let s = Server::start().await;
    s.ok("POST", "/rooms", Some(json!({"id": "r"}))).await;
    let (st, b) = s
        .call(
            "POST",
            "/rooms/r/channels",
            Some(json!({"channel_id": "ws", "metadata": {"seat": 1}})),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    for field in [
        "channel_id",
        "room_id",
        "channel_type",
        "category",
        "direction",
        "access",
        "muted",
        "output_muted",
        "visibility",
        "participant_id",
        "last_read_index",
        "attached_at",
        "capabilities",
        "rate_limit",
        "retry_policy",
        "metadata",
    ] {
        assert!(b.get(field).is_some(), "binding has {field}: {b}");
    }
    assert_eq!(b["access"], "read_write");
    assert_eq!(b["visibility"], "all");
    let (st, e) = s
        .call(
            "POST",
            "/rooms/r/channels",
            Some(json!({"channel_id": "ws"})),
        )
        .await;
    assert_error(st, &e, 409, "channel_already_attached");
    let (st, e) = s
        .call(
            "POST",
            "/rooms/r/channels",
            Some(json!({"channel_id": "sms-nope"})),
        )
        .await;
    assert_error(st, &e, 422, "channel_not_registered");
    let (st, e) = s
        .call(
            "POST",
            "/rooms/nope/channels",
            Some(json!({"channel_id": "ws"})),
        )
        .await;
    assert_error(st, &e, 404, "room_not_found");
    let (st, e) = s
        .call(
            "POST",
            "/rooms/r/channels",
            Some(json!({"channel_id": "ws", "acess": "none"})),
        )
        .await;
    assert_error(st, &e, 400, "invalid_field");
    assert!(e["error"]["message"].as_str().unwrap().contains("acess"));

    let updated = s
        .ok(
            "PATCH",
            "/rooms/r/channels/ws",
            Some(json!({"access": "read_only", "visibility": "transport"})),
        )
        .await;
    assert_eq!(updated["access"], "read_only");
    assert_eq!(updated["visibility"], "transport");
    let muted = s.ok("POST", "/rooms/r/channels/ws/mute", None).await;
    assert_eq!(muted["muted"], true);
    let unmuted = s.ok("POST", "/rooms/r/channels/ws/unmute", None).await;
    assert_eq!(unmuted["muted"], false);
    let page = s.ok("GET", "/rooms/r/channels", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (st, _) = s.call("DELETE", "/rooms/r/channels/ws", None).await;
    assert_eq!(st, 204);
    for (m, p) in [
        ("DELETE", "/rooms/r/channels/ws"),
        ("POST", "/rooms/r/channels/ws/mute"),
        ("PATCH", "/rooms/r/channels/ws"),
    ] {
        let (st, e) = s.call(m, p, Some(json!({}))).await;
        assert_error(st, &e, 404, "channel_not_attached");
    }
    let types: Vec<String> = s
        .timeline("r")
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "channel_attached",
            "channel_updated",
            "channel_muted",
            "channel_unmuted",
            "channel_detached"
        ]
    );
}

#[tokio::test]
async fn events_results_and_refusals() {
    let s = Server::start().await;
    s.room("r", false).await;
    let r = s
        .ok(
            "POST",
            "/rooms/r/events",
            Some(json!({"channel_id": "ws", "content": {"type": "text", "text": "hi"},
                        "idempotency_key": "k1", "metadata": {"m": 1}, "channel_data": {"x": {"y": 2}},
                        "correlation_id": "c1", "sender_id": "alice"})),
        )
        .await;
    for field in ["blocked", "reason", "event", "delivery_results"] {
        assert!(r.get(field).is_some(), "{r}");
    }
    assert_eq!(r["blocked"], false);
    assert_eq!(r["reason"], Value::Null);
    let ev = &r["event"];
    assert_eq!(ev["status"], "delivered");
    assert_eq!(ev["index"], 1);
    assert_eq!(ev["channel_data"], json!({"x": {"y": 2}}));
    assert_eq!(ev["correlation_id"], "c1");
    let eid = ev["id"].as_str().unwrap().to_owned();
    let fetched = s.ok("GET", &format!("/rooms/r/events/{eid}"), None).await;
    assert_eq!(fetched["id"], eid.as_str());
    let (st, e) = s.call("GET", "/rooms/r/events/evt_nope", None).await;
    assert_error(st, &e, 404, "event_not_found");

    // The same idempotency key: the original event, nothing new stored.
    let dup = s
        .ok("POST", "/rooms/r/events", Some(json!({"channel_id": "ws", "content": {"type": "text", "text": "again"}, "idempotency_key": "k1"})))
        .await;
    assert_eq!(dup["blocked"], true);
    assert_eq!(dup["reason"], "duplicate");
    assert_eq!(dup["event"]["id"], eid.as_str());

    // A muted source: stored as blocked, 200.
    s.ok("POST", "/rooms/r/channels/ws/mute", None).await;
    let blocked = s.post_text("r", "ws", "while muted").await;
    assert_eq!(blocked["blocked"], true);
    assert_eq!(blocked["reason"], "permission");
    assert_eq!(blocked["event"]["status"], "blocked");
    assert_eq!(blocked["event"]["blocked_by"], "source_muted");
    s.ok("POST", "/rooms/r/channels/ws/unmute", None).await;

    // Every content type round-trips.
    let contents = [
        json!({"type": "text", "text": "plain"}),
        json!({"type": "media", "url": "https://x/y.png", "mime_type": "image/png"}),
        json!({"type": "location", "latitude": 1.5, "longitude": 2.5}),
        json!({"type": "composite", "parts": [{"type": "text", "text": "a"}]}),
        json!({"type": "system", "code": "c", "message": "m"}),
    ];
    for c in contents {
        let r = s
            .ok(
                "POST",
                "/rooms/r/events",
                Some(json!({"channel_id": "ws", "content": c.clone()})),
            )
            .await;
        assert_eq!(r["event"]["content"]["type"], c["type"], "{r}");
    }

    // Bad input: nothing stored.
    let before = s.ok("GET", "/rooms/r", None).await["event_count"].clone();
    let (st, e) = s
        .call(
            "POST",
            "/rooms/r/events",
            Some(json!({"channel_id": "ws", "content": {"type": "text", "txt": "x"}})),
        )
        .await;
    assert_error(st, &e, 400, "invalid_field");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("content"),
        "{e}"
    );
    let (st, e) = s
        .call("POST", "/rooms/r/events", Some(json!({"channel_id": "ws"})))
        .await;
    assert_error(st, &e, 400, "invalid_field");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("content"),
        "{e}"
    );
    let (st, e) = s
        .raw("POST", "/rooms/r/events", b"{not json".to_vec())
        .await;
    assert_error(st, &e, 400, "malformed_json");
    let deep = (0..7).fold(
        json!({"type": "text", "text": "x"}),
        |inner, _| json!({"type": "composite", "parts": [inner]}),
    );
    let (st, e) = s
        .call(
            "POST",
            "/rooms/r/events",
            Some(json!({"channel_id": "ws", "content": deep})),
        )
        .await;
    assert_error(st, &e, 400, "invalid_request");
    let big = vec![b'a'; 1024 * 1024 + 10];
    let (st, e) = s.raw("POST", "/rooms/r/events", big).await;
    assert_error(st, &e, 413, "payload_too_large");
    let (st, e) = s
        .call(
            "POST",
            "/rooms/r/events",
            Some(json!({"channel_id": "ai-nope", "content": {"type": "text", "text": "x"}})),
        )
        .await;
    assert_error(st, &e, 422, "channel_not_registered");
    let (st, e) = s
        .call(
            "POST",
            "/rooms/r/events",
            Some(json!({"channel_id": "ai", "content": {"type": "text", "text": "x"}})),
        )
        .await;
    assert_error(st, &e, 422, "channel_not_attached");
    let (st, e) = s
        .call(
            "POST",
            "/rooms/nope/events",
            Some(json!({"channel_id": "ws", "content": {"type": "text", "text": "x"}})),
        )
        .await;
    assert_error(st, &e, 404, "room_not_found");
    let after = s.ok("GET", "/rooms/r", None).await["event_count"].clone();
    assert_eq!(before, after, "bad input stored nothing");

    // A closed room refuses without storing.
    s.ok("PATCH", "/rooms/r", Some(json!({"status": "closed"})))
        .await;
    let refused = s.post_text("r", "ws", "too late").await;
    assert_eq!(refused["blocked"], true);
    assert_eq!(refused["reason"], "room_closed");
    assert_eq!(refused["event"], Value::Null);
    let room = s.ok("GET", "/rooms/r", None).await;
    assert_eq!(room["event_count"], after);
    // History stays readable.
    assert!(!s.timeline("r").await.is_empty());
}

#[tokio::test]
async fn timeline_pages_and_visibility() {
    let s = Server::start().await;
    s.room("r", true).await;
    s.ok("POST", "/rooms/r/events", Some(json!({"channel_id": "ws", "content": {"type": "text", "text": "secret"}, "visibility": "none"}))).await;
    for i in 0..3 {
        s.post_text("r", "ws", &format!("m{i}")).await;
    }
    let all = s.timeline("r").await;
    let indexes: Vec<u64> = all.iter().map(|e| e["index"].as_u64().unwrap()).collect();
    assert_eq!(
        indexes,
        (0..indexes.len() as u64).collect::<Vec<_>>(),
        "gap-free index order"
    );
    let page = s
        .ok("GET", "/rooms/r/timeline?after_index=1&limit=2", None)
        .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items[0]["index"], 2);
    assert_eq!(items.len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = s
        .ok(
            "GET",
            &format!("/rooms/r/timeline?limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(next["items"][0]["index"], 4);
    let ai_view = s
        .ok("GET", "/rooms/r/timeline?visibility=ai&limit=500", None)
        .await;
    let texts: Vec<_> = ai_view["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["text"].as_str())
        .collect();
    assert!(!texts.contains(&"secret"), "{texts:?}");
    assert!(texts.contains(&"m0"));
    let (st, e) = s
        .call("GET", "/rooms/r/timeline?visibility=nope", None)
        .await;
    assert_error(st, &e, 404, "channel_not_found");
    let (st, e) = s
        .call("GET", "/rooms/r/timeline?after_index=-4", None)
        .await;
    assert_error(st, &e, 400, "invalid_query");
    let (st, e) = s.call("GET", "/rooms/nope/timeline", None).await;
    assert_error(st, &e, 404, "room_not_found");
}

#[tokio::test]
async fn echo_agent_answers_and_says_so() {
    let s = Server::start().await;
    s.room("r", true).await;
    s.post_text("r", "ws", "hello there").await;
    let timeline = s.timeline("r").await;
    let reply = timeline
        .iter()
        .find(|e| e["source"]["channel_id"] == "ai")
        .expect("an answer");
    let text = reply["content"]["text"].as_str().unwrap();
    assert!(text.to_lowercase().contains("echo agent"), "{text}");
    assert!(text.contains("hello there"), "{text}");
    assert_eq!(reply["chain_depth"], 1);
}

#[tokio::test]
async fn participants_and_identities() {
    let s = Server::start().await;
    s.room("r", false).await;
    let (st, p) = s
        .call("POST", "/rooms/r/participants", Some(json!({"id": "p1", "display_name": "Ada", "role": "agent", "channel_id": "ws", "address": "ada"})))
        .await;
    assert_eq!(st, 201, "{p}");
    for field in [
        "id",
        "room_id",
        "channel_id",
        "display_name",
        "role",
        "status",
        "identification",
        "identity_id",
        "candidates",
        "connected_via",
        "external_id",
        "resolved_at",
        "resolved_by",
        "joined_at",
        "metadata",
    ] {
        assert!(p.get(field).is_some(), "participant has {field}: {p}");
    }
    assert_eq!(p["identification"], "unknown");
    let (st, e) = s
        .call("POST", "/rooms/r/participants", Some(json!({"id": "p1"})))
        .await;
    assert_error(st, &e, 409, "participant_exists");
    let (st, e) = s
        .call(
            "POST",
            "/rooms/r/participants",
            Some(json!({"role": "king"})),
        )
        .await;
    assert_error(st, &e, 400, "invalid_field");

    let (st, identity) = s
        .call("POST", "/identities", Some(json!({"id": "i1", "display_name": "Ada L", "channel_addresses": {"sms": ["+15550001"]}})))
        .await;
    assert_eq!(st, 201, "{identity}");
    let (st, e) = s
        .call("POST", "/identities", Some(json!({"id": "i1"})))
        .await;
    assert_error(st, &e, 409, "identity_exists");
    let found = s
        .ok(
            "GET",
            "/identities/resolve?channel=sms&address=%2B15550001",
            None,
        )
        .await;
    assert_eq!(found["id"], "i1");
    let (st, e) = s
        .call(
            "GET",
            "/identities/resolve?channel=sms&address=%2B19999",
            None,
        )
        .await;
    assert_error(st, &e, 404, "identity_not_found");
    let (st, e) = s
        .call(
            "GET",
            "/identities/resolve?channel=sms&address=%2B15550001&organization_id=other",
            None,
        )
        .await;
    assert_error(st, &e, 404, "identity_not_found");
    let (st, e) = s.call("GET", "/identities/resolve?address=x", None).await;
    assert_error(st, &e, 400, "invalid_query");
    let patched = s
        .ok(
            "PATCH",
            "/identities/i1",
            Some(json!({"display_name": "Ada Lovelace"})),
        )
        .await;
    assert_eq!(patched["display_name"], "Ada Lovelace");
    let (st, e) = s.call("PATCH", "/identities/nope", Some(json!({}))).await;
    assert_error(st, &e, 404, "identity_not_found");

    let resolved = s
        .ok(
            "POST",
            "/rooms/r/participants/p1/resolve",
            Some(json!({"identity_id": "i1"})),
        )
        .await;
    assert_eq!(resolved["identification"], "identified");
    assert_eq!(resolved["identity_id"], "i1");
    assert!(
        s.timeline("r")
            .await
            .iter()
            .any(|e| e["type"] == "participant_identified")
    );
    let (st, e) = s
        .call(
            "POST",
            "/rooms/r/participants/p1/resolve",
            Some(json!({"identity_id": "nope"})),
        )
        .await;
    assert_error(st, &e, 404, "identity_not_found");
    let (st, e) = s
        .call(
            "POST",
            "/rooms/r/participants/nope/resolve",
            Some(json!({"identity_id": "i1"})),
        )
        .await;
    assert_error(st, &e, 404, "participant_not_found");

    let (st, _) = s.call("DELETE", "/rooms/r/participants/p1", None).await;
    assert_eq!(st, 204);
    let list = s.ok("GET", "/rooms/r/participants", None).await;
    assert_eq!(
        list["items"][0]["status"], "left",
        "left participants stay in history"
    );
    let (st, e) = s.call("DELETE", "/rooms/r/participants/nope", None).await;
    assert_error(st, &e, 404, "participant_not_found");
}

#[tokio::test]
async fn tasks_observations_and_webhooks() {
    let s = Server::start().await;
    s.room("r", false).await;
    let tasks = s.ok("GET", "/rooms/r/tasks", None).await;
    assert_eq!(tasks["items"], json!([]));
    let (st, e) = s
        .call("PATCH", "/tasks/nope", Some(json!({"status": "completed"})))
        .await;
    assert_error(st, &e, 404, "task_not_found");
    let (st, e) = s.call("GET", "/rooms/r/tasks?status=bogus", None).await;
    assert_error(st, &e, 400, "invalid_query");
    let obs = s.ok("GET", "/rooms/r/observations", None).await;
    assert_eq!(obs["items"], json!([]));
    let (st, e) = s.call("GET", "/rooms/nope/observations", None).await;
    assert_error(st, &e, 404, "room_not_found");
    let before = s.ok("GET", "/rooms?limit=500", None).await["items"]
        .as_array()
        .unwrap()
        .len();
    let (st, e) = s
        .raw(
            "POST",
            "/webhooks/sms/twilio",
            b"From=%2B1555&Body=hi".to_vec(),
        )
        .await;
    assert_error(st, &e, 404, "channel_not_found");
    let (st, _) = s
        .raw("POST", "/webhooks/sms/twilio/status", b"x=1".to_vec())
        .await;
    assert_eq!(st, 404);
    let after = s.ok("GET", "/rooms?limit=500", None).await["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        before, after,
        "a webhook for an unknown channel creates nothing"
    );
}
