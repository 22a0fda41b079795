//! Tool access control (RFC §21.1): allow and deny glob patterns, deny
//! always winning, with per-role adjustments.

use std::collections::HashMap;

use serde::Deserialize;

/// How a role override combines with the base policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleOverrideMode {
    /// Add the override's patterns to the base lists.
    #[default]
    Restrict,
    /// Use the override's lists instead of the base ones.
    Replace,
}

/// A per-role adjustment of a [`ToolPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleOverride {
    /// Allow patterns.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Deny patterns.
    #[serde(default)]
    pub deny: Option<Vec<String>>,
    /// Merge with the base policy or replace it.
    #[serde(default)]
    pub mode: RoleOverrideMode,
}

/// Which tools an agent may call (RFC §21.1). Patterns use `*` (any run of
/// characters) and `?` (one character).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPolicy {
    /// When non-empty, only tools matching one of these are allowed.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Tools matching one of these are denied, whatever `allow` says.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Adjustments per agent role.
    #[serde(default)]
    pub role_overrides: HashMap<String, RoleOverride>,
}

impl ToolPolicy {
    /// Whether the policy lets a tool through (rules 1-3 of RFC §21.1).
    pub fn allows(&self, tool: &str) -> bool {
        if self.deny.iter().any(|p| glob_match(p, tool)) {
            return false;
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|p| glob_match(p, tool)) {
            return false;
        }
        true
    }

    /// The policy in force for an agent with `role`.
    pub fn for_role(&self, role: Option<&str>) -> ToolPolicy {
        let Some(o) = role.and_then(|r| self.role_overrides.get(r)) else {
            return self.clone();
        };
        let (mut allow, mut deny) = match o.mode {
            RoleOverrideMode::Restrict => (self.allow.clone(), self.deny.clone()),
            RoleOverrideMode::Replace => (Vec::new(), Vec::new()),
        };
        allow.extend(o.allow.iter().flatten().cloned());
        deny.extend(o.deny.iter().flatten().cloned());
        ToolPolicy {
            allow,
            deny,
            role_overrides: HashMap::new(),
        }
    }
}

/// Glob match with `*` and `?`, on characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point for the last `*`.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("search_*", "search_web"));
        assert!(glob_match("get_?", "get_x"));
        assert!(!glob_match("get_?", "get_xy"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn deny_wins_and_allow_is_a_whitelist() {
        let p = ToolPolicy {
            allow: vec!["search_*".into(), "get_*".into()],
            deny: vec!["get_secret*".into()],
            ..ToolPolicy::default()
        };
        assert!(p.allows("search_web"));
        assert!(p.allows("get_weather"));
        assert!(!p.allows("get_secret_key"));
        assert!(!p.allows("delete_all"));
        assert!(ToolPolicy::default().allows("anything"));
    }

    #[test]
    fn role_overrides_restrict_or_replace() {
        let mut p = ToolPolicy {
            deny: vec!["admin_*".into()],
            ..ToolPolicy::default()
        };
        p.role_overrides.insert(
            "triage".into(),
            RoleOverride {
                deny: Some(vec!["refund".into()]),
                ..RoleOverride::default()
            },
        );
        p.role_overrides.insert(
            "admin".into(),
            RoleOverride {
                allow: Some(vec!["admin_*".into()]),
                mode: RoleOverrideMode::Replace,
                ..RoleOverride::default()
            },
        );
        let triage = p.for_role(Some("triage"));
        assert!(!triage.allows("refund") && !triage.allows("admin_x") && triage.allows("x"));
        let admin = p.for_role(Some("admin"));
        assert!(admin.allows("admin_reset") && !admin.allows("refund"));
        assert_eq!(p.for_role(None), p);
    }
}
