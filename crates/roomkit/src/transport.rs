//! Transport channels of `roomkit serve`: the `[[channels]]` of type `sms`,
//! `email`, `webhook` and `telegram`, read and validated into a
//! [`TransportSpec`] (secrets read from their variables, once), then built
//! into the channel the engine registers and the webhook receiver the
//! server mounts.

use std::sync::Arc;

use roomkit_channels::email::EmailChannel;
use roomkit_channels::email::sendgrid::{SendGridConfig, SendGridEmail};
use roomkit_channels::email::smtp::{SmtpConfig, SmtpEmail};
use roomkit_channels::sms::SmsChannel;
use roomkit_channels::sms::telnyx::{TelnyxConfig, TelnyxSms};
use roomkit_channels::sms::twilio::{TwilioConfig, TwilioSms};
use roomkit_channels::telegram::{TelegramChannel, TelegramConfig};
use roomkit_channels::webhook::{WebhookChannel, WebhookConfig};
use roomkit_channels::{
    ProviderError, Secret, WebhookError, WebhookOutcome, WebhookReceiver, WebhookRequest,
};
use roomkit_core::Channel;
use serde::Deserialize;

use crate::config::{ConfigError, Ctx, Env};

/// `[[channels]]` of type `sms`; which keys apply depends on `provider`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsSection {
    id: String,
    #[serde(rename = "type")]
    _type: String,
    provider: String,
    from: String,
    base_url: Option<String>,
    // Twilio.
    account_sid: Option<String>,
    auth_token_env: Option<String>,
    status_callback_url: Option<String>,
    // Telnyx.
    api_key_env: Option<String>,
    public_key: Option<String>,
    messaging_profile_id: Option<String>,
    webhook_url: Option<String>,
}

/// `[[channels]]` of type `email`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailSection {
    id: String,
    #[serde(rename = "type")]
    _type: String,
    provider: String,
    from: String,
    // SMTP.
    smtp_url: Option<String>,
    username: Option<String>,
    password_env: Option<String>,
    // SendGrid.
    api_key_env: Option<String>,
    base_url: Option<String>,
    // Both: a shared token inbound posts must carry as `?token=`.
    inbound_token_env: Option<String>,
    // Both: take inbound posts without a token (an explicit opt-in).
    #[serde(default)]
    allow_unauthenticated_inbound: bool,
}

/// `[[channels]]` of type `webhook`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSection {
    id: String,
    #[serde(rename = "type")]
    _type: String,
    url: String,
    secret_env: Option<String>,
    allowed_urls: Option<Vec<String>>,
}

/// `[[channels]]` of type `telegram`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelegramSection {
    id: String,
    #[serde(rename = "type")]
    _type: String,
    bot_token_env: String,
    base_url: Option<String>,
    secret_token_env: Option<String>,
    // Take updates without the secret token (an explicit opt-in).
    #[serde(default)]
    allow_unauthenticated_inbound: bool,
}

/// A validated transport channel.
#[derive(Debug, Clone)]
pub struct TransportSpec {
    /// Channel id.
    pub id: String,
    /// What to build.
    pub kind: TransportKind,
}

/// The provider of a transport channel, with its settings.
#[derive(Debug, Clone)]
pub enum TransportKind {
    /// SMS through Twilio.
    Twilio {
        /// Our number.
        from: String,
        /// Provider settings.
        config: TwilioConfig,
    },
    /// SMS through Telnyx.
    Telnyx {
        /// Our number.
        from: String,
        /// Provider settings.
        config: TelnyxConfig,
    },
    /// Email through an SMTP relay.
    Smtp {
        /// Our address.
        from: String,
        /// Relay settings.
        config: SmtpConfig,
        /// Who may post inbound mail.
        inbound: EmailInbound,
    },
    /// Email through SendGrid.
    SendGrid {
        /// Our address.
        from: String,
        /// Provider settings.
        config: SendGridConfig,
        /// Who may post inbound mail (never [`EmailInbound::Off`]).
        inbound: EmailInbound,
    },
    /// The generic HTTP webhook channel.
    Webhook(WebhookConfig),
    /// A Telegram bot.
    Telegram(TelegramConfig),
}

