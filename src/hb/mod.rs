//! Heartbeat content, pure: what a node puts in each heartbeat datagram ([`HbSender`]) and
//! how a peer rebuilds it from datagrams that may be lost, duplicated or reordered
//! ([`HbView`]). No I/O: the caller seals each payload into one UDP datagram and unseals
//! what it receives.
//!
//! A heartbeat is small and sent as one datagram; a node with too much data sends the changed
//! part, and the generation says what the receiver has. Heartbeats are never answered, so
//! everything a receiver needs to catch up is carried again on later beats.
//!
//! # Wire format
//!
//! Each datagram carries one JSON object, serialized compactly, of at most `max_payload`
//! bytes ([`MAX_PAYLOAD`] in production). Fields:
//!
//! | field      | JSON type                    | present                        | meaning |
//! |------------|------------------------------|--------------------------------|---------|
//! | `gen`      | integer, 1 ..= 2^64-1        | always                         | generation of the sender's content this payload describes; it moves (by one) on each [`HbSender::update`] that changes something that is sent |
//! | `since`    | integer, 0 ..= `gen`         | always (absent reads as 0, as in PROTOCOL.md's example) | `0`: a full snapshot, or one part of one. `F > 0`: a delta against the sender's full snapshot of generation `F` |
//! | `boot`     | integer, ≥ 1                 | only when the sender sets one  | sender incarnation; absent means 0. A higher `boot` than the receiver's means the peer restarted (its `gen` went back): the receiver forgets that peer and starts over. A lower one is stale |
//! | `part`     | `[i, n]`, 1 ≤ i ≤ n ≤ [`MAX_PARTS`] | in a snapshot split over `n` datagrams; never in a delta | this datagram is part `i` of `n`; all parts of one snapshot carry the same `gen`, and each service is whole in exactly one part. `[1, 1]` is read like no `part` |
//! | `monitor`  | any JSON (an object in practice) | always                     | the sender's node monitor at `gen` |
//! | `services` | object, name → any JSON      | always                         | full snapshot: every service (a part: its share); delta: every service changed after generation `F`, at its value at `gen` |
//! | `removed`  | array of strings             | always in a delta; never in a snapshot | services removed after generation `F` |
//!
//! A sender starts at `gen` 1 with a `null` monitor and no services. A receiver reads a delta
//! without `removed` as removing nothing; unknown fields are ignored (room to grow); a known
//! field with a bad type or value is an error ([`HbError`]). The three shapes:
//!
//! * **single full snapshot**, the common case, sent whenever everything fits one datagram:
//!   `{"gen":G,"since":0,"monitor":M,"services":{…all…}}`
//! * **split full snapshot**, `n` datagrams in one beat:
//!   `{"gen":G,"since":0,"part":[i,n],"monitor":M,"services":{…share i…}}`
//! * **cumulative delta**, one datagram:
//!   `{"gen":G,"since":F,"monitor":M,"services":{…changed after F…},"removed":[…]}`
//!
//! # Sender
//!
//! Each beat ([`HbSender::next_payloads`]) sends a single full snapshot if it fits; otherwise
//! a split full snapshot every `full_every` beats (and on the first beat), a cumulative delta
//! against the last full snapshot sent on the beats in between, and a split full snapshot
//! early when that delta no longer fits one datagram. Deltas being cumulative, losing one
//! loses nothing: the next one carries it again; losing a snapshot costs at most `full_every`
//! beats. A service too big to fit a datagram on its own is left out of every payload (peers
//! see it as removed) and listed by [`HbSender::oversize`].
//!
//! # Receiver
//!
//! [`Heartbeat::parse`] (`codec.rs`) reads and checks each payload on its own (in the listener worker,
//! where a payload that fails is an invalid message); a repeated field or service name is an
//! error there. [`HbView::apply`], one view per peer: a full snapshot replaces everything; parts are
//! assembled per `gen` (a newer `gen` drops an unfinished older assembly); a delta applies
//! only onto the snapshot it was computed against (`since` = the view's base generation),
//! otherwise it is a gap, kept aside in case that snapshot is still being assembled; anything
//! older than what the view holds is stale. The view is synced when its services are those
//! of the newest generation it has heard of.

mod codec;
mod sender;
mod view;

#[cfg(test)]
mod tests;

pub use codec::{HbError, Heartbeat, MAX_PARTS, RawJson};
pub use sender::HbSender;
pub use view::{Applied, HbView};

/// Production bound on a heartbeat payload, in bytes of JSON: what a sealed UDP datagram
/// leaves room for.
pub const MAX_PAYLOAD: usize = 60_000;

/// When the copies of a maintenance notice go out (ms after the first): a lost datagram, or a
/// short burst of loss, must not make peers find a node stale and start what it still runs.
pub const MAINTENANCE_COPIES_MS: [u64; 4] = [0, 100, 300, 700];

/// Production period of full snapshots, in beats, when a node needs several datagrams.
pub const FULL_EVERY: u32 = 6;

/// Counts bytes instead of storing them, so sizes are measured without allocating.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes of the compact JSON serialization of `v`, the size the datagram will have.
pub(crate) fn json_len<T: serde::Serialize + ?Sized>(v: &T) -> usize {
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, v) {
        Ok(()) => count.0,
        // Not reachable for JSON values; "too big" makes the caller leave it out.
        Err(_) => usize::MAX,
    }
}
