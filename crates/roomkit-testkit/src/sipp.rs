//! A real SIP peer for tests: SIPp (Debian `sip-tester`) driven by
//! scenarios written here, playing RTP from pcap files built here out of
//! espeak-ng speech.
//!
//! - [`speech_8k`]: a sentence spoken by espeak-ng, as 8 kHz PCM (sox
//!   resamples).
//! - [`write_rtp_pcap`]: RTP packets in a pcap file SIPp's
//!   `play_pcap_audio` replays (Ethernet, IPv4, UDP); [`g711_packets`]
//!   makes the µ-law packets of some PCM, 20 ms each.
//! - [`Scenario`]: a UAC or UAS scenario as XML, with the steps a test
//!   needs (play a pcap, play digits, pause, CANCEL, BYE or wait for one,
//!   answer a digest challenge).
//! - [`Sipp`]: a SIPp process running a scenario, whose exit status and
//!   output the test reads.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The directory Debian's sip-tester keeps its pcap files in (RFC 2833
/// digits among them: `dtmf_2833_<digit>.pcap`).
pub const SIPP_PCAP_DIR: &str = "/usr/share/sip-tester";

/// A fresh directory for one test's files.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("roomkit-sipp-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Whether `sipp`, `espeak-ng` and `sox` are on the PATH.
pub fn tools_present() -> bool {
    ["sipp", "espeak-ng", "sox"].iter().all(|tool| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// `text` spoken by espeak-ng (US English, 150 words a minute), as 8 kHz
/// mono 16-bit samples.
///
/// # Panics
/// When espeak-ng or sox fails.
pub fn speech_8k(text: &str, dir: &Path) -> Vec<i16> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let wav = dir.join(format!("speech-{n}.wav"));
    let raw = dir.join(format!("speech-{n}.raw"));
    let ok = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .expect("espeak-ng runs")
        .success();
    assert!(ok, "espeak-ng failed");
    let ok = Command::new("sox")
        .arg(&wav)
        .args([
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
        ])
        .arg(&raw)
        .status()
        .expect("sox runs")
        .success();
    assert!(ok, "sox failed");
    let bytes = std::fs::read(&raw).expect("sox output");
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// µ-law of one sample (ITU-T G.711).
pub fn ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = (s + BIAS).min(0x7FFF);
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// The linear value of a µ-law byte.
pub fn ulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = (b >> 4) & 0x07;
    let mantissa = i32::from(b & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    let v = if sign != 0 { -magnitude } else { magnitude };
    v as i16
}

/// One RTP packet to put in a pcap: when (ms from the start) and the bytes.
#[derive(Debug, Clone)]
pub struct TimedPacket {
    /// Offset from the first packet, in milliseconds.
    pub at_ms: u64,
    /// The whole RTP packet.
    pub rtp: Vec<u8>,
}

/// The µ-law RTP packets (payload type 0, 20 ms each) of `pcm` at 8 kHz.
pub fn g711_packets(pcm: &[i16], ssrc: u32) -> Vec<TimedPacket> {
    pcm.chunks(160)
        .enumerate()
        .map(|(i, chunk)| {
            let mut frame = chunk.to_vec();
            frame.resize(160, 0);
            let mut rtp = Vec::with_capacity(172);
            rtp.push(0x80);
            rtp.push(if i == 0 { 0x80 } else { 0 });
            rtp.extend_from_slice(&(i as u16).to_be_bytes());
            rtp.extend_from_slice(&((i as u32) * 160).to_be_bytes());
            rtp.extend_from_slice(&ssrc.to_be_bytes());
            rtp.extend(frame.iter().map(|&s| ulaw(s)));
            TimedPacket {
                at_ms: i as u64 * 20,
                rtp,
            }
        })
        .collect()
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes RTP packets as a pcap file (Ethernet, IPv4 127.0.0.1 to
/// 127.0.0.1, UDP from `src_port` to `dst_port`; SIPp rewrites the
/// addresses when it replays).
///
/// # Panics
/// When the file cannot be written.
pub fn write_rtp_pcap(path: &Path, packets: &[TimedPacket], src_port: u16, dst_port: u16) {
    let mut out = Vec::new();
    // Global header: magic, version 2.4, zone 0, sigfigs 0, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for p in packets {
        let udp_len = 8 + p.rtp.len();
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + ip_len);
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x08, 0x00]);
        let mut ip = vec![
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0x40,
            0,
            64,
            17,
            0,
            0,
            127,
            0,
            0,
            1,
            127,
            0,
            0,
            1,
        ];
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&src_port.to_be_bytes());
        frame.extend_from_slice(&dst_port.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&p.rtp);
        let seconds = (p.at_ms / 1000) as u32;
        let micros = ((p.at_ms % 1000) * 1000) as u32;
        out.extend_from_slice(&seconds.to_le_bytes());
        out.extend_from_slice(&micros.to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).expect("pcap written");
}

