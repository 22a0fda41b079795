//! The OpenAPI document matches the router: every documented operation is
//! served with its method, and every served path is documented.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use roomkit_core::RoomKit;
use roomkit_server::openapi::{ROUTES, document};
use roomkit_server::{ConnectionRegistry, Server, ServerOptions, WebSocketChannel};
use serde_json::Value;
use tower::ServiceExt;

fn router() -> axum::Router {
    let registry = ConnectionRegistry::new();
    let kit = RoomKit::builder()
        .channel(Arc::new(WebSocketChannel::new("ws", registry.clone())))
        .build()
        .unwrap();
    Server::new(kit, registry, ServerOptions::default()).router()
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let router = router();
    for route in ROUTES {
        let path = route
            .path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let request = Request::builder()
            .method(route.method.to_uppercase().as_str())
            .uri(path.as_str())
            .body(Body::from("{}"))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{} {path}",
            route.method
        );
        if status == StatusCode::NOT_FOUND {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_ne!(
                v["error"]["code"], "not_found",
                "{} {path} is not routed",
                route.method
            );
        }
    }
}

#[test]
fn document_is_complete() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>(),
        ROUTES.len()
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    // Every reference resolves.
    for part in text.split("#/components/schemas/").skip(1) {
        let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
        assert!(schemas.contains_key(&name), "missing schema {name}");
    }
    for required in [
        "/rooms",
        "/rooms/{id}",
        "/rooms/{id}/channels",
        "/rooms/{id}/channels/{cid}",
        "/rooms/{id}/channels/{cid}/mute",
        "/rooms/{id}/channels/{cid}/unmute",
        "/channels",
        "/rooms/{id}/events",
        "/rooms/{id}/timeline",
        "/rooms/{id}/events/{eid}",
        "/rooms/{id}/participants",
        "/rooms/{id}/participants/{pid}",
        "/rooms/{id}/participants/{pid}/resolve",
        "/rooms/{id}/tasks",
        "/tasks/{id}",
        "/rooms/{id}/observations",
        "/identities",
        "/identities/resolve",
        "/identities/{id}",
        "/webhooks/{channel_type}/{provider}",
        "/webhooks/{channel_type}/{provider}/status",
        "/ws/{room_id}",
        "/voice/calls",
        "/healthz",
        "/metrics",
    ] {
        assert!(paths.contains_key(required), "{required} is documented");
    }
}
