//! Heartbeat payloads (kind 3), read in one pass of the JSON scanner: the fields that steer
//! `crate::hb::HbView` (`gen`, `since`, `boot`, `part`, `removed`) are decoded and checked;
//! the node monitor and each service's value stay raw JSON text, validated, in one shared
//! copy of the payload. Nothing builds a document tree per heartbeat: a peer's data is only
//! turned into `serde_json::Value`s when someone reads it (`daemon status`, orchestration).
//!
//! The fields are described in `crate::hb`. PROTOCOL.md's example heartbeat has no `since`:
//! an absent `since` is 0, a full snapshot.

use std::cell::Cell;
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use crate::wire::json::{Fail, JsonError, Peek, Scalar, Scanner, Str};

/// Most parts in one split snapshot. Bounds what a receiver holds for an unfinished assembly
/// (about 60 MB at `crate::hb::MAX_PAYLOAD`, far beyond any real node's services).
pub const MAX_PARTS: usize = 1024;

/// Why a payload is not a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HbError {
    #[error("heartbeat: malformed JSON: {0}")]
    Json(JsonError),
    #[error("heartbeat payload is not a JSON object")]
    NotAnObject,
    #[error("heartbeat: missing {0:?}")]
    Missing(&'static str),
    #[error("heartbeat: {0:?} has the wrong type")]
    BadType(&'static str),
    #[error("heartbeat: {0:?} appears twice")]
    DuplicateField(&'static str),
    #[error("heartbeat: service {0:?} appears twice")]
    DuplicateService(String),
    #[error("heartbeat: \"gen\" must be at least 1")]
    ZeroGen,
    #[error("heartbeat: \"since\" {since} is after \"gen\" {generation}")]
    SinceAfterGen { since: u64, generation: u64 },
    #[error("heartbeat: part {index} of {count} is out of range (1 ..= count ..= {MAX_PARTS})")]
    PartOutOfRange { index: u64, count: u64 },
    #[error("heartbeat: gen {generation} was in {was} parts, now {now}")]
    PartCountChanged {
        generation: u64,
        was: usize,
        now: usize,
    },
    #[error("heartbeat: a delta (\"since\" > 0) has a \"part\"")]
    PartInDelta,
    #[error("heartbeat: a full snapshot (\"since\" 0) has \"removed\"")]
    RemovedInFull,
}

impl From<JsonError> for HbError {
    fn from(e: JsonError) -> Self {
        HbError::Json(e)
    }
}

/// A JSON value kept as its validated text, sharing the payload it came in.
#[derive(Clone)]
pub struct RawJson {
    text: Arc<str>,
    start: u32,
    end: u32,
}

static NULL: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("null"));

impl Default for RawJson {
    /// `null`.
    fn default() -> Self {
        RawJson {
            text: NULL.clone(),
            start: 0,
            end: 4,
        }
    }
}

impl RawJson {
    pub fn as_str(&self) -> &str {
        // The range was cut at value boundaries of this text, which are char boundaries.
        self.text
            .get(self.start as usize..self.end as usize)
            .unwrap_or("null")
    }

    /// The value as a document tree.
    pub fn to_value(&self) -> serde_json::Value {
        // The text was accepted by the scanner, which accepts what serde_json accepts.
        serde_json::from_str(self.as_str()).unwrap_or(serde_json::Value::Null)
    }

    /// The string at `key` of this object, read without building a document (`None` if this
    /// is not an object, or `key` is missing or not a string).
    pub fn get_str(&self, key: &str) -> Option<String> {
        let mut s = Scanner::new(self.as_str().as_bytes());
        if s.peek().ok()? != Peek::Object {
            return None;
        }
        let mut seq = s.begin_object().ok()?;
        while let Some(k) = s.next_key(&mut seq).ok()? {
            if k.eq_str(key) {
                return match s.scalar().ok()? {
                    Scalar::Str(v) => Some(v.value().into_owned()),
                    _ => None,
                };
            }
            s.skip().ok()?;
        }
        None
    }

    /// The strings of the array at `key` of this object, read without building a document
    /// (other elements skipped); `None` if this is not an object, or `key` is missing or not
    /// an array. A repeated key counts by its last value, as in a document.
    pub fn get_strings(&self, key: &str) -> Option<Vec<String>> {
        let mut s = Scanner::new(self.as_str().as_bytes());
        if s.peek().ok()? != Peek::Object {
            return None;
        }
        let mut found = None;
        let mut seq = s.begin_object().ok()?;
        while let Some(k) = s.next_key(&mut seq).ok()? {
            if !k.eq_str(key) {
                s.skip().ok()?;
                continue;
            }
            if s.peek().ok()? != Peek::Array {
                s.skip().ok()?;
                found = None;
                continue;
            }
            let mut list = Vec::new();
            let mut items = s.begin_array().ok()?;
            while s.next_element(&mut items).ok()? {
                if s.peek().ok()? == Peek::String {
                    list.push(s.string().ok()?.value().into_owned());
                } else {
                    s.skip().ok()?;
                }
            }
            found = Some(list);
        }
        found
    }

    /// Bytes of the payload this value keeps alive.
    pub fn retained(&self) -> usize {
        self.text.len()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        // A repeated heartbeat shares its payload with the one before it: the same range of
        // the same text is equal without comparing its bytes.
        (Arc::ptr_eq(&self.text, &other.text) && self.start == other.start && self.end == other.end)
            || self.as_str() == other.as_str()
    }
}

impl Eq for RawJson {}

impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service name: a span of the payload, or its unescaped copy when it had escapes.
#[derive(Clone, Debug)]
enum Name {
    Span(u32, u32),
    Owned(Box<str>),
}

impl Name {
    /// The name's bytes, `text` being the payload it was read from.
    fn bytes<'a>(&'a self, text: &'a [u8]) -> &'a [u8] {
        match self {
            Name::Span(s, e) => text.get(*s as usize..*e as usize).unwrap_or_default(),
            Name::Owned(n) => n.as_bytes(),
        }
    }
}

/// A service: its name and its value's span of the payload.
type Entry = (Name, (u32, u32));

/// The same bytes found at another offset: an offset of the text at `from`, moved to `to`.
/// Both are offsets of one payload (less than 4 GiB): no overflow.
fn moved(at: u32, from: u32, to: u32) -> u32 {
    at.wrapping_sub(from).wrapping_add(to)
}

fn moved_entry((name, (start, end)): &Entry, from: u32, to: u32) -> Entry {
    let name = match name {
        Name::Span(s, e) => Name::Span(moved(*s, from, to), moved(*e, from, to)),
        Name::Owned(n) => Name::Owned(n.clone()),
    };
    (name, (moved(*start, from, to), moved(*end, from, to)))
}

thread_local! {
    /// The services list being read, kept between heartbeats: the list a heartbeat keeps is
    /// then its one allocation, made at the right size.
    static ENTRIES: Cell<Vec<Entry>> = const { Cell::new(Vec::new()) };
}

/// A heartbeat payload, parsed and checked on its own (what the receiving view holds is
/// checked by `HbView::apply`).
#[derive(Clone)]
pub struct Heartbeat {
    pub r#gen: u64,
    /// 0: the whole content (or one part of it); F: the changes since the full content of F.
    pub since: u64,
    /// The sender's incarnation (0 when it sends none).
    pub boot: u64,
    /// `(i, n)`: part i of a full content split over n datagrams, 1 <= i <= n <= MAX_PARTS.
    pub part: Option<(usize, usize)>,
    /// Services removed since `since` (deltas only).
    pub removed: Vec<String>,
    text: Arc<str>,
    monitor: (u32, u32),
    /// Shared, so that a heartbeat is cloned without allocating (the gate hands out a
    /// repeat of a payload it already read as a clone of it), and with the next heartbeat
    /// when its services are the same text at the same offset.
    services: Arc<[Entry]>,
    /// The span of the whole `services` object.
    services_block: (u32, u32),
    has_removed: bool,
}

impl Default for Heartbeat {
    /// Generation 1 of a node with a `null` monitor and no service.
    fn default() -> Self {
        Heartbeat {
            r#gen: 1,
            since: 0,
            boot: 0,
            part: None,
            removed: Vec::new(),
            text: NULL.clone(),
            monitor: (0, 4),
            services: Arc::new([]),
            services_block: (0, 0),
            has_removed: false,
        }
    }
}

impl Heartbeat {
    /// The node monitor's JSON.
    pub fn monitor(&self) -> RawJson {
        self.raw(self.monitor)
    }

    /// Services in payload order: name and JSON.
    pub fn services(&self) -> impl ExactSizeIterator<Item = (&str, RawJson)> + '_ {
        self.services
            .iter()
            .map(|(name, value)| (self.name(name), self.raw(*value)))
    }

    /// Service names in payload order.
    pub fn service_names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.services.iter().map(|(name, _)| self.name(name))
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The payload this heartbeat was read from.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn name<'a>(&'a self, name: &'a Name) -> &'a str {
        match name {
            // Spans are cut at the quotes of a string the scanner accepted, in a text that
            // is UTF-8: `get` checks the two boundaries, not the bytes again (the heartbeat
            // shard reads every name of every heartbeat).
            Name::Span(s, e) => self.text.get(*s as usize..*e as usize).unwrap_or_default(),
            Name::Owned(n) => n,
        }
    }

    fn raw(&self, (start, end): (u32, u32)) -> RawJson {
        RawJson {
            text: self.text.clone(),
            start,
            end,
        }
    }

    /// The payload as a document tree, with the fields as sent (for tests and tools).
    pub fn to_value(&self) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        o.insert("gen".into(), self.r#gen.into());
        o.insert("since".into(), self.since.into());
        if self.boot != 0 {
            o.insert("boot".into(), self.boot.into());
        }
        if let Some((i, n)) = self.part {
            o.insert("part".into(), serde_json::json!([i, n]));
        }
        o.insert("monitor".into(), self.monitor().to_value());
        let services = self
            .services()
            .map(|(n, v)| (n.to_string(), v.to_value()))
            .collect();
        o.insert("services".into(), serde_json::Value::Object(services));
        if self.has_removed {
            o.insert("removed".into(), serde_json::json!(self.removed));
        }
        serde_json::Value::Object(o)
    }

    /// Reads and checks one payload.
    pub fn parse(payload: &[u8]) -> Result<Heartbeat, HbError> {
        Self::parse_after(payload, None)
    }

    /// `parse`, knowing the sender's last heartbeat: the monitor and the services, whole
    /// or each, whose text is the same as in `last` are not validated again (the same
    /// outcome, whatever the payload: see `Scanner::skip_span_known`). A node's content
    /// changes a service or two at a time, and its generation at each change.
    pub fn parse_after(payload: &[u8], last: Option<&Heartbeat>) -> Result<Heartbeat, HbError> {
        let mut s = Scanner::new(payload);
        let fields = scan(&mut s, last).map_err(|Fail| HbError::Json(s.error()))?;
        let Fields {
            r#gen,
            since,
            boot,
            monitor,
            services,
            part,
            removed,
            duplicate,
        } = fields.ok_or(HbError::NotAnObject)?;
        if let Some(field) = duplicate {
            return Err(HbError::DuplicateField(field));
        }
        let r#gen = match r#gen {
            None => return Err(HbError::Missing("gen")),
            Some(Scalar::Number(Some(g))) => g,
            Some(_) => return Err(HbError::BadType("gen")),
        };
        if r#gen == 0 {
            return Err(HbError::ZeroGen);
        }
        let since = match since {
            None => 0,
            Some(Scalar::Number(Some(s))) => s,
            Some(_) => return Err(HbError::BadType("since")),
        };
        let boot = match boot {
            None => 0,
            Some(Scalar::Number(Some(b))) => b,
            Some(_) => return Err(HbError::BadType("boot")),
        };
        let monitor = monitor.ok_or(HbError::Missing("monitor"))?;
        let services = match services {
            None => return Err(HbError::Missing("services")),
            Some(Got::Wrong) => return Err(HbError::BadType("services")),
            Some(Got::Right(s)) => s,
        };
        if let Some(name) = services.duplicate {
            return Err(HbError::DuplicateService(name));
        }
        let part = match part {
            None => None,
            Some(Got::Wrong) => return Err(HbError::BadType("part")),
            Some(Got::Right((index, count))) => {
                let out_of_range = HbError::PartOutOfRange { index, count };
                let i = usize::try_from(index).map_err(|_| out_of_range.clone())?;
                let n = usize::try_from(count).map_err(|_| out_of_range.clone())?;
                if i == 0 || i > n || n > MAX_PARTS {
                    return Err(out_of_range);
                }
                Some((i, n))
            }
        };
        let (removed, has_removed) = match removed {
            None => (Vec::new(), false),
            Some(Got::Wrong) => return Err(HbError::BadType("removed")),
            Some(Got::Right(r)) => (r, true),
        };
        if since == 0 {
            if has_removed {
                return Err(HbError::RemovedInFull);
            }
        } else {
            if part.is_some() {
                return Err(HbError::PartInDelta);
            }
            if since > r#gen {
                return Err(HbError::SinceAfterGen {
                    since,
                    generation: r#gen,
                });
            }
        }
        // A part `[1, 1]` is the whole content.
        let part = part.filter(|&(_, n)| n > 1);
        debug_assert!(std::str::from_utf8(payload).is_ok());
        // SAFETY: the scanner accepted the whole payload, and it accepts UTF-8 only: bytes
        // outside strings are ASCII grammar, strings are ASCII or checked by `from_utf8`.
        let text: Arc<str> = Arc::from(unsafe { std::str::from_utf8_unchecked(payload) });
        Ok(Heartbeat {
            r#gen,
            since,
            boot,
            part,
            removed,
            text,
            monitor,
            services: services.entries,
            services_block: services.block,
            has_removed,
        })
    }
}

