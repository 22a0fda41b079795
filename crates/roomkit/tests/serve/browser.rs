//! The web chat in headless Chromium, driven over WebDriver: a message sent
//! from the page is stored, and a message sent over REST appears on it.
//! Skipped, with a message, when chromium or chromedriver is missing (a
//! failure under `ROOMKIT_TEST_REQUIRE_ALL`, which `scripts/test` sets).

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Server;

pub(crate) fn find(names: &[&str]) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    for name in names {
        for dir in path.split(':').chain(["/usr/bin", "/usr/lib/chromium"]) {
            let p = std::path::Path::new(dir).join(name);
            if p.is_file() {
                return Some(p.to_string_lossy().into_owned());
            }
        }
    }
    None
}

pub(crate) struct Driver {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) session: String,
}

impl Driver {
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let mut rb = self.http.request(method, url);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let v: Value = rb.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    pub(crate) async fn element(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|id| id.as_str())
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    pub(crate) async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub(crate) async fn enabled(&self, css: &str) -> bool {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{id}/enabled"),
            None,
        )
        .await
        .as_bool()
        .unwrap_or(false)
    }
}

pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting: {what}");
}

#[tokio::test]
async fn web_chat_sends_and_shows_live_messages() {
    let (Some(chromium), Some(chromedriver)) = (
        find(&["chromium", "chromium-browser"]),
        find(&["chromedriver"]),
    ) else {
        // The README's test command sets this: there, a missing browser is
        // a failure, not a skip.
        if std::env::var_os("ROOMKIT_TEST_REQUIRE_ALL").is_some() {
            panic!("the browser test needs chromium and chromedriver (scripts/test installs them)");
        }
        println!(
            "skipped: the browser test needs chromium and chromedriver (Debian packages chromium and chromium-driver; scripts/test installs them)"
        );
        return;
    };
    let s = Server::start().await;
    s.room("lobby", false).await;

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _driver = tokio::process::Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let http = crate::client();
    let base = format!("http://127.0.0.1:{port}");
    eventually("chromedriver is ready", || {
        let http = http.clone();
        let url = format!("{base}/status");
        async move {
            match http.get(url).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            }
        }
    })
    .await;
    let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": chromium,
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]}}}});
    let created: Value = http
        .post(format!("{base}/session"))
        .json(&caps)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {created}"))
        .to_owned();
    let d = Driver {
        http: http.clone(),
        base: base.clone(),
        session,
    };

    d.call(
        reqwest::Method::POST,
        "/url",
        Some(json!({"url": s.url("/?room=lobby")})),
    )
    .await;
    eventually("the page connects", || d.enabled("#message")).await;

    let input = d.element("#message").await;
    d.call(
        reqwest::Method::POST,
        &format!("/element/{input}/value"),
        Some(json!({"text": "hello from the page"})),
    )
    .await;
    let button = d.element("#send").await;
    d.call(
        reqwest::Method::POST,
        &format!("/element/{button}/click"),
        Some(json!({})),
    )
    .await;
    let mut stored = false;
    for _ in 0..100 {
        let timeline = s.timeline("lobby").await;
        if timeline
            .iter()
            .any(|e| e["content"]["text"] == "hello from the page")
        {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stored,
        "the page's message was not stored; page status: {:?}; messages: {:?}; log: {}",
        d.text("#status").await,
        d.text("#messages").await,
        s.log()
    );

    s.post_text("lobby", "ws", "hello from rest").await;
    eventually("the REST message appears on the page", || async {
        d.text("#messages").await.contains("hello from rest")
    })
    .await;
    let page = d.text("#messages").await;
    assert!(page.contains("hello from the page"), "{page}");

    // A blocked event is shown as such.
    s.ok("POST", "/rooms/lobby/channels/ws/mute", None).await;
    s.post_text("lobby", "ws", "muted words").await;
    eventually("the blocked event is marked", || async {
        d.text("#messages")
            .await
            .contains("blocked by source_muted")
    })
    .await;

    let _ = http
        .delete(format!("{base}/session/{}", d.session))
        .send()
        .await;
}
