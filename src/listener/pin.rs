//! Pinning of the listener's UDP receive threads: one per CPU the process may use.

/// The CPUs this thread may run on (its affinity mask), in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity fills a live cpu_set_t of the size passed, for the calling
    // thread (pid 0).
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: index below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread, UDP receive thread `index` of `workers`, to one CPU of those it
/// may use: one per core keeps each socket's datagrams, its ring and its caches on one core.
/// With more workers than CPUs nothing is pinned (the scheduler spreads them better), nor
/// with `OSVC_LISTENER_PIN=0` in the environment (a host where other busy processes share
/// these CPUs). Returns the CPU, if pinned.
pub fn pin_worker(index: usize, workers: usize) -> Option<usize> {
    if std::env::var_os("OSVC_LISTENER_PIN").is_some_and(|v| v == "0") {
        return None;
    }
    let cpus = allowed_cpus();
    if cpus.len() < 2 || workers > cpus.len() {
        return None;
    }
    let cpu = cpus[index % cpus.len()];
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` came from the affinity mask, so it is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: a live cpu_set_t of the size passed, for the calling thread (pid 0).
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    (r == 0).then_some(cpu)
}