/// Which services list a view installed last: a heartbeat carrying the same list (shared
/// with the heartbeat before it when its services' text did not move, `parse_after`) names
/// the same services in the same order, which is then known without comparing them.
#[derive(Clone, Default)]
pub(super) struct ServiceList(Option<Arc<[Entry]>>);

impl ServiceList {
    pub(super) fn of(hb: &Heartbeat) -> Self {
        ServiceList(Some(hb.services.clone()))
    }

    /// True if `hb` carries this very list.
    pub(super) fn is_of(&self, hb: &Heartbeat) -> bool {
        self.0
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(l, &hb.services))
    }
}

/// A cache of the view, not part of its content: any two are equal.
impl PartialEq for ServiceList {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for ServiceList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceList")
    }
}

impl PartialEq for Heartbeat {
    /// Same fields, same monitor text, same services in the same order.
    fn eq(&self, other: &Self) -> bool {
        self.r#gen == other.r#gen
            && self.since == other.since
            && self.boot == other.boot
            && self.part == other.part
            && self.removed == other.removed
            && self.has_removed == other.has_removed
            && self.monitor() == other.monitor()
            && self.services().eq(other.services())
    }
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("gen", &self.r#gen)
            .field("since", &self.since)
            .field("boot", &self.boot)
            .field("part", &self.part)
            .field("removed", &self.removed)
            .field("monitor", &self.monitor())
            .field("services", &self.services().collect::<Vec<_>>())
            .finish()
    }
}

