//! A time bound on text-to-speech, whatever the provider: a synthesis that
//! does not start, or whose audio stops coming, within the channel's
//! `tts_timeout_ms` ends with a retryable [`ProviderFailure`], so a reply's
//! sentence is skipped (with a `tts_error` event) instead of holding the
//! call's playback queue forever. The cloud vendors bound their own
//! requests too; this guard also covers providers that do not.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use crate::error::ProviderFailure;
use crate::tts::{TtsProvider, TtsStream};

/// A provider with every wait bounded by `timeout`.
pub(crate) struct GuardedTts {
    inner: Arc<dyn TtsProvider>,
    timeout: Duration,
}

impl GuardedTts {
    pub(crate) fn new(inner: Arc<dyn TtsProvider>, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

fn stalled(provider: &str, what: &str, timeout: Duration) -> ProviderFailure {
    ProviderFailure::retryable(
        provider,
        format!("{what} within {} ms", timeout.as_millis()),
    )
}

#[async_trait]
impl TtsProvider for GuardedTts {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn sample_rate(&self) -> u32 {
        self.inner.sample_rate()
    }

    async fn synthesize_stream(
        &self,
        text: &str,
        voice: Option<&str>,
    ) -> Result<TtsStream, ProviderFailure> {
        let timeout = self.timeout;
        let name = self.inner.name().to_owned();
        let stream =
            match tokio::time::timeout(timeout, self.inner.synthesize_stream(text, voice)).await {
                Ok(r) => r?,
                Err(_) => return Err(stalled(&name, "the synthesis did not start", timeout)),
            };
        // Each chunk must come within the bound; a stall or an error ends
        // the stream.
        let guarded = futures::stream::unfold(Some(stream), move |state| {
            let name = name.clone();
            async move {
                let mut stream = state?;
                match tokio::time::timeout(timeout, stream.next()).await {
                    Ok(Some(item)) => {
                        let go_on = item.is_ok();
                        Some((item, go_on.then_some(stream)))
                    }
                    Ok(None) => None,
                    Err(_) => Some((Err(stalled(&name, "no audio came", timeout)), None)),
                }
            }
        });
        Ok(guarded.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tts::TtsChunk;

    /// Test double: one chunk, then nothing (the stream stays open), or
    /// no stream at all.
    struct Stalls {
        at_start: bool,
    }

    #[async_trait]
    impl TtsProvider for Stalls {
        fn name(&self) -> &str {
            "stalls"
        }
        fn sample_rate(&self) -> u32 {
            16_000
        }
        async fn synthesize_stream(
            &self,
            _text: &str,
            _voice: Option<&str>,
        ) -> Result<TtsStream, ProviderFailure> {
            if self.at_start {
                futures::future::pending::<()>().await;
            }
            let first = futures::stream::iter([Ok(TtsChunk {
                samples: vec![1; 160],
                sample_rate: 16_000,
                marks: Vec::new(),
            })]);
            Ok(first.chain(futures::stream::pending()).boxed())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stalls_end_with_a_retryable_failure() {
        let t = Duration::from_secs(3);
        let g = GuardedTts::new(Arc::new(Stalls { at_start: true }), t);
        let failure = g.synthesize_stream("hi", None).await.err();
        assert!(failure.is_some_and(|f| f.retryable && f.provider == "stalls"));
        let g = GuardedTts::new(Arc::new(Stalls { at_start: false }), t);
        let mut s = g
            .synthesize_stream("hi", None)
            .await
            .unwrap_or_else(|_| futures::stream::empty().boxed());
        assert!(matches!(s.next().await, Some(Ok(_))));
        assert!(matches!(s.next().await, Some(Err(f)) if f.retryable));
        assert!(s.next().await.is_none());
    }
}