/// Who may post to an email channel's inbound path.
#[derive(Debug, Clone)]
pub enum EmailInbound {
    /// Only requests whose URL carries `?token=` with this value.
    Token(Secret),
    /// Anyone: `allow_unauthenticated_inbound = true` was set.
    Open,
    /// Nobody: the path is not mounted (SMTP without a token or opt-in).
    Off,
}

/// The `allow_unauthenticated_inbound` flag against the credential that
/// would authenticate the same posts: at most one of them may be set.
fn inbound_choice(
    ctx: &Ctx<'_>,
    key: &str,
    credential: &str,
    has_credential: bool,
    open: bool,
) -> Result<(), ConfigError> {
    if has_credential && open {
        return Err(ctx.err(
            format!("{key}.allow_unauthenticated_inbound"),
            format!("cannot be combined with {credential}: inbound posts are authenticated by it"),
        ));
    }
    Ok(())
}

// Specs compare by their printed form (secrets print redacted).
impl PartialEq for TransportSpec {
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

impl Eq for TransportSpec {}

/// Reads a secret named by `key = "VAR"`: the variable must be set.
fn secret(ctx: &Ctx<'_>, key: String, var: &str, env: &dyn Env) -> Result<Secret, ConfigError> {
    if var.trim().is_empty() {
        return Err(ctx.err(key, "must name an environment variable"));
    }
    env.var(var)
        .map(Secret::new)
        .ok_or_else(|| ctx.err(key, format!("{var} is not set")))
}

fn optional_secret(
    ctx: &Ctx<'_>,
    key: String,
    var: Option<&str>,
    env: &dyn Env,
) -> Result<Option<Secret>, ConfigError> {
    var.map(|v| secret(ctx, key, v, env)).transpose()
}

fn http_url(ctx: &Ctx<'_>, key: String, url: &str) -> Result<String, ConfigError> {
    match reqwest_url_ok(url) {
        true => Ok(url.trim_end_matches('/').to_owned()),
        false => Err(ctx.err(
            key,
            format!("{url:?} must be an http:// or https:// URL with a host"),
        )),
    }
}

/// An entry of a webhook channel's `allowed_urls`: an http(s) URL with a
/// host, without user info, query or fragment.
fn allowed_url(ctx: &Ctx<'_>, key: String, url: &str) -> Result<String, ConfigError> {
    match roomkit_channels::webhook::check_allowed_url(url) {
        Ok(()) => Ok(url.to_owned()),
        Err(problem) => Err(ctx.err(key, format!("{url:?} {problem}"))),
    }
}

fn reqwest_url_ok(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

/// Fails when a key that belongs to another provider is set.
fn only_for(
    ctx: &Ctx<'_>,
    key: &str,
    provider: &str,
    keys: &[(&str, bool)],
) -> Result<(), ConfigError> {
    match keys.iter().find(|(_, set)| *set) {
        Some((name, _)) => Err(ctx.err(
            format!("{key}.{name}"),
            format!("is not a setting of provider {provider:?}"),
        )),
        None => Ok(()),
    }
}

fn required<'a>(ctx: &Ctx<'_>, key: String, v: Option<&'a str>) -> Result<&'a str, ConfigError> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(ctx.err(key, "must not be empty")),
        None => Err(ctx.err(key, "is required")),
    }
}

