//! What the processes of a run cost, read from `/proc`: CPU time (user + system) and bytes written to storage
//! per process, and the busy share of the whole machine. Readings are taken at the start and the end of a window
//! and reported as differences, so the figures of one step never include the signing done before it.

use std::path::Path;

/// One process to watch: a name for the report and its pid.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
    /// A node's Prometheus listener (`host:port`), read for its stalls ([`crate::nodemetrics`]).
    pub metrics: Option<String>,
}

/// A reading of one process.
#[derive(Clone, Copy, Debug, Default)]
struct ProcReading {
    cpu_secs: f64,
    write_bytes: u64,
}

/// A reading of every watched process and of the machine, at one instant.
#[derive(Clone, Debug)]
pub struct Sample {
    at: std::time::Instant,
    procs: Vec<Option<ProcReading>>,
    box_busy: u64,
    box_total: u64,
}

/// What one process used over a window.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProcessUse {
    pub name: String,
    pub pid: u32,
    /// CPU-seconds (user + system) spent in the window.
    pub cpu_seconds: f64,
    /// `cpu_seconds` over the window's length, in percent of one core.
    pub cpu_percent_of_core: f64,
    /// Bytes the process caused to be written to storage (`write_bytes` of `/proc/<pid>/io`).
    pub write_bytes: u64,
}

/// What the watched processes and the whole machine used over a window.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Usage {
    pub window_secs: f64,
    pub processes: Vec<ProcessUse>,
    /// Busy share of all cores of the machine (100 = every core busy), from `/proc/stat`.
    pub box_cpu_percent: f64,
}

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, which Linux fixes at 100 on every architecture that
/// Baton builds for).
fn clock_ticks() -> f64 {
    100.0
}

fn read_proc(pid: u32) -> Option<ProcReading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let write_bytes = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    Some(ProcReading {
        cpu_secs: (utime + stime) as f64 / clock_ticks(),
        write_bytes,
    })
}

/// Busy and total jiffies of all cores, from the first line of `/proc/stat`.
fn read_box() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = stat.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle and iowait are the 4th and 5th.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// Reads every watched process and the machine now.
pub fn sample(watched: &[Watched]) -> Sample {
    let (box_busy, box_total) = read_box();
    Sample {
        at: std::time::Instant::now(),
        procs: watched.iter().map(|w| read_proc(w.pid)).collect(),
        box_busy,
        box_total,
    }
}

/// The use between two samples of the same watch list.
pub fn usage(watched: &[Watched], from: &Sample, to: &Sample) -> Usage {
    let window = to.at.duration_since(from.at).as_secs_f64().max(1e-9);
    let processes = watched
        .iter()
        .zip(from.procs.iter().zip(&to.procs))
        .filter_map(|(w, (a, b))| {
            let (a, b) = (a.as_ref()?, b.as_ref()?);
            let cpu = (b.cpu_secs - a.cpu_secs).max(0.0);
            Some(ProcessUse {
                name: w.name.clone(),
                pid: w.pid,
                cpu_seconds: cpu,
                cpu_percent_of_core: 100.0 * cpu / window,
                write_bytes: b.write_bytes.saturating_sub(a.write_bytes),
            })
        })
        .collect();
    let total = to.box_total.saturating_sub(from.box_total);
    let busy = to.box_busy.saturating_sub(from.box_busy);
    Usage {
        window_secs: window,
        processes,
        box_cpu_percent: if total == 0 {
            0.0
        } else {
            100.0 * busy as f64 / total as f64
        },
    }
}

/// This process, named `harness`.
pub fn me() -> Watched {
    Watched {
        name: "harness".into(),
        pid: std::process::id(),
        metrics: None,
    }
}

/// Processes whose command line holds `needle` (e.g. a node's config path), found by scanning `/proc`.
pub fn find_by_cmdline(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline"))
        else {
            continue;
        };
        let cmd: Vec<u8> = cmd
            .into_iter()
            .map(|b| if b == 0 { b' ' } else { b })
            .collect();
        if String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_counted() {
        let w = vec![me()];
        let a = sample(&w);
        // Burn CPU until the reading has moved by 0.2 s: counted in CPU time, not wall time, because other tests
        // may share the cores (bounded, so a reading that never moves fails instead of hanging).
        let mut x = 0u64;
        let t = std::time::Instant::now();
        let u = loop {
            let burst = std::time::Instant::now();
            while burst.elapsed() < std::time::Duration::from_millis(20) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            let u = usage(&w, &a, &sample(&w));
            if u.processes.first().is_some_and(|p| p.cpu_seconds >= 0.2)
                || t.elapsed() > std::time::Duration::from_secs(30)
            {
                break u;
            }
        };
        std::hint::black_box(x);
        assert_eq!(u.processes.len(), 1);
        let p = &u.processes[0];
        assert!(p.cpu_seconds >= 0.2, "{p:?}");
        // One busy thread: more than nothing, at most one core (with room for the clock ticks' rounding).
        assert!(
            p.cpu_percent_of_core > 0.0 && p.cpu_percent_of_core <= 110.0,
            "{p:?}"
        );
        assert!(u.box_cpu_percent > 0.0);
        assert_eq!(
            find_by_cmdline("no-such-process-here-xyzzy"),
            Vec::<u32>::new()
        );
    }
}
