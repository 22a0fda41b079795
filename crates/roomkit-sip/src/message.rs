//! SIP messages (RFC 3261 §7): requests and responses read from a datagram
//! or a stream, and written back.
//!
//! The reader takes bytes straight off the network. It checks what the user
//! agent relies on (a start line it understands, the headers every request
//! needs, a `Content-Length` that matches the bytes) and keeps every header
//! as text, in order, under its long name: compact forms (`v`, `f`, `i`,
//! ...) are expanded, folded lines are joined. Anything it cannot read is a
//! typed error with the line it was found on, never a panic. Nothing is
//! retained between messages; one message is at most [`MAX_MESSAGE_LEN`]
//! bytes with at most [`MAX_HEADERS`] headers.

use std::fmt;

use thiserror::Error;

/// The longest message read, in bytes (a UDP datagram's limit).
pub const MAX_MESSAGE_LEN: usize = 65_535;
/// The most headers one message may carry (besides one Content-Length).
pub const MAX_HEADERS: usize = 128;
/// The protocol version every start line names.
pub const VERSION: &str = "SIP/2.0";

/// Why bytes are not a SIP message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SipError {
    /// Empty input, or only blank lines.
    #[error("empty message")]
    Empty,
    /// Larger than [`MAX_MESSAGE_LEN`].
    #[error("message of {0} bytes is over the {MAX_MESSAGE_LEN}-byte limit")]
    TooLong(usize),
    /// The head is not UTF-8 text.
    #[error("the message head is not UTF-8 text")]
    NotText,
    /// The blank line ending the headers is missing.
    #[error("the headers do not end with a blank line")]
    Unterminated,
    /// The start line is neither a request line nor a status line.
    #[error("line 1: {0}")]
    StartLine(String),
    /// A header line could not be read.
    #[error("line {line}: {reason}")]
    Header {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// More than [`MAX_HEADERS`] headers.
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    /// A header every request or response needs is missing.
    #[error("the {0} header is missing")]
    Missing(&'static str),
    /// A header's value cannot be read.
    #[error("the {name} header is invalid: {reason}")]
    Invalid {
        /// The header.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `Content-Length` names more bytes than arrived.
    #[error("Content-Length is {declared} but {available} bytes of body arrived")]
    ShortBody {
        /// What the header says.
        declared: usize,
        /// What is there.
        available: usize,
    },
}

/// A SIP method. Methods the user agent does not implement are kept by name
/// (it answers them 405 or 501).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// Starts a call or changes it (re-INVITE).
    Invite,
    /// Confirms a final answer to an INVITE.
    Ack,
    /// Ends a call.
    Bye,
    /// Withdraws an INVITE not yet answered.
    Cancel,
    /// Asks what a peer supports (and whether it is alive).
    Options,
    /// Binds an address of record at a registrar.
    Register,
    /// Asks the peer to call someone else (transfer).
    Refer,
    /// Reports on a subscription (a transfer's progress).
    Notify,
    /// Mid-call information (some peers send DTMF this way).
    Info,
    /// Changes a session before it is answered, or refreshes it.
    Update,
    /// Acknowledges a reliable provisional response.
    Prack,
    /// Any other method, by name.
    Other(String),
}

impl Method {
    /// The method of a request line's token (case-sensitive, as RFC 3261
    /// §7.1 says).
    pub fn from_token(token: &str) -> Self {
        match token {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "OPTIONS" => Self::Options,
            "REGISTER" => Self::Register,
            "REFER" => Self::Refer,
            "NOTIFY" => Self::Notify,
            "INFO" => Self::Info,
            "UPDATE" => Self::Update,
            "PRACK" => Self::Prack,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The method's name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
            Self::Refer => "REFER",
            Self::Notify => "NOTIFY",
            Self::Info => "INFO",
            Self::Update => "UPDATE",
            Self::Prack => "PRACK",
            Self::Other(name) => name,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD uri SIP/2.0`.
    Request {
        /// The method.
        method: Method,
        /// The Request-URI, as written.
        uri: String,
    },
    /// `SIP/2.0 code reason`.
    Response {
        /// Status code, 100-699.
        code: u16,
        /// Reason phrase (may be empty).
        reason: String,
    },
}

/// One SIP request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    /// Request line or status line.
    pub start: StartLine,
    /// Headers in order, each under its long name, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

/// A parsed `CSeq` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number.
    pub seq: u32,
    /// Method it numbers.
    pub method: Method,
}

/// The long name of a compact header form (RFC 3261 §7.3.3 and the
/// extensions that define one).
fn long_name(name: &str) -> Option<&'static str> {
    let name = match name.len() {
        1 => name.as_bytes()[0].to_ascii_lowercase(),
        _ => return None,
    };
    Some(match name {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'o' => "Event",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'x' => "Session-Expires",
        b'u' => "Allow-Events",
        _ => return None,
    })
}

/// The usual spelling of a header this crate reads, so that headers
/// compare and print the same whatever case the peer used.
fn canonical(name: &str) -> String {
    const KNOWN: [&str; 24] = [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Content-Length",
        "Content-Type",
        "Allow",
        "Supported",
        "Require",
        "User-Agent",
        "Server",
        "Expires",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Authorization",
        "Proxy-Authorization",
        "Session-Expires",
        "Min-SE",
        "Refer-To",
        "Referred-By",
        "Event",
    ];
    if let Some(long) = long_name(name) {
        return long.to_owned();
    }
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |k| (*k).to_owned())
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// Where the head ends: the index just past the blank line, or `None` when
/// it has not arrived. Both CRLF and bare LF line ends are accepted.
fn head_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            if bytes.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if bytes.get(i + 1) == Some(&b'\r') && bytes.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// The `Content-Length` in a head, read leniently (for stream framing).
fn declared_length(head: &str) -> Result<Option<usize>, SipError> {
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            return value
                .trim()
                .parse::<usize>()
                .map(Some)
                .map_err(|_| SipError::Invalid {
                    name: "Content-Length",
                    reason: format!("{:?} is not a length", value.trim()),
                });
        }
    }
    Ok(None)
}

impl SipMessage {
    /// How many bytes at the start of a stream buffer make one whole
    /// message (RFC 3261 §18.3: the head, then `Content-Length` bytes), or
    /// `Ok(None)` when more must arrive. Leading CRLF keep-alives count as
    /// part of the message.
    ///
    /// # Errors
    /// [`SipError::TooLong`] when the buffer holds more than a message may
    /// be without a whole one; [`SipError::Missing`] or
    /// [`SipError::Invalid`] for a head without a readable
    /// `Content-Length` (required on streams).
    pub fn frame_len(buffer: &[u8]) -> Result<Option<usize>, SipError> {
        let Some((end, body_start)) = head_end(buffer) else {
            if buffer.len() > MAX_MESSAGE_LEN {
                return Err(SipError::TooLong(buffer.len()));
            }
            return Ok(None);
        };
        let head = std::str::from_utf8(&buffer[..end]).map_err(|_| SipError::NotText)?;
        if head.trim().is_empty() {
            // Only keep-alive blank lines so far.
            return Ok(Some(body_start));
        }
        let length = declared_length(head)?.ok_or(SipError::Missing("Content-Length"))?;
        let total = body_start.saturating_add(length);
        if total > MAX_MESSAGE_LEN {
            return Err(SipError::TooLong(total));
        }
        Ok((buffer.len() >= total).then_some(total))
    }

    /// Reads one message (a whole UDP datagram, or a frame cut by
    /// [`Self::frame_len`]).
    ///
    /// # Errors
    /// A [`SipError`] saying what is wrong and where.
    pub fn parse(bytes: &[u8]) -> Result<Self, SipError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(SipError::TooLong(bytes.len()));
        }
        // Keep-alive line ends before a message are skipped (§7.5).
        let start = bytes
            .iter()
            .position(|b| *b != b'\r' && *b != b'\n')
            .ok_or(SipError::Empty)?;
        let skipped_lines = bytes[..start].iter().filter(|b| **b == b'\n').count();
        let bytes = &bytes[start..];
        let (end, body_start) = head_end(bytes).ok_or(SipError::Unterminated)?;
        let head = std::str::from_utf8(&bytes[..end]).map_err(|_| SipError::NotText)?;
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let first = lines.next().ok_or(SipError::Empty)?;
        let start_line = parse_start(first)?;
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut lengths = 0usize;
        for (index, line) in lines.enumerate() {
            let number = skipped_lines + index + 2;
            if line.starts_with([' ', '\t']) {
                // A folded line continues the previous header (§7.3.1).
                let Some(last) = headers.last_mut() else {
                    return Err(SipError::Header {
                        line: number,
                        reason: "a continuation line before any header".to_owned(),
                    });
                };
                let more = line.trim();
                if !last.1.is_empty() && !more.is_empty() {
                    last.1.push(' ');
                }
                last.1.push_str(more);
                continue;
            }
            let (name, value) = line.split_once(':').ok_or_else(|| SipError::Header {
                line: number,
                reason: format!("{:?} has no colon", truncate(line)),
            })?;
            let name = name.trim_end();
            if !is_token(name) {
                return Err(SipError::Header {
                    line: number,
                    reason: format!("{:?} is not a header name", truncate(name)),
                });
            }
            let name = canonical(name);
            // Content-Length is written by this side whatever was read, so
            // one of them does not count towards the limit.
            let is_length = name == "Content-Length";
            let counted = headers.len() - usize::from(lengths > 0);
            if !(is_length && lengths == 0) && counted >= MAX_HEADERS {
                return Err(SipError::TooManyHeaders);
            }
            lengths += usize::from(is_length);
            headers.push((name, value.trim().to_owned()));
        }
        let available = bytes.len() - body_start;
        let body = match header_in(&headers, "Content-Length") {
            Some(v) => {
                let declared = v.parse::<usize>().map_err(|_| SipError::Invalid {
                    name: "Content-Length",
                    reason: format!("{:?} is not a length", truncate(v)),
                })?;
                if declared > available {
                    return Err(SipError::ShortBody {
                        declared,
                        available,
                    });
                }
                bytes[body_start..body_start + declared].to_vec()
            }
            None => bytes[body_start..].to_vec(),
        };
        let message = Self {
            start: start_line,
            headers,
            body,
        };
        message.check()?;
        Ok(message)
    }

    /// The headers every message this user agent acts on carries
    /// (RFC 3261 §8.1.1): Via, From, To, Call-ID and a CSeq whose method
    /// matches a request's.
    fn check(&self) -> Result<(), SipError> {
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if self.header(name).is_none() {
                return Err(SipError::Missing(match name {
                    "Via" => "Via",
                    "From" => "From",
                    "To" => "To",
                    "Call-ID" => "Call-ID",
                    _ => "CSeq",
                }));
            }
        }
        let cseq = self.cseq()?;
        if let StartLine::Request { method, .. } = &self.start
            && *method != cseq.method
        {
            return Err(SipError::Invalid {
                name: "CSeq",
                reason: format!("names {} in a {} request", cseq.method, method),
            });
        }
        Ok(())
    }

    /// A new request with no headers.
    pub fn request(method: Method, uri: impl Into<String>) -> Self {
        Self {
            start: StartLine::Request {
                method,
                uri: uri.into(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response to `request` (RFC 3261 §8.2.6): its Via, From, To,
    /// Call-ID and CSeq copied; add a To tag with [`Self::set_to_tag`].
    pub fn response_to(request: &Self, code: u16, reason: &str) -> Self {
        let mut response = Self {
            start: StartLine::Response {
                code,
                reason: reason.to_owned(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        };
        for (name, value) in &request.headers {
            if matches!(name.as_str(), "Via" | "From" | "To" | "Call-ID" | "CSeq") {
                response.headers.push((name.clone(), value.clone()));
            }
        }
        response
    }

    /// The method of a request, `None` for a response.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response, `None` for a request.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The first value of a header (by long name, any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// Every value of a header, in order; comma-separated values of one
    /// line are not split.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Appends a header.
    pub fn push(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.headers.push((canonical(name), value.into()));
        self
    }

    /// Replaces every value of a header with one (appends when absent).
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        let name = canonical(name);
        let value = value.into();
        match self.headers.iter().position(|(n, _)| *n == name) {
            Some(i) => {
                self.headers[i].1 = value;
                // Keep the first (just set), drop any later one.
                let mut seen = false;
                self.headers.retain(|(n, _)| {
                    if *n != name {
                        return true;
                    }
                    let first = !seen;
                    seen = true;
                    first
                });
            }
            None => self.headers.push((name, value)),
        }
        self
    }

    /// Removes every value of a header.
    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Sets the body and its `Content-Type`.
    pub fn set_body(&mut self, content_type: &str, body: Vec<u8>) {
        self.set("Content-Type", content_type);
        self.body = body;
    }

    /// The `Call-ID`.
    pub fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or_default()
    }

    /// The parsed `CSeq`.
    ///
    /// # Errors
    /// [`SipError::Missing`] or [`SipError::Invalid`].
    pub fn cseq(&self) -> Result<CSeq, SipError> {
        let value = self.header("CSeq").ok_or(SipError::Missing("CSeq"))?;
        let mut parts = value.split_whitespace();
        let seq = parts
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| SipError::Invalid {
                name: "CSeq",
                reason: format!("{:?} has no sequence number", truncate(value)),
            })?;
        let method = match (parts.next(), parts.next()) {
            (Some(m), None) if is_token(m) => Method::from_token(m),
            _ => {
                return Err(SipError::Invalid {
                    name: "CSeq",
                    reason: format!("{:?} has no single method", truncate(value)),
                });
            }
        };
        Ok(CSeq { seq, method })
    }

    /// The tag parameter of the `From` header.
    pub fn from_tag(&self) -> Option<&str> {
        self.header("From").and_then(|v| param(v, "tag"))
    }

    /// The tag parameter of the `To` header.
    pub fn to_tag(&self) -> Option<&str> {
        self.header("To").and_then(|v| param(v, "tag"))
    }

    /// Adds a tag to the `To` header unless it has one.
    pub fn set_to_tag(&mut self, tag: &str) {
        if self.to_tag().is_some() {
            return;
        }
        if let Some((_, value)) = self.headers.iter_mut().find(|(n, _)| n == "To") {
            value.push_str(";tag=");
            value.push_str(tag);
        }
    }

    /// The branch parameter of the top `Via`.
    pub fn branch(&self) -> Option<&str> {
        self.header("Via")
            .and_then(|v| param(top_value(v), "branch"))
    }

    /// The message as bytes, `Content-Length` set from the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512);
        match &self.start {
            StartLine::Request { method, uri } => {
                out.push_str(method.as_str());
                out.push(' ');
                out.push_str(uri);
                out.push(' ');
                out.push_str(VERSION);
            }
            StartLine::Response { code, reason } => {
                out.push_str(VERSION);
                out.push(' ');
                out.push_str(&code.to_string());
                out.push(' ');
                out.push_str(reason);
            }
        }
        out.push_str("\r\n");
        for (name, value) in &self.headers {
            if name == "Content-Length" {
                continue;
            }
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str("Content-Length: ");
        out.push_str(&self.body.len().to_string());
        out.push_str("\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// A one-line description for logs and trace summaries.
    pub fn summary(&self) -> String {
        match &self.start {
            StartLine::Request { method, uri } => format!("{method} {uri}"),
            StartLine::Response { code, reason } => {
                let method = self
                    .cseq()
                    .map(|c| c.method.to_string())
                    .unwrap_or_default();
                format!("{code} {reason} ({method})")
            }
        }
    }
}

impl fmt::Display for SipMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

fn parse_start(line: &str) -> Result<StartLine, SipError> {
    if let Some(rest) = line.strip_prefix(VERSION) {
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| SipError::StartLine("no space after the version".to_owned()))?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code = code
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=699).contains(c))
            .ok_or_else(|| {
                SipError::StartLine(format!("{:?} is not a status code", truncate(code)))
            })?;
        return Ok(StartLine::Response {
            code,
            reason: reason.trim().to_owned(),
        });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SipError::StartLine(format!(
            "{:?} is neither a request line nor a status line",
            truncate(line)
        )));
    };
    if !is_token(method) {
        return Err(SipError::StartLine(format!(
            "{:?} is not a method",
            truncate(method)
        )));
    }
    if version != VERSION {
        return Err(SipError::StartLine(format!(
            "version {:?} is not {VERSION}",
            truncate(version)
        )));
    }
    if uri.is_empty() || !uri.contains(':') {
        return Err(SipError::StartLine(format!(
            "{:?} is not a request URI",
            truncate(uri)
        )));
    }
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri: uri.to_owned(),
    })
}

/// The first of a header's comma-separated values (outside quotes and
/// angle brackets).
pub fn top_value(value: &str) -> &str {
    let mut quoted = false;
    let mut angle = false;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => return value[..i].trim(),
            _ => {}
        }
    }
    value.trim()
}

/// A header parameter (`;name=value` after the address or the value), by
/// name, any case; a parameter without `=` reads as the empty string.
/// Parameters inside `<...>` (the URI's own) are not the header's.
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let after = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    after.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The URI inside a name-addr (`"Bob" <sip:bob@host>;tag=1`) or an
/// addr-spec (`sip:bob@host;tag=1`).
pub fn uri_of(value: &str) -> &str {
    if let (Some(open), Some(close)) = (value.find('<'), value.rfind('>'))
        && open < close
    {
        return &value[open + 1..close];
    }
    value.split(';').next().unwrap_or(value).trim()
}

/// The user part of a SIP URI (`+15551234567` of
/// `sip:+15551234567@host;user=phone`), when it has one.
pub fn user_of(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .or_else(|| uri.strip_prefix("tel:"))?;
    let rest = rest.split([';', '?']).next().unwrap_or(rest);
    if uri.starts_with("tel:") {
        return Some(rest);
    }
    let (user, _) = rest.split_once('@')?;
    let user = user.split(':').next().unwrap_or(user);
    (!user.is_empty()).then_some(user)
}

/// The host and port of a SIP URI (`sip:bob@198.51.100.7:5062;transport=udp`
/// gives `("198.51.100.7", Some(5062))`).
pub fn host_port_of(uri: &str) -> Option<(&str, Option<u16>)> {
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))?;
    let rest = rest.split([';', '?']).next().unwrap_or(rest);
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host, port));
    }
    match hostport.split_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => (!hostport.is_empty()).then_some((hostport, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bot@198.51.100.1 SIP/2.0\r\n\
v: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:bot@198.51.100.1>\r\n\
From: \"Alice\" <sip:+15551234567@198.51.100.7>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@198.51.100.7>\r\n\
Subject: a call\r\n  about lunch\r\n\
Content-Type: application/sdp\r\n\
l: 4\r\n\
\r\n\
v=0\r";

    #[test]
    fn reads_a_request_with_compact_and_folded_headers() {
        let m = SipMessage::parse(INVITE.as_bytes()).expect("parses");
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.call_id(), "a84b4c76e66710@pc33");
        assert_eq!(m.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(m.from_tag(), Some("1928301774"));
        assert_eq!(m.to_tag(), None);
        assert_eq!(m.header("subject"), Some("a call about lunch"));
        assert_eq!(m.body, b"v=0\r");
        assert_eq!(
            m.cseq().expect("cseq"),
            CSeq {
                seq: 314159,
                method: Method::Invite
            }
        );
        assert_eq!(
            user_of(uri_of(m.header("From").expect("from"))),
            Some("+15551234567")
        );
    }

    #[test]
    fn a_response_round_trips() {
        let invite = SipMessage::parse(INVITE.as_bytes()).expect("parses");
        let mut ok = SipMessage::response_to(&invite, 200, "OK");
        ok.set_to_tag("abc");
        ok.set_body("application/sdp", b"v=0\r\n".to_vec());
        let again = SipMessage::parse(&ok.to_bytes()).expect("parses");
        assert_eq!(again.status(), Some(200));
        assert_eq!(again.to_tag(), Some("abc"));
        assert_eq!(again.body, b"v=0\r\n");
        assert_eq!(again.header("Content-Type"), Some("application/sdp"));
    }

    #[test]
    fn refuses_what_the_agent_cannot_act_on() {
        let cases: [(&str, SipError); 4] = [
            ("", SipError::Empty),
            (
                "INVITE sip:a@b SIP/2.0\r\nVia: x\r\n",
                SipError::Unterminated,
            ),
            (
                "INVITE sip:a@b SIP/2.0\r\nVia: x\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\n\r\n",
                SipError::Missing("CSeq"),
            ),
            (
                "BYE sip:a@b SIP/2.0\r\nVia: x\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 BYE\r\nContent-Length: 9\r\n\r\nabc",
                SipError::ShortBody {
                    declared: 9,
                    available: 3,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                SipMessage::parse(text.as_bytes()),
                Err(expected),
                "{text:?}"
            );
        }
        let wrong = "BYE sip:a@b SIP/2.0\r\nVia: x\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
        assert!(matches!(
            SipMessage::parse(wrong.as_bytes()),
            Err(SipError::Invalid { name: "CSeq", .. })
        ));
        assert!(matches!(
            SipMessage::parse(b"SIP/2.0 99 Odd\r\n\r\n"),
            Err(SipError::StartLine(_))
        ));
    }

    #[test]
    fn a_header_folded_onto_an_empty_value_round_trips() {
        let text = "BYE sip:a@b SIP/2.0\r\nVia: x\r\nFrom:\n <sip:a@b>\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\r\n";
        let m = SipMessage::parse(text.as_bytes()).expect("parses");
        assert_eq!(m.header("From"), Some("<sip:a@b>"));
        let again = SipMessage::parse(&m.to_bytes()).expect("again");
        assert_eq!(again.header("From"), Some("<sip:a@b>"));
    }

    #[test]
    fn the_header_limit_leaves_room_for_the_written_length() {
        let mut text = String::from(
            "BYE sip:a@b SIP/2.0\r\nVia: x\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n",
        );
        for i in 0..(MAX_HEADERS - 5) {
            text.push_str(&format!("X-{i}: v\r\n"));
        }
        text.push_str("\r\n");
        let m = SipMessage::parse(text.as_bytes()).expect("at the limit");
        assert!(SipMessage::parse(&m.to_bytes()).is_ok());
        let over = text.replace("\r\n\r\n", "\r\nX-more: v\r\n\r\n");
        assert_eq!(
            SipMessage::parse(over.as_bytes()),
            Err(SipError::TooManyHeaders)
        );
    }

    #[test]
    fn frames_a_stream() {
        let one = SipMessage::parse(INVITE.as_bytes())
            .expect("parses")
            .to_bytes();
        let mut stream = one.clone();
        stream.extend_from_slice(&one[..10]);
        assert_eq!(SipMessage::frame_len(&stream), Ok(Some(one.len())));
        assert_eq!(SipMessage::frame_len(&one[..one.len() - 1]), Ok(None));
        assert_eq!(SipMessage::frame_len(b"\r\n\r\n"), Ok(Some(4)));
    }

    #[test]
    fn uri_helpers() {
        assert_eq!(
            host_port_of("sip:bob@[2001:db8::1]:5070;transport=tcp"),
            Some(("2001:db8::1", Some(5070)))
        );
        assert_eq!(host_port_of("sip:example.com"), Some(("example.com", None)));
        assert_eq!(
            user_of("tel:+15551234567;phone-context=x"),
            Some("+15551234567")
        );
        assert_eq!(user_of("sip:example.com"), None);
        assert_eq!(
            top_value("<sip:a@b;x=1,2>;tag=3, <sip:c@d>"),
            "<sip:a@b;x=1,2>;tag=3"
        );
        assert_eq!(param("<sip:a@b;tag=no>;tag=yes", "tag"), Some("yes"));
    }
}
