//! The arbitrator's vote, as a lease (pure: every call is handed the time).
//!
//! A member asks for the vote with its partition: the members it currently sees, itself
//! included. The arbitrator grants it while every other member holding an unexpired grant is
//! in that partition and the requester is in theirs, so the members holding the vote at any
//! time all see one another: two disjoint partitions never hold it at once. A member cut off
//! from the holders is refused until their grants expire, which they stop renewing once they
//! no longer see it (a member counts its grant only while it still sees every member of the
//! partition it was granted for; see `state::votes`).

use std::collections::{BTreeMap, BTreeSet};

/// One member's grant, on the arbitrator's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Grant {
    partition: BTreeSet<String>,
    expires_ms: u64,
}

/// The arbitrator's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub granted: bool,
    /// The members holding an unexpired grant after this request, sorted.
    pub holders: Vec<String>,
    /// Granted: how long the grant lasts. Refused: how long until the last conflicting
    /// grant expires (a request after that may succeed).
    pub expires_in_ms: u64,
}

/// The grants in force.
#[derive(Clone, Debug, Default)]
pub(crate) struct ArbitratorLease {
    grants: BTreeMap<String, Grant>,
    /// A larger partition refused because a smaller one holds the vote: while it keeps
    /// asking, the smaller one's renewals are refused, so that its grants expire and the
    /// larger one gets the vote (with an odd count of members, the side with more members
    /// needs the vote for quorum; the other cannot have quorum with it).
    claim: Option<Grant>,
}

impl ArbitratorLease {
    /// The members holding an unexpired grant at `now_ms`, with how long it still runs.
    pub(crate) fn holders(&self, now_ms: u64) -> BTreeMap<String, u64> {
        self.grants
            .iter()
            .filter(|(_, g)| g.expires_ms > now_ms)
            .map(|(name, g)| (name.clone(), g.expires_ms - now_ms))
            .collect()
    }

