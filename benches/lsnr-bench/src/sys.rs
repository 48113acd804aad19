//! What the load generator reads of the system: a process's memory and CPU time from /proc,
//! the kernel's UDP counters, the machine's description.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// VmRSS and VmHWM (peak) of a process, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rss {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn rss(pid: u32) -> Option<Rss> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Rss {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as f64,
        _ => 100.0,
    }
}

/// utime + stime of one /proc stat line, in seconds, and the thread's name.
fn parse_stat(text: &str) -> Option<(String, f64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / clock_ticks()))
}

/// CPU seconds used so far by each thread of `pid`, summed by thread name with the numeric
/// suffix kept (`lsnr.0`, `shard.0`...). From the scheduler's own count (`schedstat`, in ns)
/// where the kernel has it: `stat`'s utime and stime are sampled at each tick (4 ms at
/// HZ=250), which charges a thread that wakes often for short bursts by chance, and a 1 s
/// window only holds 250 ticks.
pub fn thread_cpu(pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        if let Ok(text) = std::fs::read_to_string(e.path().join("stat"))
            && let Some((name, ticks)) = parse_stat(&text)
        {
            let cpu = std::fs::read_to_string(e.path().join("schedstat"))
                .ok()
                .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(ticks, |ns| ns as f64 / 1e9);
            *out.entry(name).or_insert(0.0) += cpu;
        }
    }
    out
}

/// Context switches so far (voluntary and not) of each thread of `pid`, summed by thread
/// name like `thread_cpu`: each one a wakeup or a preemption.
pub fn thread_switches(pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let mut name = None;
        let mut switches = 0.0;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("Name:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += v.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
        if let Some(name) = name {
            *out.entry(name).or_insert(0.0) += switches;
        }
    }
    out
}

/// Difference of two `thread_cpu` samples (threads that appeared count from zero).
pub fn cpu_delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).copied().unwrap_or(0.0)).max(0.0),
            )
        })
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Inter-processor interrupts so far, all CPUs: rescheduling (RES) and function calls (CAL).
/// In a VM each one costs an exit; io_uring's task work can send one per wakeup.
pub fn ipis() -> u64 {
    let text = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    text.lines()
        .filter(|l| {
            let t = l.trim_start();
            t.starts_with("RES:") || t.starts_with("CAL:")
        })
        .flat_map(|l| {
            l.split_whitespace()
                .skip(1)
                .map_while(|v| v.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Busy CPU time of the whole machine so far (user + nice + system + irq + softirq + steal),
/// in seconds: minus ours, what other tenants used during a window.
pub fn machine_busy_s() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    busy / clock_ticks()
}

/// CPU seconds of a whole process so far.
pub fn process_cpu_s(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| parse_stat(&t))
        .map_or(0.0, |(_, s)| s)
}

/// Bytes waiting in the receive queues of the IPv4 UDP sockets bound to `port` (the
/// `rx_queue` column of /proc/net/udp, in memory charged: headers included).
pub fn udp_rx_queue(port: u16) -> u64 {
    let text = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let want = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = f.get(1)?;
            if !local.ends_with(&want) {
                return None;
            }
            let rx = f.get(4)?.split(':').nth(1)?;
            u64::from_str_radix(rx, 16).ok()
        })
        .sum()
}

/// The kernel's UDP counters (/proc/net/snmp): InDatagrams, RcvbufErrors...
pub fn udp_snmp() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return BTreeMap::new();
    };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?)))
        .collect()
}

pub fn snmp_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    name: &str,
) -> u64 {
    after
        .get(name)
        .copied()
        .unwrap_or(0)
        .saturating_sub(before.get(name).copied().unwrap_or(0))
}

/// Kernel, CPU model and count, memory: for the report.
pub fn machine() -> serde_json::Value {
    let uname = std::process::Command::new("uname")
        .arg("-srm")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    serde_json::json!({
        "kernel": uname,
        "cpu_model": model,
        "cpus": cpus,
        "mem_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
        "rmem_max": std::fs::read_to_string("/proc/sys/net/core/rmem_max").ok().map(|s| s.trim().to_string()),
    })
}

/// UTC date and time, ISO 8601, without a date library.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let r = rss(std::process::id()).unwrap();
        assert!(r.rss_kib > 0 && r.hwm_kib >= r.rss_kib);
        assert!(!thread_cpu(std::process::id()).is_empty());
        assert!(utc_now().ends_with('Z'));
        let (name, _) = parse_stat("12 (lsnr.0) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0").unwrap();
        assert_eq!(name, "lsnr.0");
    }
}
