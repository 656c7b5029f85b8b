//! MQTT over TLS: certificates from a CA of the test's own (rcgen) and from
//! the README's three openssl commands, client certificates, a handshake
//! that never finishes, a certificate reload, and clients of every kind
//! (rustls, mosquitto_pub/mosquitto_sub, paho) across shards.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use ringmq::protocol::{
    Codec, Packet, ProtocolVersion,
    ProtocolVersion::{V311, V5},
    QoS, ReasonCode,
};
use ringmq::transport::tls::TlsFiles;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A CA and the certificates it signs, as PEM files in a directory.
struct Pki {
    dir: TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        std::fs::create_dir_all(&dir.0).expect("dir");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, tag);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("key");
        let ca = p.self_signed(&ca_key).expect("ca");
        std::fs::write(dir.0.join("ca.pem"), ca.pem()).expect("write");
        Pki { dir, ca, ca_key }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.0.join("ca.pem")
    }

    /// Signs a certificate; returns (cert, key) paths.
    fn issue(&self, name: &str, server: bool, expired: bool) -> (PathBuf, PathBuf) {
        let sans = if server {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        } else {
            Vec::new()
        };
        let mut p = CertificateParams::new(sans).expect("params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).expect("sign");
        let (c, k) = (
            self.dir.0.join(format!("{name}.pem")),
            self.dir.0.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c, k)
    }
}

fn tls_config(
    cores: usize,
    pki: &Pki,
    ca: Option<PathBuf>,
    require: bool,
) -> ringmq::config::Config {
    let (cert, key) = pki.issue("server", true, false);
    let mut cfg = config(cores);
    cfg.listen_tls = vec!["127.0.0.1:0".parse().expect("addr")];
    cfg.tls = Some(TlsFiles {
        cert,
        key,
        ca,
        require_certificate: require,
        use_identity_as_username: false,
    });
    cfg
}

