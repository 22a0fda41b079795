//! The AI channel in a room: history, target capabilities, hooks, tool
//! loop, policy, metrics, streaming, muting and greeting.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use roomkit_ai::{
    AIContext, AIMessage, AIProvider, AIResponse, AgentIdentity, AiChannel, AiError, StopReason,
    StreamMode, ToolCall, ToolOutput, ToolPolicy, Usage, tools::FnTool,
};
use roomkit_core::model::{
    ChannelCapabilities, ChannelId, EventStatus, FrameworkEvent, HookTrigger, Task,
};
use roomkit_core::{
    AttachOptions, CreateRoom, HookPayload, HookRegistration, HookResult, RoomKit, SendEvent,
    SideEffects, TimelineQuery,
};
use roomkit_testkit::RecordingChannel;
use serde_json::json;

/// A provider answering from a script and recording what it was asked.
#[derive(Default)]
pub struct Scripted {
    replies: Mutex<VecDeque<Result<AIResponse, AiError>>>,
    fallback: Mutex<Option<AIResponse>>,
    pub calls: Mutex<Vec<(Vec<AIMessage>, AIContext)>>,
    streaming: bool,
    delay: Option<Duration>,
}

impl Scripted {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn streaming() -> Arc<Self> {
        Arc::new(Self {
            streaming: true,
            ..Self::default()
        })
    }
    pub fn slow(d: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay: Some(d),
            ..Self::default()
        })
    }
    pub fn push(&self, r: AIResponse) {
        self.replies.lock().push_back(Ok(r));
    }
    pub fn push_err(&self, e: AiError) {
        self.replies.lock().push_back(Err(e));
    }
    pub fn always(&self, r: AIResponse) {
        *self.fallback.lock() = Some(r);
    }
    pub fn count(&self) -> usize {
        self.calls.lock().len()
    }
}

pub fn text(t: &str) -> AIResponse {
    let mut r = AIResponse::text(t);
    r.usage = Usage {
        prompt_tokens: 10,
        completion_tokens: 5,
        cached_tokens: 2,
    };
    r.model = "scripted-1".into();
    r
}

pub fn tool_call(id: &str, name: &str, args: serde_json::Value) -> AIResponse {
    let mut r = text("");
    r.tool_calls = vec![ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: args,
    }];
    r.stop_reason = StopReason::ToolUse;
    r
}

#[async_trait]
impl AIProvider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn model_name(&self) -> &str {
        "scripted-1"
    }
    fn supports_streaming(&self) -> bool {
        self.streaming
    }
    async fn generate(
        &self,
        messages: &[AIMessage],
        context: &AIContext,
    ) -> Result<AIResponse, AiError> {
        self.calls.lock().push((messages.to_vec(), context.clone()));
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        let next = self.replies.lock().pop_front();
        match next {
            Some(r) => r,
            None => Ok(self
                .fallback
                .lock()
                .clone()
                .unwrap_or_else(|| text("default"))),
        }
    }

    async fn generate_stream(
        &self,
        messages: &[AIMessage],
        context: &AIContext,
    ) -> Result<roomkit_ai::ResponseStream, AiError> {
        use futures::StreamExt;
        let r = self.generate(messages, context).await?;
        // Word by word, as a real model would.
        let mut items: Vec<Result<roomkit_ai::StreamEvent, AiError>> = r
            .text
            .split_inclusive(' ')
            .map(|w| Ok(roomkit_ai::StreamEvent::TextDelta(w.to_owned())))
            .collect();
        items.push(Ok(roomkit_ai::StreamEvent::Done(r)));
        Ok(futures::stream::iter(items).boxed())
    }
}

/// A transport that shows live text: records each streamed chunk.
pub struct LiveChannel {
    id: ChannelId,
    pub chunks: Mutex<Vec<String>>,
}