/// A port on 127.0.0.1 free for both UDP and TCP at the time of asking
/// (a SIP listener takes both).
pub fn free_udp_port() -> u16 {
    for _ in 0..64 {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = socket.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// One step of a scenario.
#[derive(Debug, Clone)]
pub enum Step {
    /// Replay RTP from a pcap file (absolute path).
    PlayPcap(PathBuf),
    /// Wait.
    Pause(Duration),
    /// Send BYE and expect its 200.
    Bye,
    /// Wait for the peer's BYE and answer 200.
    ExpectBye {
        /// How long to wait for it.
        timeout: Duration,
    },
    /// Send a re-INVITE offering `direction` (`sendonly` puts the peer on
    /// hold, `sendrecv` resumes), check that the 200's SDP answers with
    /// `answer`, and ACK it.
    ReInvite {
        /// The offered direction.
        direction: &'static str,
        /// The direction the answer must carry.
        answer: &'static str,
    },
    /// Wait for a REFER (blind transfer), accept it (202), report the
    /// transfer target's answer in a NOTIFY (`SIP/2.0 200 OK`), then wait
    /// for the BYE that ends the call.
    ExpectRefer {
        /// How long to wait for the REFER.
        timeout: Duration,
    },
}

/// A UAC scenario: INVITE (offering PCMU and telephone events, media at
/// `[media_port]`, or at `media_port` when set), ACK, then the steps.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The user called (`[service]`).
    pub service: String,
    /// The media port named in the SDP; SIPp's own media port when `None`.
    pub media_port: Option<u16>,
    /// The media address named in the SDP; SIPp's media address when
    /// `None` (set another to pose as a caller behind a NAT).
    pub media_ip: Option<String>,
    /// Cancel after the 180 instead of waiting for the answer.
    pub cancel_after_ringing: bool,
    /// More header lines for the INVITE (`Session-Expires: 90\n`).
    pub invite_headers: String,
    /// The final answer expected instead of 200 (the INVITE is then only
    /// acknowledged).
    pub expect_refusal: Option<u16>,
    /// What to do once the call is up.
    pub steps: Vec<Step>,
}

impl Scenario {
    /// A call to `service` with the given steps.
    pub fn call(service: &str, steps: Vec<Step>) -> Self {
        Self {
            service: service.to_owned(),
            media_port: None,
            media_ip: None,
            cancel_after_ringing: false,
            invite_headers: String::new(),
            expect_refusal: None,
            steps,
        }
    }

    fn headers(cseq: &str) -> String {
        format!(
            "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
      From: sipp <sip:+15550100@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n\
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\n\
      Call-ID: [call_id]\n\
      CSeq: {cseq}\n\
      Contact: <sip:sipp@[local_ip]:[local_port]>\n\
      Max-Forwards: 70\n"
        )
    }

    /// The scenario as SIPp XML.
    pub fn to_xml(&self) -> String {
        let port = self
            .media_port
            .map_or_else(|| "[media_port]".to_owned(), |p| p.to_string());
        let ip = self
            .media_ip
            .clone()
            .unwrap_or_else(|| "[media_ip]".to_owned());
        let mut x = String::from(
            "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"roomkit test call\">\n",
        );
        let extra: String = self
            .invite_headers
            .lines()
            .map(|l| format!("      {l}\n"))
            .collect();
        x.push_str(&format!(
            "  <send retrans=\"500\">\n    <![CDATA[\n      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n{}{extra}      Content-Type: application/sdp\n      Content-Length: [len]\n\n      v=0\n      o=sipp 1 1 IN IP4 {ip}\n      s=-\n      c=IN IP4 {ip}\n      t=0 0\n      m=audio {port} RTP/AVP 0 101\n      a=rtpmap:0 PCMU/8000\n      a=rtpmap:101 telephone-event/8000\n      a=fmtp:101 0-16\n      a=ptime:20\n    ]]>\n  </send>\n",
            Self::headers("1 INVITE")
        ));
        x.push_str("  <recv response=\"100\" optional=\"true\"/>\n");
        if let Some(code) = self.expect_refusal {
            x.push_str(&format!("  <recv response=\"{code}\"/>\n"));
            x.push_str(&format!(
                "  <send>\n    <![CDATA[\n      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n{}      Content-Length: 0\n    ]]>\n  </send>\n</scenario>\n",
                Self::headers("1 ACK")
            ));
            return x.replace("[service]", &self.service);
        }
        if self.cancel_after_ringing {
            x.push_str("  <recv response=\"180\"/>\n");
            x.push_str(&format!(
                "  <send retrans=\"500\">\n    <![CDATA[\n      CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n{}      Content-Length: 0\n    ]]>\n  </send>\n",
                Self::headers("1 CANCEL").replace("[peer_tag_param]", "")
            ));
            x.push_str("  <recv response=\"200\"/>\n  <recv response=\"487\"/>\n");
            x.push_str(&format!(
                "  <send>\n    <![CDATA[\n      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n{}      Content-Length: 0\n    ]]>\n  </send>\n</scenario>\n",
                Self::headers("1 ACK")
            ));
            return x;
        }
        x.push_str("  <recv response=\"180\" optional=\"true\"/>\n");
        x.push_str("  <recv response=\"200\" rtd=\"true\"/>\n");
        x.push_str(&format!(
            "  <send>\n    <![CDATA[\n      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n{}      Content-Length: 0\n    ]]>\n  </send>\n",
            Self::headers("1 ACK")
        ));
        let mut cseq = 1u32;
        for step in &self.steps {
            match step {
                Step::PlayPcap(path) => x.push_str(&format!(
                    "  <nop>\n    <action>\n      <exec play_pcap_audio=\"{}\"/>\n    </action>\n  </nop>\n",
                    path.display()
                )),
                Step::Pause(d) => {
                    x.push_str(&format!("  <pause milliseconds=\"{}\"/>\n", d.as_millis()));
                }
                Step::Bye => {
                    x.push_str(&format!(
                        "  <send retrans=\"500\">\n    <![CDATA[\n      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n{}      Content-Length: 0\n    ]]>\n  </send>\n  <recv response=\"200\"/>\n",
                        Self::headers(&{
                            cseq += 1;
                            format!("{cseq} BYE")
                        })
                    ));
                }
                Step::ReInvite { direction, answer } => {
                    cseq += 1;
                    x.push_str(&format!(
                        "  <send retrans=\"500\">\n    <![CDATA[\n      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n{}      Content-Type: application/sdp\n      Content-Length: [len]\n\n      v=0\n      o=sipp 1 2 IN IP4 {ip}\n      s=-\n      c=IN IP4 {ip}\n      t=0 0\n      m=audio {port} RTP/AVP 0 101\n      a=rtpmap:0 PCMU/8000\n      a=rtpmap:101 telephone-event/8000\n      a={direction}\n    ]]>\n  </send>\n",
                        Self::headers(&format!("{cseq} INVITE"))
                    ));
                    x.push_str(&format!(
                        "  <recv response=\"200\">\n    <action>\n      <ereg regexp=\"a={answer}\" search_in=\"body\" check_it=\"true\" assign_to=\"answered\"/>\n    </action>\n  </recv>\n  <Reference variables=\"answered\"/>\n"
                    ));
                    x.push_str(&format!(
                        "  <send>\n    <![CDATA[\n      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n{}      Content-Length: 0\n    ]]>\n  </send>\n",
                        Self::headers(&format!("{cseq} ACK"))
                    ));
                }
                Step::ExpectRefer { timeout } => {
                    let ok = "  <send>\n    <![CDATA[\n      SIP/2.0 STATUS\n      [last_Via:]\n      [last_From:]\n      [last_To:]\n      [last_Call-ID:]\n      [last_CSeq:]\n      Content-Length: 0\n    ]]>\n  </send>\n";
                    x.push_str(&format!(
                        "  <recv request=\"REFER\" timeout=\"{}\">\n    <action>\n      <ereg regexp=\"sip:[^>]*\" search_in=\"hdr\" header=\"Refer-To:\" check_it=\"true\" assign_to=\"target\"/>\n    </action>\n  </recv>\n  <Reference variables=\"target\"/>\n",
                        timeout.as_millis()
                    ));
                    x.push_str(&ok.replace("STATUS", "202 Accepted"));
                    cseq += 1;
                    x.push_str(&format!(
                        "  <send retrans=\"500\">\n    <![CDATA[\n      NOTIFY sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n{}      Event: refer\n      Subscription-State: terminated;reason=noresource\n      Content-Type: message/sipfrag;version=2.0\n      Content-Length: [len]\n\n      SIP/2.0 200 OK\n    ]]>\n  </send>\n  <recv response=\"200\"/>\n",
                        Self::headers(&format!("{cseq} NOTIFY"))
                    ));
                    x.push_str("  <recv request=\"BYE\" timeout=\"10000\"/>\n");
                    x.push_str(&ok.replace("STATUS", "200 OK"));
                }
                Step::ExpectBye { timeout } => {
                    x.push_str(&format!(
                        "  <recv request=\"BYE\" timeout=\"{}\"/>\n  <send>\n    <![CDATA[\n      SIP/2.0 200 OK\n      [last_Via:]\n      [last_From:]\n      [last_To:]\n      [last_Call-ID:]\n      [last_CSeq:]\n      Content-Length: 0\n    ]]>\n  </send>\n",
                        timeout.as_millis()
                    ));
                }
            }
        }
        x.push_str("</scenario>\n");
        x.replace("[service]", &self.service)
    }
}

/// Keeps the INVITE's From and To, for a BYE the answering side sends.
const REMEMBER_PARTIES: &str = "      <ereg regexp=\".*\" search_in=\"hdr\" header=\"From:\" assign_to=\"caller\"/>\n      <ereg regexp=\".*\" search_in=\"hdr\" header=\"To:\" assign_to=\"callee\"/>\n";

/// A UAS scenario answering one INVITE: a digest challenge (401) first
/// when `credentials` are set (SIPp checks the answer), 180, 200 with its
/// SDP, ACK, then wait for BYE (or send one after `hang_up_after`).
pub fn uas_xml(credentials: Option<(&str, &str)>, hang_up_after: Option<Duration>) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"roomkit test answer\">\n",
    );
    let reply = |status: &str, extra: &str, sdp: bool| {
        let body = if sdp {
            "      Content-Type: application/sdp\n      Content-Length: [len]\n\n      v=0\n      o=sipp 1 1 IN IP4 [media_ip]\n      s=-\n      c=IN IP4 [media_ip]\n      t=0 0\n      m=audio [media_port] RTP/AVP 0 101\n      a=rtpmap:0 PCMU/8000\n      a=rtpmap:101 telephone-event/8000\n"
        } else {
            "      Content-Length: 0\n"
        };
        format!(
            "  <send>\n    <![CDATA[\n      SIP/2.0 {status}\n      [last_Via:]\n      [last_From:]\n      [last_To:];tag=[pid]SIPpTag01[call_number]\n      [last_Call-ID:]\n      [last_CSeq:]\n      Contact: <sip:[local_ip]:[local_port];transport=[transport]>\n{extra}{body}    ]]>\n  </send>\n"
        )
    };
    // The caller's parties are kept only for a BYE sent from here (SIPp
    // refuses variables set and never used).
    let remember = if hang_up_after.is_some() {
        REMEMBER_PARTIES
    } else {
        ""
    };
    if let Some((user, password)) = credentials {
        x.push_str("  <recv request=\"INVITE\"/>\n");
        x.push_str(&reply(
            "401 Unauthorized",
            "      WWW-Authenticate: Digest realm=\"roomkit.test\", nonce=\"4f2a9d\", qop=\"auth\", algorithm=MD5\n",
            false,
        ));
        x.push_str("  <recv request=\"ACK\"/>\n");
        x.push_str(&format!(
            "  <recv request=\"INVITE\" check_it=\"true\" rrs=\"true\">\n    <action>\n      <verifyauth assign_to=\"authvalid\" username=\"{user}\" password=\"{password}\"/>\n{remember}    </action>\n  </recv>\n  <nop test=\"authvalid\" next=\"good\"/>\n"
        ));
        x.push_str(&reply("403 Forbidden", "", false));
        x.push_str("  <recv request=\"ACK\" next=\"end\"/>\n  <label id=\"good\"/>\n");
    } else {
        x.push_str(&format!(
            "  <recv request=\"INVITE\" rrs=\"true\">\n    <action>\n{remember}    </action>\n  </recv>\n"
        ));
    }
    x.push_str(&reply("180 Ringing", "", false));
    x.push_str(&reply("200 OK", "", true));
    x.push_str("  <recv request=\"ACK\"/>\n");
    match hang_up_after {
        Some(after) => {
            x.push_str(&format!(
                "  <pause milliseconds=\"{}\"/>\n",
                after.as_millis()
            ));
            x.push_str("  <send retrans=\"500\">\n    <![CDATA[\n      BYE [next_url] SIP/2.0\n      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n      From:[$callee];tag=[pid]SIPpTag01[call_number]\n      To:[$caller]\n      [last_Call-ID:]\n      CSeq: 2 BYE\n      Max-Forwards: 70\n      Content-Length: 0\n    ]]>\n  </send>\n  <recv response=\"200\"/>\n");
        }
        None => {
            x.push_str(&format!(
                "  <recv request=\"BYE\" timeout=\"60000\"/>\n{}",
                reply("200 OK", "", false).replace(";tag=[pid]SIPpTag01[call_number]", "")
            ));
        }
    }
    x.push_str("  <label id=\"end\"/>\n</scenario>\n");
    x
}

