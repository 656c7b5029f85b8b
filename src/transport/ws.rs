//! MQTT over WebSocket (RFC 6455, MQTT 6.0), sans-IO: the upgrade request
//! and its answer, then frames in and out. Frame headers are tungstenite's;
//! payloads are unmasked straight into the MQTT buffer as they arrive, so
//! a frame is never held whole and MQTT packets may span frames or share
//! one [MQTT-6.0.0-2].

use std::io::{self, Cursor};

use bytes::BytesMut;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Most bytes an upgrade request may take.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// The smallest cap on a frame or message the broker sets, whatever the
/// maximum packet size: clients put several packets in one frame.
pub const MIN_FRAME_CAP: usize = 1 << 20;

/// Largest frame this side sends: a busy writer's batch goes out as
/// several frames, never as one of megabytes.
pub const MAX_FRAME_OUT: usize = 64 * 1024;

/// Largest control frame payload (RFC 6455 5.5).
const MAX_CONTROL: u64 = 125;

/// A client's upgrade request for `host` and `path`, offering `mqtt`.
pub fn client_request(host: &str, path: &str) -> Vec<u8> {
    let mut key = [0u8; 16];
    let _ = getrandom::getrandom(&mut key);
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .into_bytes()
}

/// A server's answer to [`client_request`]: `Ok(None)` while incomplete,
/// else the length of the answer (frames follow it).
///
/// # Errors
/// Anything but `101 Switching Protocols`.
pub fn client_answer(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) if resp.code == Some(101) => Ok(Some(n)),
        Ok(httparse::Status::Complete(_)) => Err(format!("upgrade refused: {:?}", resp.code)),
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_BYTES => Ok(None),
        Ok(httparse::Status::Partial) => Err("upgrade answer too long".into()),
        Err(e) => Err(format!("not an HTTP answer: {e}")),
    }
}

/// A parsed upgrade request: the answer to send, or why it is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// More bytes are needed.
    Partial,
    /// Accepted: `answer` goes to the client, `used` bytes were the request.
    Accept {
        /// The 101 response.
        answer: Vec<u8>,
        /// Length of the request in the buffer.
        used: usize,
    },
    /// Refused: `answer` (a 4xx) goes to the client, then the close.
    Refuse {
        /// The error response.
        answer: Vec<u8>,
        /// Why, for the log.
        why: String,
    },
}

fn refuse(status: &str, why: &str) -> Upgrade {
    Upgrade::Refuse {
        answer: format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .into_bytes(),
        why: why.to_string(),
    }
}

/// Reads an HTTP upgrade request from the start of `buf`. Any path is
/// accepted (`/mqtt` is the custom); the subprotocol `mqtt` is selected
/// when offered [MQTT-6.0.0-4], `mqttv3.1` for old clients; a client that
/// offers neither is refused.
pub fn upgrade(buf: &[u8]) -> Upgrade {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_BYTES => return Upgrade::Partial,
        Ok(httparse::Status::Partial) => {
            return refuse("431 Request Header Fields Too Large", "request too large")
        }
        Err(e) => return refuse("400 Bad Request", &format!("not an HTTP request: {e}")),
    };
    if req.method != Some("GET") {
        return refuse("405 Method Not Allowed", "not a GET");
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .collect::<Vec<_>>()
            .join(",")
    };
    let has_token = |name: &str, token: &str| {
        header(name)
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return refuse("400 Bad Request", "not a WebSocket upgrade");
    }
    if header("sec-websocket-version").trim() != "13" {
        return Upgrade::Refuse {
            answer: b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n".to_vec(),
            why: "WebSocket version is not 13".into(),
        };
    }
    let key = header("sec-websocket-key");
    if key.trim().is_empty() {
        return refuse("400 Bad Request", "no Sec-WebSocket-Key");
    }
    let protocol = ["mqtt", "mqttv3.1"]
        .into_iter()
        .find(|p| has_token("sec-websocket-protocol", p));
    let Some(protocol) = protocol else {
        return refuse("400 Bad Request", "subprotocol mqtt not offered");
    };
    let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    )
    .into_bytes();
    Upgrade::Accept { answer, used }
}

/// The frame being read.
#[derive(Debug)]
struct Frame {
    /// Payload bytes still to come.
    left: u64,
    mask: [u8; 4],
    /// Payload bytes seen, for the mask's phase.
    seen: usize,
    /// `None` for data; a control frame's opcode and its payload so far.
    control: Option<(Control, Vec<u8>)>,
}