/// Reads one transport `[[channels]]` table of type `ty`.
pub(crate) fn parse(
    ctx: &Ctx<'_>,
    key: &str,
    ty: &str,
    table: toml::Table,
    env: &dyn Env,
    public_url: Option<&str>,
) -> Result<TransportSpec, ConfigError> {
    // Status callbacks name their channel, so several channels of one
    // provider can share the path.
    let id = table
        .get("id")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let callback = |path: &str| {
        public_url.map(|u| {
            let query: String =
                serde_urlencoded::to_string([("channel_id", id.as_str())]).unwrap_or_default();
            format!("{}{path}?{query}", u.trim_end_matches('/'))
        })
    };
    match ty {
        "sms" => {
            let s: SmsSection = ctx.section(key, table)?;
            if s.from.trim().is_empty() {
                return Err(ctx.err(format!("{key}.from"), "must not be empty"));
            }
            let kind = match s.provider.as_str() {
                "twilio" => {
                    only_for(
                        ctx,
                        key,
                        "twilio",
                        &[
                            ("api_key_env", s.api_key_env.is_some()),
                            ("public_key", s.public_key.is_some()),
                            ("messaging_profile_id", s.messaging_profile_id.is_some()),
                            ("webhook_url", s.webhook_url.is_some()),
                        ],
                    )?;
                    let sid =
                        required(ctx, format!("{key}.account_sid"), s.account_sid.as_deref())?;
                    let var = required(
                        ctx,
                        format!("{key}.auth_token_env"),
                        s.auth_token_env.as_deref(),
                    )?;
                    let token = secret(ctx, format!("{key}.auth_token_env"), var, env)?;
                    let mut config = TwilioConfig::new(sid, token);
                    if let Some(u) = &s.base_url {
                        config.base_url = http_url(ctx, format!("{key}.base_url"), u)?;
                    }
                    config.status_callback_url = match &s.status_callback_url {
                        Some(u) => Some(http_url(ctx, format!("{key}.status_callback_url"), u)?),
                        None => callback("/webhooks/sms/twilio/status"),
                    };
                    TransportKind::Twilio {
                        from: s.from,
                        config,
                    }
                }
                "telnyx" => {
                    only_for(
                        ctx,
                        key,
                        "telnyx",
                        &[
                            ("account_sid", s.account_sid.is_some()),
                            ("auth_token_env", s.auth_token_env.is_some()),
                            ("status_callback_url", s.status_callback_url.is_some()),
                        ],
                    )?;
                    let var =
                        required(ctx, format!("{key}.api_key_env"), s.api_key_env.as_deref())?;
                    let api_key = secret(ctx, format!("{key}.api_key_env"), var, env)?;
                    let public_key =
                        required(ctx, format!("{key}.public_key"), s.public_key.as_deref())?;
                    if !valid_ed25519_key(public_key) {
                        return Err(ctx.err(
                            format!("{key}.public_key"),
                            "must be the base64 Ed25519 public key of the Telnyx account (32 bytes)",
                        ));
                    }
                    let base_url = match &s.base_url {
                        Some(u) => http_url(ctx, format!("{key}.base_url"), u)?,
                        None => "https://api.telnyx.com".into(),
                    };
                    let webhook_url = match &s.webhook_url {
                        Some(u) => Some(http_url(ctx, format!("{key}.webhook_url"), u)?),
                        None => callback("/webhooks/sms/telnyx/status"),
                    };
                    TransportKind::Telnyx {
                        from: s.from,
                        config: TelnyxConfig {
                            api_key,
                            public_key: public_key.trim().to_owned(),
                            base_url,
                            messaging_profile_id: s.messaging_profile_id,
                            webhook_url,
                        },
                    }
                }
                other => {
                    return Err(ctx.err(
                        format!("{key}.provider"),
                        format!("{other:?} is not an SMS provider (twilio or telnyx)"),
                    ));
                }
            };
            Ok(TransportSpec { id: s.id, kind })
        }
        "email" => {
            let s: EmailSection = ctx.section(key, table)?;
            if !s.from.contains('@') {
                return Err(ctx.err(
                    format!("{key}.from"),
                    format!("{:?} is not an email address", s.from),
                ));
            }
            let inbound_token = optional_secret(
                ctx,
                format!("{key}.inbound_token_env"),
                s.inbound_token_env.as_deref(),
                env,
            )?;
            inbound_choice(
                ctx,
                key,
                "inbound_token_env",
                inbound_token.is_some(),
                s.allow_unauthenticated_inbound,
            )?;
            let inbound = match (inbound_token, s.allow_unauthenticated_inbound) {
                (Some(token), _) => EmailInbound::Token(token),
                (None, true) => EmailInbound::Open,
                (None, false) => EmailInbound::Off,
            };
            let kind = match s.provider.as_str() {
                "smtp" => {
                    only_for(
                        ctx,
                        key,
                        "smtp",
                        &[
                            ("api_key_env", s.api_key_env.is_some()),
                            ("base_url", s.base_url.is_some()),
                        ],
                    )?;
                    let url = required(ctx, format!("{key}.smtp_url"), s.smtp_url.as_deref())?;
                    let host = url
                        .strip_prefix("smtp://")
                        .or_else(|| url.strip_prefix("smtps://"));
                    if host.is_none_or(|h| h.is_empty() || h.starts_with([':', '/', '?'])) {
                        return Err(ctx.err(
                            format!("{key}.smtp_url"),
                            format!("{url:?} must be smtp://HOST[:PORT] or smtps://HOST[:PORT]"),
                        ));
                    }
                    let password = optional_secret(
                        ctx,
                        format!("{key}.password_env"),
                        s.password_env.as_deref(),
                        env,
                    )?;
                    if password.is_some() != s.username.is_some() {
                        return Err(ctx.err(
                            format!("{key}.username"),
                            "username and password_env go together",
                        ));
                    }
                    let config = SmtpConfig {
                        url: url.to_owned(),
                        username: s.username,
                        password,
                    };
                    TransportKind::Smtp {
                        from: s.from,
                        config,
                        inbound,
                    }
                }
                "sendgrid" => {
                    only_for(
                        ctx,
                        key,
                        "sendgrid",
                        &[
                            ("smtp_url", s.smtp_url.is_some()),
                            ("username", s.username.is_some()),
                            ("password_env", s.password_env.is_some()),
                        ],
                    )?;
                    let var =
                        required(ctx, format!("{key}.api_key_env"), s.api_key_env.as_deref())?;
                    let api_key = secret(ctx, format!("{key}.api_key_env"), var, env)?;
                    let base_url = match &s.base_url {
                        Some(u) => http_url(ctx, format!("{key}.base_url"), u)?,
                        None => "https://api.sendgrid.com".into(),
                    };
                    if matches!(inbound, EmailInbound::Off) {
                        return Err(ctx.err(
                            format!("{key}.inbound_token_env"),
                            "is required: without it anyone can post inbound mail and delivery events; set allow_unauthenticated_inbound = true to accept that",
                        ));
                    }
                    TransportKind::SendGrid {
                        from: s.from,
                        config: SendGridConfig { api_key, base_url },
                        inbound,
                    }
                }
                other => {
                    return Err(ctx.err(
                        format!("{key}.provider"),
                        format!("{other:?} is not an email provider (smtp or sendgrid)"),
                    ));
                }
            };
            Ok(TransportSpec { id: s.id, kind })
        }
        "webhook" => {
            let s: WebhookSection = ctx.section(key, table)?;
            let url = http_url(ctx, format!("{key}.url"), &s.url)?;
            let secret = optional_secret(
                ctx,
                format!("{key}.secret_env"),
                s.secret_env.as_deref(),
                env,
            )?;
            let mut allowed_urls = Vec::new();
            for (i, u) in s.allowed_urls.iter().flatten().enumerate() {
                allowed_urls.push(allowed_url(ctx, format!("{key}.allowed_urls[{i}]"), u)?);
            }
            Ok(TransportSpec {
                id: s.id,
                kind: TransportKind::Webhook(WebhookConfig {
                    url,
                    secret,
                    allowed_urls,
                }),
            })
        }
        "telegram" => {
            let s: TelegramSection = ctx.section(key, table)?;
            let token = secret(ctx, format!("{key}.bot_token_env"), &s.bot_token_env, env)?;
            let mut config = TelegramConfig::new(token);
            if let Some(u) = &s.base_url {
                config.base_url = http_url(ctx, format!("{key}.base_url"), u)?;
            }
            config.secret_token = optional_secret(
                ctx,
                format!("{key}.secret_token_env"),
                s.secret_token_env.as_deref(),
                env,
            )?;
            inbound_choice(
                ctx,
                key,
                "secret_token_env",
                config.secret_token.is_some(),
                s.allow_unauthenticated_inbound,
            )?;
            if config.secret_token.is_none() && !s.allow_unauthenticated_inbound {
                return Err(ctx.err(
                    format!("{key}.secret_token_env"),
                    "is required: without it anyone can post updates as any Telegram user; set allow_unauthenticated_inbound = true to accept that",
                ));
            }
            Ok(TransportSpec {
                id: s.id,
                kind: TransportKind::Telegram(config),
            })
        }
        other => Err(ctx.err(
            format!("{key}.type"),
            format!("{other:?} is not a transport channel type"),
        )),
    }
}

