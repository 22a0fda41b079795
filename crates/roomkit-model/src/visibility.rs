//! The visibility rule of a binding or event (RFC §7.3), kept as parsed data
//! and written as the RFC's string form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{ChannelCategory, ChannelId, ModelError};

/// Which channels may see what a source writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Visibility {
    /// Every channel.
    #[default]
    All,
    /// No channel: stored in the timeline only.
    None,
    /// Transport channels only.
    Transport,
    /// Intelligence channels only.
    Intelligence,
    /// Exactly these channels.
    Channels(Vec<ChannelId>),
}

impl Visibility {
    /// True when a channel with this id and category may see the event.
    pub fn includes(&self, channel_id: &ChannelId, category: ChannelCategory) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::Transport => category == ChannelCategory::Transport,
            Self::Intelligence => category == ChannelCategory::Intelligence,
            Self::Channels(ids) => ids.iter().any(|c| c == channel_id),
        }
    }

    /// The narrower of two rules: a channel passes the result only if it
    /// passes both. `category_of` names the category of a listed channel
    /// (`None` when it is not bound, which drops it).
    pub fn intersect(
        &self,
        other: &Visibility,
        category_of: impl Fn(&ChannelId) -> Option<ChannelCategory>,
    ) -> Visibility {
        use Visibility::*;
        match (self, other) {
            (All, x) | (x, All) => x.clone(),
            (None, _) | (_, None) => None,
            (Transport, Transport) => Transport,
            (Intelligence, Intelligence) => Intelligence,
            (Transport, Intelligence) | (Intelligence, Transport) => None,
            (Channels(a), Channels(b)) => {
                let ids: Vec<_> = a.iter().filter(|c| b.contains(c)).cloned().collect();
                if ids.is_empty() { None } else { Channels(ids) }
            }
            (Channels(ids), cat @ (Transport | Intelligence))
            | (cat @ (Transport | Intelligence), Channels(ids)) => {
                let want = if matches!(cat, Transport) {
                    ChannelCategory::Transport
                } else {
                    ChannelCategory::Intelligence
                };
                let ids: Vec<_> = ids
                    .iter()
                    .filter(|c| category_of(c) == Some(want))
                    .cloned()
                    .collect();
                if ids.is_empty() { None } else { Channels(ids) }
            }
        }
    }
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::None => f.write_str("none"),
            Self::Transport => f.write_str("transport"),
            Self::Intelligence => f.write_str("intelligence"),
            Self::Channels(ids) => {
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(id.as_str())?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for Visibility {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Ok(match t {
            "all" => Self::All,
            "none" => Self::None,
            "transport" => Self::Transport,
            "intelligence" => Self::Intelligence,
            _ => {
                let ids: Vec<ChannelId> = t
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(ChannelId::from)
                    .collect();
                if ids.is_empty() {
                    return Err(ModelError::Invalid {
                        kind: "visibility",
                        value: s.to_owned(),
                    });
                }
                Self::Channels(ids)
            }
        })
    }
}

impl Serialize for Visibility {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Visibility {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
