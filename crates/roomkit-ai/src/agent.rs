//! Agent identity (RFC §19.1): who an AI channel is, written into its
//! system prompt and its channel info.

use roomkit_core::model::Map;
use serde::Deserialize;

/// The identity of an agent: an AI channel with a role in the room.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentIdentity {
    /// Display name (`"Ava"`).
    #[serde(default)]
    pub name: Option<String>,
    /// Role (`"Triage Agent"`).
    #[serde(default)]
    pub role: Option<String>,
    /// What the agent can do.
    #[serde(default)]
    pub description: Option<String>,
    /// What it is responsible for (`"Billing"`).
    #[serde(default)]
    pub scope: Option<String>,
    /// Voice identifier for speech channels.
    #[serde(default)]
    pub voice: Option<String>,
    /// Text the agent says when it joins a room (and when a voice session
    /// starts).
    #[serde(default)]
    pub greeting: Option<String>,
    /// Preferred language.
    #[serde(default)]
    pub language: Option<String>,
    /// Whether the greeting is sent automatically (default true).
    #[serde(default = "yes")]
    pub auto_greet: bool,
}

fn yes() -> bool {
    true
}

impl Default for AgentIdentity {
    fn default() -> Self {
        Self {
            name: None,
            role: None,
            description: None,
            scope: None,
            voice: None,
            greeting: None,
            language: None,
            auto_greet: true,
        }
    }
}

impl AgentIdentity {
    /// The identity paragraph added to the system prompt. `language`
    /// overrides the preferred one (a detected participant language).
    pub fn build_identity_block(&self, language: Option<&str>) -> String {
        let mut lines = Vec::new();
        match (&self.name, &self.role) {
            (Some(n), Some(r)) => lines.push(format!("You are {n}, {r}.")),
            (Some(n), None) => lines.push(format!("You are {n}.")),
            (None, Some(r)) => lines.push(format!("Your role: {r}.")),
            (None, None) => {}
        }
        if let Some(d) = &self.description {
            lines.push(d.clone());
        }
        if let Some(s) = &self.scope {
            lines.push(format!("Your scope: {s}."));
        }
        if let Some(l) = language.or(self.language.as_deref()) {
            lines.push(format!("Answer in this language: {l}."));
        }
        lines.join("\n")
    }

    /// The identity as channel info.
    pub fn info(&self) -> Map {
        let mut m = Map::new();
        let fields = [
            ("name", &self.name),
            ("role", &self.role),
            ("description", &self.description),
            ("scope", &self.scope),
            ("voice", &self.voice),
            ("greeting", &self.greeting),
            ("language", &self.language),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                m.insert(k.into(), v.clone().into());
            }
        }
        m.insert("auto_greet".into(), self.auto_greet.into());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_block() {
        let a = AgentIdentity {
            name: Some("Ava".into()),
            role: Some("Triage Agent".into()),
            scope: Some("Billing".into()),
            language: Some("fr".into()),
            ..AgentIdentity::default()
        };
        let b = a.build_identity_block(None);
        assert!(b.contains("You are Ava, Triage Agent."));
        assert!(b.contains("Billing"));
        assert!(b.contains("fr"));
        assert!(a.build_identity_block(Some("de")).contains("de"));
        assert!(a.auto_greet);
    }
}
