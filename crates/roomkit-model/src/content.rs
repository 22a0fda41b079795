//! Event content: the discriminated union of RFC §5.3, tagged by `type`.

use serde::{Deserialize, Serialize};

use crate::{EventId, Map, ModelError};

/// Deepest allowed nesting of [`CompositeContent`] (RFC §5.3).
pub const MAX_COMPOSITE_DEPTH: usize = 5;

/// The payload of an event: exactly one content type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventContent {
    /// Plain text.
    Text(TextContent),
    /// Formatted text with interactive elements.
    Rich(RichContent),
    /// A file, image or document.
    Media(MediaContent),
    /// Geographic coordinates.
    Location(LocationContent),
    /// An audio message or voice note.
    Audio(AudioContent),
    /// A video message.
    Video(VideoContent),
    /// An ordered list of parts.
    Composite(CompositeContent),
    /// A framework-generated notice.
    System(SystemContent),
    /// A pre-approved template.
    Template(TemplateContent),
    /// An edit of an earlier event.
    Edit(EditContent),
    /// A deletion of an earlier event.
    Delete(DeleteContent),
}

/// Plain text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextContent {
    /// The text.
    pub text: String,
    /// ISO 639-1 language code, when known.
    #[serde(default)]
    pub language: Option<String>,
}

/// A button of a rich message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Button {
    /// Label shown to the user.
    pub label: String,
    /// Value sent back when pressed.
    #[serde(default)]
    pub value: Option<String>,
    /// Link opened when pressed.
    #[serde(default)]
    pub url: Option<String>,
}

/// A card of a rich message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// Card title.
    pub title: String,
    /// Secondary line.
    #[serde(default)]
    pub subtitle: Option<String>,
    /// Image shown on the card.
    #[serde(default)]
    pub image_url: Option<String>,
    /// Buttons on the card.
    #[serde(default)]
    pub buttons: Vec<Button>,
}

/// A suggested reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuickReply {
    /// Label shown to the user.
    pub label: String,
    /// Value sent back when chosen.
    #[serde(default)]
    pub value: Option<String>,
}

/// Formatted text with interactive elements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RichContent {
    /// Primary text; may contain Markdown or HTML.
    pub text: String,
    /// Plain-text rendering, used when a channel cannot show `text`.
    #[serde(default)]
    pub plain_text: Option<String>,
    /// Buttons.
    #[serde(default)]
    pub buttons: Vec<Button>,
    /// Cards.
    #[serde(default)]
    pub cards: Vec<Card>,
    /// Quick replies.
    #[serde(default)]
    pub quick_replies: Vec<QuickReply>,
}

/// A file, image or document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaContent {
    /// Where the media lives (or a `data:` URI).
    pub url: String,
    /// MIME type.
    pub mime_type: String,
    /// Original file name.
    #[serde(default)]
    pub filename: Option<String>,
    /// Caption.
    #[serde(default)]
    pub caption: Option<String>,
    /// Size in bytes.
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

/// Geographic coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationContent {
    /// Latitude in degrees.
    pub latitude: f64,
    /// Longitude in degrees.
    pub longitude: f64,
    /// Place name.
    #[serde(default)]
    pub label: Option<String>,
    /// Street address.
    #[serde(default)]
    pub address: Option<String>,
}

/// An audio message or voice note.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioContent {
    /// Where the audio lives (or a `data:` URI).
    pub url: String,
    /// Duration in seconds.
    #[serde(default)]
    pub duration_seconds: Option<f64>,
    /// MIME type.
    pub mime_type: String,
    /// Size in bytes.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Speech-to-text transcript, when available.
    #[serde(default)]
    pub transcript: Option<String>,
}

/// A video message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoContent {
    /// Where the video lives (or a `data:` URI).
    pub url: String,
    /// Duration in seconds.
    #[serde(default)]
    pub duration_seconds: Option<f64>,
    /// MIME type.
    pub mime_type: String,
    /// Size in bytes.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Preview image.
    #[serde(default)]
    pub thumbnail_url: Option<String>,
}

/// An ordered list of content parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeContent {
    /// The parts, in order.
    pub parts: Vec<EventContent>,
}

/// A framework-generated notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemContent {
    /// Machine-readable code.
    pub code: String,
    /// Human-readable description.
    #[serde(default)]
    pub message: String,
    /// Structured payload.
    #[serde(default)]
    pub data: Map,
}

/// A pre-approved template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateContent {
    /// Template identifier.
    pub template_id: String,
    /// Template language.
    #[serde(default)]
    pub language: String,
    /// Variable substitutions.
    #[serde(default)]
    pub parameters: Map,
    /// What to show on channels without template support.
    #[serde(default)]
    pub fallback: Option<Box<EventContent>>,
}