#[async_trait]
impl roomkit_core::Channel for LiveChannel {
    fn id(&self) -> &ChannelId {
        &self.id
    }
    fn channel_type(&self) -> roomkit_core::model::ChannelType {
        roomkit_core::model::ChannelType::Websocket
    }
    fn capabilities(&self) -> ChannelCapabilities {
        ChannelCapabilities::full()
    }
    fn supports_streaming_delivery(&self) -> bool {
        true
    }
    async fn deliver(
        &self,
        _event: &roomkit_core::model::RoomEvent,
        _binding: &roomkit_core::model::ChannelBinding,
        _context: &roomkit_core::RoomContext,
    ) -> Result<roomkit_core::ChannelOutput, roomkit_core::ChannelError> {
        Ok(roomkit_core::ChannelOutput::empty())
    }
    async fn deliver_stream(
        &self,
        mut stream: roomkit_core::TextStream,
        _event: &roomkit_core::model::RoomEvent,
        _binding: &roomkit_core::model::ChannelBinding,
        _context: &roomkit_core::RoomContext,
    ) -> Result<roomkit_core::ChannelOutput, roomkit_core::ChannelError> {
        use futures::StreamExt;
        while let Some(c) = stream.next().await {
            self.chunks.lock().push(c);
        }
        Ok(roomkit_core::ChannelOutput::empty())
    }
}

pub struct Room {
    pub kit: RoomKit,
    pub user: RecordingChannel,
    pub _ai: Arc<AiChannel>,
}

pub async fn room_with(ai: AiChannel, user: RecordingChannel) -> Room {
    let ai = Arc::new(ai);
    let kit = RoomKit::builder()
        .channel(user.arc())
        .channel(ai.clone())
        .build()
        .unwrap();
    ai.attach_kit(&kit);
    kit.create_room(CreateRoom::with_id("r1")).await.unwrap();
    kit.attach_channel(
        &"r1".into(),
        &ChannelId::from("user"),
        AttachOptions::default(),
    )
    .await
    .unwrap();
    kit.attach_channel(&"r1".into(), ai_id(&ai), AttachOptions::default())
        .await
        .unwrap();
    kit.idle().await;
    Room { kit, user, _ai: ai }
}

fn ai_id(ai: &AiChannel) -> &ChannelId {
    roomkit_core::Channel::id(ai)
}

impl Room {
    pub async fn say(&self, t: &str) {
        let r = self
            .kit
            .send_event(SendEvent::text("r1", "user", t))
            .await
            .unwrap();
        assert!(!r.blocked);
        self.kit.idle().await;
    }

    pub async fn ai_events(&self) -> Vec<Arc<roomkit_core::model::RoomEvent>> {
        self.kit
            .timeline(&"r1".into(), TimelineQuery::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.source.channel_id.as_str() == "ai")
            .collect()
    }
}

#[tokio::test]
async fn answers_with_history_prompt_and_chain_metadata() {
    let p = Scripted::new();
    p.push(text("first answer"));
    p.push(text("second answer"));
    let ai = AiChannel::builder("ai")
        .provider(p.clone())
        .system_prompt("You are a test assistant.")
        .temperature(0.3)
        .build();
    let room = room_with(ai, RecordingChannel::websocket("user")).await;
    room.say("hello").await;
    room.say("and again").await;

    let replies = room.ai_events().await;
    assert_eq!(replies.len(), 2);
    let second = &replies[1];
    assert_eq!(second.content.as_text(), Some("second answer"));
    assert_eq!(second.chain_depth, 1);
    assert!(second.parent_event_id.is_some());
    assert_eq!(second.metadata["ai_usage"]["prompt_tokens"], 10);
    assert_eq!(second.metadata["loop_end_reason"], "complete");
    assert_eq!(
        room.user.delivered_texts(),
        ["first answer", "second answer"]
    );

    let calls = p.calls.lock().clone();
    let (msgs, ctx) = &calls[1];
    let seen: Vec<(roomkit_ai::Role, String)> =
        msgs.iter().map(|m| (m.role, m.plain_text())).collect();
    use roomkit_ai::Role::*;
    assert_eq!(
        seen,
        [
            (User, "hello".to_owned()),
            (Assistant, "first answer".to_owned()),
            (User, "and again".to_owned())
        ]
    );
    assert!(
        ctx.system_instructions
            .as_deref()
            .unwrap()
            .starts_with("You are a test assistant.")
    );
    assert_eq!(ctx.temperature, Some(0.3));
}

