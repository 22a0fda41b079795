//! RFC Appendix B flows end to end through the server, with an SMS customer
//! on one side (signed Twilio webhooks in, a fake Twilio API out) and a
//! WebSocket client on the other: B.5 (an advisor joins mid-conversation
//! and the AI turns into a whisperer) and B.3 (an ambiguous sender on a
//! shared family phone, resolved later over REST).

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::sms::{CUSTOMER, FakeTwilio, OUR_NUMBER, fields, messages, sms_in, start_twilio_server};
use crate::{Server, Ws, connect, next_event, next_frame, send};

const ECHO: &str = "Echo agent (no AI provider is configured): you said: ";

/// Events of a room visible to one channel (`?visibility=`).
async fn seen_by(s: &Server, room: &str, channel: &str) -> Vec<Value> {
    let v = s
        .ok(
            "GET",
            &format!("/rooms/{room}/timeline?limit=500&visibility={channel}"),
            None,
        )
        .await;
    v["items"].as_array().unwrap().clone()
}

/// The next live event of a given type.
async fn next_of_type(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let e = next_event(ws).await;
        if e["type"] == ty {
            return e;
        }
    }
}

fn bodies(sends: &[crate::sms::TwilioSend]) -> Vec<String> {
    sends
        .iter()
        .map(|s| {
            s.fields
                .iter()
                .find(|(k, _)| k == "Body")
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn b5_advisor_joins_and_the_ai_whispers_only_to_the_advisor() {
    let (fake, base) = FakeTwilio::start().await;
    let config = format!(
        r#"
[[channels]]
id = "ws_advisor"
type = "websocket"

[[channels]]
id = "ai_support"
type = "ai"
provider = "echo"

[[channels]]
id = "sms_main"
type = "sms"
provider = "twilio"
from = "{OUR_NUMBER}"
account_sid = "{sid}"
auth_token_env = "TWILIO_AUTH_TOKEN"
base_url = "{base}"
"#,
        sid = crate::sms::SID
    );
    let s = start_twilio_server(&config).await;
    // The integrator's room: SMS customer + AI. The SMS channel is bound to
    // this one room, so the customer's first message is routed to it.
    s.ok("POST", "/rooms", Some(json!({"id": "mortgage"})))
        .await;
    for c in ["sms_main", "ai_support"] {
        s.ok(
            "POST",
            "/rooms/mortgage/channels",
            Some(json!({"channel_id": c})),
        )
        .await;
    }

    // [0]..[3]: the customer talks with the AI over SMS.
    sms_in(&s, "SMb501", CUSTOMER, "Bonjour").await;
    sms_in(&s, "SMb502", CUSTOMER, "I need help with my mortgage").await;
    let sends = fake.wait_for(2).await;
    assert_eq!(
        bodies(&sends),
        vec![
            format!("{ECHO}Bonjour"),
            format!("{ECHO}I need help with my mortgage")
        ]
    );
    assert!(
        sends
            .iter()
            .all(|s| s.fields[0] == ("To".into(), CUSTOMER.into()))
    );
    let first = messages(&s, "mortgage").await;
    assert_eq!(first.len(), 4, "{first:?}");
    assert_eq!(
        first
            .iter()
            .map(|e| e["chain_depth"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 0, 1]
    );

    // The advisor joins: a WebSocket channel attached mid-conversation.
    let (status, binding) = s
        .call(
            "POST",
            "/rooms/mortgage/channels",
            Some(json!({"channel_id": "ws_advisor", "access": "read_write", "visibility": "all"})),
        )
        .await;
    assert_eq!(status, 201, "{binding}");
    let mut advisor =
        connect(&s.ws_url("/ws/mortgage?channel_id=ws_advisor&participant_id=advisor")).await;
    let timeline = s.timeline("mortgage").await;
    assert!(
        timeline.iter().any(|e| e["type"] == "channel_attached"),
        "the attachment is on the timeline: {timeline:?}"
    );

    // The integrator mutes the AI, narrows its visibility to the advisor,
    // and unmutes it: the AI becomes an assistant to the advisor.
    s.ok("POST", "/rooms/mortgage/channels/ai_support/mute", None)
        .await;
    let b = s
        .ok(
            "PATCH",
            "/rooms/mortgage/channels/ai_support",
            Some(json!({"visibility": "ws_advisor"})),
        )
        .await;
    assert_eq!(b["visibility"], "ws_advisor");
    s.ok("POST", "/rooms/mortgage/channels/ai_support/unmute", None)
        .await;
    let kinds: Vec<Value> = s
        .timeline("mortgage")
        .await
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    for k in ["channel_muted", "channel_updated", "channel_unmuted"] {
        assert!(kinds.contains(&json!(k)), "{k} in {kinds:?}");
    }

    // [8] the customer asks; [9] the AI whispers to the advisor only.
    sms_in(&s, "SMb503", CUSTOMER, "What rate can I get?").await;
    let asked = next_of_type(&mut advisor, "message").await;
    let asked = if asked["content"]["text"] == "What rate can I get?" {
        asked
    } else {
        // Replay of the earlier conversation comes first on a fresh view.
        loop {
            let e = next_of_type(&mut advisor, "message").await;
            if e["content"]["text"] == "What rate can I get?" {
                break e;
            }
        }
    };
    assert_eq!(asked["chain_depth"], 0);
    let whisper = next_of_type(&mut advisor, "message").await;
    assert_eq!(whisper["source"]["channel_id"], "ai_support");
    assert_eq!(
        whisper["content"]["text"],
        format!("{ECHO}What rate can I get?")
    );
    assert_eq!(whisper["visibility"], "ws_advisor", "{whisper}");
    let customer_view = seen_by(&s, "mortgage", "sms_main").await;
    assert!(
        !customer_view.iter().any(|e| e["id"] == whisper["id"]),
        "the customer does not see the whisper"
    );

    // [10] the advisor answers the customer, visible to all.
    send(
        &mut advisor,
        json!({"type": "send", "content": {"type": "text", "text": "We can offer you 4.5% fixed."}}),
    )
    .await;
    let ack = loop {
        let f = next_frame(&mut advisor).await.unwrap();
        if f["type"] == "ack" {
            break f;
        }
    };
    assert_eq!(ack["result"]["blocked"], false, "{ack}");
    assert_eq!(ack["result"]["event"]["visibility"], "all");
    let sends = fake.wait_for(3).await;
    assert_eq!(
        sends[2].fields,
        fields(&[
            ("To", CUSTOMER),
            ("From", OUR_NUMBER),
            ("Body", "We can offer you 4.5% fixed.")
        ]),
        "the whisper never reached the customer; the advisor's answer did"
    );

    // [11] the AI may answer the customer directly again.
    s.ok(
        "PATCH",
        "/rooms/mortgage/channels/ai_support",
        Some(json!({"visibility": "all"})),
    )
    .await;
    sms_in(&s, "SMb504", CUSTOMER, "What documents do I need?").await;
    let sends = fake.wait_for(4).await;
    assert_eq!(
        bodies(&sends),
        vec![
            format!("{ECHO}Bonjour"),
            format!("{ECHO}I need help with my mortgage"),
            "We can offer you 4.5% fixed.".to_owned(),
            format!("{ECHO}What documents do I need?"),
        ]
    );
    let customer_view = seen_by(&s, "mortgage", "sms_main").await;
    assert!(customer_view.iter().any(|e| e["content"]["text"]
        == format!("{ECHO}What documents do I need?")
        && e["visibility"] == "all"));
}

/// The integrator's identity service: a resolver that finds three people
/// behind the family phone, and an ON_IDENTITY_AMBIGUOUS hook that keeps
/// them all as candidates. Records what it was asked.
async fn identity_service(calls: Arc<Mutex<Vec<(String, Value)>>>) -> String {
    let resolve = {
        let calls = calls.clone();
        move |axum::Json(body): axum::Json<Value>| {
            let calls = calls.clone();
            async move {
                calls.lock().unwrap().push(("resolve".into(), body.clone()));
                let answer = if body["address"] == CUSTOMER {
                    json!({"status": "ambiguous", "candidates": ["id_jean", "id_marie", "id_pierre"]})
                } else {
                    json!({"status": "unknown"})
                };
                axum::Json(answer)
            }
        }
    };
    let hook = move |axum::Json(body): axum::Json<Value>| {
        let calls = calls.clone();
        async move {
            calls.lock().unwrap().push(("hook".into(), body.clone()));
            let ids: Vec<Value> = body["payload"]["candidates"]
                .as_array()
                .map(|c| c.iter().map(|i| i["id"].clone()).collect())
                .unwrap_or_default();
            axum::Json(json!({"action": "pending", "candidates": ids}))
        }
    };
    let app = axum::Router::new()
        .route("/resolve", axum::routing::post(resolve))
        .route("/identity-hook", axum::routing::post(hook));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn b3_an_ambiguous_sender_is_pending_until_an_advisor_resolves_them() {
    let (fake, base) = FakeTwilio::start().await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let service = identity_service(calls.clone()).await;
    let config = format!(
        r#"
[identity]
resolver = "http"
url = "{service}/resolve"
channel_types = ["sms"]

[[hooks]]
name = "family-phone"
trigger = "on_identity_ambiguous"
url = "{service}/identity-hook"
timeout_ms = 5000

[[channels]]
id = "ws_advisor"
type = "websocket"

[[channels]]
id = "ai_support"
type = "ai"
provider = "echo"

[[channels]]
id = "sms_main"
type = "sms"
provider = "twilio"
from = "{OUR_NUMBER}"
account_sid = "{sid}"
auth_token_env = "TWILIO_AUTH_TOKEN"
base_url = "{base}"
"#,
        sid = crate::sms::SID
    );
    let s = start_twilio_server(&config).await;
    for (id, name) in [
        ("id_jean", "Jean Tremblay"),
        ("id_marie", "Marie Tremblay"),
        ("id_pierre", "Pierre Tremblay"),
    ] {
        s.ok(
            "POST",
            "/identities",
            Some(json!({"id": id, "display_name": name})),
        )
        .await;
    }
    s.ok("POST", "/rooms", Some(json!({"id": "family"}))).await;
    for c in ["sms_main", "ai_support", "ws_advisor"] {
        s.ok(
            "POST",
            "/rooms/family/channels",
            Some(json!({"channel_id": c})),
        )
        .await;
    }
    let mut advisor =
        connect(&s.ws_url("/ws/family?channel_id=ws_advisor&participant_id=advisor")).await;

    // 1. The SMS from the shared phone.
    let (status, _, body) = sms_in(&s, "SMb301", CUSTOMER, "I need to check my account").await;
    assert_eq!(status, 200, "{body}");

    // 2-3. The resolver found three people; the hook was asked and kept them.
    let asked = calls.lock().unwrap().clone();
    let resolve = asked
        .iter()
        .find(|(k, _)| k == "resolve")
        .expect("resolver called");
    assert_eq!(resolve.1["address"], CUSTOMER);
    assert_eq!(resolve.1["channel_type"], "sms");
    let hook = asked
        .iter()
        .find(|(k, _)| k == "hook")
        .expect("hook called");
    assert_eq!(hook.1["trigger"], "on_identity_ambiguous");
    assert_eq!(hook.1["payload"]["status"], "ambiguous");
    let names: Vec<&str> = hook.1["payload"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Jean Tremblay", "Marie Tremblay", "Pierre Tremblay"]
    );

    // 4. A PENDING participant with the candidates, named by its number.
    let parts = s.ok("GET", "/rooms/family/participants", None).await;
    let p = parts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == CUSTOMER)
        .expect("the sender's participant")
        .clone();
    assert_eq!(p["identification"], "pending", "{p}");
    assert_eq!(p["candidates"], json!(["id_jean", "id_marie", "id_pierre"]));
    assert_eq!(p["display_name"], CUSTOMER);
    assert_eq!(p["identity_id"], Value::Null);
    let pid = p["id"].as_str().unwrap().to_owned();

    // 5. The event is processed normally: stored, seen by the advisor, and
    // the AI answers the customer over SMS.
    let seen = next_of_type(&mut advisor, "message").await;
    assert_eq!(seen["content"]["text"], "I need to check my account");
    assert_eq!(seen["source"]["participant_id"], pid.as_str());
    assert_eq!(seen["status"], "delivered");
    let sends = fake.wait_for(1).await;
    assert_eq!(
        sends[0].fields,
        fields(&[
            ("To", CUSTOMER),
            ("From", OUR_NUMBER),
            ("Body", &format!("{ECHO}I need to check my account")),
        ])
    );

    // 6-7. The advisor resolves the participant over REST.
    let resolved = s
        .ok(
            "POST",
            &format!("/rooms/family/participants/{pid}/resolve"),
            Some(json!({"identity_id": "id_marie"})),
        )
        .await;
    assert_eq!(resolved["identification"], "identified");
    assert_eq!(resolved["identity_id"], "id_marie");
    assert_eq!(resolved["id"], pid.as_str());

    // 8. PARTICIPANT_IDENTIFIED is on the timeline, live for the advisor.
    let marker = next_of_type(&mut advisor, "participant_identified").await;
    let timeline = s.timeline("family").await;
    assert!(
        timeline
            .iter()
            .any(|e| e["type"] == "participant_identified" && e["id"] == marker["id"]),
        "{timeline:?}"
    );

    // The next SMS from the phone is Marie's, without asking again.
    let before = calls.lock().unwrap().len();
    sms_in(&s, "SMb302", CUSTOMER, "Thanks").await;
    let next = next_of_type(&mut advisor, "message").await;
    let next = if next["content"]["text"] == "Thanks" {
        next
    } else {
        next_of_type(&mut advisor, "message").await
    };
    assert_eq!(next["content"]["text"], "Thanks");
    assert_eq!(next["source"]["participant_id"], pid.as_str());
    assert_eq!(calls.lock().unwrap().len(), before, "no second resolution");
}
