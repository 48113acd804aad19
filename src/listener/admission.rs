//! Which TCP connections the listener keeps, shared by every worker: at the
//! `listener.max_connections` cap a new connection evicts the longest-idle connection that has
//! not authenticated a frame, and one address may hold at most `listener.max_unauth_per_addr`
//! unauthenticated connections (a new one evicts that address's longest-idle one). A flood of
//! idle or slow connections, from one host or many, therefore cannot keep a member out: its
//! connection comes in, sends its frame at once and authenticates, and is never evicted.
//!
//! Connections change state without the lock (two atomics each); the lock is taken when one
//! opens, authenticates its first frame, or closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a connection's task updates as it goes.
#[derive(Default)]
struct ConnState {
    /// When it last received a byte (or was accepted), ms.
    last_active_ms: AtomicU64,
    authenticated: AtomicBool,
    /// Shut down by the table: its end of stream is not the peer's doing.
    evicted: AtomicBool,
}

struct Entry {
    ip: IpAddr,
    /// Shut down (not closed) to evict: the connection's own task then sees the end of its
    /// stream, and closes the socket. Valid while the entry is in the table: a registration
    /// leaves the table before its socket is closed.
    fd: RawFd,
    state: Arc<ConnState>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    unauth_by_ip: HashMap<IpAddr, u32>,
}

impl Inner {
    /// The longest-idle unauthenticated connection, of `ip` only if given.
    fn idlest_unauth(&self, ip: Option<IpAddr>) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, e)| ip.is_none_or(|ip| e.ip == ip))
            .filter(|(_, e)| !e.state.authenticated.load(Ordering::Acquire))
            // Within one millisecond, the older connection goes first (ids grow).
            .min_by_key(|(id, e)| (e.state.last_active_ms.load(Ordering::Relaxed), **id))
            .map(|(id, _)| *id)
    }

    /// Forgets `id`; true if it was there.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.conns.remove(&id)?;
        if !e.state.authenticated.load(Ordering::Acquire) {
            self.unauth_dec(e.ip);
        }
        Some(e)
    }

    fn unauth_dec(&mut self, ip: IpAddr) {
        if let Some(n) = self.unauth_by_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.unauth_by_ip.remove(&ip);
            }
        }
    }
}

/// The open connections of a listener, across its workers.
#[derive(Default)]
pub(crate) struct ConnTable {
    inner: Mutex<Inner>,
    open: AtomicUsize,
    pub evicted: AtomicU64,
}

/// Limits applied at admission.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdmissionLimits {
    pub max_connections: usize,
    pub max_unauth_per_addr: usize,
}

impl ConnTable {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::locks::lock(&self.inner)
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Admits a new connection from `ip` on socket `fd`, evicting as the limits ask; None
    /// when it must be refused (the table is full of authenticated connections).
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        fd: RawFd,
        now_ms: u64,
        limits: AdmissionLimits,
    ) -> Option<Registration> {
        let mut t = self.lock();
        let mut evicted = 0;
        if t.unauth_by_ip.get(&ip).copied().unwrap_or(0) as usize >= limits.max_unauth_per_addr
            && let Some(victim) = t.idlest_unauth(Some(ip))
        {
            evict(&mut t, victim);
            evicted += 1;
        }
        if t.conns.len() >= limits.max_connections {
            match t.idlest_unauth(None) {
                Some(victim) => {
                    evict(&mut t, victim);
                    evicted += 1;
                }
                None => return None,
            }
        }
        let id = t.next_id;
        t.next_id += 1;
        let state = Arc::new(ConnState::default());
        state.last_active_ms.store(now_ms, Ordering::Relaxed);
        t.conns.insert(
            id,
            Entry {
                ip,
                fd,
                state: state.clone(),
            },
        );
        *t.unauth_by_ip.entry(ip).or_insert(0) += 1;
        self.open.store(t.conns.len(), Ordering::Relaxed);
        drop(t);
        if evicted > 0 {
            self.evicted.fetch_add(evicted, Ordering::Relaxed);
        }
        Some(Registration {
            table: self.clone(),
            id,
            ip,
            state,
        })
    }
}

