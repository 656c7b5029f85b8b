//! A session's life: connect, takeover, DISCONNECT, the connection's end,
//! the will delay, expiry and recovery after a restart.
//!
//! Sans-IO like the rest of `session/`: each event takes `now` and pushes
//! [`Effect`]s that the shard carries out (publish a will, arm a timer, log
//! the session record, end the session). Nothing here knows sockets, the
//! trie or the log, so every rule below is a unit test with an explicit
//! clock (see `life/tests.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::{Connect, LastWill, ProtocolVersion, QoS, ReasonCode};
use crate::topic::TopicFilter;

/// Options of one subscription, as the router needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubOpts {
    /// Granted QoS.
    pub qos: QoS,
    /// MQTT 5 No Local.
    pub no_local: bool,
    /// MQTT 5 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5 Subscription Identifier.
    pub id: Option<u32>,
}

/// Which of a session's two timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// The will delay ran out.
    Will,
    /// The session expiry ran out.
    Expire,
}

/// A timer armed by a [`Life`]. `generation` names the connection it was
/// armed for: a timer of an earlier connection (or of an earlier session in
/// a reused slot) never acts on a later one, because generations are handed
/// out by a counter that only grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// What runs out.
    pub kind: TimerKind,
    /// The connection it was armed for.
    pub generation: u64,
}

/// What the shard must do after an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish this will now, as if its client had published it.
    PublishWill(Box<LastWill>),
    /// Call [`Life::fire`] with `timer` at `at`.
    Arm {
        /// When.
        at: Instant,
        /// What.
        timer: Timer,
    },
    /// The session record changed (online, offline, will, expiry): log it.
    Persist,
    /// The session is over: its subscriptions and queue go.
    End,
}

/// What a CONNECT does to the session already held for its client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// The session continues on the new connection (Session Present 1).
    Resume,
    /// The session ended (its effects say so); a fresh one starts.
    Replace,
}

/// The life of one session. The queue and the inflight window live beside
/// it in [`super::Session`].
#[derive(Debug)]
pub struct Life {
    /// Its client id.
    pub client_id: Arc<str>,
    /// The user name of its latest connection (what the ACL grants by).
    pub username: Option<Arc<str>>,
    /// Protocol of its latest connection.
    pub version: ProtocolVersion,
    /// How long the session outlives its connection (`None`: forever).
    pub expiry: Option<Duration>,
    /// The latest connection's will, until it is published or discarded.
    pub will: Option<Box<LastWill>>,
    /// Its subscriptions (the shard's trie holds the same, for routing).
    pub subscriptions: HashMap<TopicFilter, SubOpts>,
    /// The latest connection's generation.
    generation: u64,
    online: bool,
}

/// How long a session outlives its connection, from its CONNECT: the v5
/// Session Expiry Interval (`u32::MAX`: never), else 0 for a clean session
/// and `v3_expiry` (`--v3-session-expiry`) for a persistent one.
pub fn connect_expiry(c: &Connect, v3_expiry: Option<Duration>) -> Option<Duration> {
    if c.protocol.is_v5() {
        secs(c.properties.session_expiry_interval.unwrap_or(0))
    } else if c.clean_start {
        Some(Duration::ZERO)
    } else {
        v3_expiry
    }
}

/// An MQTT 5 expiry interval: `u32::MAX` means never.
fn secs(s: u32) -> Option<Duration> {
    (s != u32::MAX).then(|| Duration::from_secs(u64::from(s)))
}

/// The will's delay, capped by the session's expiry: the will goes when the
/// session ends if that is sooner ([MQTT-3.1.3-9] and 3.1.2.5).
fn will_delay(will: &LastWill, expiry: Option<Duration>) -> Duration {
    let delay = Duration::from_secs(u64::from(will.properties.will_delay_interval.unwrap_or(0)));
    delay.min(expiry.unwrap_or(Duration::MAX))
}

impl Life {
    /// A session that has not had a connection yet (it is attached next) or
    /// was read back from the log (offline).
    pub fn new(client_id: Arc<str>, version: ProtocolVersion, expiry: Option<Duration>) -> Life {
        Life {
            client_id,
            username: None,
            version,
            expiry,
            will: None,
            subscriptions: HashMap::new(),
            generation: 0,
            online: false,
        }
    }

    /// True while a connection holds the session.
    pub fn is_online(&self) -> bool {
        self.online
    }

    /// The generation of the latest connection.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// True when the session ends with its connection (expiry 0).
    pub fn ends_with_connection(&self) -> bool {
        self.expiry == Some(Duration::ZERO)
    }

