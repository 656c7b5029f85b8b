//! The session lifecycle with an explicit clock: every rule of wills,
//! expiry, takeover and recovery, without a socket or a sleep.

use super::*;
use crate::protocol::{MqttStr, QoS, WillProperties};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn will(delay: Option<u32>) -> LastWill {
    LastWill {
        topic: MqttStr::try_from("will/t").expect("topic"),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: delay,
            ..Default::default()
        },
    }
}

/// A session attached under generation 1 with `expiry` and `will`.
fn online(expiry: Option<Duration>, will: Option<LastWill>) -> Life {
    let mut l = Life::new("c".into(), V5, expiry);
    let mut fx = Vec::new();
    l.attach(1, V5, expiry, will, &mut fx);
    assert_eq!(fx, vec![Effect::Persist]);
    assert!(l.is_online());
    l
}

fn detach(l: &mut Life, now: Instant) -> Vec<Effect> {
    let mut fx = Vec::new();
    l.detach(now, &mut fx);
    fx
}

fn fire(l: &mut Life, kind: TimerKind, generation: u64) -> Vec<Effect> {
    let mut fx = Vec::new();
    l.fire(Timer { kind, generation }, &mut fx);
    fx
}

fn arm(at: Instant, kind: TimerKind, generation: u64) -> Effect {
    Effect::Arm {
        at,
        timer: Timer { kind, generation },
    }
}

// [v3:MQTT-3.1.2-6] [v5:MQTT-3.1.2-4] a clean session lasts as long as its
// connection; [v3:MQTT-3.1.2-8] [v5:MQTT-3.1.2-8] its will goes when the
// connection closes without DISCONNECT.
#[test]
fn a_clean_session_ends_with_its_connection_and_its_will_goes() {
    let t0 = Instant::now();
    let mut l = online(Some(Duration::ZERO), Some(will(None)));
    assert_eq!(
        detach(&mut l, t0),
        vec![Effect::PublishWill(Box::new(will(None))), Effect::End]
    );
    assert!(!l.is_online());
    let mut l = online(Some(Duration::ZERO), None);
    assert_eq!(detach(&mut l, t0), vec![Effect::End]);
}

// [v5:MQTT-3.1.2-23] a session with an expiry is kept after the connection
// closes; [v5:MQTT-4.1.0-2] it is discarded once the interval has passed.
#[test]
fn a_session_with_an_expiry_is_kept_until_it_runs_out() {
    let t0 = Instant::now();
    let mut l = online(Some(s(60)), None);
    assert_eq!(
        detach(&mut l, t0),
        vec![arm(t0 + s(60), TimerKind::Expire, 1), Effect::Persist]
    );
    assert_eq!(fire(&mut l, TimerKind::Expire, 1), vec![Effect::End]);
}

#[test]
fn a_session_without_expiry_stays_forever() {
    let mut l = online(None, Some(will(Some(5))));
    let t0 = Instant::now();
    assert_eq!(
        detach(&mut l, t0),
        vec![arm(t0 + s(5), TimerKind::Will, 1), Effect::Persist]
    );
    assert_eq!(
        fire(&mut l, TimerKind::Will, 1),
        vec![
            Effect::PublishWill(Box::new(will(Some(5)))),
            Effect::Persist
        ]
    );
    // Published once: a second firing has nothing left to send.
    assert!(fire(&mut l, TimerKind::Will, 1).is_empty());
}

// [v5:MQTT-3.1.2-8] the will waits for its delay, or for the end of the
// session if that comes first.
#[test]
fn the_will_delay_is_capped_by_the_session_expiry() {
    let t0 = Instant::now();
    let mut l = online(Some(s(5)), Some(will(Some(100))));
    assert_eq!(
        detach(&mut l, t0),
        vec![
            arm(t0 + s(5), TimerKind::Will, 1),
            arm(t0 + s(5), TimerKind::Expire, 1),
            Effect::Persist
        ]
    );
    // Both due at once: the deadline queue pops the will first.
    assert_eq!(
        fire(&mut l, TimerKind::Will, 1),
        vec![
            Effect::PublishWill(Box::new(will(Some(100)))),
            Effect::Persist
        ]
    );
    assert_eq!(fire(&mut l, TimerKind::Expire, 1), vec![Effect::End]);
}

#[test]
fn a_will_still_waiting_goes_when_the_session_expires() {
    let mut l = online(Some(s(5)), Some(will(Some(100))));
    detach(&mut l, Instant::now());
    assert_eq!(
        fire(&mut l, TimerKind::Expire, 1),
        vec![Effect::PublishWill(Box::new(will(Some(100)))), Effect::End]
    );
}

