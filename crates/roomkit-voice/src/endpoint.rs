//! What an HTTP server needs to put a voice channel on the network, without
//! knowing codecs or vendors: a [`MediaEndpoint`] takes over upgraded media
//! sockets at `/voice/{provider}/media`, and the provider's call webhook is
//! an ordinary `roomkit_channels::WebhookReceiver` (for Twilio,
//! [`crate::twilio::TwilioVoiceWebhook`]).

use std::sync::Arc;

use async_trait::async_trait;
use roomkit_core::model::ChannelId;

use crate::backend::{MediaSocket, VoiceBackend};
use crate::channel::VoiceChannel;

/// A voice channel's media socket endpoint.
#[async_trait]
pub trait MediaEndpoint: Send + Sync + 'static {
    /// The voice channel the calls join.
    fn channel_id(&self) -> &ChannelId;

    /// The path segment (`twilio` for `/voice/twilio/media`).
    fn provider(&self) -> &str;

    /// Whether the upgrade request may open a call: `url` is the URL the
    /// provider signed, `headers` the request's headers.
    fn authorize(&self, url: &str, headers: &[(String, String)]) -> bool;

    /// Runs the call on an upgraded socket until it ends.
    async fn serve(&self, socket: MediaSocket);
}

/// Decides whether an upgrade request (signed URL, headers) is genuine.
pub type UpgradeCheck = Box<dyn Fn(&str, &[(String, String)]) -> bool + Send + Sync>;

/// A [`MediaEndpoint`] for a [`VoiceChannel`] over a socket transport.
pub struct VoiceMediaEndpoint {
    channel: VoiceChannel,
    backend: Arc<dyn VoiceBackend>,
    check: UpgradeCheck,
}

impl std::fmt::Debug for VoiceMediaEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceMediaEndpoint")
            .field("channel", &self.channel)
            .field("backend", &self.backend.name())
            .finish_non_exhaustive()
    }
}

impl VoiceMediaEndpoint {
    /// An endpoint taking calls for `channel` through `backend`; `check`
    /// decides whether an upgrade request is genuine (see
    /// [`crate::twilio::verify_upgrade`]).
    pub fn new(
        channel: VoiceChannel,
        backend: Arc<dyn VoiceBackend>,
        check: impl Fn(&str, &[(String, String)]) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            channel,
            backend,
            check: Box::new(check),
        }
    }
}

#[async_trait]
impl MediaEndpoint for VoiceMediaEndpoint {
    fn channel_id(&self) -> &ChannelId {
        roomkit_core::Channel::id(&self.channel)
    }

    fn provider(&self) -> &str {
        self.backend.name()
    }

    fn authorize(&self, url: &str, headers: &[(String, String)]) -> bool {
        (self.check)(url, headers)
    }

    async fn serve(&self, socket: MediaSocket) {
        match self.channel.accept(self.backend.as_ref(), socket).await {
            Ok(call) => {
                let session_id = call.session_id.clone();
                call.ended().await;
                tracing::debug!(target: "roomkit.voice.endpoint", %session_id, "media socket done");
            }
            Err(e) => {
                tracing::warn!(target: "roomkit.voice.endpoint", channel_id = %self.channel_id(), error = %e, "media socket refused");
            }
        }
    }
}