/// Who made an edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditSource {
    /// The original author.
    Sender,
    /// An automated process such as moderation.
    System,
}

/// An edit of an earlier event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditContent {
    /// The event being edited.
    pub target_event_id: EventId,
    /// The replacement content.
    pub new_content: Box<EventContent>,
    /// Who made the edit.
    #[serde(default)]
    pub edit_source: Option<EditSource>,
}

/// Kind of deletion (RFC §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteType {
    /// The author deleted their own message.
    Sender,
    /// Automated deletion.
    System,
    /// Administrative deletion.
    Admin,
}

/// A deletion of an earlier event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteContent {
    /// The event being deleted.
    pub target_event_id: EventId,
    /// Kind of deletion.
    pub delete_type: DeleteType,
    /// Optional reason.
    #[serde(default)]
    pub reason: Option<String>,
}

impl EventContent {
    /// Plain text content.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(TextContent {
            text: text.into(),
            language: None,
        })
    }

    /// System content with a code and message.
    pub fn system(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::System(SystemContent {
            code: code.into(),
            message: message.into(),
            data: Map::new(),
        })
    }

    /// The `type` tag of this content.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text(_) => "text",
            Self::Rich(_) => "rich",
            Self::Media(_) => "media",
            Self::Location(_) => "location",
            Self::Audio(_) => "audio",
            Self::Video(_) => "video",
            Self::Composite(_) => "composite",
            Self::System(_) => "system",
            Self::Template(_) => "template",
            Self::Edit(_) => "edit",
            Self::Delete(_) => "delete",
        }
    }

    /// The text of a [`TextContent`], if that is what this is.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(t) => Some(&t.text),
            _ => None,
        }
    }

    /// How deeply composites nest inside this content: 0 for a leaf, 1 for a
    /// composite of leaves, and so on. Template fallbacks and edit payloads
    /// count as nesting too, since they carry content of their own.
    pub fn composite_depth(&self) -> usize {
        match self {
            Self::Composite(c) => 1 + c.parts.iter().map(Self::composite_depth).max().unwrap_or(0),
            Self::Template(t) => t.fallback.as_deref().map_or(0, Self::composite_depth),
            Self::Edit(e) => e.new_content.composite_depth(),
            _ => 0,
        }
    }

    /// Checks the structural rules of RFC §5.3 (composite nesting limit).
    ///
    /// # Errors
    /// [`ModelError::CompositeTooDeep`] when composites nest deeper than
    /// [`MAX_COMPOSITE_DEPTH`].
    pub fn validate(&self) -> Result<(), ModelError> {
        let depth = self.composite_depth();
        if depth > MAX_COMPOSITE_DEPTH {
            return Err(ModelError::CompositeTooDeep {
                depth,
                max: MAX_COMPOSITE_DEPTH,
            });
        }
        Ok(())
    }

    /// A best-effort plain-text rendering of the content, used for
    /// fallbacks, logs and AI context.
    pub fn plain_text(&self) -> String {
        match self {
            Self::Text(t) => t.text.clone(),
            Self::Rich(r) => r
                .plain_text
                .clone()
                .unwrap_or_else(|| strip_markup(&r.text)),
            Self::Media(m) => m
                .caption
                .clone()
                .or_else(|| m.filename.clone())
                .unwrap_or_else(|| m.url.clone()),
            Self::Location(l) => location_text(l),
            Self::Audio(a) => a
                .transcript
                .clone()
                .unwrap_or_else(|| "[Voice message]".to_owned()),
            Self::Video(_) => "[Video]".to_owned(),
            Self::Composite(c) => c
                .parts
                .iter()
                .map(Self::plain_text)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("\n"),
            Self::System(s) => s.message.clone(),
            Self::Template(t) => match &t.fallback {
                Some(f) => f.plain_text(),
                None => format!("[Template {}]", t.template_id),
            },
            Self::Edit(e) => format!("Correction: {}", e.new_content.plain_text()),
            Self::Delete(_) => "[Message deleted]".to_owned(),
        }
    }
}

/// The text fallback for a location (RFC §6.6): `[Location] lat, lon - label`.
pub fn location_text(l: &LocationContent) -> String {
    match &l.label {
        Some(label) => format!("[Location] {}, {} - {}", l.latitude, l.longitude, label),
        None => format!("[Location] {}, {}", l.latitude, l.longitude),
    }
}

/// Removes HTML tags and the common Markdown emphasis marks from `text`.
pub fn strip_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for ch in text.chars() {
        match ch {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if in_tag => {}
            '*' | '_' | '`' | '#' => {}
            _ => out.push(ch),
        }
    }
    out.trim().to_owned()
}

impl From<TextContent> for EventContent {
    fn from(t: TextContent) -> Self {
        Self::Text(t)
    }
}