fn valid_ed25519_key(b64: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .is_some_and(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).is_ok())
}

/// A built transport channel: what the engine registers and what the
/// server mounts under `/webhooks/`.
pub struct Built {
    /// The channel.
    pub channel: Arc<dyn Channel>,
    /// Its webhook receiver; `None` when inbound traffic is not accepted
    /// (a webhook channel without a secret: its posts may name any room).
    pub receiver: Option<Arc<dyn WebhookReceiver>>,
}

/// Builds a transport channel from its spec.
///
/// # Errors
/// A provider that cannot be configured (an SMTP URL lettre refuses).
pub fn build(spec: &TransportSpec) -> Result<Built, ProviderError> {
    let id = spec.id.as_str();
    Ok(match &spec.kind {
        TransportKind::Twilio { from, config } => {
            let c = SmsChannel::new(id, from.as_str(), Arc::new(TwilioSms::new(config.clone())));
            let receiver = Some(c.receiver());
            Built {
                channel: Arc::new(c),
                receiver,
            }
        }
        TransportKind::Telnyx { from, config } => {
            let c = SmsChannel::new(id, from.as_str(), Arc::new(TelnyxSms::new(config.clone())));
            let receiver = Some(c.receiver());
            Built {
                channel: Arc::new(c),
                receiver,
            }
        }
        TransportKind::Smtp {
            from,
            config,
            inbound,
        } => {
            let c = EmailChannel::new(id, from.as_str(), Arc::new(SmtpEmail::new(config)?));
            let receiver = guarded(c.receiver(), inbound);
            if receiver.is_none() {
                tracing::warn!(target: "roomkit.config", channel_id = %id, "email channel without inbound_token_env: outbound only, inbound mail is not accepted");
            }
            Built {
                channel: Arc::new(c),
                receiver,
            }
        }
        TransportKind::SendGrid {
            from,
            config,
            inbound,
        } => {
            let c = EmailChannel::new(
                id,
                from.as_str(),
                Arc::new(SendGridEmail::new(config.clone())),
            );
            let receiver = guarded(c.receiver(), inbound);
            Built {
                channel: Arc::new(c),
                receiver,
            }
        }
        TransportKind::Webhook(config) => {
            let c = WebhookChannel::new(id, config.clone());
            let receiver = config.secret.as_ref().map(|_| c.receiver());
            if receiver.is_none() {
                tracing::warn!(target: "roomkit.config", channel_id = %id, "webhook channel without secret_env: outbound only, inbound posts are not accepted");
            }
            Built {
                channel: Arc::new(c),
                receiver,
            }
        }
        TransportKind::Telegram(config) => {
            let c = TelegramChannel::new(id, config.clone());
            let receiver = Some(c.receiver());
            Built {
                channel: Arc::new(c),
                receiver,
            }
        }
    })
}