/// A field of the expected type, or of another.
enum Got<T> {
    Right(T),
    Wrong,
}

struct Services {
    entries: Arc<[Entry]>,
    duplicate: Option<String>,
    block: (u32, u32),
}

/// The top-level fields as read; checked in `Heartbeat::parse`, in a fixed order, once the
/// whole document is known to be JSON.
struct Fields<'b> {
    r#gen: Option<Scalar<'b>>,
    since: Option<Scalar<'b>>,
    boot: Option<Scalar<'b>>,
    monitor: Option<(u32, u32)>,
    services: Option<Got<Services>>,
    part: Option<Got<(u64, u64)>>,
    removed: Option<Got<Vec<String>>>,
    duplicate: Option<&'static str>,
}

fn span(r: Range<usize>) -> (u32, u32) {
    // Payloads are at most a frame (`listener.max_frame` < 4 GiB).
    (r.start as u32, r.end as u32)
}

fn str_span(buf: &[u8], s: &Str<'_>) -> Option<(u32, u32)> {
    let raw = s.as_plain()?;
    let start = raw.as_ptr() as usize - buf.as_ptr() as usize;
    Some(span(start..start + raw.len()))
}

/// The text of `span` in `hb`'s payload (empty if it is not one: never taken as known).
fn text_of(hb: &Heartbeat, (start, end): (u32, u32)) -> &[u8] {
    hb.text
        .as_bytes()
        .get(start as usize..end as usize)
        .unwrap_or_default()
}

