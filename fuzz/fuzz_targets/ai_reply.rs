//! Replies of AI providers: the input is served by a loopback HTTP server
//! as an OpenAI or Anthropic reply (a JSON completion, or a server-sent
//! event stream), with a status code and a `retry-after` header taken from
//! the input, and the real provider code reads it. Every outcome must be
//! an answer or a typed error.

#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use roomkit_ai::{
    AIContext, AIMessage, AIProvider, AnthropicProvider, HttpSettings, OpenAiProvider, RetryPolicy,
    SecretString,
};
use roomkit_fuzz::{fields, runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The reply the server gives next: status line, headers, body.
type Shared = Arc<Mutex<Vec<u8>>>;

struct Loopback {
    reply: Shared,
    openai: OpenAiProvider,
    anthropic: AnthropicProvider,
}

async fn serve_one(mut socket: TcpStream, reply: Shared) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Read one request: headers, then the body by content-length.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + len);
        let answer = reply.lock().map(|r| r.clone()).unwrap_or_default();
        if socket.write_all(&answer).await.is_err() {
            return;
        }
    }
}

fn loopback() -> &'static Loopback {
    static LOOPBACK: OnceLock<Loopback> = OnceLock::new();
    LOOPBACK.get_or_init(|| {
        let reply: Shared = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime()
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let shared = reply.clone();
        runtime().spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve_one(socket, shared.clone()));
            }
        });
        let mut settings = HttpSettings::new(format!("http://{addr}/v1"));
        settings.api_key = Some(SecretString::new("sk-fuzz"));
        settings.read_timeout = Duration::from_secs(5);
        settings.first_byte_timeout = Duration::from_secs(5);
        settings.retry = RetryPolicy {
            max_retries: 0,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        let openai = OpenAiProvider::new("gpt-fuzz", settings.clone())
            .unwrap_or_else(|e| panic!("openai: {e}"));
        let anthropic = AnthropicProvider::new("claude-fuzz", settings)
            .unwrap_or_else(|e| panic!("anthropic: {e}"));
        Loopback {
            reply,
            openai,
            anthropic,
        }
    })
}

const STATUSES: [u16; 8] = [200, 200, 200, 200, 400, 429, 500, 529];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let parts = fields(rest, 2);
    let stream = selector & 1 == 1;
    let status = STATUSES[usize::from(selector >> 2) % STATUSES.len()];
    // Header values are visible ASCII on the wire.
    let retry_after: String = parts[0]
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .map(|b| char::from(*b))
        .collect();
    let body = parts[1];
    let content_type = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut answer = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if !retry_after.trim().is_empty() {
        answer.extend_from_slice(format!("retry-after: {}\r\n", retry_after.trim()).as_bytes());
    }
    answer.extend_from_slice(b"\r\n");
    answer.extend_from_slice(body);
    let lb = loopback();
    if let Ok(mut r) = lb.reply.lock() {
        *r = answer;
    }
    let provider: &dyn AIProvider = if selector & 2 == 0 {
        &lb.openai
    } else {
        &lb.anthropic
    };
    let messages = [AIMessage::user("hi")];
    let context = AIContext::default();
    runtime().block_on(async {
        if stream {
            if let Ok(mut events) = provider.generate_stream(&messages, &context).await {
                while let Some(item) = events.next().await {
                    if item.is_err() {
                        break;
                    }
                }
            }
        } else {
            let _ = provider.generate(&messages, &context).await;
        }
    });
});