fn tls_addr(b: &Broker) -> SocketAddr {
    b.handle.as_ref().expect("running").tls_addrs()[0]
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client trusting `ca`, with a client certificate if given;
/// the handshake done (or its error).
fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> std::io::Result<Tls> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("pem")).expect("root");
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let cfg = match client {
        Some((cert, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .expect("cert")
                    .map(|c| c.expect("pem"))
                    .collect(),
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("client auth"),
        None => b.with_no_client_auth(),
    };
    connect_with(addr, Arc::new(cfg))
}

/// The handshake with a given client config (whose session cache then
/// carries tickets from one connection to the next).
fn connect_with(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let conn = rustls::ClientConnection::new(cfg, ServerName::try_from("localhost").expect("name"))
        .expect("client");
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(TIMEOUT))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// MQTT packets over a TLS stream.
struct Client {
    tls: Tls,
    codec: Codec,
    buf: BytesMut,
    version: ProtocolVersion,
}

impl Client {
    fn connect(
        tls: Tls,
        version: ProtocolVersion,
        id: &str,
    ) -> std::io::Result<(Client, ReasonCode)> {
        let mut c = Client {
            tls,
            codec: Codec::new(version, usize::MAX),
            buf: BytesMut::new(),
            version,
        };
        c.send(&Packet::Connect(Box::new(connect_packet(
            version, id, true,
        ))))?;
        match c.recv()? {
            Packet::ConnAck(a) => Ok((c, a.reason)),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    fn send(&mut self, p: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        p.encode(self.version, &mut out).expect("encodes");
        self.tls.write_all(&out)?;
        self.tls.flush()
    }

    fn recv(&mut self) -> std::io::Result<Packet> {
        loop {
            if let Some(p) = self.codec.decode(&mut self.buf).expect("valid packets") {
                return Ok(p);
            }
            let mut tmp = [0u8; 16384];
            let n = self.tls.read(&mut tmp)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }
}

// Subscribers and publishers over TLS, owned by both shards: a connection
// accepted on one shard and owned by the other travels with its TLS state
// (eight subscribers make it all but certain that some do), and messages
// flow TLS to TLS and plain TCP to TLS, QoS 0 and 1, v3 and v5.
#[test]
fn mqtt_over_tls_across_shards() {
    let pki = Pki::new("tls-cross");
    let b = start_with(tls_config(2, &pki, None, false));
    let addr = tls_addr(&b);
    let mut subs = Vec::new();
    for i in 0..8 {
        let v = if i % 2 == 0 { V5 } else { V311 };
        let id = id_on_shard(&format!("tls-sub{i}"), i % 2, 2);
        let tls = tls_connect(addr, &pki.ca_path(), None).expect("handshake");
        let (mut c, reason) = Client::connect(tls, v, &id).expect("connect");
        assert_eq!(reason, ReasonCode::SUCCESS);
        c.send(&subscribe_packet(1, &[("tls/#", QoS::AtLeastOnce)]))
            .expect("send");
        assert!(matches!(c.recv().expect("suback"), Packet::SubAck(_)));
        subs.push(c);
    }
    let tls = tls_connect(addr, &pki.ca_path(), None).expect("handshake");
    let (mut tls_pub, _) =
        Client::connect(tls, V5, &id_on_shard("tls-pub", 0, 2)).expect("connect");
    let (mut plain_pub, _) = Raw::connect(b.addr, V311, &id_on_shard("plain-pub", 1, 2), true);
    for i in 0..20u16 {
        let mut p =
            ringmq::protocol::Publish::new(s("tls/a"), bytes::Bytes::from(vec![i as u8; 3000]));
        p.qos = QoS::AtLeastOnce;
        p.packet_id = Some(pid(i + 1));
        tls_pub.send(&Packet::Publish(p)).expect("publish");
        assert!(matches!(tls_pub.recv().expect("puback"), Packet::PubAck(_)));
        plain_pub.publish("tls/b", &[i as u8], QoS::AtMostOnce, 0, false);
    }
    for c in &mut subs {
        let (mut a, mut bs) = (0, 0);
        while a + bs < 40 {
            match c.recv().expect("publish") {
                Packet::Publish(p) => {
                    match p.topic.as_str() {
                        "tls/a" => {
                            assert_eq!(p.payload.len(), 3000);
                            assert_eq!(p.payload[0], a as u8, "in order");
                            a += 1;
                        }
                        _ => bs += 1,
                    }
                    if let Some(id) = p.packet_id {
                        c.send(&Packet::PubAck(ringmq::protocol::Ack::new(id)))
                            .expect("ack");
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((a, bs), (20, 20));
    }
}

// With --ca and --require-certificate a client needs a certificate signed
// by that CA and valid today: none, another CA's, or an expired one fail
// the handshake; the right one connects. Without --require-certificate a
// client without a certificate gets in, but a bad one still fails.
#[test]
fn client_certificates() {
    let pki = Pki::new("tls-client-ca");
    let other = Pki::new("tls-other-ca");
    let good = pki.issue("client", false, false);
    let expired = pki.issue("old-client", false, true);
    let stranger = other.issue("stranger", false, false);
    let b = start_with(tls_config(1, &pki, Some(pki.ca_path()), true));
    let addr = tls_addr(&b);
    let attempt = |client: Option<&(PathBuf, PathBuf)>, id: &str| -> Result<ReasonCode, String> {
        let tls = tls_connect(
            addr,
            &pki.ca_path(),
            client.map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .map_err(|e| e.to_string())?;
        // TLS 1.3: the server's verdict on the client certificate may come
        // after the client thinks the handshake is done.
        Client::connect(tls, V5, id)
            .map(|(_, r)| r)
            .map_err(|e| e.to_string())
    };
    assert_eq!(attempt(Some(&good), "cert-good"), Ok(ReasonCode::SUCCESS));
    for (what, c) in [
        ("no", None),
        ("expired", Some(&expired)),
        ("stranger", Some(&stranger)),
    ] {
        let got = attempt(c, &format!("cert-{what}"));
        assert!(got.is_err(), "{what} certificate: {got:?}");
    }
    drop(b);
    let b = start_with(tls_config(1, &pki, Some(pki.ca_path()), false));
    let addr = tls_addr(&b);
    let attempt = |client: Option<&(PathBuf, PathBuf)>| -> Result<ReasonCode, String> {
        let tls = tls_connect(
            addr,
            &pki.ca_path(),
            client.map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .map_err(|e| e.to_string())?;
        Client::connect(tls, V311, "cert-opt")
            .map(|(_, r)| r)
            .map_err(|e| e.to_string())
    };
    assert_eq!(attempt(None), Ok(ReasonCode::SUCCESS));
    assert_eq!(attempt(Some(&good)), Ok(ReasonCode::SUCCESS));
    assert!(attempt(Some(&stranger)).is_err());
    // A client that does not trust the server's CA gives up on its own.
    assert!(tls_connect(addr, &other.ca_path(), None).is_err());
}

// Sockets that open a TLS handshake and never finish it are closed at the
// connect timeout, and cost a client that does finish nothing: it connects
// and gets its messages while they hang.
#[test]
fn a_stalled_handshake_is_cut_off() {
    let pki = Pki::new("tls-slow");
    let mut cfg = tls_config(2, &pki, None, false);
    cfg.connect_timeout = Duration::from_secs(1);
    let b = start_with(cfg);
    let addr = tls_addr(&b);
    let started = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut t = TcpStream::connect(addr).expect("tcp");
            // Half a ClientHello record header, or nothing at all.
            if i % 2 == 0 {
                t.write_all(&[0x16, 0x03, 0x01]).expect("write");
            }
            t
        })
        .collect();
    let tls = tls_connect(addr, &pki.ca_path(), None).expect("handshake beside stalled ones");
    let (mut c, reason) = Client::connect(tls, V5, "beside-stalled").expect("connect");
    assert_eq!(reason, ReasonCode::SUCCESS);
    c.send(&Packet::PingReq).expect("ping");
    assert_eq!(c.recv().expect("pong"), Packet::PingResp);
    for t in &mut stalled {
        t.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut b = [0u8; 64];
        // Closed (0 or reset), not timed out.
        match t.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("stalled socket not closed: {other:?}"),
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed before the timeout: {took:?}"
    );
}

// Mosquitto's own clients over TLS with --cafile, against certificates made
// by the README's openssl commands: mosquitto_sub gets what mosquitto_pub
// sends across shards; with another CA, mosquitto_pub refuses the server.
#[test]
fn mosquitto_clients_over_tls() {
    need("mosquitto_pub");
    let dir = TempDir::new("tls-openssl");
    let mut cfg = config(2);
    cfg.listen_tls = vec!["127.0.0.1:0".parse().expect("addr")];
    cfg.tls = Some(openssl_tls(&dir.0));
    let b = start_with(cfg);
    let port = tls_addr(&b).port().to_string();
    let ca = dir.0.join("ca.pem");
    let ca = ca.to_str().expect("utf-8");
    for v in ["mqttv311", "mqttv5"] {
        let topic = format!("tls/mosquitto/{v}");
        let sub = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "--cafile", ca, "-V", v])
            .args(["-t", &topic, "-C", "1", "-W", "10", "-q", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub runs");
        // Retained: it arrives whether the SUBSCRIBE came before or after.
        let st = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "--cafile", ca, "-V", v])
            .args(["-t", &topic, "-m", "over tls", "-q", "1", "-r"])
            .status()
            .expect("mosquitto_pub runs");
        assert!(st.success(), "{v}");
        let out = sub.wait_with_output().expect("mosquitto_sub ends");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "over tls",
            "{v}"
        );
    }
    let other = Pki::new("tls-mosq-other");
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "--cafile"])
        .arg(other.ca_path())
        .args(["-t", "x", "-m", "y"])
        .stderr(Stdio::null())
        .status()
        .expect("mosquitto_pub runs");
    assert!(
        !st.success(),
        "mosquitto_pub trusted a server its CA did not sign"
    );
}

// paho-mqtt over TLS (3.1.1 and 5.0): a retained message and a QoS 1
// message through the TLS listener.
#[test]
fn paho_over_tls() {
    let pki = Pki::new("tls-paho");
    let b = start_with(tls_config(2, &pki, None, false));
    let script = r#"
import sys, threading, json
import paho.mqtt.client as mqtt
port, ca = int(sys.argv[1]), sys.argv[2]
out = {}
for name, proto in (("v311", mqtt.MQTTv311), ("v5", mqtt.MQTTv5)):
    got, done = [], threading.Event()
    def on_message(c, u, m):
        got.append(m.payload.decode())
        if len(got) == 2:
            done.set()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-tls-" + name, protocol=proto)
    c.tls_set(ca_certs=ca)
    c.on_message = on_message
    c.connect("localhost", port)
    c.loop_start()
    c.publish("paho/tls/" + name, "kept", qos=1, retain=True).wait_for_publish(10)
    c.subscribe("paho/tls/" + name, qos=1)
    c.publish("paho/tls/" + name, "live", qos=1).wait_for_publish(10)
    done.wait(10)
    out[name] = list(got[:2])
    c.publish("paho/tls/" + name, "", qos=1, retain=True).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()
print(json.dumps(out))
"#;
    let ca = pki.ca_path();
    let text = python(
        script,
        &[
            &tls_addr(&b).port().to_string(),
            ca.to_str().expect("utf-8"),
        ],
    );
    assert!(text.contains(r#""v311": ["kept", "live"]"#), "{text}");
    assert!(text.contains(r#""v5": ["kept", "live"]"#), "{text}");
}

// SIGHUP reads the certificate again: a client connected under the old one
// stays; new handshakes present the new one (signed by another CA); files
// that no longer parse keep the last good certificate.
#[test]
fn sighup_reloads_the_certificate() {
    let (old, new) = (Pki::new("tls-hup-old"), Pki::new("tls-hup-new"));
    let (cert, key) = old.issue("server", true, false);
    let b = BinBroker::spawn(&[
        "--listen-tls",
        "127.0.0.1:0",
        "--cert",
        cert.to_str().expect("utf-8"),
        "--key",
        key.to_str().expect("utf-8"),
    ]);
    let line = b.wait_log("ringmq started");
    let addr: SocketAddr = line
        .split("listen_tls=[")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no TLS address in {line:?}"));
    let tls = tls_connect(addr, &old.ca_path(), None).expect("old handshake");
    let (mut kept, _) = Client::connect(tls, V5, "hup-kept").expect("connect");
    let (c2, k2) = new.issue("server", true, false);
    std::fs::copy(&c2, &cert).expect("copy");
    std::fs::copy(&k2, &key).expect("copy");
    b.signal(libc::SIGHUP);
    b.wait_log("TLS certificate read again");
    assert!(tls_connect(addr, &old.ca_path(), None).is_err());
    let tls = tls_connect(addr, &new.ca_path(), None).expect("new handshake");
    assert_eq!(
        Client::connect(tls, V5, "hup-new").expect("connect").1,
        ReasonCode::SUCCESS
    );
    std::fs::write(&cert, "not a certificate").expect("write");
    b.signal(libc::SIGHUP);
    b.wait_log("keeping the old TLS certificate");
    assert!(tls_connect(addr, &new.ca_path(), None).is_ok());
    kept.send(&Packet::PingReq).expect("ping");
    assert_eq!(kept.recv().expect("pong"), Packet::PingResp);
}

// --use-identity-as-username: the client certificate's CN is the user
// name: no password is asked even with anonymous clients refused, and the
// ACL holds the client to that user's rules.
#[test]
fn certificate_identity_as_user_name() {
    let pki = Pki::new("tls-identity");
    let (cert, key) = pki.issue("carol", false, false);
    let mut cfg = tls_config(2, &pki, Some(pki.ca_path()), true);
    if let Some(t) = cfg.tls.as_mut() {
        t.use_identity_as_username = true;
    }
    let acl = pki.dir.0.join("acl");
    std::fs::write(&acl, "user carol\ntopic readwrite carol/#\n").expect("acl");
    let pw = pki.dir.0.join("passwords");
    std::fs::write(&pw, "").expect("passwords");
    cfg.acl_file = Some(acl);
    cfg.password_file = Some(pw);
    cfg.allow_anonymous = Some(false);
    let b = start_with(cfg);
    let addr = tls_addr(&b);
    let tls = tls_connect(addr, &pki.ca_path(), Some((&cert, &key))).expect("handshake");
    let (mut c, reason) = Client::connect(tls, V5, "carol-device").expect("connect");
    assert_eq!(reason, ReasonCode::SUCCESS);
    for (i, (topic, want)) in [
        ("carol/x", ReasonCode::SUCCESS),
        ("dave/x", ReasonCode::NOT_AUTHORIZED),
    ]
    .into_iter()
    .enumerate()
    {
        let mut p = ringmq::protocol::Publish::new(s(topic), bytes::Bytes::from_static(b"m"));
        p.qos = QoS::AtLeastOnce;
        p.packet_id = Some(pid(i as u16 + 1));
        c.send(&Packet::Publish(p)).expect("publish");
        match c.recv().expect("puback") {
            Packet::PubAck(a) => assert_eq!(a.reason, want, "{topic}"),
            other => panic!("{other:?}"),
        }
    }
    // Plain TCP, no user name: anonymous, refused.
    let (_, ack) = Raw::connect(b.addr, V5, "carol-plain", true);
    assert_eq!(ack.reason, ReasonCode::NOT_AUTHORIZED);
}

// mosquitto_pub over TLS sends CONNECT, PUBLISH, DISCONNECT and its
// close_notify at once; the broker read them in one go and, seeing the
// close, dropped the packets before it: every message was lost. Now the
// packets count and the close comes after.
#[test]
fn a_publish_right_before_close_notify_is_delivered() {
    need("mosquitto_pub");
    let dir = TempDir::new("tls-notify");
    let mut cfg = config(2);
    cfg.listen_tls = vec!["127.0.0.1:0".parse().expect("addr")];
    cfg.tls = Some(openssl_tls(&dir.0));
    let b = start_with(cfg);
    let (mut sub, _) = Raw::connect(b.addr, V5, "notify-sub", true);
    sub.subscribe(1, &[("notify/#", QoS::AtLeastOnce)]);
    let port = tls_addr(&b).port().to_string();
    let ca = dir.0.join("ca.pem");
    for (i, (v, q)) in [
        ("mqttv311", "0"),
        ("mqttv311", "1"),
        ("mqttv5", "0"),
        ("mqttv5", "1"),
    ]
    .into_iter()
    .enumerate()
    {
        let st = Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &port, "--cafile"])
            .arg(&ca)
            .args(["-V", v, "-q", q, "-t", &format!("notify/{i}"), "-m", "m"])
            .status()
            .expect("mosquitto_pub runs");
        assert!(st.success());
        let p = sub.recv_publish();
        assert_eq!(p.topic.as_str(), format!("notify/{i}"), "{v} QoS {q}");
        if let Some(id) = p.packet_id {
            sub.send(&Packet::PubAck(ringmq::protocol::Ack::new(id)));
        }
    }
}

// TLS 1.3 session tickets are sealed by one ticketer all shards share: a
// client that reconnects resumes its session whichever shard accepts it
// (SO_REUSEPORT spreads eight reconnects over both shards).
#[test]
fn sessions_resume_on_any_shard() {
    use rustls::pki_types::pem::PemObject;
    let pki = Pki::new("tls-resume");
    let b = start_with(tls_config(2, &pki, None, false));
    let addr = tls_addr(&b);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.ca_path()).expect("ca") {
        roots.add(c.expect("pem")).expect("root");
    }
    let cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut kinds = Vec::new();
    for i in 0..9 {
        let tls = connect_with(addr, cfg.clone()).expect("handshake");
        kinds.push(tls.conn.handshake_kind());
        // CONNACK comes after the tickets: reading it stores them.
        let (mut c, reason) = Client::connect(tls, V5, &format!("resume-{i}")).expect("connect");
        assert_eq!(reason, ReasonCode::SUCCESS);
        c.send(&Packet::PingReq).expect("ping");
        assert_eq!(c.recv().expect("pong"), Packet::PingResp);
    }
    assert_eq!(kinds[0], Some(rustls::HandshakeKind::Full));
    assert!(
        kinds[1..]
            .iter()
            .all(|k| *k == Some(rustls::HandshakeKind::Resumed)),
        "{kinds:?}"
    );
}

// A TLS connection parks like any other when quiet, its rustls state kept
// with its socket: after parking, the subscriber gets a delivery and a
// PINGRESP and the publisher its PUBACK, over the same TLS sessions, twice.
#[test]
fn parked_tls_connections_keep_their_sessions() {
    let pki = Pki::new("tls-park");
    let cfg = tls_config(2, &pki, None, false);
    let (b, m) = start_with_metrics(cfg);
    let addr = tls_addr(&b);
    let tls = tls_connect(addr, &pki.ca_path(), None).expect("handshake");
    let (mut sub, _) = Client::connect(tls, V5, &id_on_shard("tp-sub", 0, 2)).expect("connect");
    sub.send(&subscribe_packet(1, &[("tp/#", QoS::AtLeastOnce)]))
        .expect("send");
    assert!(matches!(sub.recv().expect("suback"), Packet::SubAck(_)));
    let tls = tls_connect(addr, &pki.ca_path(), None).expect("handshake");
    let (mut publ, _) = Client::connect(tls, V311, &id_on_shard("tp-pub", 1, 2)).expect("connect");
    let mut parks = 0.0;
    for round in 1..=2u16 {
        parks = wait_metric(m, "ringmq_readers_parked_total", parks + 2.0);
        wait_metric(m, "ringmq_parked_connections", 2.0);
        let mut p =
            ringmq::protocol::Publish::new(s("tp/x"), bytes::Bytes::from(vec![round as u8; 100]));
        p.qos = QoS::AtLeastOnce;
        p.packet_id = Some(pid(round));
        publ.send(&Packet::Publish(p)).expect("publish");
        assert!(matches!(publ.recv().expect("puback"), Packet::PubAck(_)));
        match sub.recv().expect("publish") {
            Packet::Publish(p) => {
                assert_eq!(&p.payload[..], &[round as u8; 100][..]);
                sub.send(&Packet::PubAck(ringmq::protocol::Ack::new(
                    p.packet_id.expect("id"),
                )))
                .expect("ack");
            }
            other => panic!("{other:?}"),
        }
        sub.send(&Packet::PingReq).expect("ping");
        assert_eq!(sub.recv().expect("pingresp"), Packet::PingResp);
    }
}