/// One pass over the payload: the whole document is validated (but for values known from
/// `last`, see `Heartbeat::parse_after`); `None` if it is not an object.
fn scan<'b>(s: &mut Scanner<'b>, last: Option<&Heartbeat>) -> Result<Option<Fields<'b>>, Fail> {
    if s.peek()? != Peek::Object {
        s.skip()?;
        s.end()?;
        return Ok(None);
    }
    let mut f = Fields {
        r#gen: None,
        since: None,
        boot: None,
        monitor: None,
        services: None,
        part: None,
        removed: None,
        duplicate: None,
    };
    let mut seq = s.begin_object()?;
    while let Some(key) = s.next_key(&mut seq)? {
        let key = key.value();
        let field: &'static str = match &*key {
            "gen" => "gen",
            "since" => "since",
            "boot" => "boot",
            "monitor" => "monitor",
            "services" => "services",
            "part" => "part",
            "removed" => "removed",
            // Unknown fields are room to grow: validated, ignored.
            _ => {
                s.skip()?;
                continue;
            }
        };
        let seen = match field {
            "gen" => f.r#gen.replace(s.scalar()?).is_some(),
            "since" => f.since.replace(s.scalar()?).is_some(),
            "boot" => f.boot.replace(s.scalar()?).is_some(),
            "monitor" => {
                // The monitor is a value of the top-level object in both payloads: the
                // same depth.
                let v = match last {
                    Some(l) => s.skip_span_known(text_of(l, l.monitor))?,
                    None => s.skip_span()?,
                };
                f.monitor.replace(span(v)).is_some()
            }
            "services" => {
                let v = read_services(s, last)?;
                f.services.replace(v).is_some()
            }
            "part" => {
                let v = read_part(s)?;
                f.part.replace(v).is_some()
            }
            _ => {
                let v = read_strings(s)?;
                f.removed.replace(v).is_some()
            }
        };
        if seen && f.duplicate.is_none() {
            f.duplicate = Some(field);
        }
    }
    s.end()?;
    Ok(Some(f))
}

