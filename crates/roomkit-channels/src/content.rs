//! Splitting an outbound event's content into what message APIs take: a
//! text body and media URLs.

use roomkit_model::{EventContent, MediaContent};

/// Text and media of an event, flattened.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Outbound {
    pub text: String,
    pub media: Vec<MediaContent>,
}

/// Flattens content: media parts become attachments (their captions join
/// the text), everything else contributes its plain text.
pub(crate) fn flatten(content: &EventContent) -> Outbound {
    let mut out = Outbound::default();
    collect(content, &mut out);
    out
}

fn collect(content: &EventContent, out: &mut Outbound) {
    match content {
        EventContent::Media(m) => {
            if let Some(c) = m.caption.as_deref().filter(|c| !c.is_empty()) {
                push_text(out, c);
            }
            out.media.push(m.clone());
        }
        EventContent::Composite(c) => {
            for p in &c.parts {
                collect(p, out);
            }
        }
        other => {
            let t = other.plain_text();
            if !t.is_empty() {
                push_text(out, &t);
            }
        }
    }
}

fn push_text(out: &mut Outbound, t: &str) {
    if !out.text.is_empty() {
        out.text.push('\n');
    }
    out.text.push_str(t);
}

/// Builds inbound content from a text body and media attachments.
pub(crate) fn inbound(text: &str, media: Vec<MediaContent>) -> EventContent {
    let mut parts = Vec::new();
    if !text.is_empty() || media.is_empty() {
        parts.push(EventContent::text(text));
    }
    parts.extend(media.into_iter().map(EventContent::Media));
    if parts.len() == 1 {
        parts.pop().unwrap_or_else(|| EventContent::text(""))
    } else {
        EventContent::Composite(roomkit_model::CompositeContent { parts })
    }
}

/// A media attachment from a URL and MIME type.
pub(crate) fn media(url: &str, mime: &str) -> MediaContent {
    MediaContent {
        url: url.to_owned(),
        mime_type: if mime.is_empty() {
            "application/octet-stream".into()
        } else {
            mime.to_owned()
        },
        filename: None,
        caption: None,
        size_bytes: None,
    }
}
