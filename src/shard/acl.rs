//! The ACL where the shard meets it: each session's grants, worked out
//! when it is created, when its client connects and when SIGHUP brings a
//! new file; the checks at PUBLISH, SUBSCRIBE, CONNECT (the will) and
//! delivery read them. Without `--acl-file` every check passes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::acl::{Grants, Want};
use crate::session::Life;

use super::Shard;

impl Shard {
    /// Takes the ACL file `Shared::acl` holds if it changed since this
    /// shard last looked, and works out every session's grants again: a
    /// reload applies to the clients already connected.
    pub(crate) fn refresh_acl(&mut self) {
        let generation = self.shared.acl_gen.load(Ordering::Acquire);
        if generation == self.acl_gen {
            return;
        }
        self.acl_gen = generation;
        self.acl = self.shared.acl.load_full();
        for key in 0..self.sessions.len() as u32 {
            let g = self.sessions[key as usize]
                .as_ref()
                .and_then(|e| self.grants_for(&e.life));
            self.set_grants(key, g);
        }
    }

    /// Gives session `key` new grants, under a new epoch (which lapses the
    /// marks its subscriptions had under the old ones).
    pub(crate) fn set_grants(&mut self, key: u32, g: Option<Arc<Grants>>) {
        self.grants_epoch += 1;
        let epoch = self.grants_epoch;
        if let Some(e) = self
            .sessions
            .get_mut(key as usize)
            .and_then(Option::as_deref_mut)
        {
            e.grants = g;
            e.grants_epoch = epoch;
        }
    }

    /// The grants of a session's client; `None` without an ACL.
    pub(crate) fn grants_for(&self, life: &Life) -> Option<Arc<Grants>> {
        self.acl
            .as_ref()
            .map(|a| a.grants(life.username.as_deref(), &life.client_id))
    }

    /// Session `key`'s grants, if there is an ACL (`Some(None)`: an ACL
    /// and no grants, which allows nothing).
    fn grants_of(&self, key: u32) -> Option<Option<&Grants>> {
        self.acl.as_ref()?;
        Some(
            self.sessions
                .get(key as usize)
                .and_then(Option::as_deref)
                .and_then(|e| e.grants.as_deref()),
        )
    }

    /// May session `key`'s client do `want` on `topic`?
    pub(crate) fn acl_allows(&self, key: u32, want: Want, topic: &str) -> bool {
        self.grants_of(key)
            .is_none_or(|g| g.is_some_and(|g| g.allows(want, topic)))
    }

    /// May session `key`'s client subscribe to `filter`?
    pub(crate) fn acl_allows_subscribe(&self, key: u32, filter: &str) -> bool {
        self.grants_of(key)
            .is_none_or(|g| g.is_some_and(|g| g.allows_subscribe(filter)))
    }

    /// What a new subscription's [`super::SubEntry::acl_free_at`] is.
    pub(crate) fn acl_free_at(&self, key: u32, filter: &str) -> u64 {
        if self.acl.is_none() {
            return 0; // no ACL: nothing is checked anyway
        }
        let Some(e) = self.sessions.get(key as usize).and_then(Option::as_deref) else {
            return 0;
        };
        match &e.grants {
            Some(g) if g.reads_all_of(filter) => e.grants_epoch,
            _ => 0,
        }
    }

    /// Counts and logs (rate-limited) one refusal.
    pub(crate) fn acl_denied(&mut self, client: &str, what: &str, topic: &str, now: Instant) {
        self.metrics.acl_denied += 1;
        if let Some(held) = self.log_limits.acl_denied.allow(now) {
            tracing::info!(
                client_id = client,
                topic,
                held_back = held,
                "{what} refused: not authorized by the ACL"
            );
        }
    }
}
