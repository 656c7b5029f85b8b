fn main() {
    use ringmq::protocol::*;
    println!(
        "Packet {} Publish {} PublishProperties {} MqttStr {} Connect {} Ack {} Result {}",
        std::mem::size_of::<Packet>(),
        std::mem::size_of::<Publish>(),
        std::mem::size_of::<PublishProperties>(),
        std::mem::size_of::<MqttStr>(),
        std::mem::size_of::<Connect>(),
        std::mem::size_of::<Ack>(),
        std::mem::size_of::<Result<Option<Packet>, DecodeError>>()
    );
}
