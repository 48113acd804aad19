//! The service monitor as a pure state machine: what the monitor does on a tick, given the
//! resources' last checks. The shard owning the service carries the plan out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire::payload::{GlobalExpect, ServiceLocalExpect, ServiceMonitorStatus};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceMonitor {
    pub status: ServiceMonitorStatus,
    pub local_expect: ServiceLocalExpect,
    pub global_expect: GlobalExpect,
    /// Start attempts made by the monitor, per resource, since the last `clear`: the first
    /// one, then up to the resource's `restart` retries.
    #[serde(default)]
    pub restarts: BTreeMap<String, u32>,
    /// When `global_expect` was last set (ms): across nodes, the latest setting wins.
    #[serde(default)]
    pub global_expect_updated_ms: u64,
    /// When this node went `ready` to start an ha service (ms): it starts once every peer
    /// has been heard since, so a start another node decided meanwhile shows first.
    #[serde(default)]
    pub ready_since_ms: u64,
}

impl Default for ServiceMonitor {
    fn default() -> Self {
        ServiceMonitor {
            status: ServiceMonitorStatus::Idle,
            local_expect: ServiceLocalExpect::Unset,
            global_expect: GlobalExpect::Unset,
            restarts: BTreeMap::new(),
            global_expect_updated_ms: 0,
            ready_since_ms: 0,
        }
    }
}

/// A resource's last check: Some(true) up, Some(false) down, None no check (n/a).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResourceView {
    pub rid: String,
    pub up: Option<bool>,
    pub restart_limit: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    Nothing,
    /// Start this resource again (its count is incremented by `begin`).
    Restart(String),
    /// Its attempts are used up: the monitor goes `start failed` and stops trying.
    GiveUp(String),
}

impl ServiceMonitor {
    pub(crate) fn failed(&self) -> bool {
        matches!(
            self.status,
            ServiceMonitorStatus::StartFailed | ServiceMonitorStatus::StopFailed
        )
    }

    /// What to do on this tick. Nothing while the node or the service is frozen, while the
    /// service is not expected started, or once the monitor has given up.
    pub(crate) fn plan(&self, node_frozen: bool, resources: &[ResourceView]) -> Plan {
        if node_frozen
            || self.global_expect == GlobalExpect::Frozen
            || self.local_expect != ServiceLocalExpect::Started
            || self.failed()
        {
            return Plan::Nothing;
        }
        for r in resources {
            if r.up == Some(false) {
                let done = self.restarts.get(&r.rid).copied().unwrap_or(0);
                // The first attempt is not a retry: `restart = 0` still tries once.
                return if done <= r.restart_limit {
                    Plan::Restart(r.rid.clone())
                } else {
                    Plan::GiveUp(r.rid.clone())
                };
            }
        }
        Plan::Nothing
    }

    /// Records the plan's effect on the monitor before it is carried out.
    pub(crate) fn begin(&mut self, plan: &Plan) {
        match plan {
            Plan::Nothing => {}
            Plan::Restart(rid) => {
                *self.restarts.entry(rid.clone()).or_insert(0) += 1;
                self.status = ServiceMonitorStatus::Restarting;
            }
            Plan::GiveUp(_) => self.status = ServiceMonitorStatus::StartFailed,
        }
    }

    /// After a restart was carried out (whatever its outcome: the next check tells).
    pub(crate) fn end_restart(&mut self) {
        if self.status == ServiceMonitorStatus::Restarting {
            self.status = ServiceMonitorStatus::Idle;
        }
    }

    /// At a daemon's start: a status that only means "an action of mine is under way"
    /// (`ready`, `starting`, `restarting`, `stopping`) belongs to the previous daemon, which
    /// can no longer finish it; what runs is what the checks now say.
    pub(crate) fn settle(&mut self) {
        if matches!(
            self.status,
            ServiceMonitorStatus::Ready
                | ServiceMonitorStatus::Starting
                | ServiceMonitorStatus::Restarting
                | ServiceMonitorStatus::Stopping
        ) {
            self.status = ServiceMonitorStatus::Idle;
        }
    }

    /// `clear`: forget the failed state and the restart counts.
    pub(crate) fn clear(&mut self) {
        if self.failed() {
            self.status = ServiceMonitorStatus::Idle;
        }
        self.restarts.clear();
    }
}

