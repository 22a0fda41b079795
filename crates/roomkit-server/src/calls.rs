//! Call reports in the web UI: `/calls` lists finished calls and shows one
//! (transcript against the waveform of both channels, metrics per turn),
//! reading the reports the local call report exporter writes.
//!
//! `GET /calls` is the page (public, like the web chat; it asks for the
//! key), `GET /call-reports` the list (a page of summaries),
//! `GET /call-reports/{id}` one report, `GET /call-reports/{id}/recording.wav`
//! its stereo recording. The JSON and WAV endpoints sit behind the API key.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use roomkit_analytics::report::{list_reports, read_report, recording_path};

use crate::auth::Scope;
use crate::error::ApiError;
use crate::extract::Params;
use crate::extract::Path;
use crate::state::AppState;

const PAGE: &str = include_str!("../assets/calls.html");

#[derive(Clone)]
struct Reports(Arc<PathBuf>, roomkit_core::RoomKit);

/// True when the call of `room_id` is visible to `scope`: a tenant key sees
/// only the calls of its organization's rooms.
async fn visible(kit: &roomkit_core::RoomKit, scope: &Scope, room_id: &str) -> bool {
    scope.organization().is_none()
        || scope
            .check_room(kit, &roomkit_core::model::RoomId::from(room_id))
            .await
            .is_ok()
}

/// The routes of the call reports under `dir`, without layers: the server
/// merges them before it applies its own (key check, metrics, body limit,
/// panic catching), so they are guarded like the REST API.
pub fn routes(dir: PathBuf, kit: roomkit_core::RoomKit) -> Router<AppState> {
    let reports = Reports(Arc::new(dir), kit);
    Router::new()
        .route("/calls", get(page))
        .route("/call-reports", get(list))
        .route("/call-reports/{id}", get(one))
        .route("/call-reports/{id}/recording.wav", get(recording))
        .with_state(reports)
}

async fn page() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

async fn list(State(r): State<Reports>, scope: Scope, params: Params) -> Response {
    // Bad values are JSON 400s, like every other list.
    let limit = match params.limit() {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    // The cursor is the position of the next report.
    let start = match params.text("cursor").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return ApiError::bad_request(
                "invalid_cursor",
                "query parameter `cursor` is not valid",
            )
            .into_response();
        }
    };
    let dir = r.0.clone();
    let all = tokio::task::spawn_blocking(move || list_reports(&dir))
        .await
        .unwrap_or_default();
    let all = if scope.organization().is_some() {
        let mut mine = Vec::new();
        for summary in all {
            if visible(&r.1, &scope, &summary.room_id).await {
                mine.push(summary);
            }
        }
        mine
    } else {
        all
    };
    // A cursor near usize::MAX must not overflow.
    let end = start.saturating_add(limit).min(all.len());
    let items = all.get(start..end).unwrap_or_default();
    let next = (end < all.len()).then(|| end.to_string());
    axum::Json(serde_json::json!({"items": items, "next_cursor": next})).into_response()
}

async fn one(State(r): State<Reports>, scope: Scope, Path(id): Path<String>) -> Response {
    let dir = r.0.clone();
    let found = tokio::task::spawn_blocking(move || read_report(&dir, &id)).await;
    match found {
        Ok(Ok(Some(report))) if visible(&r.1, &scope, &report.room_id).await => {
            axum::Json(report).into_response()
        }
        Ok(Ok(_)) => {
            ApiError::not_found("call_not_found", "no report for this call").into_response()
        }
        Ok(Err(roomkit_analytics::AnalyticsError::InvalidCallId(_))) => {
            ApiError::bad_request("invalid_field", "id is not a valid call id").into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(target: "roomkit.server", error = %e, "unreadable call report");
            ApiError::internal("the call report cannot be read").into_response()
        }
        Err(_) => ApiError::internal("the call report cannot be read").into_response(),
    }
}

