//! Tools: HTTP tools against a fake endpoint, and MCP servers over
//! streamable HTTP (an in-process rmcp server) and stdio (a small script).

use std::sync::Arc;

use roomkit_ai::tools::{HttpTool, HttpToolConfig, McpServerConfig, McpToolSource};
use roomkit_ai::{AiChannel, Tool, ToolContext, ToolSource};
use serde_json::json;

use crate::channel::{Scripted, room_with, text, tool_call};
use crate::fake::{FakeServer, Reply};

fn ctx() -> ToolContext {
    ToolContext {
        room_id: "r1".into(),
        channel_id: "ai".into(),
        event_id: "evt-1".into(),
        call_id: "call-1".into(),
    }
}

fn http_config(url: String) -> HttpToolConfig {
    HttpToolConfig {
        name: "lookup_order".into(),
        description: "Finds an order".into(),
        parameters: json!({"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}),
        url,
        timeout_ms: Some(5000),
        api_key_env: None,
    }
}

#[tokio::test]
async fn http_tool_posts_arguments_and_returns_the_body() {
    let server = FakeServer::start().await;
    server.push(Reply::json(200, json!({"status": "shipped"})));
    server.push(Reply::json(502, json!({"error": "upstream down"})));
    let tool = HttpTool::new(http_config(format!("{}/tools/order", server.base))).unwrap();
    assert_eq!(tool.definition().parameters["required"][0], "order_id");
    let out = tool.call(json!({"order_id": "A-1"}), &ctx()).await.unwrap();
    assert!(!out.is_error);
    assert_eq!(out.content, "{\"status\":\"shipped\"}");
    let req = &server.requests()[0];
    assert_eq!(req.path, "/tools/order");
    assert_eq!(req.body["tool"], "lookup_order");
    assert_eq!(req.body["arguments"]["order_id"], "A-1");
    assert_eq!(req.body["room_id"], "r1");
    assert_eq!(req.body["call_id"], "call-1");
    let out = tool.call(json!({"order_id": "B"}), &ctx()).await.unwrap();
    assert!(out.is_error);
    assert!(out.content.contains("502"));
}

/// A redirect is an error result, not followed; a long reply is cut at
/// the cap.
#[tokio::test]
async fn http_tool_follows_no_redirect_and_caps_the_reply() {
    let internal = FakeServer::start().await;
    internal.always(Reply::json(200, json!({"secret": "internal"})));
    let server = FakeServer::start().await;
    server.push(
        Reply::raw(302, "text/plain", "moved").header("location", &format!("{}/x", internal.base)),
    );
    server.push(Reply::raw(200, "text/plain", &"y".repeat(3 * 64 * 1024)));
    let tool = HttpTool::new(http_config(format!("{}/tools/order", server.base))).unwrap();
    let out = tool.call(json!({"order_id": "A-1"}), &ctx()).await.unwrap();
    assert!(out.is_error);
    assert!(out.content.contains("302"), "{}", out.content);
    assert!(internal.requests().is_empty());
    let out = tool.call(json!({"order_id": "A-1"}), &ctx()).await.unwrap();
    assert!(!out.is_error);
    assert_eq!(out.content.len(), 64 * 1024);
}

#[tokio::test]
async fn http_tool_config_is_checked() {
    let mut c = http_config("ftp://x".into());
    assert!(HttpTool::new(c.clone()).is_err());
    c.url = "http://127.0.0.1:1/x".into();
    c.api_key_env = Some("ROOMKIT_TEST_SURELY_UNSET_VAR".into());
    let e = HttpTool::new(c).unwrap_err();
    assert!(e.to_string().contains("ROOMKIT_TEST_SURELY_UNSET_VAR"));
}

#[tokio::test]
async fn the_ai_channel_calls_an_http_tool_in_its_loop() {
    let server = FakeServer::start().await;
    server.push(Reply::json(200, json!({"status": "shipped"})));
    let p = Scripted::new();
    p.push(tool_call("c1", "lookup_order", json!({"order_id": "A-1"})));
    p.push(text("Your order has shipped."));
    let tool = HttpTool::new(http_config(format!("{}/tools/order", server.base))).unwrap();
    let ai = AiChannel::builder("ai")
        .provider(p.clone())
        .tool(Arc::new(tool))
        .build();
    let room = room_with(ai, roomkit_testkit::RecordingChannel::websocket("user")).await;
    room.say("where is my order A-1?").await;
    assert_eq!(room.user.delivered_texts(), ["Your order has shipped."]);
    let body = &server.requests()[0].body;
    assert_eq!(body["arguments"]["order_id"], "A-1");
    assert_eq!(body["channel_id"], "ai");
}

mod mcp_server {
    use rmcp::handler::server::wrapper::{Json, Parameters};
    use rmcp::{schemars, tool, tool_router};
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Default)]
    pub struct Calc;

    #[derive(Deserialize, schemars::JsonSchema, Default)]
    pub struct AddParameter {
        pub left: i64,
        pub right: i64,
    }

    #[derive(Serialize, schemars::JsonSchema)]
    pub struct AddOutput {
        pub sum: i64,
    }

    #[tool_router(server_handler)]
    impl Calc {
        #[tool(name = "adder", description = "Adds two integers")]
        fn add(
            &self,
            Parameters(AddParameter { left, right }): Parameters<AddParameter>,
        ) -> Json<AddOutput> {
            Json(AddOutput { sum: left + right })
        }
    }
}