/// The `services` object. Known from `last` (whose services were a valid object of the
/// same depth, without a repeated name): taken whole when its text is the same, its list
/// shared when at the same offset too; else each value the same as `last`'s at the same
/// index is taken without validating it again.
fn read_services(s: &mut Scanner<'_>, last: Option<&Heartbeat>) -> Result<Got<Services>, Fail> {
    if s.peek()? != Peek::Object {
        s.skip()?;
        return Ok(Got::Wrong);
    }
    if let Some(l) = last
        && let Some(block) = s.take_known(text_of(l, l.services_block))
    {
        let (from, to) = (l.services_block.0, span(block.clone()).0);
        let entries = if from == to {
            l.services.clone()
        } else {
            l.services
                .iter()
                .map(|e| moved_entry(e, from, to))
                .collect()
        };
        return Ok(Got::Right(Services {
            entries,
            duplicate: None,
            block: span(block),
        }));
    }
    let buf = s.buffer();
    let start = s.position();
    let mut entries = ENTRIES.take();
    entries.clear();
    let known: &[Entry] = last.map_or(&[], |l| &l.services);
    let mut seq = s.begin_object()?;
    while let Some(key) = s.next_key(&mut seq)? {
        let value = match (last, known.get(entries.len())) {
            (Some(l), Some((_, value))) => s.skip_span_known(text_of(l, *value))?,
            _ => s.skip_span()?,
        };
        let name = match str_span(buf, &key) {
            Some(sp) => Name::Span(sp.0, sp.1),
            None => Name::Owned(key.value().into()),
        };
        entries.push((name, span(value)));
    }
    let block = span(start..s.position());
    let duplicate = repeated_name(&entries, buf);
    let shared = entries.drain(..).collect();
    ENTRIES.set(entries);
    Ok(Got::Right(Services {
        entries: shared,
        duplicate,
        block,
    }))
}