async fn recording(State(r): State<Reports>, scope: Scope, Path(id): Path<String>) -> Response {
    if scope.organization().is_some() {
        let dir = r.0.clone();
        let wanted = id.clone();
        let room = tokio::task::spawn_blocking(move || read_report(&dir, &wanted))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .map(|report| report.room_id);
        let shown = match room {
            Some(room) => visible(&r.1, &scope, &room).await,
            None => false,
        };
        if !shown {
            return ApiError::not_found("recording_not_found", "no recording for this call")
                .into_response();
        }
    }
    let Some(path) = recording_path(&r.0, &id) else {
        return ApiError::not_found("recording_not_found", "no recording for this call")
            .into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(CONTENT_TYPE, "audio/wav")], bytes).into_response(),
        Err(_) => {
            ApiError::not_found("recording_not_found", "no recording for this call").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use crate::auth::ApiKey;
    use crate::{ConnectionRegistry, Server, ServerOptions};

    fn report(dir: &std::path::Path, id: &str) {
        let r = serde_json::json!({
            "call_id": id, "room_id": "r", "agent_id": "a", "agent_name": null, "is_test": false,
            "started_at": "2026-11-21T12:00:00.000000+00:00", "ended_at": "2026-11-21T12:00:06.000000+00:00",
            "ended_reason": "agent-ended", "recovered": false, "sample_rate": 24000, "channels": 2,
            "duration_seconds": 6.0, "recording": null, "agent_spoke_first": false,
            "transcript": [{"role": "user", "content": "hi", "timestamp": "t", "endTimestamp": "t"}],
            "tool_calls": [], "metrics": [],
            "waveform": {"bin_seconds": 0.1, "user": [1], "agent": [0]}, "metadata": {}
        });
        std::fs::create_dir_all(dir.join(id)).unwrap();
        std::fs::write(dir.join(id).join("report.json"), r.to_string()).unwrap();
    }

    async fn get(app: &axum::Router, path: &str, key: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::get(path);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let res = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn lists_and_shows_reports_behind_the_key() {
        let dir = std::env::temp_dir().join(format!("rk-calls-{}", std::process::id()));
        report(&dir, "call-1");
        let kit = roomkit_core::RoomKit::builder().build().unwrap();
        let options = ServerOptions {
            api_key: Some(ApiKey::new("k")),
            ..ServerOptions::default()
        };
        let app = Server::new(kit, ConnectionRegistry::new(), options)
            .with_call_reports(&dir)
            .router();
        let (s, page) = get(&app, "/calls", None).await;
        assert_eq!(s, StatusCode::OK);
        assert!(page.contains("<canvas"));
        assert_eq!(
            get(&app, "/call-reports", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (s, list) = get(&app, "/call-reports", Some("k")).await;
        assert_eq!(s, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&list).unwrap();
        assert_eq!(v["items"][0]["call_id"], "call-1");
        assert_eq!(v["next_cursor"], serde_json::Value::Null);
        let (s, one) = get(&app, "/call-reports/call-1", Some("k")).await;
        assert_eq!(s, StatusCode::OK);
        assert!(one.contains("\"transcript\""));
        assert_eq!(
            get(&app, "/call-reports/nope", Some("k")).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&app, "/call-reports/a..b%2Fc", Some("k")).await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            get(&app, "/call-reports?limit=0", Some("k")).await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            get(&app, "/call-reports/call-1/recording.wav", Some("k"))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_tenant_key_sees_only_its_organizations_calls() {
        let dir = std::env::temp_dir().join(format!("rk-calls-tenant-{}", std::process::id()));
        report(&dir, "call-1");
        let kit = roomkit_core::RoomKit::builder().build().unwrap();
        kit.create_room(roomkit_core::CreateRoom {
            id: Some("r".into()),
            organization_id: Some("acme".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        let tenant = |org: &str, key: &str| crate::auth::TenantKey {
            organization_id: org.into(),
            key: ApiKey::new(key),
        };
        let options = ServerOptions {
            api_key: Some(ApiKey::new("k")),
            tenant_keys: vec![tenant("acme", "ka"), tenant("globex", "kg")],
            ..ServerOptions::default()
        };
        let app = Server::new(kit, ConnectionRegistry::new(), options)
            .with_call_reports(&dir)
            .router();
        let count = |list: &str| {
            serde_json::from_str::<serde_json::Value>(list).unwrap()["items"]
                .as_array()
                .unwrap()
                .len()
        };
        for (key, seen) in [("k", 1), ("ka", 1), ("kg", 0)] {
            let (s, list) = get(&app, "/call-reports", Some(key)).await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(count(&list), seen, "{key}");
            let expected = if seen == 1 {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            assert_eq!(
                get(&app, "/call-reports/call-1", Some(key)).await.0,
                expected
            );
        }
        assert_eq!(
            get(&app, "/call-reports/call-1/recording.wav", Some("kg"))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