// [v5:MQTT-3.1.3-9] a new connection before the will delay has passed: the
// will is never sent, and the old timers do nothing.
#[test]
fn a_reconnect_within_the_will_delay_cancels_the_will_and_the_expiry() {
    let t0 = Instant::now();
    let mut l = online(Some(s(60)), Some(will(Some(10))));
    detach(&mut l, t0);
    let mut fx = Vec::new();
    assert_eq!(l.takeover(false, &mut fx), Takeover::Resume);
    assert!(fx.is_empty(), "{fx:?}");
    l.attach(2, V5, Some(s(60)), None, &mut fx);
    assert!(fire(&mut l, TimerKind::Will, 1).is_empty());
    assert!(fire(&mut l, TimerKind::Expire, 1).is_empty());
    // Offline again: only the new generation's timers count.
    let t1 = t0 + s(3);
    assert_eq!(
        detach(&mut l, t1),
        vec![arm(t1 + s(60), TimerKind::Expire, 2), Effect::Persist]
    );
    assert!(fire(&mut l, TimerKind::Expire, 1).is_empty());
    assert_eq!(fire(&mut l, TimerKind::Expire, 2), vec![Effect::End]);
}

// Issue 9 finding 0: a timer armed for an earlier session in a reused slot
// must not end the session now in that slot.
#[test]
fn a_timer_of_an_earlier_session_never_acts_on_a_later_one() {
    let mut first = online(Some(s(1)), None);
    detach(&mut first, Instant::now());
    // The slot is reused by another client, attached under a fresh generation.
    let mut later = Life::new("other".into(), V5, Some(s(60)));
    let mut fx = Vec::new();
    later.attach(7, V5, Some(s(60)), None, &mut fx);
    detach(&mut later, Instant::now());
    assert!(fire(&mut later, TimerKind::Expire, 1).is_empty());
    assert!(fire(&mut later, TimerKind::Will, 1).is_empty());
    // While online, even its own timers do nothing.
    later.attach(8, V5, Some(s(60)), None, &mut fx);
    assert!(fire(&mut later, TimerKind::Expire, 8).is_empty());
}

// [v5:MQTT-3.14.4-3] [v5:MQTT-3.1.2-10] a normal DISCONNECT discards the will;
// 0x04 keeps it for the close that follows.
#[test]
fn disconnect_discards_the_will_unless_asked_to_keep_it() {
    let t0 = Instant::now();
    let mut l = online(Some(Duration::ZERO), Some(will(None)));
    l.on_disconnect(ReasonCode::NORMAL_DISCONNECTION, None)
        .expect("valid");
    assert_eq!(detach(&mut l, t0), vec![Effect::End]);
    let mut l = online(Some(Duration::ZERO), Some(will(None)));
    l.on_disconnect(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE, None)
        .expect("valid");
    assert_eq!(
        detach(&mut l, t0),
        vec![Effect::PublishWill(Box::new(will(None))), Effect::End]
    );
}

// [v3:MQTT-3.14.4-3] [v3:MQTT-3.1.2-10] any 3.1.1 DISCONNECT discards the will.
#[test]
fn a_v3_disconnect_discards_the_will() {
    let mut l = Life::new("c".into(), V3, Some(Duration::ZERO));
    let mut fx = Vec::new();
    l.attach(1, V3, Some(Duration::ZERO), Some(will(None)), &mut fx);
    l.on_disconnect(ReasonCode::NORMAL_DISCONNECTION, None)
        .expect("valid");
    assert_eq!(detach(&mut l, Instant::now()), vec![Effect::End]);
}

#[test]
fn disconnect_may_change_the_expiry_but_not_from_zero() {
    let t0 = Instant::now();
    let mut l = online(Some(s(60)), None);
    l.on_disconnect(ReasonCode::NORMAL_DISCONNECTION, Some(0))
        .expect("valid");
    assert_eq!(detach(&mut l, t0), vec![Effect::End]);
    let mut l = online(Some(s(60)), None);
    l.on_disconnect(ReasonCode::NORMAL_DISCONNECTION, Some(u32::MAX))
        .expect("valid");
    assert_eq!(l.expiry, None);
    // 3.14.2.2.2: from 0 to non-zero is a Protocol Error, and changes nothing.
    let mut l = online(Some(Duration::ZERO), Some(will(None)));
    assert_eq!(
        l.on_disconnect(ReasonCode::NORMAL_DISCONNECTION, Some(30)),
        Err(ReasonCode::PROTOCOL_ERROR)
    );
    assert_eq!(l.expiry, Some(Duration::ZERO));
    assert_eq!(
        detach(&mut l, t0),
        vec![Effect::PublishWill(Box::new(will(None))), Effect::End]
    );
}

// [v3:MQTT-3.1.2-4] [v5:MQTT-3.1.2-5] a persistent session taken over by a
// persistent connection continues, and the old connection's will is
// dropped: a new connection came before any delay ran out ([v5:MQTT-3.1.3-9]).
#[test]
fn a_takeover_of_a_persistent_session_resumes_it_without_the_will() {
    let mut l = online(Some(s(60)), Some(will(None)));
    let mut fx = Vec::new();
    assert_eq!(l.takeover(false, &mut fx), Takeover::Resume);
    assert!(fx.is_empty(), "{fx:?}");
    assert!(l.will.is_none());
}

