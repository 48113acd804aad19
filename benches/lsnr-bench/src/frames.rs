//! The frames the scenarios send: heartbeats of an exact size sealed ahead of time, frames
//! under a banned name or random names, requests.

pub use osvc_agent::internals::bench_support::{
    heartbeat_payload, heartbeat_payload_at, min_size, overhead,
};
use osvc_agent::internals::wire::{Kind, Sealer};

/// Frames of one size laid out back to back, in the order they are to be sent.
#[derive(Clone, Debug, Default)]
pub struct Pool {
    pub data: Vec<u8>,
    /// Bytes per frame (every frame of a pool has the same size).
    pub size: usize,
    pub count: usize,
}

impl Pool {
    pub fn new(size: usize, capacity: usize) -> Self {
        Pool {
            data: Vec::with_capacity(size * capacity),
            size,
            count: 0,
        }
    }

    pub fn frame(&self, i: usize) -> &[u8] {
        &self.data[i * self.size..(i + 1) * self.size]
    }

    pub fn push(&mut self, frame: &[u8]) {
        assert_eq!(frame.len(), self.size, "frames of a pool have one size");
        self.data.extend_from_slice(frame);
        self.count += 1;
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// The nodenames of the simulated members: `node0000`... (same length, so every frame of a
/// size is exactly that size).
pub fn node_names(n: usize) -> Vec<String> {
    let width = n.saturating_sub(1).to_string().len().max(4);
    (0..n).map(|i| format!("node{i:0width$}")).collect()
}

/// One sender per simulated node, for a cluster's secret and name.
pub fn senders(secret: &str, cluster: &str, names: &[String], now_ms: u64) -> Vec<Sealer> {
    names
        .iter()
        .map(|n| Sealer::new(secret.as_bytes(), cluster, n, now_ms))
        .collect()
}

/// Heartbeats for the nodes of one socket: `rounds` rounds, each one frame per node, in
/// round order (every node's counters increase along the pool).
pub fn heartbeat_pool(senders: &mut [Sealer], payload: &[u8], rounds: usize, now_ms: u64) -> Pool {
    heartbeat_pool_with(senders, rounds, now_ms, |_| payload.to_vec())
}

/// The same, round `r` carrying `payload_of(r)`.
pub fn heartbeat_pool_with(
    senders: &mut [Sealer],
    rounds: usize,
    now_ms: u64,
    mut payload_of: impl FnMut(usize) -> Vec<u8>,
) -> Pool {
    let name_len = senders.first().map_or(0, |s| s.nodename().len());
    let first = payload_of(0);
    let size = overhead(name_len) + first.len();
    let mut pool = Pool::new(size, rounds * senders.len());
    let mut frame = Vec::with_capacity(size);
    for round in 0..rounds {
        let payload = if round == 0 {
            first.clone()
        } else {
            payload_of(round)
        };
        for s in senders.iter_mut() {
            frame.clear();
            s.seal(Kind::Heartbeat, &payload, now_ms, &mut frame)
                .expect("a heartbeat within the size limits seals");
            pool.push(&frame);
        }
    }
    pool
}

/// Frames under `name` sealed with a wrong secret: they fail authentication (what bans a
/// name), and once it is banned they are dropped before decryption whatever they hold.
pub fn forged_pool(
    cluster: &str,
    name: &str,
    frame_size: usize,
    count: usize,
    now_ms: u64,
) -> Pool {
    let payload = heartbeat_payload(frame_size, name.len());
    let mut s = Sealer::new(b"not the cluster secret", cluster, name, now_ms);
    heartbeat_pool(std::slice::from_mut(&mut s), &payload, count, now_ms)
}

/// Frames of one size under `count` random non-member nodenames (join path: beyond the
/// join rate they are dropped before decryption).
pub fn random_names_pool(
    secret: &str,
    cluster: &str,
    frame_size: usize,
    count: usize,
    now_ms: u64,
) -> Pool {
    // Names only need to differ from one run to the next, not to be unpredictable.
    let seed = osvc_agent::internals::wire::sealer::random_salt().unwrap_or_else(|_| {
        let mut s = [0u8; 16];
        s[..8].copy_from_slice(&now_ms.to_le_bytes());
        s
    });
    let mut x = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")) | 1;
    let mut next = move || {
        // xorshift64*: names only need to differ, not to be unpredictable.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let name_len = 16;
    let payload = heartbeat_payload(frame_size, name_len);
    let mut pool = Pool::new(overhead(name_len) + payload.len(), count);
    let mut frame = Vec::new();
    for _ in 0..count {
        let name = format!("{:016x}", next());
        let mut s = Sealer::new(secret.as_bytes(), cluster, &name, now_ms);
        frame.clear();
        s.seal(Kind::Heartbeat, &payload, now_ms, &mut frame)
            .expect("seals");
        pool.push(&frame);
    }
    pool
}

/// `count` identical frames of `size` bytes (content irrelevant: for the null sink, or
/// empty datagrams when `size` is 0).
pub fn filler_pool(size: usize, count: usize) -> Pool {
    Pool {
        data: vec![0xa5; size * count],
        size,
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_hold_frames_of_the_exact_size_in_order() {
        let names = node_names(1000);
        assert_eq!(names[0], "node0000");
        assert_eq!(names[999], "node0999");
        let mut s = senders("s", "c", &names[..3], 1);
        let pool = heartbeat_pool(&mut s, &heartbeat_payload(256, 8), 2, 1);
        assert_eq!((pool.count, pool.size), (6, 256));
        let v = osvc_agent::internals::wire::FrameView::parse(pool.frame(4)).unwrap();
        assert_eq!((v.nodename(), v.counter()), ("node0001", 1));
        let r = random_names_pool("s", "c", 256, 4, 1);
        assert_eq!((r.count, r.size), (4, 256));
    }
}
