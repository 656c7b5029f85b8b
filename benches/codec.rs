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

fn ours_publish(size: usize) -> Packet {
    let mut p = Publish::new(
        MqttStr::from_static("site/42/device/4242/temperature"),
        Bytes::from(vec![7u8; size]),
    );
    p.qos = QoS::AtLeastOnce;
    p.packet_id = ringmq::protocol::PacketId::new(42);
    Packet::Publish(p)
}

fn peer_publish(size: usize) -> mqttbytes::v4::Publish {
    let mut p = mqttbytes::v4::Publish::from_bytes(
        "site/42/device/4242/temperature",
        mqttbytes::QoS::AtLeastOnce,
        Bytes::from(vec![7u8; size]),
    );
    p.pkid = 42;
    p
}

fn publish(c: &mut Criterion) {
    for (size, label) in SIZES {
        let ours = ours_publish(size);
        let mut wire = BytesMut::new();
        ours.encode(ProtocolVersion::V311, &mut wire)
            .expect("encodes");
        let wire = wire.freeze();

        let mut g = c.benchmark_group(format!("publish_decode_{label}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("ringmq", |b| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut buf| {
                    black_box(decode_packet(
                        black_box(&mut buf),
                        Some(ProtocolVersion::V311),
                        MAX,
                    ))
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_function("mqttbytes", |b| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut buf| black_box(mqttbytes::v4::read(black_box(&mut buf), MAX)),
                BatchSize::SmallInput,
            )
        });
        g.finish();

        let peer = peer_publish(size);
        let mut g = c.benchmark_group(format!("publish_encode_{label}"));
        g.throughput(Throughput::Elements(1));
        let mut buf = BytesMut::with_capacity(size + 64);
        g.bench_function("ringmq", |b| {
            b.iter(|| {
                buf.clear();
                ours.encode(ProtocolVersion::V311, &mut buf)
                    .expect("encodes");
                black_box(buf.len())
            })
        });
        g.bench_function("mqttbytes", |b| {
            b.iter(|| {
                buf.clear();
                black_box(black_box(&peer).write(&mut buf).expect("encodes"))
            })
        });
        g.finish();
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

    let mut g = c.benchmark_group("connect_v5_decode");
    g.bench_function("ringmq", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| black_box(decode_packet(black_box(&mut buf), None, MAX)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("mqttbytes", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| black_box(mqttbytes::v5::read(black_box(&mut buf), MAX)),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("connect_v5_encode");
    let mut buf = BytesMut::with_capacity(256);
    g.bench_function("ringmq", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&ours)
                .encode(ProtocolVersion::V5, &mut buf)
                .expect("encodes");
            black_box(buf.len())
        })
    });
    g.bench_function("mqttbytes", |b| {
        b.iter(|| {
            buf.clear();
            black_box(black_box(&peer).write(&mut buf).expect("encodes"))
        })
    });
    g.finish();
}

criterion_group!(benches, publish, connect_v5);
criterion_main!(benches);