fn evict(t: &mut Inner, victim: u64) {
    if let Some(e) = t.remove(victim) {
        e.state.evicted.store(true, Ordering::Release);
        // SAFETY: shutdown(2) on a socket still open (its registration, which leaves the table
        // before the socket is closed, was still in it); no memory is involved.
        unsafe { libc::shutdown(e.fd, libc::SHUT_RDWR) };
    }
}

/// A connection's place in the table; leaving the table when dropped. Drop it before the
/// socket is closed.
pub(crate) struct Registration {
    table: Arc<ConnTable>,
    id: u64,
    ip: IpAddr,
    state: Arc<ConnState>,
}

impl Registration {
    /// Bytes came in.
    pub(crate) fn touch(&self, now_ms: u64) {
        self.state.last_active_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Whether the table shut this connection down to make room.
    pub(crate) fn evicted(&self) -> bool {
        self.state.evicted.load(Ordering::Acquire)
    }

    /// A frame of this connection authenticated: it is never evicted, and no longer counts
    /// against its address.
    pub(crate) fn authenticated(&self) {
        if self.state.authenticated.load(Ordering::Relaxed) {
            return;
        }
        let mut t = self.table.lock();
        // Under the lock, so that `remove` and this agree on what was counted.
        if !self.state.authenticated.swap(true, Ordering::AcqRel) && t.conns.contains_key(&self.id)
        {
            t.unauth_dec(self.ip);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut t = self.table.lock();
        t.remove(self.id);
        self.table.open.store(t.conns.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: AdmissionLimits = AdmissionLimits {
        max_connections: 4,
        max_unauth_per_addr: 2,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    // The fds are -1: shutdown(-1) fails harmlessly (EBADF).

    #[test]
    fn per_address_limit_evicts_that_address_s_idlest() {
        let t = Arc::new(ConnTable::default());
        let a = t.admit(ip(9), -1, 1, LIMITS).unwrap();
        let b = t.admit(ip(9), -1, 2, LIMITS).unwrap();
        a.touch(3);
        let c = t.admit(ip(9), -1, 4, LIMITS).unwrap();
        assert_eq!(t.open(), 2);
        assert_eq!(t.evicted.load(Ordering::Relaxed), 1);
        // b was the idlest: gone from the table; dropping it later changes nothing.
        drop(b);
        assert_eq!(t.open(), 2);
        drop((a, c));
        assert_eq!(t.open(), 0);
    }

    /// A flood opens many connections within one millisecond: the oldest of them goes, not
    /// the newest (a member's, about to send its frame).
    #[test]
    fn ties_evict_the_oldest() {
        let t = Arc::new(ConnTable::default());
        let old: Vec<_> = (0..2)
            .map(|_| t.admit(ip(9), -1, 5, LIMITS).unwrap())
            .collect();
        let new = t.admit(ip(9), -1, 5, LIMITS).unwrap();
        assert!(old[0].evicted() && !old[1].evicted() && !new.evicted());
    }

    #[test]
    fn the_cap_evicts_the_idlest_unauthenticated_and_never_an_authenticated_one() {
        let t = Arc::new(ConnTable::default());
        let members: Vec<_> = (0..3)
            .map(|i| {
                let r = t.admit(ip(1), -1, i, LIMITS).unwrap();
                r.authenticated();
                r
            })
            .collect();
        let idle = t.admit(ip(2), -1, 0, LIMITS).unwrap();
        // Full: the new one takes the unauthenticated one's place.
        let new = t.admit(ip(3), -1, 10, LIMITS).unwrap();
        assert_eq!(t.open(), 4);
        drop(idle);
        assert_eq!(t.open(), 4);
        new.authenticated();
        // Full of authenticated connections: refused.
        assert!(t.admit(ip(4), -1, 20, LIMITS).is_none());
        drop(members);
        assert_eq!(t.open(), 1);
        // The authenticated ones no longer count against 127.0.0.1's unauthenticated limit.
        let x = t.admit(ip(1), -1, 30, LIMITS).unwrap();
        let y = t.admit(ip(1), -1, 31, LIMITS).unwrap();
        assert_eq!(t.open(), 3);
        drop((x, y, new));
        assert_eq!(t.open(), 0);
        assert!(t.lock().unauth_by_ip.is_empty());
    }
}
