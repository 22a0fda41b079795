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

/// Sends `method path` to the router and returns the status and the
/// error code of the answer (`None` for a success or a body without one).
async fn probe(router: &axum::Router, method: &str, path: &str) -> (u16, Option<String>) {
    let request = Request::builder()
        .method(method.to_uppercase().as_str())
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let code = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    (status, code)
}

/// Every error the router answers to plain probes (path parameters that
/// exist nowhere, or that are not UTF-8 once decoded; requests without a
/// WebSocket upgrade) is documented under its route, status and code.
#[tokio::test]
async fn every_error_code_the_router_answers_is_documented() {
    let router = router();
    let doc = document();
    for route in ROUTES {
        let mut probes = Vec::new();
        let plain = route
            .path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        probes.push(plain);
        if route.path.contains('{') {
            probes.push(
                route
                    .path
                    .split('/')
                    .map(|seg| if seg.starts_with('{') { "%FF" } else { seg })
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        }
        for path in probes {
            let (status, code) = probe(&router, route.method, &path).await;
            if status < 400 {
                continue;
            }
            let response = &doc["paths"][route.path][route.method]["responses"][status.to_string()];
            assert!(
                response.is_object(),
                "{} {path} answers {status} {code:?}, which {} does not document",
                route.method,
                route.path
            );
            let code =
                code.unwrap_or_else(|| panic!("{} {path}: {status} without a code", route.method));
            let listed = response["x-error-codes"].as_array().unwrap();
            assert!(
                listed.iter().any(|c| c == code.as_str()),
                "{} {path} answers {status} `{code}`, not among {listed:?} of {}",
                route.method,
                route.path
            );
            assert!(
                response["description"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("`{code}`")),
                "{response}"
            );
        }
    }
}

/// The codes that no plain probe reaches are documented too: the
/// connection reserve's 503 on every route but `/healthz`, the WebSocket
/// cap's 429, tenant keys' 403, and the voice endpoints' own codes.
#[test]
fn error_codes_beyond_the_probes_are_documented() {
    let doc = document();
    let codes = |path: &str, method: &str, status: u16| -> Vec<String> {
        doc["paths"][path][method]["responses"][status.to_string()]["x-error-codes"]
            .as_array()
            .map(|a| a.iter().map(|c| c.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    for route in ROUTES {
        let at_limit = codes(route.path, route.method, 503);
        if route.path == "/healthz" {
            assert!(at_limit.is_empty(), "/healthz is served by the reserve");
        } else {
            assert!(
                at_limit.iter().any(|c| c == "too_many_connections"),
                "{} {}: 503 too_many_connections is not documented",
                route.method,
                route.path
            );
        }
    }
    let has = |path: &str, method: &str, status: u16, code: &str| {
        assert!(
            codes(path, method, status).iter().any(|c| c == code),
            "{method} {path}: {status} `{code}` is not documented"
        );
    };
    has("/ws/{room_id}", "get", 429, "too_many_connections");
    has("/ws/{room_id}", "get", 400, "websocket_upgrade_required");
    has("/rooms/{id}", "get", 400, "invalid_path");
    has("/rooms", "post", 403, "organization_forbidden");
    has("/voice/calls", "post", 403, "organization_forbidden");
    has("/voice/calls", "post", 422, "outbound_not_configured");
    has("/voice/calls", "post", 422, "channel_rejected");
    has("/voice/calls", "post", 502, "provider_error");
    has("/voice/calls", "post", 404, "room_not_found");
    has("/voice/{provider}/media", "get", 403, "invalid_signature");
    has("/voice/{provider}/media", "get", 404, "channel_not_found");
    has(
        "/voice/{provider}/media",
        "get",
        400,
        "websocket_upgrade_required",
    );
    has(
        "/webhooks/{channel_type}/{provider}",
        "post",
        403,
        "invalid_signature",
    );
}
