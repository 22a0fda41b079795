//! REST request bodies and query strings through the real router: never a
//! 500, every refusal in the `{"error":{"code","message"}}` shape, and the
//! events stored before stay exactly as they were.

#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use roomkit_core::store::MemoryStore;
use roomkit_core::{AttachOptions, CreateRoom, RoomKit, SendEvent};
use roomkit_fuzz::runtime;
use roomkit_server::{ConnectionRegistry, Server, ServerOptions, WebSocketChannel};
use tower::ServiceExt;

const BODY_ROUTES: &[(&str, &str)] = &[
    ("POST", "/rooms"),
    ("PATCH", "/rooms/r"),
    ("POST", "/rooms/r/channels"),
    ("PATCH", "/rooms/r/channels/ws"),
    ("POST", "/rooms/r/events"),
    ("POST", "/rooms/r/participants"),
    ("POST", "/rooms/r/participants/p/resolve"),
    ("PATCH", "/tasks/t"),
    ("POST", "/identities"),
    ("PATCH", "/identities/i"),
];

const QUERY_ROUTES: &[&str] = &[
    "/rooms",
    "/rooms/r/timeline",
    "/rooms/r/channels",
    "/channels",
    "/identities/resolve",
    "/rooms/r/tasks",
];

struct Fixture {
    kit: RoomKit,
    router: axum::Router,
    stored: Vec<String>,
}

async fn stored(kit: &RoomKit) -> Vec<String> {
    kit.timeline(&"r".into(), Default::default())
        .await
        .unwrap_or_else(|e| panic!("timeline: {e}"))
        .iter()
        .take(3)
        .map(|e| serde_json::to_string(&**e).unwrap_or_default())
        .collect()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        runtime().block_on(async {
            let registry = ConnectionRegistry::new();
            let kit = RoomKit::builder()
                .store(Arc::new(MemoryStore::new()))
                .channel(Arc::new(WebSocketChannel::new("ws", registry.clone())))
                .build()
                .unwrap_or_else(|e| panic!("kit: {e}"));
            let room = kit
                .create_room(CreateRoom::with_id("r"))
                .await
                .unwrap_or_else(|e| panic!("room: {e}"));
            kit.attach_channel(&room.id, &"ws".into(), AttachOptions::default())
                .await
                .unwrap_or_else(|e| panic!("attach: {e}"));
            for i in 0..3 {
                kit.send_event(SendEvent::text("r", "ws", format!("m{i}")))
                    .await
                    .unwrap_or_else(|e| panic!("send: {e}"));
            }
            let router = Server::new(kit.clone(), registry, ServerOptions::default()).router();
            let stored = stored(&kit).await;
            Fixture {
                kit,
                router,
                stored,
            }
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let request = if selector & 0x80 == 0 {
        let (method, path) = BODY_ROUTES[usize::from(selector) % BODY_ROUTES.len()];
        Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_vec()))
    } else {
        let path = QUERY_ROUTES[usize::from(selector & 0x7F) % QUERY_ROUTES.len()];
        let query = String::from_utf8_lossy(body);
        Request::builder()
            .uri(format!("{path}?{query}"))
            .body(Body::empty())
    };
    let Ok(request) = request else {
        return;
    };
    runtime().block_on(async {
        let response = f
            .router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| panic!("router: {e}"));
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{bytes:?}");
        if !status.is_success() {
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("error body: {e}"));
            assert!(v["error"]["code"].is_string(), "{v}");
            assert!(v["error"]["message"].is_string(), "{v}");
        }
        assert_eq!(stored(&f.kit).await, f.stored, "stored events changed");
    });
});
