//! Property tests of every body and frame parser: random bytes, random JSON
//! and mutated valid requests never panic, never answer 500, always answer
//! errors in the contract's shape, and never change what is already stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use roomkit_core::store::MemoryStore;
use roomkit_core::{AttachOptions, CreateRoom, RoomKit, SendEvent};
use roomkit_server::extract::parse_json;
use roomkit_server::ws::ClientFrame;
use roomkit_server::{ConnectionRegistry, Server, ServerOptions, WebSocketChannel};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceExt;

/// Endpoints that take a body, with a valid body to mutate.
fn endpoints() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "POST",
            "/rooms",
            json!({"id": "x", "metadata": {}, "timers": {"inactive_after_seconds": 5}}),
        ),
        ("PATCH", "/rooms/r", json!({"metadata": {"a": 1}})),
        (
            "POST",
            "/rooms/r/channels",
            json!({"channel_id": "ws", "access": "read_only"}),
        ),
        (
            "PATCH",
            "/rooms/r/channels/ws",
            json!({"visibility": "all"}),
        ),
        (
            "POST",
            "/rooms/r/events",
            json!({"channel_id": "ws", "content": {"type": "text", "text": "hi"}}),
        ),
        (
            "POST",
            "/rooms/r/participants",
            json!({"id": "p", "role": "member"}),
        ),
        (
            "POST",
            "/rooms/r/participants/p/resolve",
            json!({"identity_id": "i"}),
        ),
        ("PATCH", "/tasks/t", json!({"status": "completed"})),
        (
            "POST",
            "/identities",
            json!({"id": "i", "channel_addresses": {"sms": ["+1"]}}),
        ),
        ("PATCH", "/identities/i", json!({"display_name": "x"})),
    ]
}

async fn fixture() -> (RoomKit, axum::Router, Arc<ConnectionRegistry>) {
    let registry = ConnectionRegistry::new();
    let kit = RoomKit::builder()
        .store(Arc::new(MemoryStore::new()))
        .channel(Arc::new(WebSocketChannel::new("ws", registry.clone())))
        .build()
        .unwrap();
    let room = kit.create_room(CreateRoom::with_id("r")).await.unwrap();
    kit.attach_channel(&room.id, &"ws".into(), AttachOptions::default())
        .await
        .unwrap();
    for i in 0..3 {
        kit.send_event(SendEvent::text("r", "ws", format!("m{i}")))
            .await
            .unwrap();
    }
    let server = Server::new(kit.clone(), registry.clone(), ServerOptions::default());
    (kit, server.router(), registry)
}

/// What must not change: the room's first events, exactly.
async fn stored_prefix(kit: &RoomKit) -> Vec<String> {
    kit.timeline(&"r".into(), Default::default())
        .await
        .unwrap()
        .iter()
        .take(4)
        .map(|e| serde_json::to_string(&**e).unwrap())
        .collect()
}

async fn everything(kit: &RoomKit) -> String {
    let room = kit.get_room(&"r".into()).await.unwrap();
    let bindings = kit.list_bindings(&"r".into()).await.unwrap();
    let rooms = kit.list_rooms(&Default::default()).await.unwrap();
    serde_json::to_string(&json!({"room": room, "bindings": bindings, "rooms": rooms.len()}))
        .unwrap()
}