/// An instance's status from its resources' checks.
pub(crate) fn instance_status(resources: &[ResourceView]) -> &'static str {
    let checked: Vec<bool> = resources.iter().filter_map(|r| r.up).collect();
    if checked.is_empty() {
        "n/a"
    } else if checked.iter().all(|u| *u) {
        "up"
    } else if checked.iter().all(|u| !*u) {
        "down"
    } else {
        "warn"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(up: &[Option<bool>], limits: &[u32]) -> Vec<ResourceView> {
        up.iter()
            .zip(limits)
            .enumerate()
            .map(|(i, (u, l))| ResourceView {
                rid: format!("app#{i}"),
                up: *u,
                restart_limit: *l,
            })
            .collect()
    }

    #[test]
    fn restarts_up_to_the_limit_then_gives_up_and_clear_retries() {
        let mut m = ServiceMonitor {
            local_expect: ServiceLocalExpect::Started,
            ..Default::default()
        };
        let down = view(&[Some(false)], &[2]);
        // The first attempt, then two retries.
        for _ in 0..3 {
            let p = m.plan(false, &down);
            assert_eq!(p, Plan::Restart("app#0".into()));
            m.begin(&p);
            m.end_restart();
        }
        let p = m.plan(false, &down);
        assert_eq!(p, Plan::GiveUp("app#0".into()));
        m.begin(&p);
        assert_eq!(m.status, ServiceMonitorStatus::StartFailed);
        assert_eq!(m.plan(false, &down), Plan::Nothing);
        m.clear();
        assert_eq!(m.plan(false, &down), Plan::Restart("app#0".into()));
        assert_eq!(m.plan(true, &down), Plan::Nothing, "frozen node");
    }

    #[test]
    fn instance_status_aggregates() {
        assert_eq!(instance_status(&view(&[Some(true), None], &[0, 0])), "up");
        assert_eq!(
            instance_status(&view(&[Some(true), Some(false)], &[0, 0])),
            "warn"
        );
        assert_eq!(instance_status(&view(&[Some(false)], &[0])), "down");
        assert_eq!(instance_status(&view(&[None], &[0])), "n/a");
    }

    #[derive(Clone, Debug)]
    enum Ev {
        Down(usize),
        Up(usize),
        Clear,
        FreezeNode(bool),
        Expect(bool),
        Tick { restart_works: bool },
    }

    /// The model: restart counts per resource and a "gave up" flag, written independently.
    #[derive(Default)]
    struct Model {
        counts: [u32; 3],
        gave_up: bool,
    }

    proptest! {
        #[test]
        fn monitor_matches_model(
            limits in prop::collection::vec(0u32..4, 3),
            events in prop::collection::vec(prop_oneof![
                (0usize..3).prop_map(Ev::Down),
                (0usize..3).prop_map(Ev::Up),
                Just(Ev::Clear),
                any::<bool>().prop_map(Ev::FreezeNode),
                any::<bool>().prop_map(Ev::Expect),
                any::<bool>().prop_map(|restart_works| Ev::Tick { restart_works }),
                any::<bool>().prop_map(|restart_works| Ev::Tick { restart_works }),
            ], 0..120),
        ) {
            let mut up = [Some(true); 3];
            let mut frozen = false;
            let mut m = ServiceMonitor::default();
            let mut model = Model::default();
            for ev in events {
                match ev {
                    Ev::Down(i) => up[i] = Some(false),
                    Ev::Up(i) => up[i] = Some(true),
                    Ev::Clear => { m.clear(); model.counts = [0; 3]; model.gave_up = false; }
                    Ev::FreezeNode(f) => frozen = f,
                    Ev::Expect(s) => m.local_expect = if s { ServiceLocalExpect::Started } else { ServiceLocalExpect::Unset },
                    Ev::Tick { restart_works } => {
                        let views = view(&up, &limits);
                        let plan = m.plan(frozen, &views);
                        let expected = if frozen || m.local_expect != ServiceLocalExpect::Started || model.gave_up {
                            Plan::Nothing
                        } else {
                            match (0..3).find(|i| up[*i] == Some(false)) {
                                None => Plan::Nothing,
                                Some(i) if model.counts[i] <= limits[i] => Plan::Restart(format!("app#{i}")),
                                Some(i) => Plan::GiveUp(format!("app#{i}")),
                            }
                        };
                        prop_assert_eq!(&plan, &expected);
                        m.begin(&plan);
                        match &plan {
                            Plan::Restart(rid) => {
                                let i: usize = rid[4..].parse().unwrap();
                                model.counts[i] += 1;
                                if restart_works { up[i] = Some(true); }
                                m.end_restart();
                            }
                            Plan::GiveUp(_) => model.gave_up = true,
                            Plan::Nothing => {}
                        }
                    }
                }
                for (i, limit) in limits.iter().enumerate() {
                    let c = m.restarts.get(&format!("app#{i}")).copied().unwrap_or(0);
                    prop_assert_eq!(c, model.counts[i]);
                    prop_assert!(c <= *limit + 1, "never more attempts than the first and the retries");
                }
                prop_assert_eq!(m.status == ServiceMonitorStatus::StartFailed, model.gave_up);
            }
        }
    }
}
