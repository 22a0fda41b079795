//! Voice codecs: G.711 µ-law and A-law, and Opus (libopus, behind the `opus` feature).
//!
//! Every decoder can also conceal a lost frame: Opus with libopus' own
//! concealment, G.711 with the generic [`Concealer`].

use crate::AudioError;
use crate::plc::Concealer;

/// Turns PCM frames into payloads.
pub trait AudioEncoder {
    /// Codec name.
    fn name(&self) -> &'static str;
    /// Encodes one frame of mono PCM into `out` (cleared first); returns the payload length.
    ///
    /// # Errors
    /// [`AudioError::Codec`] when the codec rejects the frame.
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<usize, AudioError>;
}

/// Turns payloads back into PCM and fills in lost frames.
pub trait AudioDecoder {
    /// Codec name.
    fn name(&self) -> &'static str;
    /// Decodes one payload into `out`; returns the samples written.
    ///
    /// # Errors
    /// [`AudioError::Codec`] for a corrupt payload or a too-small `out`.
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, AudioError>;
    /// Produces `out.len()` samples in place of a lost packet.
    ///
    /// # Errors
    /// [`AudioError::Codec`] when the codec's concealment fails.
    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, AudioError>;
}

/// Which G.711 companding law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum G711Law {
    /// µ-law (North America, Japan).
    Mu,
    /// A-law (elsewhere).
    A,
}

/// G.711 encoder and decoder (stateless apart from loss concealment).
#[derive(Debug)]
pub struct G711 {
    law: G711Law,
    concealer: Concealer,
}

impl G711 {
    /// A codec for `law` at 8 kHz.
    pub fn new(law: G711Law) -> Self {
        Self {
            law,
            concealer: Concealer::new(8_000, 60.0),
        }
    }

    /// Encodes one sample.
    pub fn encode_sample(&self, s: i16) -> u8 {
        match self.law {
            G711Law::Mu => audio_codec_algorithms::encode_ulaw(s),
            G711Law::A => audio_codec_algorithms::encode_alaw(s),
        }
    }

    /// Decodes one sample.
    pub fn decode_sample(&self, b: u8) -> i16 {
        match self.law {
            G711Law::Mu => audio_codec_algorithms::decode_ulaw(b),
            G711Law::A => audio_codec_algorithms::decode_alaw(b),
        }
    }
}

impl AudioEncoder for G711 {
    fn name(&self) -> &'static str {
        match self.law {
            G711Law::Mu => "pcmu",
            G711Law::A => "pcma",
        }
    }

    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<usize, AudioError> {
        out.clear();
        out.extend(pcm.iter().map(|&s| self.encode_sample(s)));
        Ok(out.len())
    }
}

impl AudioDecoder for G711 {
    fn name(&self) -> &'static str {
        AudioEncoder::name(self)
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, AudioError> {
        if out.len() < payload.len() {
            return Err(AudioError::Codec {
                codec: "g711",
                message: format!(
                    "output holds {} samples, payload has {}",
                    out.len(),
                    payload.len()
                ),
            });
        }
        for (d, &b) in out.iter_mut().zip(payload) {
            *d = self.decode_sample(b);
        }
        self.concealer.good_frame(&out[..payload.len()]);
        Ok(payload.len())
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, AudioError> {
        self.concealer.conceal(out);
        Ok(out.len())
    }
}

#[cfg(feature = "opus")]
pub use self::opus_codec::{OpusDecoder, OpusEncoder};

#[cfg(feature = "opus")]
mod opus_codec {
    //! Opus through libopus (the `opus` crate, which links a bundled libopus).

    use super::{AudioDecoder, AudioEncoder};
    use crate::AudioError;

    /// Concealment time after which the output starts fading, in ms.
    const FADE_START_MS: f64 = 60.0;
    /// Length of the fade to silence, in ms.
    const FADE_MS: f64 = 60.0;

    fn err(e: opus::Error) -> AudioError {
        AudioError::Codec {
            codec: "opus",
            message: e.to_string(),
        }
    }

    /// Opus encoder tuned for speech (VoIP application).
    pub struct OpusEncoder {
        inner: opus::Encoder,
    }

    impl std::fmt::Debug for OpusEncoder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("OpusEncoder")
        }
    }

    impl OpusEncoder {
        /// A mono encoder at `rate` (8, 12, 16, 24 or 48 kHz) and `bitrate` bit/s.
        ///
        /// # Errors
        /// [`AudioError::Codec`] when libopus rejects the settings.
        pub fn new(rate: u32, bitrate: i32) -> Result<Self, AudioError> {
            let mut inner = opus::Encoder::new(rate, opus::Channels::Mono, opus::Application::Voip)
                .map_err(err)?;
            inner
                .set_bitrate(opus::Bitrate::Bits(bitrate))
                .map_err(err)?;
            Ok(Self { inner })
        }
    }

    impl AudioEncoder for OpusEncoder {
        fn name(&self) -> &'static str {
            "opus"
        }

        fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<usize, AudioError> {
            out.clear();
            out.resize(1500, 0);
            let n = self.inner.encode(pcm, out).map_err(err)?;
            out.truncate(n);
            Ok(n)
        }
    }

    /// Opus decoder with libopus packet loss concealment.
    ///
    /// libopus' concealment is used for the first 60 ms of a loss burst; it
    /// is then faded out over another 60 ms and followed by silence, because
    /// on long bursts libopus keeps synthesising audible sound.
    pub struct OpusDecoder {
        inner: opus::Decoder,
        rate: u32,
        concealed_ms: f64,
    }

    impl std::fmt::Debug for OpusDecoder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("OpusDecoder")
        }
    }

    impl OpusDecoder {
        /// A mono decoder at `rate`.
        ///
        /// # Errors
        /// [`AudioError::Codec`] when libopus rejects the rate.
        pub fn new(rate: u32) -> Result<Self, AudioError> {
            Ok(Self {
                inner: opus::Decoder::new(rate, opus::Channels::Mono).map_err(err)?,
                rate,
                concealed_ms: 0.0,
            })
        }
    }

    impl AudioDecoder for OpusDecoder {
        fn name(&self) -> &'static str {
            "opus"
        }

        fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, AudioError> {
            if payload.is_empty() {
                return Err(AudioError::Codec {
                    codec: "opus",
                    message: "empty payload (use conceal for a lost packet)".into(),
                });
            }
            self.concealed_ms = 0.0;
            self.inner.decode(payload, out, false).map_err(err)
        }

        fn conceal(&mut self, out: &mut [i16]) -> Result<usize, AudioError> {
            // An empty payload asks libopus for its own concealment, which
            // fades to silence on long bursts by itself.
            let n = self.inner.decode(&[], out, false).map_err(err)?;
            let ms_per_sample = 1000.0 / f64::from(self.rate);
            for (i, s) in out[..n].iter_mut().enumerate() {
                let t = self.concealed_ms + i as f64 * ms_per_sample;
                let gain = (1.0 - (t - FADE_START_MS) / FADE_MS).clamp(0.0, 1.0);
                *s = (f64::from(*s) * gain).round() as i16;
            }
            self.concealed_ms += n as f64 * ms_per_sample;
            Ok(n)
        }
    }
}