    /// A CONNECT arrived for this session's client id (`clean_start` is
    /// Clean Session in 3.1.1). A live connection is taken over and closed
    /// first, so a session with expiry 0 ends there, before the new Clean
    /// Start is processed (3.1.4's order; Mosquitto does the same). The old
    /// will goes only if the session ends here and the will had no delay:
    /// the new connection comes before any delay runs out ([MQTT-3.1.3-9]).
    /// A will waiting for its delay while the session was offline is
    /// discarded by any new connection ([MQTT-3.1.3-9]).
    pub fn takeover(&mut self, clean_start: bool, out: &mut Vec<Effect>) -> Takeover {
        let ends = clean_start || (self.online && self.ends_with_connection());
        let will = self.will.take();
        if self.online && ends {
            if let Some(w) = will.filter(|w| will_delay(w, self.expiry).is_zero()) {
                out.push(Effect::PublishWill(w));
            }
        }
        self.online = false;
        if ends {
            out.push(Effect::End);
            Takeover::Replace
        } else {
            Takeover::Resume
        }
    }

    /// A connection now holds the session, under `generation` (fresh from
    /// the shard's counter), with its CONNECT's version, expiry and will.
    pub fn attach(
        &mut self,
        generation: u64,
        version: ProtocolVersion,
        expiry: Option<Duration>,
        will: Option<LastWill>,
        out: &mut Vec<Effect>,
    ) {
        self.generation = generation;
        self.version = version;
        self.expiry = expiry;
        self.will = will.map(Box::new);
        self.online = true;
        out.push(Effect::Persist);
    }

    /// The client sent DISCONNECT with `reason` and maybe a new Session
    /// Expiry Interval. A normal DISCONNECT discards the will, 0x04 keeps it
    /// ([MQTT-3.14.4-3]). An expiry may not go from 0 to non-zero (3.14.2.2.2):
    /// that is a Protocol Error, and nothing changes.
    pub fn on_disconnect(
        &mut self,
        reason: ReasonCode,
        session_expiry: Option<u32>,
    ) -> Result<(), ReasonCode> {
        if let Some(s) = session_expiry {
            if self.ends_with_connection() && s != 0 {
                return Err(ReasonCode::PROTOCOL_ERROR);
            }
            self.expiry = secs(s);
        }
        if reason != ReasonCode::DISCONNECT_WITH_WILL_MESSAGE {
            self.will = None;
        }
        Ok(())
    }

    /// The connection ended at `now` (closed by either side, or lost). The
    /// will goes now, or is armed for its delay; the session ends now, or is
    /// armed for its expiry, or stays forever.
    pub fn detach(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if !self.online {
            return;
        }
        self.online = false;
        if !self.offline_for(Duration::ZERO, now, out) {
            out.push(Effect::Persist);
        }
    }

    /// The broker restarted at `now` and read this session back under
    /// `generation`. `offline` is how long it had been offline already
    /// (`None`: its connection was live when the broker stopped, so it went
    /// offline now). Its will and expiry count that time; a session whose
    /// expiry ran out while the broker was down ends with its will.
    pub fn recover(
        &mut self,
        generation: u64,
        offline: Option<Duration>,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        self.generation = generation;
        self.online = false;
        let down = offline.unwrap_or(Duration::ZERO);
        if self.expiry.is_some_and(|e| down >= e) {
            if let Some(w) = self.will.take() {
                out.push(Effect::PublishWill(w));
            }
            out.push(Effect::End);
            return;
        }
        // The log says "online" for a session that was: say offline now.
        if !self.offline_for(down, now, out) && offline.is_none() {
            out.push(Effect::Persist);
        }
    }

    /// Publishes or arms the will and ends or arms the expiry of a session
    /// offline for `down` at `now`; true when the session ended.
    fn offline_for(&mut self, down: Duration, now: Instant, out: &mut Vec<Effect>) -> bool {
        let generation = self.generation;
        if let Some(w) = self.will.take() {
            let delay = will_delay(&w, self.expiry).saturating_sub(down);
            if delay.is_zero() {
                out.push(Effect::PublishWill(w));
            } else {
                self.will = Some(w);
                out.push(Effect::Arm {
                    at: now + delay,
                    timer: Timer {
                        kind: TimerKind::Will,
                        generation,
                    },
                });
            }
        }
        match self.expiry {
            Some(d) if d <= down => {
                out.push(Effect::End);
                true
            }
            Some(d) => {
                out.push(Effect::Arm {
                    at: now + (d - down),
                    timer: Timer {
                        kind: TimerKind::Expire,
                        generation,
                    },
                });
                false
            }
            None => false,
        }
    }

    /// `timer` ran out at `now`. A timer armed for another connection than
    /// the latest, or while a connection holds the session again, does
    /// nothing ([MQTT-3.1.3-9]: the client came back in time).
    pub fn fire(&mut self, timer: Timer, out: &mut Vec<Effect>) {
        if timer.generation != self.generation || self.online {
            return;
        }
        match timer.kind {
            TimerKind::Will => {
                if let Some(w) = self.will.take() {
                    out.push(Effect::PublishWill(w));
                    out.push(Effect::Persist);
                }
            }
            TimerKind::Expire => {
                if let Some(w) = self.will.take() {
                    out.push(Effect::PublishWill(w));
                }
                out.push(Effect::End);
            }
        }
    }
}

#[cfg(test)]
#[path = "life/tests.rs"]
mod tests;