#[tokio::test]
async fn mcp_tools_over_streamable_http() {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    let service: StreamableHttpService<mcp_server::Calc, LocalSessionManager> =
        StreamableHttpService::new(
            || Ok(mcp_server::Calc),
            Default::default(),
            StreamableHttpServerConfig::default(),
        );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let source = McpToolSource::new(McpServerConfig {
        name: "calc".into(),
        transport: "http".into(),
        command: None,
        args: Vec::new(),
        env: Default::default(),
        url: Some(format!("http://{addr}/mcp")),
        timeout_ms: Some(10_000),
    })
    .unwrap();
    let tools = source.tools().await.unwrap();
    assert_eq!(tools.len(), 1);
    let def = tools[0].definition();
    assert_eq!(def.name, "adder");
    assert_eq!(def.description, "Adds two integers");
    assert!(
        def.parameters["properties"]["left"].is_object(),
        "{}",
        def.parameters
    );
    let out = tools[0]
        .call(json!({"left": 2, "right": 3}), &ctx())
        .await
        .unwrap();
    assert!(!out.is_error);
    assert!(out.content.contains("\"sum\":5"), "{}", out.content);

    // Through the channel, with the policy in force.
    let p = Scripted::new();
    p.push(tool_call("c1", "adder", json!({"left": 40, "right": 2})));
    p.push(text("42"));
    let ai = AiChannel::builder("ai")
        .provider(p.clone())
        .tool_source(Arc::new(source))
        .build();
    let room = room_with(ai, roomkit_testkit::RecordingChannel::websocket("user")).await;
    room.say("40 + 2?").await;
    let calls = p.calls.lock().clone();
    assert_eq!(calls[0].1.tools[0].name, "adder");
    let last = calls[1].0.last().unwrap();
    match &last.content[0] {
        roomkit_ai::AIContentPart::ToolResult(r) => {
            assert!(r.content.contains("42"), "{}", r.content)
        }
        other => panic!("{other:?}"),
    }
}

const STDIO_SERVER: &str = r#"
import json, sys
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method = msg.get("method")
    if method == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}}, "serverInfo": {"name": "shout", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "shout", "description": "Upper-cases text", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}]}
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": msg["params"]["arguments"]["text"].upper()}], "isError": False}
    else:
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "Method not found"}}) + "\n")
        sys.stdout.flush()
        continue
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"#;

#[tokio::test]
async fn mcp_tools_over_stdio() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        // The README's test command sets this: there, a missing python3 is
        // a failure, not a skip.
        if std::env::var_os("ROOMKIT_TEST_REQUIRE_ALL").is_some() {
            panic!("mcp_tools_over_stdio: python3 is not installed (scripts/test installs it)");
        }
        eprintln!("SKIPPED mcp_tools_over_stdio: python3 is not installed");
        return;
    }
    let source = McpToolSource::new(McpServerConfig {
        name: "shout".into(),
        transport: "stdio".into(),
        command: Some("python3".into()),
        args: vec!["-c".into(), STDIO_SERVER.into()],
        env: Default::default(),
        url: None,
        timeout_ms: Some(10_000),
    })
    .unwrap();
    let tools = source.tools().await.unwrap();
    assert_eq!(tools[0].definition().name, "shout");
    let out = tools[0]
        .call(json!({"text": "hello"}), &ctx())
        .await
        .unwrap();
    assert_eq!(out.content, "HELLO");
    source.close().await;
}

#[test]
fn mcp_config_is_checked() {
    let bad = McpServerConfig {
        name: "x".into(),
        transport: "carrier-pigeon".into(),
        command: None,
        args: Vec::new(),
        env: Default::default(),
        url: None,
        timeout_ms: None,
    };
    assert!(McpToolSource::new(bad.clone()).is_err());
    let no_cmd = McpServerConfig {
        transport: "stdio".into(),
        ..bad
    };
    assert!(
        McpToolSource::new(no_cmd)
            .unwrap_err()
            .to_string()
            .contains("command")
    );
}
