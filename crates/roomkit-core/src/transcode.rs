//! Content transcoding (RFC §6.6): fit each event to what its target can
//! show, then enforce the target's maximum length.

use roomkit_model::{
    ChannelCapabilities, ChannelMediaType, CompositeContent, EventContent, RoomEvent, TextContent,
};

/// Converts content for a target. Replaceable by the integrator.
pub trait Transcoder: Send + Sync + 'static {
    /// The content to give a target with these capabilities; `None` means
    /// deliver the event's own content unchanged.
    fn transcode(&self, event: &RoomEvent, caps: &ChannelCapabilities) -> Option<EventContent>;
}

/// The default rules of RFC §6.6.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultTranscoder;

fn text(t: String) -> EventContent {
    EventContent::Text(TextContent {
        text: t,
        language: None,
    })
}

impl DefaultTranscoder {
    /// Fits one piece of content; `None` when it already fits.
    pub fn fit(&self, content: &EventContent, caps: &ChannelCapabilities) -> Option<EventContent> {
        use ChannelMediaType as M;
        match content {
            EventContent::Text(_) | EventContent::System(_) => None,
            EventContent::Rich(_) if caps.supports(M::Rich) => None,
            EventContent::Media(_) if caps.supports(M::Media) => None,
            EventContent::Audio(_) if caps.supports(M::Audio) => None,
            EventContent::Video(_) if caps.supports(M::Video) => None,
            EventContent::Location(_) if caps.supports(M::Location) => None,
            EventContent::Template(_) if caps.supports(M::Template) || caps.supports_templates => {
                None
            }
            EventContent::Edit(_) if caps.supports_edit => None,
            EventContent::Delete(_) if caps.supports_delete => None,
            EventContent::Template(t) => Some(match &t.fallback {
                Some(f) => self.fit(f, caps).unwrap_or_else(|| (**f).clone()),
                None => text(content.plain_text()),
            }),
            EventContent::Composite(c) => {
                let mut changed = false;
                let parts: Vec<EventContent> = c
                    .parts
                    .iter()
                    .map(|p| match self.fit(p, caps) {
                        Some(n) => {
                            changed = true;
                            n
                        }
                        None => p.clone(),
                    })
                    .collect();
                if parts.iter().all(|p| matches!(p, EventContent::Text(_))) {
                    let joined = parts
                        .iter()
                        .filter_map(EventContent::as_text)
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join("\n");
                    return Some(text(joined));
                }
                changed.then_some(EventContent::Composite(CompositeContent { parts }))
            }
            // Rich, media, audio, video, location, edit and delete for a
            // target that cannot show them natively: the text fallback.
            other => Some(text(other.plain_text())),
        }
    }
}

impl Transcoder for DefaultTranscoder {
    fn transcode(&self, event: &RoomEvent, caps: &ChannelCapabilities) -> Option<EventContent> {
        self.fit(&event.content, caps)
    }
}

/// Truncates text content to `max` characters; returns whether it changed.
pub fn truncate_text(content: &mut EventContent, max: usize) -> bool {
    if let EventContent::Text(t) = content
        && let Some((cut, _)) = t.text.char_indices().nth(max)
    {
        t.text.truncate(cut);
        return true;
    }
    false
}
