//! The SQLite store: what a server stored is there after a restart.

use serde_json::json;

use crate::Server;

#[tokio::test]
async fn sqlite_timeline_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("roomkit-serve-sqlite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("rooms.db");
    let _ = std::fs::remove_file(&db);
    let url = format!("sqlite://{}", db.display());

    let s = Server::start_with(&["--store", &url], &[]).await;
    s.room("kept", false).await;
    s.post_text("kept", "ws", "still here").await;
    assert_eq!(s.terminate().await, Some(0));

    let s = Server::start_with(&["--store", &url], &[]).await;
    let timeline = s.timeline("kept").await;
    assert!(
        timeline
            .iter()
            .any(|e| e["content"]["text"] == "still here"),
        "{timeline:?}"
    );
    let next = s.post_text("kept", "ws", "after restart").await;
    assert_eq!(
        next["event"]["index"].as_u64().unwrap(),
        timeline.len() as u64
    );
    assert_eq!(
        s.ok("GET", "/rooms/kept", None).await["event_count"],
        json!(timeline.len() + 1)
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
