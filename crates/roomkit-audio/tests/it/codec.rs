//! Codecs and packet loss concealment.

use roomkit_audio::codec::{AudioDecoder, AudioEncoder, G711, G711Law};
use roomkit_audio::plc::{Arrival, Concealer, LossDetector};

use crate::util::{db, sine, to_i16, voice_like};

#[test]
fn g711_round_trip_snr() {
    let x = to_i16(&sine(8_000, 1_000.0, 0.5, 8_000, 0.3));
    for law in [G711Law::Mu, G711Law::A] {
        let mut c = G711::new(law);
        let mut payload = Vec::new();
        let mut y = vec![0i16; 160];
        let (mut sig, mut err) = (0.0, 0.0);
        for f in x.chunks_exact(160) {
            assert_eq!(c.encode(f, &mut payload).unwrap(), 160);
            c.decode(&payload, &mut y).unwrap();
            for (a, b) in f.iter().zip(&y) {
                sig += f64::from(*a).powi(2);
                err += (f64::from(*a) - f64::from(*b)).powi(2);
            }
        }
        let snr = db(sig / err);
        eprintln!("G.711 {law:?}: SNR {snr:.1} dB");
        assert!(snr > 33.0, "{law:?} SNR {snr:.1}");
    }
}

#[test]
fn generic_concealer_fades_to_silence_within_60_ms() {
    let mut c = G711::new(G711Law::Mu);
    let x = to_i16(&sine(8_000, 400.0, 0.5, 160, 0.0));
    let mut payload = Vec::new();
    c.encode(&x, &mut payload).unwrap();
    let mut y = vec![0i16; 160];
    c.decode(&payload, &mut y).unwrap();
    let mut levels = Vec::new();
    for _ in 0..5 {
        let mut z = vec![0i16; 160];
        c.conceal(&mut z).unwrap();
        levels.push(roomkit_audio::signal::rms_dbfs(&z));
    }
    eprintln!("concealed frame levels: {levels:?}");
    assert!(levels[0] > -20.0, "first concealed frame keeps the signal");
    assert!(levels[0] > levels[1] && levels[1] > levels[2]);
    assert!(
        levels[3] <= -120.0 && levels[4] <= -120.0,
        "silence after 60 ms"
    );
    let mut k = Concealer::new(16_000, 60.0);
    k.good_frame(&[1000; 320]);
    let mut z = [0i16; 320];
    k.conceal(&mut z);
    assert_eq!(k.concealed_frames(), 1);
}

#[test]
fn loss_detector_tells_reordering_from_loss() {
    let mut d = LossDetector::new(3);
    let mut lost = 0;
    // 0,1,2 ; 4 arrives before 3 (reordered, not lost) ; 6 never comes.
    for seq in [0u16, 1, 2, 4, 3, 5, 7, 8, 9, 10] {
        let (arr, l) = d.on_packet(seq);
        if seq == 3 {
            assert_eq!(arr, Arrival::Reordered);
        }
        lost += l;
    }
    assert_eq!(lost, 1, "only 6 is lost");
    assert_eq!(d.packets_lost(), 1);
    assert_eq!(d.on_packet(6).0, Arrival::TooLate);
    assert_eq!(d.on_packet(9).0, Arrival::Duplicate);
    // A telephone-event packet filtered upstream is marked, not lost.
    d.mark_received(11);
    let (_, l) = d.on_packet(12);
    let (_, l2) = d.on_packet(13);
    let (_, l3) = d.on_packet(14);
    let (_, l4) = d.on_packet(15);
    assert_eq!(l + l2 + l3 + l4, 0);
    // Sequence numbers wrap around without phantom loss.
    let mut w = LossDetector::new(2);
    let mut wl = 0;
    for s in [65_533u16, 65_534, 65_535, 0, 1, 2, 3] {
        wl += w.on_packet(s).1;
    }
    assert_eq!(wl, 0);
}

#[cfg(feature = "opus")]
#[test]
fn opus_round_trip_and_native_concealment() {
    use roomkit_audio::codec::{OpusDecoder, OpusEncoder};
    let rate = 16_000u32;
    let x = to_i16(&voice_like(rate, rate as usize * 2, 140.0, 0.4, 8));
    let mut enc = OpusEncoder::new(rate, 24_000).unwrap();
    let mut dec = OpusDecoder::new(rate).unwrap();
    let mut payload = Vec::new();
    let mut y = Vec::new();
    let mut buf = vec![0i16; 320];
    let mut bytes = 0;
    for f in x.chunks_exact(320) {
        bytes += enc.encode(f, &mut payload).unwrap();
        let n = dec.decode(&payload, &mut buf).unwrap();
        assert_eq!(n, 320);
        y.extend_from_slice(&buf);
    }
    let kbps = bytes as f64 * 8.0 / 2.0 / 1000.0;
    // Compare after removing the codec delay (best lag).
    let mut best = 0.0;
    for lag in 0..200 {
        let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
        for i in 1600..x.len() - 400 {
            let a = f64::from(x[i]);
            let b = f64::from(y[i + lag]);
            xy += a * b;
            xx += a * a;
            yy += b * b;
        }
        let c = xy / (xx * yy).sqrt();
        if c > best {
            best = c;
        }
    }
    let lvl =
        roomkit_audio::signal::rms_dbfs(&y[1600..]) - roomkit_audio::signal::rms_dbfs(&x[1600..]);
    eprintln!("Opus 16 kHz: {kbps:.1} kbit/s, correlation {best:.3}, level change {lvl:.2} dB");
    assert!(best > 0.85, "correlation {best}");
    assert!(lvl.abs() < 2.0);
    // Concealment: right length, fading energy over a long burst.
    let mut levels = Vec::new();
    for _ in 0..10 {
        assert_eq!(dec.conceal(&mut buf).unwrap(), 320);
        levels.push(roomkit_audio::signal::rms_dbfs(&buf));
    }
    eprintln!("Opus concealment levels: {levels:?}");
    assert!(
        levels[0] > -40.0,
        "libopus concealment keeps the first frame audible"
    );
    assert!(
        levels[6..].iter().all(|&l| l <= -120.0),
        "silence after 120 ms of loss"
    );
}