/// One connection's framing state. A server reads masked frames and
/// writes plain ones; a client (ringmq-bench) the other way round.
#[derive(Debug)]
pub struct Ws {
    server: bool,
    /// An incomplete frame header carried over from the last read.
    header: Vec<u8>,
    frame: Option<Frame>,
    /// Bytes of the message (all its frames) so far, against `max_message`.
    message: u64,
    max_message: u64,
    /// Frames of its own to send: pongs and the closing handshake.
    own: Vec<u8>,
    closed: bool,
}

fn protocol_error(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {why}"))
}

fn unmask(data: &mut [u8], mask: [u8; 4], seen: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(seen + i) % 4];
    }
}

impl Ws {
    /// Framing for a server whose MQTT packets are at most `max_message`
    /// bytes: a frame or a message longer than that is refused.
    pub fn server(max_message: usize) -> Ws {
        Ws {
            server: true,
            header: Vec::new(),
            frame: None,
            message: 0,
            max_message: max_message as u64,
            own: Vec::new(),
            closed: false,
        }
    }

    /// Framing for a client (its frames masked, the server's not).
    pub fn client(max_message: usize) -> Ws {
        Ws {
            server: false,
            ..Ws::server(max_message)
        }
    }

    /// Feeds bytes off the wire; the MQTT bytes they carry go to `plain`.
    /// Returns false once the closing handshake was done.
    ///
    /// # Errors
    /// A frame RFC 6455 or MQTT 6.0 refuses: unmasked, a text frame
    /// [MQTT-6.0.0-1], reserved bits or opcodes, an oversized frame.
    pub fn input(&mut self, mut raw: &[u8], plain: &mut BytesMut) -> io::Result<bool> {
        while !raw.is_empty() && !self.closed {
            if let Some(f) = &mut self.frame {
                let take = (f.left.min(raw.len() as u64)) as usize;
                let (now, rest) = raw.split_at(take);
                raw = rest;
                let out: &mut [u8] = match &mut f.control {
                    None => {
                        let at = plain.len();
                        plain.extend_from_slice(now);
                        &mut plain[at..]
                    }
                    Some((_, payload)) => {
                        let at = payload.len();
                        payload.extend_from_slice(now);
                        &mut payload[at..]
                    }
                };
                // A server's frames come unmasked.
                if self.server {
                    unmask(out, f.mask, f.seen);
                }
                f.seen += take;
                f.left -= take as u64;
                if f.left == 0 {
                    let f = self.frame.take().expect("frame in progress");
                    if let Some((op, payload)) = f.control {
                        self.on_control(op, &payload);
                    }
                }
                continue;
            }
            // A header: up to 14 bytes, maybe split across reads.
            let parsed = if self.header.is_empty() {
                let mut c = Cursor::new(raw);
                let h = FrameHeader::parse(&mut c).map_err(|e| protocol_error(&e.to_string()))?;
                match h {
                    Some(h) => {
                        raw = &raw[c.position() as usize..];
                        Some(h)
                    }
                    None => {
                        self.header.extend_from_slice(raw);
                        raw = &[];
                        None
                    }
                }
            } else {
                let had = self.header.len();
                let add = raw.len().min(14);
                self.header.extend_from_slice(&raw[..add]);
                let mut c = Cursor::new(&self.header[..]);
                let h = FrameHeader::parse(&mut c).map_err(|e| protocol_error(&e.to_string()))?;
                match h {
                    Some(h) => {
                        let used = c.position() as usize - had;
                        raw = &raw[used..];
                        self.header.clear();
                        Some(h)
                    }
                    None => {
                        raw = &raw[add..];
                        None
                    }
                }
            };
            if let Some((h, len)) = parsed {
                self.start_frame(h, len)?;
            }
        }
        Ok(!self.closed)
    }

