use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

/// A value whose own JSON is `size` bytes (a string of `size - 2` characters).
fn blob(size: usize, fill: u8) -> Value {
    let c = char::from(b'a' + fill % 26);
    Value::String(std::iter::repeat_n(c, size.saturating_sub(2)).collect())
}

fn services(count: usize, size: usize) -> Map<String, Value> {
    (0..count)
        .map(|i| (format!("svc{i:03}"), blob(size, i as u8)))
        .collect()
}

fn field<'a>(p: &'a Value, name: &str) -> &'a Value {
    p.get(name).unwrap_or(&Value::Null)
}

fn names(p: &Value) -> BTreeSet<String> {
    field(p, "services")
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn removed(p: &Value) -> Vec<String> {
    field(p, "removed")
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn apply_all(view: &mut HbView, payloads: &[Value]) -> Vec<Applied> {
    payloads
        .iter()
        .map(|p| view.apply_value(p).unwrap_or_else(|e| panic!("{e}: {p}")))
        .collect()
}

/// A sender at `max` bytes whose first beat is a split snapshot of `count` services.
fn split_sender(max: usize, full_every: u32, count: usize) -> (HbSender, Vec<Value>) {
    let mut s = HbSender::new(max, full_every);
    s.update(json!({"state": "idle"}), services(count, 200));
    let parts = s.next_payloads();
    assert!(parts.len() > 1, "expected a split snapshot");
    (s, parts)
}

// ---- sender ----

#[test]
fn single_full_snapshot_shape() {
    let mut s = HbSender::default();
    assert_eq!(
        s.next_payloads(),
        vec![json!({"gen": 1, "since": 0, "monitor": null, "services": {}})]
    );
    let mut svcs = Map::new();
    svcs.insert("web".into(), json!({"avail": "up"}));
    svcs.insert("db".into(), json!({"avail": "down"}));
    s.update(json!({"state": "idle"}), svcs);
    let expect = json!({
        "gen": 2, "since": 0, "monitor": {"state": "idle"},
        "services": {"web": {"avail": "up"}, "db": {"avail": "down"}},
    });
    // The common case is this exact shape, every beat, whatever the cycle.
    for _ in 0..8 {
        assert_eq!(s.next_payloads(), vec![expect.clone()]);
    }
}

#[test]
fn gen_moves_once_per_changing_update() {
    let mut s = HbSender::default();
    let svcs = services(3, 50);
    s.update(json!({}), svcs.clone());
    assert_eq!(s.r#gen(), 2);
    s.update(json!({}), svcs.clone());
    assert_eq!(s.r#gen(), 2, "same content, same gen");
    let mut changed = svcs.clone();
    changed.insert("svc000".into(), json!(1));
    changed.remove("svc001");
    changed.insert("new".into(), json!(2));
    s.update(json!({}), changed.clone());
    assert_eq!(s.r#gen(), 3, "several changes, one bump");
    s.update(json!({"x": 1}), changed);
    assert_eq!(s.r#gen(), 4, "the monitor counts too");
}

#[test]
fn split_snapshot_parts() {
    let (s, parts) = split_sender(2_000, 6, 30);
    let n = parts.len();
    let mut seen = BTreeSet::new();
    for (i, p) in parts.iter().enumerate() {
        assert!(json_len(p) <= 2_000);
        assert_eq!(field(p, "gen"), &json!(s.r#gen()));
        assert_eq!(field(p, "since"), &json!(0));
        assert_eq!(field(p, "part"), &json!([i + 1, n]));
        assert_eq!(field(p, "monitor"), &json!({"state": "idle"}));
        assert!(p.get("removed").is_none());
        for name in names(p) {
            assert!(seen.insert(name), "a service in two parts");
        }
    }
    assert_eq!(seen, s.services().keys().cloned().collect());
}

#[test]
fn deltas_are_cumulative_between_full_snapshots() {
    let (mut s, _) = split_sender(2_000, 6, 30);
    let base = s.r#gen();
    let mut svcs = s.services().clone();

    svcs.insert("svc001".into(), blob(100, 9));
    s.update(json!({"state": "idle"}), svcs.clone());
    let p = s.next_payloads();
    assert_eq!(p.len(), 1);
    assert_eq!(field(&p[0], "since"), &json!(base));
    assert_eq!(field(&p[0], "gen"), &json!(s.r#gen()));
    assert!(p[0].get("part").is_none());
    assert_eq!(names(&p[0]), BTreeSet::from(["svc001".to_owned()]));
    assert_eq!(removed(&p[0]), Vec::<String>::new());

    svcs.remove("svc002");
    svcs.insert("svc003".into(), blob(100, 9));
    s.update(json!({"state": "busy"}), svcs.clone());
    let p = s.next_payloads();
    assert_eq!(field(&p[0], "since"), &json!(base));
    assert_eq!(field(&p[0], "monitor"), &json!({"state": "busy"}));
    assert_eq!(
        names(&p[0]),
        BTreeSet::from(["svc001".to_owned(), "svc003".to_owned()])
    );
    assert_eq!(removed(&p[0]), vec!["svc002".to_owned()]);

    // Beats 4 to 6 after the snapshot are still deltas; the 6th is a full snapshot again.
    for _ in 3..6 {
        let p = s.next_payloads();
        assert_eq!(field(&p[0], "since"), &json!(base));
        assert_eq!(removed(&p[0]), vec!["svc002".to_owned()]);
    }
    let full = s.next_payloads();
    assert!(full.len() > 1);
    assert!(full.iter().all(|p| field(p, "since") == &json!(0)));
    // Tombstones went with that snapshot; the next delta is against it and empty.
    let p = s.next_payloads();
    assert_eq!(field(&p[0], "since"), &json!(s.r#gen()));
    assert!(names(&p[0]).is_empty());
    assert!(removed(&p[0]).is_empty());
}

#[test]
fn readded_service_is_changed_not_removed() {
    let (mut s, _) = split_sender(2_000, 6, 30);
    let mut svcs = s.services().clone();
    let old = svcs.remove("svc004").unwrap_or_default();
    s.update(json!({"state": "idle"}), svcs.clone());
    assert_eq!(removed(&s.next_payloads()[0]), vec!["svc004".to_owned()]);
    svcs.insert("svc004".into(), old);
    s.update(json!({"state": "idle"}), svcs);
    let p = s.next_payloads();
    assert!(removed(&p[0]).is_empty());
    assert!(names(&p[0]).contains("svc004"));
}

#[test]
fn delta_too_big_falls_back_to_full_snapshot() {
    let (mut s, _) = split_sender(2_000, 6, 30);
    let svcs: Map<String, Value> = s
        .services()
        .keys()
        .map(|k| (k.clone(), blob(200, 25)))
        .collect();
    s.update(json!({"state": "idle"}), svcs);
    let p = s.next_payloads();
    assert!(p.len() > 1);
    assert!(p.iter().all(|p| json_len(p) <= 2_000));
    assert!(p.iter().all(|p| field(p, "gen") == &json!(s.r#gen())));
    assert_eq!(field(&p[0], "part"), &json!([1, p.len()]));
}

#[test]
fn back_to_single_datagram_when_content_shrinks() {
    let (mut s, _) = split_sender(2_000, 6, 30);
    s.update(json!({}), services(2, 50));
    let p = s.next_payloads();
    assert_eq!(p.len(), 1);
    assert!(p[0].get("part").is_none());
    assert_eq!(field(&p[0], "since"), &json!(0));
    assert_eq!(field(&p[0], "services").as_object(), Some(s.services()));
}

#[test]
fn oversize_service_is_left_out_and_reported_once() {
    let mut s = HbSender::new(2_000, 6);
    let mut svcs = services(3, 100);
    svcs.insert("huge".into(), blob(3_000, 0));
    s.update(json!({}), svcs.clone());
    assert_eq!(s.oversize(), vec!["huge".to_owned()]);
    assert_eq!(s.take_new_oversize(), vec!["huge".to_owned()]);
    assert!(s.take_new_oversize().is_empty(), "reported once");
    assert!(!s.services().contains_key("huge"));
    let p = s.next_payloads();
    assert_eq!(p.len(), 1);
    assert!(!names(&p[0]).contains("huge"));

    let r#gen = s.r#gen();
    svcs.insert("huge".into(), blob(3_001, 0));
    s.update(json!({}), svcs.clone());
    assert_eq!(s.r#gen(), r#gen, "what is sent did not change");
    assert!(s.take_new_oversize().is_empty());

    svcs.insert("huge".into(), blob(300, 0));
    s.update(json!({}), svcs);
    assert!(s.oversize().is_empty());
    assert!(names(&s.next_payloads()[0]).contains("huge"));
}

#[test]
fn monitor_too_big_sends_nothing() {
    let mut s = HbSender::new(500, 6);
    s.update(blob(600, 0), services(2, 50));
    assert!(s.monitor_oversize());
    assert!(s.next_payloads().is_empty());
    assert_eq!(s.oversize().len(), 2);
}

#[test]
fn boot_is_sent_only_when_set() {
    let mut s = HbSender::default().with_boot(1_700_000_000_000);
    let p = s.next_payloads();
    assert_eq!(field(&p[0], "boot"), &json!(1_700_000_000_000u64));
    let p = HbSender::default().next_payloads();
    assert!(p[0].get("boot").is_none());
}

#[test]
fn more_than_max_parts_leaves_the_rest_out() {
    // One service per part at this size: 1_100 services would need 1_100 parts.
    let mut s = HbSender::new(300, 6);
    s.update(json!({}), services(MAX_PARTS + 76, 150));
    assert_eq!(s.oversize().len(), 76);
    let parts = s.next_payloads();
    assert_eq!(parts.len(), MAX_PARTS);
    assert!(parts.iter().all(|p| json_len(p) <= 300));
    let mut v = HbView::new();
    apply_all(&mut v, &parts);
    assert!(v.is_synced());
    assert_eq!(&v.services_json(), s.services());
}

// ---- receiver ----

fn full(g: u64, monitor: Value, svcs: Value) -> Value {
    json!({"gen": g, "since": 0, "monitor": monitor, "services": svcs})
}

fn part(g: u64, i: usize, n: usize, svcs: Value) -> Value {
    json!({"gen": g, "since": 0, "part": [i, n], "monitor": {"g": g}, "services": svcs})
}

fn delta(g: u64, since: u64, svcs: Value, removed: &[&str]) -> Value {
    json!({"gen": g, "since": since, "monitor": {"g": g}, "services": svcs, "removed": removed})
}

#[test]
fn view_full_snapshot_replaces_everything() {
    let mut v = HbView::new();
    assert!(!v.is_synced());
    assert_eq!(
        v.apply_value(&full(3, json!({"g": 3}), json!({"a": 1, "b": 2}))),
        Ok(Applied::Full)
    );
    assert!(v.is_synced());
    assert_eq!((v.r#gen(), v.base_gen()), (3, 3));
    assert_eq!(&v.monitor_json(), &json!({"g": 3}));
    assert_eq!(
        v.apply_value(&full(4, json!({"g": 4}), json!({"c": 3}))),
        Ok(Applied::Full)
    );
    assert_eq!(Value::Object(v.services_json()), json!({"c": 3}));
    assert_eq!(&v.monitor_json(), &json!({"g": 4}));
}

#[test]
fn view_assembles_parts_in_any_order() {
    let mut v = HbView::new();
    v.apply_value(&full(2, json!({}), json!({"old": 0}))).ok();
    assert_eq!(
        v.apply_value(&part(5, 3, 3, json!({"c": 3}))),
        Ok(Applied::Partial {
            received: 1,
            count: 3
        })
    );
    assert!(!v.is_synced(), "heard of r#gen 5, services still at 2");
    assert_eq!(&v.monitor_json(), &json!({"g": 5}));
    assert_eq!(Value::Object(v.services_json()), json!({"old": 0}));
    assert_eq!(
        v.apply_value(&part(5, 1, 3, json!({"a": 1}))),
        Ok(Applied::Partial {
            received: 2,
            count: 3
        })
    );
    assert_eq!(
        v.apply_value(&part(5, 1, 3, json!({"a": 1}))),
        Ok(Applied::Partial {
            received: 2,
            count: 3
        }),
        "a duplicate part changes nothing"
    );
    assert_eq!(
        v.apply_value(&part(5, 2, 3, json!({"b": 2}))),
        Ok(Applied::Full)
    );
    assert_eq!(
        Value::Object(v.services_json()),
        json!({"a": 1, "b": 2, "c": 3})
    );
    assert_eq!(v.base_gen(), 5);
    assert!(v.is_synced());
    assert_eq!(
        v.apply_value(&part(5, 2, 3, json!({"b": 2}))),
        Ok(Applied::Stale)
    );
}

#[test]
fn view_part_one_of_one_is_a_single_snapshot() {
    let mut v = HbView::new();
    assert_eq!(
        v.apply_value(&part(7, 1, 1, json!({"a": 1}))),
        Ok(Applied::Full)
    );
    assert!(v.is_synced());
}

#[test]
fn view_newer_assembly_drops_older() {
    let mut v = HbView::new();
    v.apply_value(&part(5, 1, 2, json!({"a": 1}))).ok();
    v.apply_value(&part(6, 1, 2, json!({"a": 2}))).ok();
    assert_eq!(
        v.apply_value(&part(5, 2, 2, json!({"b": 1}))),
        Ok(Applied::Stale)
    );
    assert_eq!(
        v.apply_value(&part(6, 2, 2, json!({"b": 2}))),
        Ok(Applied::Full)
    );
    assert_eq!(Value::Object(v.services_json()), json!({"a": 2, "b": 2}));
}

#[test]
fn view_delta_applies_only_onto_its_base() {
    let mut v = HbView::new();
    v.apply_value(&full(3, json!({}), json!({"a": 1, "b": 2, "c": 3})))
        .ok();
    assert_eq!(
        v.apply_value(&delta(4, 3, json!({"a": 10}), &["b"])),
        Ok(Applied::Delta)
    );
    assert_eq!(Value::Object(v.services_json()), json!({"a": 10, "c": 3}));
    assert!(v.is_synced());
    // Cumulative: the next delta repeats the earlier changes.
    assert_eq!(
        v.apply_value(&delta(5, 3, json!({"a": 10, "d": 4}), &["b"])),
        Ok(Applied::Delta)
    );
    assert_eq!(
        Value::Object(v.services_json()),
        json!({"a": 10, "c": 3, "d": 4})
    );
    // Against a snapshot this view never got: a gap, services kept, monitor taken.
    assert_eq!(
        v.apply_value(&delta(9, 8, json!({"e": 5}), &[])),
        Ok(Applied::Gap)
    );
    assert!(!v.is_synced());
    assert_eq!(v.r#gen(), 9);
    assert_eq!(&v.monitor_json(), &json!({"g": 9}));
    assert_eq!(
        Value::Object(v.services_json()),
        json!({"a": 10, "c": 3, "d": 4})
    );
    assert_eq!(
        v.apply_value(&full(10, json!({"g": 10}), json!({"z": 0}))),
        Ok(Applied::Full)
    );
    assert!(v.is_synced());
}

#[test]
fn view_ignores_stale_payloads() {
    let mut v = HbView::new();
    v.apply_value(&full(3, json!({"g": 3}), json!({"a": 1})))
        .ok();
    v.apply_value(&delta(6, 3, json!({"a": 6}), &[])).ok();
    let before = v.clone();
    assert_eq!(
        v.apply_value(&delta(5, 3, json!({"a": 5}), &[])),
        Ok(Applied::Stale)
    );
    assert_eq!(
        v.apply_value(&full(2, json!({"g": 2}), json!({}))),
        Ok(Applied::Stale)
    );
    assert_eq!(
        v.apply_value(&full(3, json!({"g": 3}), json!({"a": 1}))),
        Ok(Applied::Stale)
    );
    assert_eq!(
        v.apply_value(&delta(6, 1, json!({}), &[])),
        Ok(Applied::Stale)
    );
    assert_eq!(v, before);
}

#[test]
fn view_delta_ahead_of_its_snapshot_waits_for_it() {
    let mut v = HbView::new();
    v.apply_value(&full(2, json!({}), json!({"old": 0}))).ok();
    v.apply_value(&part(5, 1, 2, json!({"a": 1}))).ok();
    // The next beat's delta overtakes the last part.
    assert_eq!(
        v.apply_value(&delta(6, 5, json!({"a": 2}), &["b"])),
        Ok(Applied::Gap)
    );
    assert_eq!(
        v.apply_value(&part(5, 2, 2, json!({"b": 1, "c": 1}))),
        Ok(Applied::Full)
    );
    assert!(v.is_synced());
    assert_eq!(v.r#gen(), 6);
    assert_eq!(Value::Object(v.services_json()), json!({"a": 2, "c": 1}));
}

#[test]
fn view_restarted_peer_starts_over() {
    let mut v = HbView::new();
    let mut p = full(10, json!({}), json!({"a": 1}));
    p["boot"] = json!(5);
    v.apply_value(&p).ok();
    let mut again = full(1, json!({}), json!({"b": 1}));
    again["boot"] = json!(6);
    assert_eq!(v.apply_value(&again), Ok(Applied::Full));
    assert_eq!((v.boot(), v.r#gen()), (6, 1));
    assert_eq!(Value::Object(v.services_json()), json!({"b": 1}));
    assert_eq!(
        v.apply_value(&p),
        Ok(Applied::Stale),
        "the previous life is over"
    );
}

#[test]
fn view_rejects_malformed_payloads_without_changing() {
    let mut v = HbView::new();
    v.apply_value(&part(5, 1, 2, json!({"a": 1}))).ok();
    let before = v.clone();
    let cases = [
        (json!([1]), HbError::NotAnObject),
        (
            json!({"since": 0, "monitor": {}, "services": {}}),
            HbError::Missing("gen"),
        ),
        (
            json!({"gen": 1, "since": 0, "services": {}}),
            HbError::Missing("monitor"),
        ),
        (
            json!({"gen": 1, "since": 0, "monitor": {}}),
            HbError::Missing("services"),
        ),
        (
            json!({"gen": "1", "since": 0, "monitor": {}, "services": {}}),
            HbError::BadType("gen"),
        ),
        (
            json!({"gen": -1, "since": 0, "monitor": {}, "services": {}}),
            HbError::BadType("gen"),
        ),
        (
            json!({"gen": 1.5, "since": 0, "monitor": {}, "services": {}}),
            HbError::BadType("gen"),
        ),
        (
            json!({"gen": 1, "since": 0, "monitor": {}, "services": []}),
            HbError::BadType("services"),
        ),
        (
            json!({"gen": 0, "since": 0, "monitor": {}, "services": {}}),
            HbError::ZeroGen,
        ),
        (
            json!({"gen": 1, "since": 0, "boot": "x", "monitor": {}, "services": {}}),
            HbError::BadType("boot"),
        ),
        (
            json!({"gen": 1, "since": 2, "monitor": {}, "services": {}}),
            HbError::SinceAfterGen {
                since: 2,
                generation: 1,
            },
        ),
        (
            json!({"gen": 3, "since": 2, "monitor": {}, "services": {}, "removed": [1]}),
            HbError::BadType("removed"),
        ),
        (
            json!({"gen": 3, "since": 2, "monitor": {}, "services": {}, "removed": "a"}),
            HbError::BadType("removed"),
        ),
        (
            json!({"gen": 3, "since": 0, "monitor": {}, "services": {}, "removed": []}),
            HbError::RemovedInFull,
        ),
        (
            json!({"gen": 3, "since": 2, "part": [1, 2], "monitor": {}, "services": {}}),
            HbError::PartInDelta,
        ),
        (
            json!({"gen": 3, "since": 0, "part": [1], "monitor": {}, "services": {}}),
            HbError::BadType("part"),
        ),
        (
            json!({"gen": 3, "since": 0, "part": [1, "2"], "monitor": {}, "services": {}}),
            HbError::BadType("part"),
        ),
        (
            json!({"gen": 3, "since": 0, "part": [0, 2], "monitor": {}, "services": {}}),
            HbError::PartOutOfRange { index: 0, count: 2 },
        ),
        (
            json!({"gen": 3, "since": 0, "part": [3, 2], "monitor": {}, "services": {}}),
            HbError::PartOutOfRange { index: 3, count: 2 },
        ),
        (
            json!({"gen": 3, "since": 0, "part": [1, 0], "monitor": {}, "services": {}}),
            HbError::PartOutOfRange { index: 1, count: 0 },
        ),
        (
            json!({"gen": 3, "since": 0, "part": [1, 100_000], "monitor": {}, "services": {}}),
            HbError::PartOutOfRange {
                index: 1,
                count: 100_000,
            },
        ),
        (
            part(5, 2, 3, json!({})),
            HbError::PartCountChanged {
                generation: 5,
                was: 2,
                now: 3,
            },
        ),
    ];
    for (payload, err) in cases {
        assert_eq!(v.apply_value(&payload), Err(err), "{payload}");
        assert_eq!(v, before, "{payload}");
    }
}

// ---- properties ----

/// One step of the sender's content.
#[derive(Clone, Debug)]
enum Op {
    Set { name: u8, size: usize, fill: u8 },
    Remove(u8),
    Monitor(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0u8..40, 10usize..400, any::<u8>())
            .prop_map(|(name, size, fill)| Op::Set { name, size, fill }),
        // Now and then a service too big for any datagram.
        1 => (0u8..40).prop_map(|name| Op::Set { name, size: 3_000, fill: 0 }),
        5 => (0u8..40).prop_map(Op::Remove),
        2 => (0usize..150).prop_map(Op::Monitor),
    ]
}

/// Per datagram of a beat: (drop roll, delay roll, order key).
type Fate = (u8, u8, u8);

#[derive(Clone, Debug)]
struct Beat {
    ops: Vec<Op>,
    noisy: bool,
    fates: Vec<Fate>,
}

fn beat() -> impl Strategy<Value = Beat> {
    (
        prop::collection::vec(op(), 0..6),
        prop::bool::weighted(0.35),
        prop::collection::vec(any::<Fate>(), 16),
    )
        .prop_map(|(ops, noisy, fates)| Beat { ops, noisy, fates })
}

fn apply_op(op: &Op, content: &mut Map<String, Value>, monitor: &mut Value) {
    match *op {
        Op::Set { name, size, fill } => {
            content.insert(format!("service-{name}"), blob(size, fill));
        }
        Op::Remove(name) => {
            content.remove(&format!("service-{name}"));
        }
        Op::Monitor(size) => *monitor = json!({"state": blob(size, 1)}),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A sender and a receiver behind a link that drops datagrams, reorders them within a
    /// beat, and delays some behind the next beat's.
    #[test]
    fn lossy_reordering_link(
        initial in prop::collection::vec(op(), 0..40),
        beats in prop::collection::vec(beat(), 1..40),
        full_every in 1u32..=6,
        max in prop_oneof![Just(1_200usize), Just(2_000), Just(3_000)],
    ) {
        let mut s = HbSender::new(max, full_every);
        let mut v = HbView::new();
        let mut content = Map::new();
        let mut monitor = json!({});
        for op in &initial {
            apply_op(op, &mut content, &mut monitor);
        }
        // What the sender's content was at each generation.
        let mut history: HashMap<u64, (Value, Map<String, Value>)> = HashMap::new();
        history.insert(s.r#gen(), (s.monitor().clone(), s.services().clone()));
        let mut delayed: Vec<Value> = Vec::new();
        // Per beat: was any of its datagrams dropped.
        let mut lossy: Vec<bool> = Vec::new();

        for b in &beats {
            for op in &b.ops {
                apply_op(op, &mut content, &mut monitor);
            }
            s.update(monitor.clone(), content.clone());
            history.insert(s.r#gen(), (s.monitor().clone(), s.services().clone()));
            let payloads = s.next_payloads();
            prop_assert!(!payloads.is_empty());

            let mut now: Vec<(u8, Value)> = Vec::new();
            let mut later = Vec::new();
            let mut lost = false;
            for (i, p) in payloads.into_iter().enumerate() {
                prop_assert!(json_len(&p) <= max, "{} > {max}", json_len(&p));
                let (drop, delay, key) = b.fates[i % b.fates.len()];
                if b.noisy && drop < 80 {
                    lost = true;
                } else if b.noisy && delay < 80 {
                    later.push(p);
                } else {
                    now.push((key, p));
                }
            }
            now.sort_by_key(|&(key, _)| key);
            let mut arriving: Vec<Value> = now.into_iter().map(|(_, p)| p).collect();
            // Last beat's delayed datagrams land anywhere among this beat's.
            for (j, p) in delayed.drain(..).enumerate() {
                let at = usize::from(b.fates[(j + 7) % b.fates.len()].2) % (arriving.len() + 1);
                arriving.insert(at, p);
            }
            let beat_delivered = !lost && later.is_empty();
            delayed = later;
            lossy.push(lost);

            for p in &arriving {
                prop_assert!(v.apply_value(p).is_ok(), "{p}");
                prop_assert_eq!(v.check_invariants(), Ok(()));
            }

            // The monitor is always the sender's at the gen the view reports.
            if let Some((m, svcs)) = history.get(&v.r#gen()) {
                prop_assert_eq!(&v.monitor_json(), m);
                if v.is_synced() {
                    prop_assert_eq!(&v.services_json(), svcs);
                }
            }
            if v.is_synced() && beat_delivered {
                prop_assert_eq!(v.r#gen(), s.r#gen());
                prop_assert_eq!(&v.services_json(), s.services());
            }
            // A full cycle without loss (delays inside it allowed, none out of its last beat).
            let cycle = full_every as usize;
            if beat_delivered && lossy.len() >= cycle && lossy.iter().rev().take(cycle).all(|l| !l) {
                prop_assert!(v.is_synced());
                prop_assert_eq!(v.r#gen(), s.r#gen());
                prop_assert_eq!(&v.monitor_json(), s.monitor());
                prop_assert_eq!(&v.services_json(), s.services());
            }
        }
    }

    /// Whatever the content and the datagram size, every payload fits and one beat's
    /// payloads carry every service the sender reports, each once.
    #[test]
    fn payloads_fit_and_cover(
        sizes in prop::collection::vec(10usize..900, 0..60),
        monitor_size in 0usize..300,
        max in 250usize..4_000,
    ) {
        let svcs: Map<String, Value> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("s{i}"), blob(n, i as u8)))
            .collect();
        let mut s = HbSender::new(max, 3);
        s.update(json!({"m": blob(monitor_size, 0)}), svcs);
        let payloads = s.next_payloads();
        prop_assert_eq!(payloads.is_empty(), s.monitor_oversize());
        let mut seen = BTreeSet::new();
        for p in &payloads {
            prop_assert!(json_len(p) <= max);
            for name in names(p) {
                prop_assert!(seen.insert(name));
            }
        }
        if !payloads.is_empty() {
            prop_assert_eq!(seen, s.services().keys().cloned().collect::<BTreeSet<_>>());
            prop_assert_eq!(s.services().len() + s.oversize().len(), sizes.len());
        }
    }

    /// The receiver takes anything: no panic, errors change nothing, invariants hold.
    #[test]
    fn view_survives_arbitrary_json(payloads in prop::collection::vec(any_payload(), 1..30)) {
        let mut v = HbView::new();
        for p in &payloads {
            let before = v.clone();
            if v.apply_value(p).is_err() {
                prop_assert_eq!(&v, &before);
            }
            prop_assert_eq!(v.check_invariants(), Ok(()));
            if v.is_synced() {
                prop_assert!(v.base_gen() > 0);
            }
        }
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..8).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::from),
    ];
    let key = prop_oneof![
        Just("gen".to_owned()),
        Just("since".to_owned()),
        Just("part".to_owned()),
        Just("boot".to_owned()),
        Just("monitor".to_owned()),
        Just("services".to_owned()),
        Just("removed".to_owned()),
        "[a-z]{0,3}",
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Arbitrary JSON, and payloads close enough to valid ones to reach the deeper paths.
fn any_payload() -> impl Strategy<Value = Value> {
    let small = 0u64..8;
    let near = (
        small.clone(),
        small.clone(),
        prop::option::of((0u64..4, 0u64..4)),
        prop::option::of(0u64..3),
        prop::collection::btree_map("[a-c]", 0u8..3, 0..4),
        prop::option::of(prop::collection::vec("[a-c]", 0..3)),
    )
        .prop_map(|(g, since, part, boot, svcs, removed)| {
            let mut p = json!({"gen": g, "since": since, "monitor": {"g": g}, "services": svcs});
            if let Some((i, n)) = part {
                p["part"] = json!([i, n]);
            }
            if let Some(b) = boot {
                p["boot"] = json!(b);
            }
            if let Some(r) = removed {
                p["removed"] = json!(r);
            }
            p
        });
    prop_oneof![1 => any_json(), 3 => near]
}

/// A snapshot whose services list is shared with the one the view installed (`parse_after`)
/// swaps values in place; once a delta changed the names, the same list is compared again.
#[test]
fn view_with_shared_service_lists_follows_deltas() {
    let first = Heartbeat::parse(br#"{"gen":2,"monitor":{},"services":{"a":1,"b":2}}"#).unwrap();
    let second = Heartbeat::parse_after(
        br#"{"gen":3,"monitor":{},"services":{"a":1,"b":2}}"#,
        Some(&first),
    )
    .unwrap();
    let third = Heartbeat::parse_after(
        br#"{"gen":5,"monitor":{},"services":{"a":1,"b":2}}"#,
        Some(&second),
    )
    .unwrap();
    let names = |v: &HbView| v.services().keys().cloned().collect::<Vec<_>>();
    let mut view = HbView::new();
    assert_eq!(view.apply(first).unwrap(), Applied::Full);
    assert_eq!(view.apply(second).unwrap(), Applied::Full);
    assert_eq!(names(&view), ["a", "b"]);
    let delta =
        Heartbeat::parse(br#"{"gen":4,"since":3,"monitor":{},"services":{"c":3},"removed":["b"]}"#)
            .unwrap();
    assert_eq!(view.apply(delta).unwrap(), Applied::Delta);
    assert_eq!(names(&view), ["a", "c"]);
    assert_eq!(view.apply(third).unwrap(), Applied::Full);
    assert_eq!(names(&view), ["a", "b"]);
    assert_eq!(view.services()["b"].as_str(), "2");
    view.check_invariants().unwrap();
}
