//! Processor time of processes, from /proc (Linux only), so that a run says
//! which process its cores went to: the server, the load tool itself, and
//! whatever it names (`postgres`, `beam.smp` for RabbitMQ).
//!
//! A process's time is its own plus its waited-for children's (`cutime`,
//! `cstime`): PostgreSQL's backends that exit during a run are then counted
//! in the postmaster. A process that exits without being waited for while
//! the run goes on loses its time from the sum; the server's pool keeps its
//! backends, so that is rare.

use std::collections::BTreeMap;
use std::time::Instant;

/// Clock ticks per second in /proc/*/stat: the kernel's USER_HZ, 100 on
/// every architecture Linux exposes to user space this way.
const TICKS_PER_SECOND: f64 = 100.0;

/// What to measure: processes by id, and all processes of a name.
#[derive(Debug, Clone)]
pub enum Watched {
    /// One process, reported under its label.
    Pid { pid: u32, label: String },
    /// Every process of this command name, summed.
    Name(String),
}

impl Watched {
    pub fn label(&self) -> String {
        match self {
            Watched::Pid { label, .. } => label.clone(),
            Watched::Name(name) => name.clone(),
        }
    }

    /// Ticks used so far (none when nothing by that pid or name runs).
    fn ticks(&self) -> Option<u64> {
        match self {
            Watched::Pid { pid, .. } => {
                ticks_of(&format!("/proc/{pid}/stat")).map(|(_, ticks)| ticks)
            }
            Watched::Name(name) => {
                let mut total = None;
                for entry in std::fs::read_dir("/proc").ok()?.flatten() {
                    let is_pid = entry.file_name().to_str().is_some_and(|name| {
                        !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
                    });
                    if !is_pid {
                        continue;
                    }
                    if let Some((comm, ticks)) =
                        ticks_of(&format!("{}/stat", entry.path().display()))
                        && comm == *name
                    {
                        total = Some(total.unwrap_or(0) + ticks);
                    }
                }
                total
            }
        }
    }
}

/// Ticks of every watched process at one moment.
pub struct Sample {
    at: Instant,
    ticks: Vec<Option<u64>>,
}

pub fn sample(watched: &[Watched]) -> Sample {
    Sample {
        at: Instant::now(),
        ticks: watched.iter().map(Watched::ticks).collect(),
    }
}

/// Cores each watched process used on average between two samples, by label,
/// with the window's length under `"seconds"`.
pub fn cores_between(watched: &[Watched], start: &Sample, end: &Sample) -> serde_json::Value {
    let seconds = end.at.duration_since(start.at).as_secs_f64();
    let mut cores = BTreeMap::new();
    for (index, what) in watched.iter().enumerate() {
        let used = match (start.ticks.get(index), end.ticks.get(index)) {
            (Some(Some(before)), Some(Some(after))) if seconds > 0.0 => Some(
                (after.saturating_sub(*before) as f64 / TICKS_PER_SECOND / seconds * 1000.0)
                    .round()
                    / 1000.0,
            ),
            _ => None,
        };
        cores.insert(what.label(), serde_json::json!(used));
    }
    serde_json::json!({ "seconds": seconds, "cores": cores })
}

/// The command name and utime + stime + cutime + cstime of a stat file.
fn ticks_of(path: &str) -> Option<(String, u64)> {
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

fn parse_stat(text: &str) -> Option<(String, u64)> {
    // The name is in parentheses and may itself hold spaces or ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // After the name: state is field 3, utime..cstime are fields 14..17.
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let ticks = fields
        .get(11..15)?
        .iter()
        .map(|field| field.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    Some((comm, ticks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_all_four_times() {
        let line = "4242 (natter) server) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    150 25 7 3 20 0 9 0 100 1000 200 18446744073709551615";
        assert_eq!(parse_stat(line), Some(("natter) server".into(), 185)));
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
    }

    #[test]
    fn this_process_is_found_by_pid_and_by_name() {
        let me = std::process::id();
        let by_pid = Watched::Pid {
            pid: me,
            label: "me".into(),
        };
        assert!(by_pid.ticks().is_some());
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
        let by_name = Watched::Name(comm.trim().to_owned());
        assert!(by_name.ticks().is_some());
        let gone = Watched::Pid {
            pid: u32::MAX,
            label: "gone".into(),
        };
        assert_eq!(gone.ticks(), None, "no such process");
        assert_eq!(Watched::Name("no such command".into()).ticks(), None);
    }
}