/// A service name that appears twice, if any.
fn repeated_name(entries: &[Entry], buf: &[u8]) -> Option<String> {
    // Services are few per node: pairs compared in place, a sort only when there are many.
    let name = |i: usize| entries[i].0.bytes(buf);
    let n = entries.len();
    let repeated = if n <= 16 {
        // Lengths and last bytes first: names that differ mostly differ there.
        let same = |a: &[u8], b: &[u8]| a.len() == b.len() && a.last() == b.last() && a == b;
        (0..n).find(|&i| (i + 1..n).any(|j| same(name(i), name(j))))
    } else {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| name(i));
        order
            .windows(2)
            .find(|w| name(w[0]) == name(w[1]))
            .map(|w| w[0])
    };
    repeated.map(|i| String::from_utf8_lossy(name(i)).into_owned())
}

fn read_part(s: &mut Scanner<'_>) -> Result<Got<(u64, u64)>, Fail> {
    if s.peek()? != Peek::Array {
        s.skip()?;
        return Ok(Got::Wrong);
    }
    let mut numbers = [0u64; 2];
    let mut count = 0;
    let mut ok = true;
    let mut seq = s.begin_array()?;
    while s.next_element(&mut seq)? {
        match s.scalar()? {
            Scalar::Number(Some(n)) if count < 2 => numbers[count] = n,
            _ => ok = false,
        }
        count += 1;
    }
    Ok(if ok && count == 2 {
        Got::Right((numbers[0], numbers[1]))
    } else {
        Got::Wrong
    })
}