    /// `requester` asks for the vote for `partition` (the requester is added to it if
    /// missing) at `now_ms`; a grant lasts `lease_ms`.
    pub(crate) fn request(
        &mut self,
        requester: &str,
        partition: &BTreeSet<String>,
        now_ms: u64,
        lease_ms: u64,
    ) -> Answer {
        self.grants.retain(|_, g| g.expires_ms > now_ms);
        let mut partition = partition.clone();
        partition.insert(requester.to_string());
        let conflicts: Vec<&Grant> = self
            .grants
            .iter()
            .filter(|(name, g)| {
                name.as_str() != requester
                    && !(partition.contains(name.as_str()) && g.partition.contains(requester))
            })
            .map(|(_, g)| g)
            .collect();
        if self.claim.as_ref().is_some_and(|c| c.expires_ms <= now_ms) {
            self.claim = None;
        }
        let (granted, expires_in_ms) =
            if let Some(until) = conflicts.iter().map(|g| g.expires_ms).max() {
                if conflicts
                    .iter()
                    .all(|g| g.partition.len() < partition.len())
                {
                    self.claim = Some(Grant {
                        partition,
                        expires_ms: now_ms.saturating_add(lease_ms),
                    });
                }
                (false, until.saturating_sub(now_ms))
            } else if let Some(claim) = self
                .claim
                .as_ref()
                .filter(|c| c.partition.len() > partition.len() && !c.partition.contains(requester))
            {
                // A larger partition claims the vote: this side lets its grant run out.
                (false, claim.expires_ms.saturating_sub(now_ms))
            } else {
                if self
                    .claim
                    .as_ref()
                    .is_some_and(|c| c.partition.contains(requester))
                {
                    self.claim = None;
                }
                self.grants.insert(
                    requester.to_string(),
                    Grant {
                        partition,
                        expires_ms: now_ms.saturating_add(lease_ms),
                    },
                );
                (true, lease_ms)
            };
        Answer {
            granted,
            holders: self.grants.keys().cloned().collect(),
            expires_in_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_side_of_a_split_holds_the_vote_until_the_other_expires() {
        let mut l = ArbitratorLease::default();
        assert!(l.request("n1", &set(&["n1", "n2"]), 0, 1000).granted);
        assert!(l.request("n2", &set(&["n1", "n2"]), 100, 1000).granted);
        // Cut apart: each sees only itself; the other's grant still runs.
        let a = l.request("n1", &set(&["n1"]), 500, 1000);
        assert!(!a.granted);
        assert_eq!(a.expires_in_ms, 600, "n2's grant runs until 1100");
        assert_eq!(a.holders, vec!["n1", "n2"]);
        assert!(!l.request("n2", &set(&["n2"]), 600, 1000).granted);
        // Both expired: the first to ask wins, the other is refused while it renews.
        let a = l.request("n2", &set(&["n2"]), 1100, 1000);
        assert!(a.granted);
        assert_eq!(a.holders, vec!["n2"]);
        assert!(!l.request("n1", &set(&["n1"]), 1200, 1000).granted);
        assert!(l.request("n2", &set(&["n2"]), 1400, 1000).granted);
        assert!(!l.request("n1", &set(&["n1"]), 2300, 1000).granted);
        // Healed: once n2 renews seeing n1, n1 is granted too.
        assert!(!l.request("n1", &set(&["n1", "n2"]), 2350, 1000).granted);
        assert!(l.request("n2", &set(&["n1", "n2"]), 2400, 1000).granted);
        assert!(l.request("n1", &set(&["n1", "n2"]), 2450, 1000).granted);
        let holders = l.holders(2500);
        assert_eq!(holders.get("n1"), Some(&950));
        assert_eq!(holders.get("n2"), Some(&900));
        assert!(l.holders(3450).is_empty());
    }

    #[test]
    fn a_larger_partition_gets_the_vote_once_the_smaller_ones_grant_runs_out() {
        let mut l = ArbitratorLease::default();
        let pair = set(&["n1", "n2"]);
        // n3, cut off alone, got the vote first.
        assert!(l.request("n3", &set(&["n3"]), 0, 1000).granted);
        assert!(!l.request("n1", &pair, 100, 1000).granted);
        // The pair's claim: n3's renewals are refused, its grant runs out.
        let a = l.request("n3", &set(&["n3"]), 400, 1000);
        assert!(!a.granted);
        assert_eq!(a.holders, vec!["n3"]);
        assert!(!l.request("n2", &pair, 900, 1000).granted);
        assert!(l.request("n2", &pair, 1000, 1000).granted);
        assert!(l.request("n1", &pair, 1100, 1000).granted);
        assert!(!l.request("n3", &set(&["n3"]), 1200, 1000).granted);
        // Without a claim, a partition of equal size keeps what it holds.
        let mut l = ArbitratorLease::default();
        assert!(l.request("n1", &set(&["n1"]), 0, 1000).granted);
        assert!(!l.request("n2", &set(&["n2"]), 100, 1000).granted);
        assert!(l.request("n1", &set(&["n1"]), 400, 1000).granted);
    }

    #[test]
    fn the_requester_is_in_its_own_partition() {
        let mut l = ArbitratorLease::default();
        assert!(l.request("n1", &BTreeSet::new(), 0, 1000).granted);
        assert!(!l.request("n2", &set(&["n1"]), 1, 1000).granted);
    }

    proptest! {
        /// Whatever members ask, with whatever partitions and timing, the members holding an
        /// unexpired grant all list one another: no two disjoint partitions hold the vote.
        #[test]
        fn never_two_disjoint_partitions_hold_the_vote(
            steps in proptest::collection::vec((0usize..4, 0u8..16, 0u64..400), 1..200),
            lease_ms in 1u64..1000,
        ) {
            let names = ["n1", "n2", "n3", "n4"];
            let mut l = ArbitratorLease::default();
            let mut held: BTreeMap<&str, (BTreeSet<String>, u64)> = BTreeMap::new();
            let mut now = 0u64;
            for (who, mask, advance) in steps {
                now += advance;
                let partition: BTreeSet<String> = names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, n)| n.to_string())
                    .collect();
                let a = l.request(names[who], &partition, now, lease_ms);
                if a.granted {
                    let mut p = partition.clone();
                    p.insert(names[who].to_string());
                    held.insert(names[who], (p, now + lease_ms));
                }
                held.retain(|_, (_, until)| *until > now);
                for (a_name, (a_part, _)) in &held {
                    for (b_name, (b_part, _)) in &held {
                        prop_assert!(
                            a_part.contains(*b_name) && b_part.contains(*a_name),
                            "{a_name} {a_part:?} and {b_name} {b_part:?} both hold the vote"
                        );
                    }
                }
                let mut holders: Vec<&str> = held.keys().copied().collect();
                holders.sort_unstable();
                prop_assert_eq!(a.holders, holders);
            }
        }
    }
}