#[tokio::test]
async fn never_answers_itself_and_config_only_never_generates() {
    let p = Scripted::new();
    let ai = AiChannel::builder("ai").provider(p.clone()).build();
    let room = room_with(ai, RecordingChannel::websocket("user")).await;
    room.say("one").await;
    // The AI's reply re-entered the room; it did not answer it.
    assert_eq!(p.count(), 1);
    assert_eq!(room.ai_events().await.len(), 1);

    let agent = AiChannel::builder("ai")
        .identity(AgentIdentity {
            role: Some("Greeter".into()),
            ..AgentIdentity::default()
        })
        .build();
    assert!(agent.is_config_only());
    let room = room_with(agent, RecordingChannel::websocket("user")).await;
    room.say("anyone?").await;
    assert!(room.ai_events().await.is_empty());
}

#[tokio::test]
async fn target_capabilities_reach_the_provider() {
    let p = Scripted::new();
    let ai = AiChannel::builder("ai").provider(p.clone()).build();
    let mut caps = ChannelCapabilities::text_only();
    caps.max_length = Some(1600);
    let sms = RecordingChannel::sms("user").with_capabilities(caps);
    let room = room_with(ai, sms).await;
    room.say("Bonjour").await;
    let calls = p.calls.lock().clone();
    let ctx = &calls[0].1;
    assert_eq!(
        ctx.target_capabilities.as_ref().unwrap().max_length,
        Some(1600)
    );
    assert_eq!(
        ctx.target_media_types,
        [roomkit_core::model::ChannelMediaType::Text]
    );
    assert!(
        ctx.system_instructions
            .as_deref()
            .unwrap_or("")
            .contains("1600")
    );
}

#[tokio::test]
async fn sliding_window_keeps_the_last_events() {
    let p = Scripted::new();
    let ai = AiChannel::builder("ai")
        .provider(p.clone())
        .max_context_events(3)
        .build();
    let room = room_with(ai, RecordingChannel::websocket("user")).await;
    for i in 0..4 {
        room.say(&format!("m{i}")).await;
    }
    let calls = p.calls.lock().clone();
    let last: Vec<String> = calls[3].0.iter().map(|m| m.plain_text()).collect();
    assert_eq!(last, ["m2", "default", "m3"]);
    assert!(
        calls[3]
            .1
            .system_instructions
            .as_deref()
            .unwrap_or("")
            .contains("left out")
    );
}

#[tokio::test]
async fn tool_loop_feeds_results_back_and_respects_policy() {
    let p = Scripted::new();
    p.push(tool_call("c1", "get_weather", json!({"city": "Paris"})));
    p.push(tool_call("c2", "delete_everything", json!({})));
    p.push(text("It is sunny in Paris."));
    let calls_seen = Arc::new(Mutex::new(Vec::new()));
    let seen = calls_seen.clone();
    let weather = FnTool::new(
        "get_weather",
        "Weather of a city",
        json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        move |args, ctx| {
            let seen = seen.clone();
            async move {
                seen.lock().push((args.clone(), ctx.call_id.clone()));
                let mut out = ToolOutput::text(json!({"sky": "clear"}).to_string());
                out.tasks.push(Task::new("weather_checked"));
                Ok(out)
            }
        },
    );
    let forbidden_ran = Arc::new(Mutex::new(false));
    let fr = forbidden_ran.clone();
    let delete = FnTool::new(
        "delete_everything",
        "Deletes",
        json!({"type": "object"}),
        move |_, _| {
            let fr = fr.clone();
            async move {
                *fr.lock() = true;
                Ok(ToolOutput::text("deleted"))
            }
        },
    );
    let ai = AiChannel::builder("ai")
        .provider(p.clone())
        .tool(Arc::new(weather))
        .tool(Arc::new(delete))
        .tool_policy(ToolPolicy {
            deny: vec!["delete_*".into()],
            ..ToolPolicy::default()
        })
        .build();
    let room = room_with(ai, RecordingChannel::websocket("user")).await;
    room.say("weather?").await;

    assert_eq!(p.count(), 3);
    let calls = p.calls.lock().clone();
    // Only allowed tools are offered.
    let offered: Vec<&str> = calls[0].1.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(offered, ["get_weather"]);
    // Round 2 sees the tool call and its result, in order.
    let round2 = &calls[1].0;
    assert_eq!(round2.len(), 3);
    assert_eq!(round2[1].tool_calls().next().unwrap().id, "c1");
    match &round2[2].content[0] {
        roomkit_ai::AIContentPart::ToolResult(r) => {
            assert_eq!(r.call_id, "c1");
            assert_eq!(r.content, "{\"sky\":\"clear\"}");
            assert!(!r.is_error);
        }
        other => panic!("expected a tool result, got {other:?}"),
    }
    // The denied tool was not run; the model was told.
    assert!(!*forbidden_ran.lock());
    match &calls[2].0.last().unwrap().content[0] {
        roomkit_ai::AIContentPart::ToolResult(r) => {
            assert!(r.is_error);
            assert!(r.content.contains("not available"));
        }
        other => panic!("expected a tool result, got {other:?}"),
    }
    assert_eq!(calls_seen.lock()[0].0, json!({"city": "Paris"}));
    let replies = room.ai_events().await;
    assert_eq!(replies[0].content.as_text(), Some("It is sunny in Paris."));
    assert_eq!(replies[0].metadata["tool_calls"], 2);
    let tasks = room
        .kit
        .list_tasks(&"r1".into(), &Default::default())
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].task_type, "weather_checked");
}