/// A running SIPp.
#[derive(Debug)]
pub struct Sipp {
    child: Child,
    /// Its SIP port.
    pub sip_port: u16,
    /// Its media port.
    pub media_port: u16,
    dir: PathBuf,
}

impl Sipp {
    /// Runs `xml` once as a client calling `target`.
    ///
    /// # Panics
    /// When SIPp cannot start.
    pub fn call(xml: &str, target: SocketAddr, dir: &Path, extra: &[&str]) -> Self {
        Self::spawn(xml, Some(target), dir, extra)
    }

    /// Runs `xml` once as a server (waiting for a call).
    ///
    /// # Panics
    /// When SIPp cannot start.
    pub fn answer(xml: &str, dir: &Path, extra: &[&str]) -> Self {
        Self::spawn(xml, None, dir, extra)
    }

    fn spawn(xml: &str, target: Option<SocketAddr>, dir: &Path, extra: &[&str]) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = dir.join(format!("scenario-{n}.xml"));
        let mut f = std::fs::File::create(&file).expect("scenario file");
        f.write_all(xml.as_bytes()).expect("scenario written");
        let sip_port = free_udp_port();
        let media_port = free_udp_port() & !1;
        let mut cmd = Command::new("sipp");
        cmd.current_dir(dir)
            .arg("-sf")
            .arg(&file)
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &sip_port.to_string()])
            .args(["-mp", &media_port.to_string()])
            .args([
                "-m",
                "1",
                "-nostdin",
                "-timeout",
                "90s",
                "-trace_err",
                "-trace_msg",
            ])
            .args([
                "-error_file",
                &dir.join(format!("errors-{n}.log")).display().to_string(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(target) = target {
            cmd.arg(target.to_string());
        }
        let child = cmd.spawn().expect("sipp starts");
        Self {
            child,
            sip_port,
            media_port,
            dir: dir.to_owned(),
        }
    }

    /// Waits for SIPp to finish; `Ok` when every call of the scenario
    /// succeeded, else its exit status and error log.
    ///
    /// # Errors
    /// SIPp's exit status and its error log.
    pub fn wait(mut self, timeout: Duration) -> Result<(), String> {
        let start = std::time::Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    if status.success() {
                        return Ok(());
                    }
                    return Err(format!("sipp exited with {status}: {}", self.errors()));
                }
                Ok(None) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = self.child.kill();
                    return Err(format!(
                        "sipp did not finish in {timeout:?}: {}",
                        self.errors()
                    ));
                }
            }
        }
    }

    /// The RTP port the far end's SDP answer named (read from SIPp's
    /// message log, which `-trace_msg` writes), once it has arrived.
    pub fn answered_media_port(&self) -> Option<u16> {
        let entries = std::fs::read_dir(&self.dir).ok()?;
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().ends_with("_messages.log") {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let answer = text.split("SIP/2.0 200 OK").nth(1)?;
            let line = answer
                .lines()
                .find(|l| l.trim_start().starts_with("m=audio "))?;
            return line.split_whitespace().nth(1)?.parse().ok();
        }
        None
    }

    fn errors(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("errors-") {
                    text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        text
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