fn read_strings(s: &mut Scanner<'_>) -> Result<Got<Vec<String>>, Fail> {
    if s.peek()? != Peek::Array {
        s.skip()?;
        return Ok(Got::Wrong);
    }
    let mut list = Vec::new();
    let mut ok = true;
    let mut seq = s.begin_array()?;
    while s.next_element(&mut seq)? {
        match s.scalar()? {
            Scalar::Str(name) if ok => list.push(name.value().into_owned()),
            _ => ok = false,
        }
    }
    Ok(if ok { Got::Right(list) } else { Got::Wrong })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::any;
    use serde_json::json;

    fn parse(v: &serde_json::Value) -> Result<Heartbeat, HbError> {
        Heartbeat::parse(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn reads_fields_and_keeps_values_raw() {
        let text = br#" {"gen": 12, "since": 0, "boot": 3, "x": [1,{"y":null}],
            "monitor": {"status": "idle"}, "services": {"svc1": {"avail": "up"}, "s\u0032": [1, 2.5]}} "#;
        let hb = Heartbeat::parse(text).unwrap();
        assert_eq!((hb.r#gen, hb.since, hb.boot, hb.part), (12, 0, 3, None));
        assert_eq!(hb.monitor().as_str(), r#"{"status": "idle"}"#);
        let services: Vec<(String, String)> = hb
            .services()
            .map(|(n, v)| (n.to_string(), v.as_str().to_string()))
            .collect();
        assert_eq!(
            services,
            [
                ("svc1".to_string(), r#"{"avail": "up"}"#.to_string()),
                ("s2".to_string(), "[1, 2.5]".to_string())
            ]
        );
        assert_eq!(hb.monitor().to_value(), json!({"status": "idle"}));
    }

    /// PROTOCOL.md's heartbeat has no `since`: it is a full snapshot.
    #[test]
    fn the_documented_example_is_a_full_snapshot() {
        let hb = parse(&json!({"gen": 12, "monitor": {}, "services": {"svc1": {}}})).unwrap();
        assert_eq!((hb.r#gen, hb.since, hb.part), (12, 0, None));
    }

    #[test]
    fn refuses_repeated_fields_and_services() {
        assert_eq!(
            Heartbeat::parse(br#"{"gen":1,"gen":2,"monitor":{},"services":{}}"#).unwrap_err(),
            HbError::DuplicateField("gen")
        );
        assert_eq!(
            Heartbeat::parse(br#"{"gen":1,"monitor":{},"services":{"a":1,"b":2,"\u0061":3}}"#)
                .unwrap_err(),
            HbError::DuplicateService("a".into())
        );
        let many: String = (0..40).map(|i| format!("\"s{i}\":{i},")).collect();
        let doc = format!(r#"{{"gen":1,"monitor":{{}},"services":{{{many}"s7":0}}}}"#);
        assert_eq!(
            Heartbeat::parse(doc.as_bytes()).unwrap_err(),
            HbError::DuplicateService("s7".into())
        );
        // Unknown fields are ignored, even twice.
        assert!(Heartbeat::parse(br#"{"gen":1,"x":1,"x":2,"monitor":{},"services":{}}"#).is_ok());
    }

    #[test]
    fn raw_values_answer_field_lookups() {
        let hb = parse(&json!({"gen": 1, "monitor": {"x": [1, {"status": "no"}], "status": "maintenance", "n": 3}, "services": {}})).unwrap();
        assert_eq!(
            hb.monitor().get_str("status").as_deref(),
            Some("maintenance")
        );
        assert_eq!(hb.monitor().get_str("n"), None);
        assert_eq!(hb.monitor().get_str("absent"), None);
        assert_eq!(RawJson::default().get_str("status"), None);
    }

    /// `get_strings` reads what a document of the monitor would say of a list of names.
    #[test]
    fn raw_string_lists_read_like_documents() {
        let from_document = |m: &serde_json::Value| -> Option<Vec<String>> {
            m["sees"].as_array().map(|l| {
                l.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
        };
        for monitor in [
            json!({"status": "idle", "sees": ["a", "b\"c", "é"], "x": {"sees": 1}}),
            json!({"sees": [1, "a", null, ["b"], {"c": "d"}, "e"]}),
            json!({"sees": []}),
            json!({"sees": "a"}),
            json!({"other": ["a"]}),
        ] {
            let hb = parse(&json!({"gen": 1, "monitor": monitor, "services": {}})).unwrap();
            assert_eq!(
                hb.monitor().get_strings("sees"),
                from_document(&monitor),
                "{monitor}"
            );
        }
        let repeated = br#"{"gen":1,"monitor":{"sees":["a"],"sees":["b"]},"services":{}}"#;
        let hb = Heartbeat::parse(repeated).unwrap();
        assert_eq!(
            hb.monitor().get_strings("sees"),
            Some(vec!["b".to_string()])
        );
        assert_eq!(RawJson::default().get_strings("sees"), None);
    }

    #[test]
    fn malformed_json_is_refused() {
        assert!(matches!(
            Heartbeat::parse(br#"{"gen":1,"monitor":{},"services":{"a":[1,]}}"#),
            Err(HbError::Json(_))
        ));
        assert_eq!(Heartbeat::parse(b"[1]").unwrap_err(), HbError::NotAnObject);
    }

    /// What the last heartbeat's values spare is only their validation: the next payload
    /// reads as it would alone, whether its values are the same, moved, or changed.
    #[test]
    fn values_known_from_the_last_heartbeat_read_the_same() {
        let last = br#"{"gen":9,"monitor":{"status":"idle"},"services":{"a":{"x":[1,{"y":"z"}]},"b\u0062":"up","c":3}}"#;
        let last = Heartbeat::parse(last).unwrap();
        let same = |p: &[u8]| {
            let alone = Heartbeat::parse(p);
            assert_eq!(
                Heartbeat::parse_after(p, Some(&last)),
                alone,
                "{}",
                String::from_utf8_lossy(p)
            );
            alone
        };
        // Only the generation changed, its length the same: the services list is shared.
        let next = same(br#"{"gen":8,"monitor":{"status":"idle"},"services":{"a":{"x":[1,{"y":"z"}]},"b\u0062":"up","c":3}}"#).unwrap();
        let after = Heartbeat::parse_after(next.text().as_bytes(), Some(&last)).unwrap();
        assert!(Arc::ptr_eq(&after.services, &last.services));
        // Moved by a longer generation and whitespace.
        same(br#"{"gen":10, "monitor": {"status":"idle"} , "services":  {"a":{"x":[1,{"y":"z"}]},"b\u0062":"up","c":3}}"#).unwrap();
        // One service changed, one the same at the same index, one the same elsewhere.
        let moved = same(br#"{"gen":11,"monitor":{"status":"idle"},"services":{"a":{"x":[1,{"y":"zz"}]},"c":{"x":[1,{"y":"z"}]},"b":"up"}}"#).unwrap();
        assert_eq!(
            moved.services().map(|(n, _)| n).collect::<Vec<_>>(),
            ["a", "c", "b"]
        );
        // A known value's text followed by more of a number or a bad byte; a known value cut.
        for bad in [
            &br#"{"gen":12,"monitor":{"status":"idle"}1,"services":{"a":{"x":[1,{"y":"z"}]}}}"#[..],
            br#"{"gen":12,"monitor":{"status":"idle"},"services":{"a":{"x":[1,{"y":"z"}]}x,"c":3}}"#,
            br#"{"gen":12,"monitor":{"status":"idle"},"services":{"a":{"x":[1,{"y":"z"}]},"b\u0062":"up","c":3}"#,
            br#"{"gen":12,"monitor":{"status":"idle"},"services":{"a":{"x":[1,{"y":"z"}]},"b\u0062":"up","c":3}} x"#,
            br#"{"gen":12,"monitor":{"status":"idle"},"services":{"a":{"x":[1,{"y":"z"}]},"a":"up"}}"#,
            br#"{"gen":12,"monitor":{"status":"idle"},"services":{"a":{"x":[1,{"y":"z"}]},"b\u0062":"up","c":3},"services":{}}"#,
            br#"{"gen":12,"monitor":{"status":"idle"},"services":{"a":{"x":[1,{"y":"z"#,
        ] {
            assert!(same(bad).is_err());
        }
        // The number after a known string is read whole (not a known value: numbers are
        // never taken by their text).
        same(br#"{"gen":13,"monitor":{"status":"idle"},"services":{"a":{"x":[1,{"y":"z"}]},"b":"up","c":34}}"#).unwrap();
    }

    proptest::proptest! {
        /// Any payload reads the same knowing a heartbeat close to it (bytes of it changed,
        /// inserted or removed) as alone: accepted or refused, for the same reason.
        #[test]
        fn known_values_change_no_outcome(
            services in proptest::collection::vec(("[a-c]{1,2}", any_value()), 0..6),
            monitor in any_value(),
            edits in proptest::collection::vec((any::<proptest::sample::Index>(), 0u8..3, any::<u8>()), 0..4),
        ) {
            let services: serde_json::Map<String, serde_json::Value> = services.into_iter().collect();
            let v = json!({"gen": 5, "monitor": monitor, "services": services});
            let base = serde_json::to_vec(&v).unwrap();
            let last = Heartbeat::parse(&base).unwrap();
            let mut next = base.clone();
            for (at, op, byte) in edits {
                let alphabet = b"{}[]\\\",: 0a1\t";
                let byte = alphabet[byte as usize % alphabet.len()];
                match op {
                    0 if !next.is_empty() => { let i = at.index(next.len()); next[i] = byte; }
                    1 => { let i = at.index(next.len() + 1); next.insert(i, byte); }
                    _ if !next.is_empty() => { let i = at.index(next.len()); next.remove(i); }
                    _ => {}
                }
            }
            proptest::prop_assert_eq!(Heartbeat::parse_after(&next, Some(&last)), Heartbeat::parse(&next));
        }
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            (0u64..1000).prop_map(serde_json::Value::from),
            "[a-z\"\\\\é]{0,4}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Depth counts for a known value as for any: the same text one level deeper in a
    /// payload is validated (a known value is only ever taken at the depth it was read at).
    #[test]
    fn known_values_keep_the_depth_limit() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let max = crate::wire::json::MAX_DEPTH;
        let last = format!(
            r#"{{"gen":1,"monitor":{},"services":{{"a":{}}}}}"#,
            deep(max - 1),
            deep(max - 2)
        );
        let last = Heartbeat::parse(last.as_bytes()).unwrap();
        for next in [
            format!(
                r#"{{"gen":2,"monitor":{},"services":{{"a":{}}}}}"#,
                deep(max - 1),
                deep(max - 2)
            ),
            format!(
                r#"{{"gen":2,"monitor":[{}],"services":{{"a":[{}]}}}}"#,
                deep(max - 1),
                deep(max - 2)
            ),
        ] {
            assert_eq!(
                Heartbeat::parse_after(next.as_bytes(), Some(&last)),
                Heartbeat::parse(next.as_bytes())
            );
        }
    }

    #[test]
    fn round_trip_through_to_value() {
        let v = json!({"gen": 5, "since": 4, "boot": 2, "monitor": {"m": [1, "é"]},
            "services": {"b": 1, "a": {"x": null}}, "removed": ["c"]});
        let hb = parse(&v).unwrap();
        assert_eq!(hb.to_value(), v);
        assert_eq!(parse(&hb.to_value()).unwrap(), hb);
    }
}