#[tokio::test]
async fn tool_rounds_are_bounded() {
    let p = Scripted::new();
    p.always(tool_call("c", "echo", json!({})));
    let tool = FnTool::new("echo", "echo", json!({"type": "object"}), |_, _| async {
        Ok(ToolOutput::text("again"))
    });
    let ai = AiChannel::builder("ai")
        .provider(p.clone())
        .tool(Arc::new(tool))
        .max_tool_rounds(3)
        .build();
    let room = room_with(ai, RecordingChannel::websocket("user")).await;
    room.say("loop").await;
    assert_eq!(p.count(), 4, "three tool rounds, then the turn ends");
    assert!(room.ai_events().await.is_empty(), "no text, no message");
}

#[tokio::test(start_paused = true)]
async fn the_tool_loop_times_out() {
    let p = Scripted::slow(Duration::from_secs(40));
    let ai = AiChannel::builder("ai")
        .provider(p.clone())
        .tool_loop_timeout(Some(Duration::from_secs(10)))
        .build();
    let room = room_with(ai, RecordingChannel::websocket("user")).await;
    room.say("slow").await;
    assert_eq!(p.count(), 1);
    assert!(room.ai_events().await.is_empty());
}

#[tokio::test]
async fn hooks_rewrite_the_request_deny_and_rewrite_tools_and_observe() {
    let p = Scripted::new();
    p.push(tool_call("c1", "lookup", json!({"q": "secret"})));
    p.push(tool_call("c2", "lookup", json!({"q": "public"})));
    p.push(text("done"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let lookup = FnTool::new(
        "lookup",
        "Lookup",
        json!({"type": "object"}),
        move |args, _| {
            let g = g.clone();
            async move {
                g.lock().push(args);
                Ok(ToolOutput::text("found"))
            }
        },
    );
    let ai = AiChannel::builder("ai")
        .provider(p.clone())
        .system_prompt("base")
        .tool(Arc::new(lookup))
        .build();
    let room = room_with(ai, RecordingChannel::websocket("user")).await;
    room.kit.add_hook(HookRegistration::sync(
        HookTrigger::BeforeAiGeneration,
        "inject",
        |input: roomkit_core::HookInput| async move {
            let HookPayload::AiGeneration(mut p) = input.payload else {
                return Ok(HookResult::allow());
            };
            p.system_prompt = Some(format!(
                "{} + injected",
                p.system_prompt.unwrap_or_default()
            ));
            Ok(HookResult::modify(HookPayload::AiGeneration(p)))
        },
    ));
    room.kit.add_hook(HookRegistration::sync(
        HookTrigger::OnToolCall,
        "guard",
        |input: roomkit_core::HookInput| async move {
            let HookPayload::ToolCall(mut c) = input.payload else {
                return Ok(HookResult::allow());
            };
            if c.arguments["q"] == "secret" {
                return Ok(HookResult::block("secrets are off limits"));
            }
            c.arguments = json!({"q": "public", "safe": true});
            Ok(HookResult::modify(HookPayload::ToolCall(c)))
        },
    ));
    let responses = Arc::new(Mutex::new(Vec::new()));
    let r2 = responses.clone();
    room.kit.add_hook(HookRegistration::asynchronous(
        HookTrigger::OnAiResponse,
        "observe",
        move |input| {
            let r2 = r2.clone();
            async move {
                if let HookPayload::AiResponse(r) = input.payload {
                    r2.lock().push(r);
                }
                Ok(SideEffects::default())
            }
        },
    ));
    let mut fw = room.kit.subscribe();
    room.say("go").await;

    let calls = p.calls.lock().clone();
    assert_eq!(
        calls[0].1.system_instructions.as_deref(),
        Some("base + injected")
    );
    match &calls[1].0.last().unwrap().content[0] {
        roomkit_ai::AIContentPart::ToolResult(r) => {
            assert!(r.is_error);
            assert!(r.content.contains("secrets are off limits"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(*got.lock(), vec![json!({"q": "public", "safe": true})]);
    let obs = responses.lock().clone();
    assert_eq!(obs.len(), 1);
    assert_eq!(obs[0].text, "done");
    assert_eq!(obs[0].tool_calls, 2);
    let mut metrics = None;
    while let Ok(e) = fw.try_recv() {
        if let FrameworkEvent::AiTurnMetrics { .. } = &*e {
            metrics = Some((*e).clone());
        }
    }
    let Some(FrameworkEvent::AiTurnMetrics {
        prompt_tokens,
        completion_tokens,
        cached_tokens,
        provider,
        model,
        ttft_ms,
        ..
    }) = metrics
    else {
        panic!("no ai_turn_metrics event");
    };
    assert_eq!(
        (prompt_tokens, completion_tokens, cached_tokens),
        (30, 15, 6)
    );
    assert_eq!(provider, "scripted");
    assert_eq!(model, "scripted-1");
    assert!(ttft_ms.is_some());
}

#[tokio::test]
async fn a_blocking_pre_generation_hook_stops_the_turn() {
    let p = Scripted::new();
    let ai = AiChannel::builder("ai").provider(p.clone()).build();
    let room = room_with(ai, RecordingChannel::websocket("user")).await;
    room.kit.add_hook(HookRegistration::sync(
        HookTrigger::BeforeAiGeneration,
        "stop",
        |_input| async { Ok(HookResult::block("quiet hours")) },
    ));
    room.say("hello?").await;
    assert_eq!(p.count(), 0);
    assert!(room.ai_events().await.is_empty());
}

#[tokio::test]
async fn streaming_goes_live_to_streaming_transports() {
    let p = Scripted::streaming();
    p.push(text("streamed reply in pieces"));
    let ai = AiChannel::builder("ai")
        .provider(p.clone())
        .stream(StreamMode::Auto)
        .build();
    let room = room_with(ai, RecordingChannel::websocket("user")).await;
    let live = Arc::new(LiveChannel {
        id: "live".into(),
        chunks: Mutex::new(Vec::new()),
    });
    room.kit.register_channel(live.clone()).unwrap();
    room.kit
        .attach_channel(
            &"r1".into(),
            &ChannelId::from("live"),
            AttachOptions::default(),
        )
        .await
        .unwrap();
    room.kit.idle().await;
    room.say("stream please").await;
    let replies = room.ai_events().await;
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].content.as_text(),
        Some("streamed reply in pieces")
    );
    assert_eq!(replies[0].chain_depth, 1);
    assert!(replies[0].parent_event_id.is_some());
    assert_eq!(
        *live.chunks.lock(),
        ["streamed ", "reply ", "in ", "pieces"],
        "the live transport got the text as it came"
    );
    // The non-streaming transport got the whole reply once.
    assert_eq!(room.user.delivered_texts(), ["streamed reply in pieces"]);
}

#[tokio::test]
async fn a_muted_ai_keeps_side_effects_but_says_nothing() {
    let p = Scripted::new();
    p.push(tool_call("c1", "note", json!({})));
    p.push(text("you will not see this"));
    let note = FnTool::new(
        "note",
        "Takes a note",
        json!({"type": "object"}),
        |_, _| async {
            let mut o = ToolOutput::text("noted");
            o.tasks.push(Task::new("follow_up"));
            o.observations.push(roomkit_core::model::Observation::new(
                "sentiment",
                serde_json::Map::new(),
            ));
            Ok(o)
        },
    );
    let ai = AiChannel::builder("ai")
        .provider(p.clone())
        .tool(Arc::new(note))
        .build();
    let room = room_with(ai, RecordingChannel::websocket("user")).await;
    room.kit
        .mute_channel(&"r1".into(), &ChannelId::from("ai"))
        .await
        .unwrap();
    room.kit.idle().await;
    room.user.clear();
    room.say("hello").await;
    assert!(room.user.delivered_texts().is_empty(), "no room message");
    let mine = room.ai_events().await;
    assert!(mine.iter().all(|e| e.status == EventStatus::Blocked));
    let tasks = room
        .kit
        .list_tasks(&"r1".into(), &Default::default())
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1);
    let obs = room.kit.list_observations(&"r1".into()).await.unwrap();
    assert_eq!(obs.len(), 1);
}

#[tokio::test]
async fn an_agent_greets_when_attached_and_uses_its_identity() {
    let p = Scripted::new();
    let ai = AiChannel::builder("ai")
        .provider(p.clone())
        .identity(AgentIdentity {
            name: Some("Ava".into()),
            role: Some("Triage Agent".into()),
            greeting: Some("Hi, I am Ava.".into()),
            ..AgentIdentity::default()
        })
        .build();
    let room = room_with(ai, RecordingChannel::websocket("user")).await;
    assert_eq!(room.user.delivered_texts(), ["Hi, I am Ava."]);
    room.say("help").await;
    let calls = p.calls.lock().clone();
    assert!(
        calls[0]
            .1
            .system_instructions
            .as_deref()
            .unwrap()
            .contains("You are Ava, Triage Agent.")
    );
}

#[tokio::test]
async fn a_failing_provider_falls_back() {
    let p = Scripted::new();
    p.push_err(AiError::Overloaded {
        provider: "scripted".into(),
        status: 503,
        message: "down".into(),
        retry_after: None,
    });
    let fb = Scripted::new();
    fb.push(text("from the fallback"));
    let ai = AiChannel::builder("ai")
        .provider(p.clone())
        .fallback_provider(fb.clone())
        .build();
    let room = room_with(ai, RecordingChannel::websocket("user")).await;
    room.say("hi").await;
    assert_eq!(room.user.delivered_texts(), ["from the fallback"]);
}

#[tokio::test]
async fn history_honours_visibility() {
    let p = Scripted::new();
    let ai = AiChannel::builder("ai").provider(p.clone()).build();
    let room = room_with(ai, RecordingChannel::websocket("user")).await;
    let other = RecordingChannel::websocket("agent-desk");
    room.kit.register_channel(other.arc()).unwrap();
    room.kit
        .attach_channel(
            &"r1".into(),
            &ChannelId::from("agent-desk"),
            AttachOptions {
                visibility: "transport".parse().unwrap(),
                ..AttachOptions::default()
            },
        )
        .await
        .unwrap();
    room.kit
        .send_event(SendEvent::text("r1", "agent-desk", "internal note"))
        .await
        .unwrap();
    room.kit.idle().await;
    room.say("question").await;
    let calls = p.calls.lock().clone();
    let texts: Vec<String> = calls
        .last()
        .unwrap()
        .0
        .iter()
        .map(|m| m.plain_text())
        .collect();
    assert!(
        !texts.iter().any(|t| t.contains("internal note")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t == "question"));
}

/// A non-streamed answer: tokens per second are measured over the time
/// the provider took, not over the moments after the whole text arrived.
#[tokio::test]
async fn tokens_per_second_of_a_non_streamed_turn_is_over_the_generation_time() {
    let p = Scripted::slow(Duration::from_millis(400));
    let mut r = text("a considered answer");
    r.usage.completion_tokens = 40;
    p.push(r);
    let ai = AiChannel::builder("ai").provider(p.clone()).build();
    let room = room_with(ai, RecordingChannel::websocket("user")).await;
    let mut fw = room.kit.subscribe();
    room.say("hello").await;
    let mut tps = None;
    while let Ok(e) = fw.try_recv() {
        if let FrameworkEvent::AiTurnMetrics {
            tokens_per_second, ..
        } = &*e
        {
            tps = Some(*tokens_per_second);
        }
    }
    let tps = tps
        .expect("an ai_turn_metrics event")
        .expect("a measured rate");
    // 40 tokens in at least 0.4 s: at most 100 per second.
    assert!(tps > 0.0 && tps <= 100.0, "tokens per second {tps}");
}
