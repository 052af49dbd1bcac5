//! A process's memory, from /proc (Linux only): resident set size, and the
//! proportional set size, which splits shared pages fairly between processes.

/// Kibibytes of the `field` line (`VmRSS:`, `Pss:`) of /proc/`pid`/`file`.
fn field_kib(pid: u32, file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    field_kib(pid, "status", "VmRSS:")
}

/// Proportional memory of `pid` in KiB.
pub fn pss_kib(pid: u32) -> Option<u64> {
    field_kib(pid, "smaps_rollup", "Pss:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory() {
        let me = std::process::id();
        assert!(rss_kib(me).is_some_and(|kib| kib > 0));
        assert!(pss_kib(me).is_some_and(|kib| kib > 0));
        assert_eq!(rss_kib(u32::MAX), None, "no such process");
    }
}