// [v3:MQTT-3.1.2-6] [v5:MQTT-3.1.2-4] [v5:MQTT-3.1.4-4] a takeover with a
// clean start ends the old session; its live connection's will goes then, as in Mosquitto
// (07-will-takeover), unless the will was to wait for a delay.
#[test]
fn a_takeover_that_ends_the_session_publishes_the_old_will() {
    for (old_expiry, clean_start) in [
        (Some(s(60)), true),
        (Some(Duration::ZERO), false),
        (Some(Duration::ZERO), true),
    ] {
        let mut l = online(old_expiry, Some(will(None)));
        let mut fx = Vec::new();
        assert_eq!(l.takeover(clean_start, &mut fx), Takeover::Replace);
        assert_eq!(
            fx,
            vec![Effect::PublishWill(Box::new(will(None))), Effect::End]
        );
    }
    let mut l = online(Some(s(60)), Some(will(Some(10))));
    let mut fx = Vec::new();
    assert_eq!(l.takeover(true, &mut fx), Takeover::Replace);
    assert_eq!(fx, vec![Effect::End]);
}

// [v5:MQTT-3.1.3-9] an offline session's waiting will is discarded by any
// new connection, clean or not.
#[test]
fn a_clean_start_on_an_offline_session_ends_it_without_its_waiting_will() {
    let mut l = online(Some(s(60)), Some(will(Some(10))));
    detach(&mut l, Instant::now());
    let mut fx = Vec::new();
    assert_eq!(l.takeover(true, &mut fx), Takeover::Replace);
    assert_eq!(fx, vec![Effect::End]);
}

#[test]
fn a_session_read_back_counts_the_time_it_was_offline() {
    let t0 = Instant::now();
    let mut l = Life::new("c".into(), V5, Some(s(60)));
    l.will = Some(Box::new(will(Some(10))));
    let mut fx = Vec::new();
    l.recover(5, Some(s(4)), t0, &mut fx);
    assert_eq!(
        fx,
        vec![
            arm(t0 + s(6), TimerKind::Will, 5),
            arm(t0 + s(56), TimerKind::Expire, 5)
        ]
    );
    // Its will delay ran out while the broker was down: it goes at once.
    let mut l = Life::new("c".into(), V5, Some(s(60)));
    l.will = Some(Box::new(will(Some(10))));
    let mut fx = Vec::new();
    l.recover(6, Some(s(20)), t0, &mut fx);
    assert_eq!(
        fx,
        vec![
            Effect::PublishWill(Box::new(will(Some(10)))),
            arm(t0 + s(40), TimerKind::Expire, 6)
        ]
    );
}

#[test]
fn a_session_that_expired_while_the_broker_was_down_ends_with_its_will() {
    let mut l = Life::new("c".into(), V5, Some(s(60)));
    l.will = Some(Box::new(will(Some(10))));
    let mut fx = Vec::new();
    l.recover(1, Some(s(61)), Instant::now(), &mut fx);
    assert_eq!(
        fx,
        vec![Effect::PublishWill(Box::new(will(Some(10)))), Effect::End]
    );
}

#[test]
fn a_session_online_when_the_broker_stopped_goes_offline_at_restart() {
    let t0 = Instant::now();
    let mut l = Life::new("c".into(), V3, None);
    let mut fx = Vec::new();
    l.recover(3, None, t0, &mut fx);
    assert_eq!(fx, vec![Effect::Persist]);
    let mut l = Life::new("c".into(), V5, Some(s(60)));
    let mut fx = Vec::new();
    l.recover(3, None, t0, &mut fx);
    assert_eq!(
        fx,
        vec![arm(t0 + s(60), TimerKind::Expire, 3), Effect::Persist]
    );
    assert!(!l.is_online());
}

#[test]
fn the_connect_packet_decides_the_expiry() {
    let mut c = Connect {
        protocol: V5,
        clean_start: false,
        keep_alive: 0,
        client_id: MqttStr::try_from("c").expect("id"),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    };
    let v3_default = Some(s(3600));
    assert_eq!(connect_expiry(&c, v3_default), Some(Duration::ZERO));
    c.properties.session_expiry_interval = Some(90);
    assert_eq!(connect_expiry(&c, v3_default), Some(s(90)));
    c.properties.session_expiry_interval = Some(u32::MAX);
    assert_eq!(connect_expiry(&c, v3_default), None);
    c.protocol = V3;
    assert_eq!(connect_expiry(&c, v3_default), Some(s(3600)));
    assert_eq!(connect_expiry(&c, None), None);
    c.clean_start = true;
    assert_eq!(connect_expiry(&c, v3_default), Some(Duration::ZERO));
}