async fn check(router: &axum::Router, kit: &RoomKit, method: &str, path: &str, body: Vec<u8>) {
    let before_prefix = stored_prefix(kit).await;
    let before_all = everything(kit).await;
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.clone()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{method} {path} {:?}",
        String::from_utf8_lossy(&body)
    );
    if status.is_client_error() || status.is_server_error() {
        let v: Value = serde_json::from_slice(&bytes).expect("error bodies are JSON");
        assert!(v["error"]["code"].is_string(), "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
        assert_eq!(
            everything(kit).await,
            before_all,
            "a refused request changed nothing"
        );
    }
    assert_eq!(
        stored_prefix(kit).await,
        before_prefix,
        "stored events never change"
    );
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("text"),
            Just("type"),
            Just("ws"),
            Just("system"),
            Just("composite"),
            Just("active"),
            Just("closed")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    ".{0,8}",
                    Just("type".to_owned()),
                    Just("content".to_owned()),
                    Just("channel_id".to_owned()),
                    Just("text".to_owned()),
                    Just("status".to_owned()),
                    Just("parts".to_owned()),
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid body with one field replaced by a random value.
fn mutated(base: Value) -> impl Strategy<Value = Value> {
    let keys: Vec<String> = base.as_object().unwrap().keys().cloned().collect();
    (prop::sample::select(keys), json_value()).prop_map(move |(k, v)| {
        let mut b = base.clone();
        b[k.as_str()] = v;
        b
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bytes_to_every_endpoint(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let rt = runtime();
        rt.block_on(async {
            let (kit, router, _) = fixture().await;
            for (method, path, _) in endpoints() {
                check(&router, &kit, method, path, bytes.clone()).await;
            }
        });
    }

    #[test]
    fn random_json_to_every_endpoint(value in json_value()) {
        let rt = runtime();
        rt.block_on(async {
            let (kit, router, _) = fixture().await;
            for (method, path, _) in endpoints() {
                check(&router, &kit, method, path, value.to_string().into_bytes()).await;
            }
        });
    }

    #[test]
    fn mutated_valid_bodies((index, body) in (0usize..10).prop_flat_map(|i| {
        mutated(endpoints()[i].2.clone()).prop_map(move |b| (i, b))
    })) {
        let (method, path, _) = endpoints()[index].clone();
        let rt = runtime();
        rt.block_on(async {
            let (kit, router, _) = fixture().await;
            check(&router, &kit, method, path, body.to_string().into_bytes()).await;
        });
    }

    #[test]
    fn frame_parser_never_panics(text in ".{0,256}", value in json_value()) {
        for input in [text.into_bytes(), value.to_string().into_bytes()] {
            if let Err(e) = parse_json::<ClientFrame>(&input) {
                prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
            }
        }
    }

    #[test]
    fn query_parameters_never_fail_the_server(q in "[a-z_=&%0-9A-F-]{0,40}") {
        let rt = runtime();
        rt.block_on(async {
            let (kit, router, _) = fixture().await;
            for path in ["/rooms", "/rooms/r/timeline", "/rooms/r/channels", "/channels", "/identities/resolve", "/rooms/r/tasks"] {
                let uri = format!("{path}?{q}");
                let Ok(request) = Request::builder().uri(uri.as_str()).body(Body::empty()) else { continue };
                let response = router.clone().oneshot(request).await.unwrap();
                assert_ne!(response.status(), StatusCode::INTERNAL_SERVER_ERROR, "{uri}");
            }
            let _ = kit;
        });
    }
}

/// Random frames over a real connection: each gets an answer, the
/// connection stays open, and stored events do not change.
#[test]
fn random_websocket_frames_keep_the_connection_open() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (kit, router, _) = fixture().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let before = stored_prefix(&kit).await;
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{addr}/ws/r?channel_id=ws"))
                .await
                .unwrap();
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let frames = prop::collection::vec(
            prop_oneof![
                ".{0,64}".prop_map(Message::text),
                json_value().prop_map(|v| Message::text(v.to_string())),
                prop::collection::vec(any::<u8>(), 0..64).prop_map(Message::binary),
            ],
            64,
        )
        .new_tree(&mut runner)
        .unwrap()
        .current();
        for frame in frames {
            ws.send(frame).await.unwrap();
            ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
            loop {
                let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
                    .await
                    .expect("an answer")
                    .expect("still open")
                    .unwrap();
                if let Message::Text(t) = msg {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "pong" {
                        break;
                    }
                    assert!(
                        ["error", "ack", "event", "ephemeral"]
                            .contains(&v["type"].as_str().unwrap()),
                        "{v}"
                    );
                }
            }
        }
        assert_eq!(stored_prefix(&kit).await, before);
    });
}
