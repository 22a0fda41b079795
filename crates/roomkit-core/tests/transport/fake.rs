//! A scripted fake provider channel: each `deliver()` takes the next step of
//! a script (succeed, fail, fail with retry-after, stall) and records the
//! time of the call on tokio's clock.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use roomkit_core::model::{ChannelBinding, ChannelCapabilities, ChannelId, ChannelType, RoomEvent};
use roomkit_core::{Channel, ChannelError, ChannelOutput, RoomContext};
use tokio::time::{Duration, Instant};

/// One scripted answer.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Ok,
    Fail,
    FailFatal,
    RetryAfter(f64),
    Stall,
}

#[derive(Default)]
struct State {
    script: VecDeque<Step>,
    default: Option<Step>,
    calls: Vec<(Duration, String)>,
    sent: Vec<String>,
    next: u32,
}

/// The fake channel. Cloning shares the record.
#[derive(Clone)]
pub struct FakeProvider {
    id: ChannelId,
    start: Instant,
    caps: ChannelCapabilities,
    state: Arc<Mutex<State>>,
}

impl FakeProvider {
    pub fn new(id: &str) -> Self {
        Self {
            id: ChannelId::from(id),
            start: Instant::now(),
            caps: ChannelCapabilities::text_only(),
            state: Arc::default(),
        }
    }

    pub fn with_capabilities(mut self, caps: ChannelCapabilities) -> Self {
        self.caps = caps;
        self
    }

    pub fn arc(&self) -> Arc<dyn Channel> {
        Arc::new(self.clone())
    }

    /// Steps to take first.
    pub fn script(&self, steps: &[Step]) {
        self.state.lock().script.extend(steps.iter().copied());
    }

    /// What to do once the script is used up (succeed by default).
    pub fn then_always(&self, step: Step) {
        self.state.lock().default = Some(step);
    }

    /// Number of deliver() calls.
    pub fn calls(&self) -> usize {
        self.state.lock().calls.len()
    }

    /// When each call started, from the channel's creation.
    pub fn call_times(&self) -> Vec<Duration> {
        self.state.lock().calls.iter().map(|c| c.0).collect()
    }

    /// Texts the provider accepted.
    pub fn sent(&self) -> Vec<String> {
        self.state.lock().sent.clone()
    }
}

#[async_trait]
impl Channel for FakeProvider {
    fn id(&self) -> &ChannelId {
        &self.id
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Sms
    }

    fn provider_name(&self) -> Option<&str> {
        Some("fake")
    }

    fn capabilities(&self) -> ChannelCapabilities {
        self.caps.clone()
    }

    async fn deliver(
        &self,
        event: &RoomEvent,
        _binding: &ChannelBinding,
        _context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        let text = event.content.plain_text();
        let step = {
            let mut s = self.state.lock();
            s.calls.push((self.start.elapsed(), text.clone()));
            s.script.pop_front().or(s.default).unwrap_or(Step::Ok)
        };
        let fail = |retryable, retry_after_seconds| ChannelError::Provider {
            provider: "fake".into(),
            code: if retryable {
                "503".into()
            } else {
                "400".into()
            },
            message: "scripted failure".into(),
            retryable,
            retry_after_seconds,
        };
        match step {
            Step::Ok => {
                let mut s = self.state.lock();
                s.next += 1;
                s.sent.push(text);
                Ok(ChannelOutput::sent(format!("FAKE{}", s.next)))
            }
            Step::Fail => Err(fail(true, None)),
            Step::FailFatal => Err(fail(false, None)),
            Step::RetryAfter(s) => Err(fail(true, Some(s))),
            Step::Stall => {
                tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
                Err(fail(true, None))
            }
        }
    }
}
