//! Logging and trace export of `roomkit serve`.
//!
//! Log lines go to stderr, filtered by `RUST_LOG` (default `info`), as text
//! or JSON. When an OTLP endpoint is configured (the `[telemetry]` section
//! or the standard `OTEL_*` variables), the engine's spans are also sent as
//! OTLP/JSON over HTTP by a batch exporter on its own thread; without one,
//! no exporter is built and no thread is started. [`Telemetry::shutdown`]
//! flushes what is still queued.

use std::collections::HashMap;
use std::fmt;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::serve::LogFormat;

/// The service name when none is configured.
pub const DEFAULT_SERVICE_NAME: &str = "roomkit";

/// Trace export settings, resolved from the config file and the
/// environment.
#[derive(Clone, PartialEq)]
pub struct TelemetrySettings {
    /// Full URL spans are POSTed to (`…/v1/traces`); `None` turns export
    /// off.
    pub traces_endpoint: Option<String>,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Fraction of new traces kept, 0.0 to 1.0.
    pub sample_ratio: f64,
    /// Extra request headers (e.g. an API key of the collector).
    pub headers: Vec<(String, String)>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            traces_endpoint: None,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            sample_ratio: 1.0,
            headers: Vec::new(),
        }
    }
}

// Header values are often credentials: only their names are printed.
impl fmt::Debug for TelemetrySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetrySettings")
            .field("traces_endpoint", &self.traces_endpoint)
            .field("service_name", &self.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, _)| format!("{k}: ***"))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The base endpoint plus the OTLP/HTTP traces path, unless it is already
/// there.
pub fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Parses `key=value,key2=value2` (the `OTEL_EXPORTER_OTLP_HEADERS` form;
/// values may be percent-encoded).
///
/// # Errors
/// The entry that is not `key=value`.
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((k, v)) = entry.split_once('=') else {
            return Err(format!("{entry:?} is not key=value"));
        };
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(format!("{k:?} is not a header name"));
        }
        out.push((k.to_owned(), percent_decode(v.trim())));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(h);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Installed logging and, when configured, the trace exporter.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber: the log layer, and the OTLP layer when
    /// an endpoint is set. Call it outside any async runtime (the exporter's
    /// HTTP client is a blocking one). An exporter that cannot be built is
    /// reported and skipped: telemetry never stops the server.
    pub fn init(format: LogFormat, settings: &TelemetrySettings) -> Self {
        let log_filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let log_layer = match format {
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .boxed(),
        }
        .with_filter(log_filter);

        let (provider, problem) = match &settings.traces_endpoint {
            None => (None, None),
            Some(endpoint) => match build_provider(endpoint, settings) {
                Ok(p) => (Some(p), None),
                Err(e) => (None, Some(e)),
            },
        };
        let otel_layer = provider.as_ref().map(|p| {
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("roomkit"))
                .with_filter(export_filter())
        });
        let installed = tracing_subscriber::registry()
            .with(log_layer)
            .with(otel_layer)
            .try_init();
        if let Err(e) = installed {
            eprintln!("roomkit: logging was already set up: {e}");
        }
        if let Some(e) = problem {
            tracing::error!(target: "roomkit.telemetry", error = %e, "trace export is off: the OTLP exporter could not be built");
        } else if let Some(endpoint) = &settings.traces_endpoint {
            tracing::info!(target: "roomkit.telemetry", endpoint = %endpoint, service_name = %settings.service_name, sample_ratio = settings.sample_ratio, "exporting traces over OTLP/HTTP");
        }
        Self { provider }
    }

    /// Flushes queued spans and stops the exporter. Call it outside any async
    /// runtime, after the server has stopped.
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(target: "roomkit.telemetry", error = %e, "flushing traces failed");
        }
    }
}

/// What goes to the collector: the engine's spans and the events logged
/// inside them, never the HTTP stack's own (the exporter's requests would
/// trace themselves).
fn export_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::OFF)
        .with_target("roomkit", LevelFilter::INFO)
        .with_target(roomkit_core::telemetry::SPAN_TARGET, LevelFilter::DEBUG)
}

fn build_provider(
    endpoint: &str,
    settings: &TelemetrySettings,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    // The HTTP client is built without a TLS provider of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let headers: HashMap<String, String> = settings.headers.iter().cloned().collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(endpoint)
        .with_headers(headers)
        .build()?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio)));
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_path_is_appended_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn headers_are_parsed() {
        assert_eq!(
            parse_headers("api-key=abc, x-tenant = t%201").unwrap(),
            vec![
                ("api-key".to_owned(), "abc".to_owned()),
                ("x-tenant".to_owned(), "t 1".to_owned())
            ]
        );
        assert!(parse_headers("novalue").is_err());
        assert!(parse_headers("=x").is_err());
        assert!(parse_headers("").unwrap().is_empty());
    }

    #[test]
    fn header_values_are_not_printed() {
        let s = TelemetrySettings {
            headers: vec![("api-key".into(), "secret-value".into())],
            ..TelemetrySettings::default()
        };
        let printed = format!("{s:?}");
        assert!(printed.contains("api-key"));
        assert!(!printed.contains("secret-value"));
    }
}