/// Wraps an unsigned receiver (email providers do not sign their posts) so
/// it takes only requests whose URL carries `token=<secret>`; open only on
/// the explicit opt-in, not mounted otherwise.
fn guarded(
    inner: Arc<dyn WebhookReceiver>,
    inbound: &EmailInbound,
) -> Option<Arc<dyn WebhookReceiver>> {
    match inbound {
        EmailInbound::Token(token) => Some(Arc::new(TokenGuard {
            inner,
            token: token.clone(),
        })),
        EmailInbound::Open => {
            tracing::warn!(target: "roomkit.config", path = %format!("/webhooks/{}/{}", inner.channel_type(), inner.provider()), "inbound email posts are not authenticated (allow_unauthenticated_inbound = true)");
            Some(inner)
        }
        EmailInbound::Off => None,
    }
}

struct TokenGuard {
    inner: Arc<dyn WebhookReceiver>,
    token: Secret,
}

impl WebhookReceiver for TokenGuard {
    fn channel_type(&self) -> &str {
        self.inner.channel_type()
    }

    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn verify_and_parse(&self, req: &WebhookRequest) -> Result<WebhookOutcome, WebhookError> {
        use subtle::ConstantTimeEq;
        let given = req
            .url
            .split_once('?')
            .and_then(|(_, q)| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
            .and_then(|pairs| {
                pairs
                    .into_iter()
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v)
            });
        let ok = given.is_some_and(|g| {
            let (a, b) = (g.as_bytes(), self.token.expose().as_bytes());
            a.len() == b.len() && bool::from(a.ct_eq(b))
        });
        if !ok {
            return Err(WebhookError::BadSignature(
                "the inbound token is missing or wrong".into(),
            ));
        }
        self.inner.verify_and_parse(req)
    }
}