    fn start_frame(&mut self, h: FrameHeader, len: u64) -> io::Result<()> {
        if h.rsv1 || h.rsv2 || h.rsv3 {
            return Err(protocol_error("reserved bits set"));
        }
        let mask = match (h.mask, self.server) {
            (Some(m), true) => m,
            (None, false) => [0; 4],
            (None, true) => return Err(protocol_error("client frame not masked")),
            (Some(_), false) => return Err(protocol_error("server frame masked")),
        };
        let control = match h.opcode {
            OpCode::Data(Data::Binary | Data::Continue) => {
                self.message += len;
                if self.message > self.max_message {
                    return Err(protocol_error(
                        "message larger than the maximum packet size",
                    ));
                }
                if h.is_final {
                    self.message = 0;
                }
                None
            }
            // [MQTT-6.0.0-1] binary frames only.
            OpCode::Data(Data::Text) => return Err(protocol_error("text frame")),
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                return Err(protocol_error("reserved opcode"))
            }
            OpCode::Control(c) => {
                if len > MAX_CONTROL || !h.is_final {
                    return Err(protocol_error("control frame too long or fragmented"));
                }
                Some((c, Vec::new()))
            }
        };
        let f = Frame {
            left: len,
            mask,
            seen: 0,
            control,
        };
        if len == 0 {
            if let Some((op, payload)) = f.control {
                self.on_control(op, &payload);
            }
        } else {
            self.frame = Some(f);
        }
        Ok(())
    }

    fn on_control(&mut self, op: Control, payload: &[u8]) {
        match op {
            Control::Ping => self.frame_out(OpCode::Control(Control::Pong), payload),
            Control::Close => {
                // Echo the status code, then the socket closes.
                let code = payload.get(..2).unwrap_or(&[]).to_vec();
                self.frame_out(OpCode::Control(Control::Close), &code);
                self.closed = true;
            }
            Control::Pong | Control::Reserved(_) => {}
        }
    }

    fn frame_out(&mut self, opcode: OpCode, payload: &[u8]) {
        let mut own = std::mem::take(&mut self.own);
        self.frame(opcode, payload, &mut own);
        self.own = own;
    }

    /// One frame: plain from a server, masked from a client.
    fn frame(&self, opcode: OpCode, payload: &[u8], wire: &mut Vec<u8>) {
        let mask = (!self.server).then(|| {
            let mut m = [0u8; 4];
            // A failing random source leaves a fixed mask: the server
            // unmasks whatever it is.
            let _ = getrandom::getrandom(&mut m);
            m
        });
        let h = FrameHeader {
            opcode,
            mask,
            ..FrameHeader::default()
        };
        // Writing to a Vec cannot fail.
        let _ = h.format(payload.len() as u64, wire);
        let at = wire.len();
        wire.extend_from_slice(payload);
        if let Some(m) = mask {
            unmask(&mut wire[at..], m, 0);
        }
    }

    /// Appends to `wire` its own frames, then `plain` as one binary frame.
    pub fn output(&mut self, plain: &[u8], wire: &mut Vec<u8>) {
        wire.append(&mut self.own);
        for chunk in plain.chunks(MAX_FRAME_OUT) {
            self.frame(OpCode::Data(Data::Binary), chunk, wire);
        }
    }

    /// True when it has frames of its own to send.
    pub fn wants_write(&self) -> bool {
        !self.own.is_empty()
    }

    /// Starts the closing handshake (status 1000, normal closure).
    pub fn close(&mut self) {
        if !self.closed {
            self.frame_out(OpCode::Control(Control::Close), &1000u16.to_be_bytes());
            self.closed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let h = FrameHeader {
            is_final: fin,
            opcode,
            mask: Some(mask),
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        h.format(payload.len() as u64, &mut out).unwrap();
        let mut p = payload.to_vec();
        unmask(&mut p, mask, 0);
        out.extend_from_slice(&p);
        out
    }

    const BIN: OpCode = OpCode::Data(Data::Binary);

    #[test]
    fn upgrade_selects_mqtt_and_answers_the_key() {
        // The key and accept value of RFC 6455 1.3.
        let req = b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqttv3.1, mqtt\r\n\r\nrest";
        match upgrade(req) {
            Upgrade::Accept { answer, used } => {
                let a = String::from_utf8(answer).unwrap();
                assert!(a.starts_with("HTTP/1.1 101"));
                assert!(a.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
                // [MQTT-6.0.0-4]
                assert!(a.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
                assert_eq!(&req[used..], b"rest");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(upgrade(&req[..40]), Upgrade::Partial);
        let old = String::from_utf8_lossy(req).replace("mqttv3.1, mqtt", "mqttv3.1");
        assert!(
            matches!(upgrade(old.as_bytes()), Upgrade::Accept { answer, .. }
            if String::from_utf8_lossy(&answer).contains("Protocol: mqttv3.1\r\n"))
        );
        let none = String::from_utf8_lossy(req).replace("mqttv3.1, mqtt", "chat");
        assert!(matches!(upgrade(none.as_bytes()), Upgrade::Refuse { .. }));
        assert!(matches!(
            upgrade(b"POST / HTTP/1.1\r\n\r\n"),
            Upgrade::Refuse { .. }
        ));
        assert!(matches!(
            upgrade(&[b'A'; MAX_REQUEST_BYTES + 1]),
            Upgrade::Refuse { .. }
        ));
    }

    // [MQTT-6.0.0-2] packets split across frames, frames across reads, and
    // several packets in one frame all come out as one byte stream.
    #[test]
    fn frames_split_anywhere_make_one_stream() {
        let mut wire = frame(BIN, false, b"hello ");
        wire.extend(frame(OpCode::Control(Control::Ping), true, b"p"));
        wire.extend(frame(OpCode::Data(Data::Continue), true, b"world"));
        wire.extend(frame(BIN, true, &vec![7u8; 70_000]));
        for step in [1, 2, 3, 7, 13, 1000, wire.len()] {
            let mut ws = Ws::server(1 << 20);
            let mut plain = BytesMut::new();
            for chunk in wire.chunks(step) {
                assert!(ws.input(chunk, &mut plain).unwrap());
            }
            assert_eq!(&plain[..11], b"hello world", "step {step}");
            assert_eq!(plain.len(), 11 + 70_000);
            assert!(plain[11..].iter().all(|&b| b == 7));
            // The ping was answered with a pong carrying its payload.
            assert!(ws.wants_write());
            let mut out = Vec::new();
            ws.output(b"", &mut out);
            assert_eq!(out, vec![0x8A, 1, b'p']);
        }
    }

    // [MQTT-6.0.0-1] a text frame closes the connection; so do unmasked
    // frames and messages past the maximum packet size.
    #[test]
    fn what_is_refused() {
        let mut plain = BytesMut::new();
        let text = frame(OpCode::Data(Data::Text), true, b"{}");
        assert!(Ws::server(1024).input(&text, &mut plain).is_err());
        let unmasked = [0x82, 1, 0];
        assert!(Ws::server(1024).input(&unmasked, &mut plain).is_err());
        let big = frame(BIN, true, &[0; 2000]);
        assert!(Ws::server(1024).input(&big[..20], &mut plain).is_err());
        let mut ws = Ws::server(1024);
        let mut two = frame(BIN, false, &[0; 600]);
        two.extend(frame(OpCode::Data(Data::Continue), true, &[0; 600]));
        assert!(ws.input(&two, &mut plain).is_err());
    }

    #[test]
    fn close_is_echoed_and_ends_the_stream() {
        let mut ws = Ws::server(1024);
        let mut plain = BytesMut::new();
        let close = frame(
            OpCode::Control(Control::Close),
            true,
            &1000u16.to_be_bytes(),
        );
        assert!(!ws.input(&close, &mut plain).unwrap());
        let mut out = Vec::new();
        ws.output(b"", &mut out);
        assert_eq!(out, vec![0x88, 2, 0x03, 0xE8]);
    }

    #[test]
    fn a_client_masks_and_a_server_reads_it() {
        let mut client = Ws::client(1024);
        let mut wire = Vec::new();
        client.output(b"hello", &mut wire);
        assert_eq!(wire[1] & 0x80, 0x80, "masked");
        let mut server = Ws::server(1024);
        let mut plain = BytesMut::new();
        assert!(server.input(&wire, &mut plain).unwrap());
        assert_eq!(&plain[..], b"hello");
        let mut back = Vec::new();
        server.output(b"world", &mut back);
        let mut plain = BytesMut::new();
        assert!(client.input(&back, &mut plain).unwrap());
        assert_eq!(&plain[..], b"world");
        let req = client_request("localhost", "/mqtt");
        let Upgrade::Accept { answer, .. } = upgrade(&req) else {
            panic!("refused");
        };
        assert_eq!(client_answer(&answer), Ok(Some(answer.len())));
        assert_eq!(client_answer(&answer[..10]), Ok(None));
    }

    // A writer's batch of many packets goes out as frames of at most
    // MAX_FRAME_OUT, which a server reads whatever its packet cap.
    #[test]
    fn a_large_batch_is_several_frames() {
        let mut client = Ws::client(usize::MAX);
        let mut wire = Vec::new();
        client.output(&vec![5u8; 3 * MAX_FRAME_OUT + 10], &mut wire);
        let mut server = Ws::server(MIN_FRAME_CAP);
        let mut plain = BytesMut::new();
        assert!(server.input(&wire, &mut plain).unwrap());
        assert_eq!(plain.len(), 3 * MAX_FRAME_OUT + 10);
        let frames = wire.len() - plain.len();
        // 64 KiB needs the 8-byte length: 2 + 8 + 4 bytes of header each.
        assert_eq!(
            frames,
            3 * (2 + 8 + 4) + (2 + 4),
            "four frame headers with masks"
        );
    }

    #[test]
    fn output_is_one_unmasked_binary_frame() {
        let mut ws = Ws::server(1024);
        let mut out = Vec::new();
        ws.output(&[1, 2, 3], &mut out);
        assert_eq!(out, vec![0x82, 3, 1, 2, 3]);
    }
}
