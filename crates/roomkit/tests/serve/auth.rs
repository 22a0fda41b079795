//! Bearer-key authentication and per-key rate limiting.

use serde_json::json;

use crate::{Server, config_file, connect, next_frame};

#[tokio::test]
async fn key_is_required_when_set() {
    let path = config_file("[server]\napi_key_env = \"ROOMKIT_API_KEY\"\n");
    let s = Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[("ROOMKIT_API_KEY", "s3cret")],
    )
    .await;
    // With the key (the helper sends it).
    s.room("r", false).await;
    // Without it.
    let anon = crate::client();
    let resp = anon.get(s.url("/rooms/r")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let resp = anon
        .get(s.url("/rooms/r"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = anon.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // Open endpoints.
    assert_eq!(
        anon.get(s.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        anon.get(s.url("/")).send().await.unwrap().status().as_u16(),
        200
    );
    // WebSocket: refused before the upgrade without the key, accepted with ?token=.
    let refused = tokio_tungstenite::connect_async(s.ws_url("/ws/r?channel_id=ws")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        other => panic!("expected HTTP 401, got {other:?}"),
    }
    let mut ws = connect(&s.ws_url("/ws/r?channel_id=ws&token=s3cret")).await;
    crate::send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut ws).await.unwrap()["type"], "pong");
}

#[tokio::test]
async fn rate_limit_per_key() {
    let path = config_file("[server]\napi_key_env = \"ROOMKIT_API_KEY\"\nrate_limit_per_key = 5\n");
    let s = Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[("ROOMKIT_API_KEY", "k")],
    )
    .await;
    let mut limited = None;
    for _ in 0..50 {
        let (st, body) = s.call("GET", "/channels", None).await;
        if st == 429 {
            limited = Some(body);
            break;
        }
        assert_eq!(st, 200);
    }
    let body = limited.expect("requests beyond the rate are refused");
    assert_eq!(body["error"]["code"], "rate_limited");
}
