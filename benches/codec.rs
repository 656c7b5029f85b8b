//! Codec throughput beside a peer codec (mqttbytes 0.6, the one rumqtt
//! shipped) on the same inputs in the same run. Inputs go through
//! `black_box` on both sides: a packet the compiler can see is constant
//! gets its encoding folded, which measures the optimiser, not the codec.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringmq::protocol::{
    decode_packet, ConnectProperties, MqttStr, Packet, ProtocolVersion, Publish, QoS,
};
use std::hint::black_box;

const MAX: usize = 1 << 20;
const SIZES: [(usize, &str); 3] = [(16, "16B"), (1024, "1KiB"), (64 * 1024, "64KiB")];

fn ours_publish(payload: &Bytes) -> Packet {
    let mut p = Publish::new(
        MqttStr::from_static("site/42/device/4242/temperature"),
        payload.clone(),
    );
    p.qos = QoS::AtLeastOnce;
    p.packet_id = ringmq::protocol::PacketId::new(42);
    Packet::Publish(p)
}

fn peer_publish(payload: &Bytes) -> mqttbytes::v4::Publish {
    let mut p = mqttbytes::v4::Publish::from_bytes(
        "site/42/device/4242/temperature",
        mqttbytes::QoS::AtLeastOnce,
        payload.clone(),
    );
    p.pkid = 42;
    p
}

/// Decodes `wire` with both codecs, each from a fresh buffer per iteration.
fn compare_decode<O, P>(
    c: &mut Criterion,
    group: &str,
    wire: &Bytes,
    ours: impl Fn(&mut BytesMut) -> O,
    peer: impl Fn(&mut BytesMut) -> P,
) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.bench_function("ringmq", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| black_box(ours(black_box(&mut buf))),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("mqttbytes", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| black_box(peer(black_box(&mut buf))),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Encodes into one reused buffer with both codecs; `ours_enum`, if given,
/// is the same packet encoded through the version-neutral `Packet` enum.
fn compare_encode(
    c: &mut Criterion,
    group: &str,
    capacity: usize,
    ours: impl Fn(&mut BytesMut),
    ours_enum: Option<&dyn Fn(&mut BytesMut)>,
    peer: impl Fn(&mut BytesMut),
) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    let mut buf = BytesMut::with_capacity(capacity);
    g.bench_function("ringmq", |b| {
        b.iter(|| {
            buf.clear();
            ours(&mut buf);
            black_box(buf.len())
        })
    });
    if let Some(ours_enum) = ours_enum {
        g.bench_function("ringmq_packet", |b| {
            b.iter(|| {
                buf.clear();
                ours_enum(&mut buf);
                black_box(buf.len())
            })
        });
    }
    g.bench_function("mqttbytes", |b| {
        b.iter(|| {
            buf.clear();
            peer(&mut buf);
            black_box(buf.len())
        })
    });
    g.finish();
}

fn publish(c: &mut Criterion) {
    for (size, label) in SIZES {
        // One payload buffer for both codecs: copies of 1 KiB and more run
        // at a speed that depends on the source's alignment, which would
        // otherwise differ between two separate allocations.
        let payload = Bytes::from(vec![7u8; size]);
        let ours = ours_publish(&payload);
        let mut wire = BytesMut::new();
        ours.encode(ProtocolVersion::V311, &mut wire)
            .expect("encodes");
        let wire = wire.freeze();
        compare_decode(
            c,
            &format!("publish_decode_{label}"),
            &wire,
            |buf| decode_packet(buf, Some(ProtocolVersion::V311), MAX),
            |buf| mqttbytes::v4::read(buf, MAX),
        );
        let peer = peer_publish(&payload);
        let Packet::Publish(ours_publish) = &ours else {
            unreachable!("built as a PUBLISH")
        };
        // Like for like: the peer's `Publish::write` against ours; then the
        // same through `Packet`, which is what the broker calls.
        compare_encode(
            c,
            &format!("publish_encode_{label}"),
            size + 64,
            |buf| {
                black_box(ours_publish)
                    .encode_into(ProtocolVersion::V311, usize::MAX, buf)
                    .expect("encodes")
            },
            Some(&|buf: &mut BytesMut| {
                black_box(&ours)
                    .encode(ProtocolVersion::V311, buf)
                    .expect("encodes")
            }),
            |buf| {
                black_box(&peer).write(buf).expect("encodes");
            },
        );
    }
}

fn connect_v5(c: &mut Criterion) {
    let ours = Packet::Connect(Box::new(ringmq::protocol::Connect {
        protocol: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 30,
        client_id: MqttStr::from_static("sensor-000042"),
        will: None,
        username: Some(MqttStr::from_static("user")),
        password: Some(Bytes::from_static(b"secret")),
        properties: ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(100),
            maximum_packet_size: Some(1 << 20),
            topic_alias_maximum: Some(10),
            user_properties: vec![ringmq::protocol::UserProperty {
                name: MqttStr::from_static("region"),
                value: MqttStr::from_static("eu-west"),
            }],
            ..Default::default()
        },
    }));
    let mut wire = BytesMut::new();
    ours.encode(ProtocolVersion::V5, &mut wire)
        .expect("encodes");
    let wire = wire.freeze();
    let Ok(mqttbytes::v5::Packet::Connect(peer)) =
        mqttbytes::v5::read(&mut BytesMut::from(&wire[..]), MAX)
    else {
        panic!("mqttbytes reads our CONNECT")
    };
    compare_decode(
        c,
        "connect_v5_decode",
        &wire,
        |buf| decode_packet(buf, None, MAX),
        |buf| mqttbytes::v5::read(buf, MAX),
    );
    compare_encode(
        c,
        "connect_v5_encode",
        256,
        |buf| {
            black_box(&ours)
                .encode(ProtocolVersion::V5, buf)
                .expect("encodes")
        },
        None,
        |buf| {
            black_box(&peer).write(buf).expect("encodes");
        },
    );
}

criterion_group!(benches, publish, connect_v5);
criterion_main!(benches);
