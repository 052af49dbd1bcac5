//! What the window tests share: a virtual X display and child processes
//! that die with the test.
#![allow(dead_code)]

pub mod driver;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A child process killed when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Xvfb on a free display; returns it and its name (":N").
///
/// Xvfb picks the display itself (`-displayfd`) and names it once it is
/// ready. One fresh-clone run had an app fail to open its display while
/// another test of the same binary started its own Xvfb: Xvfb takes over
/// a display's socket file it finds without a server, and two starting at
/// once can take each other's. So the tests of one binary start their
/// displays one at a time, and a display whose socket does not answer is
/// replaced by another.
pub fn virtual_display() -> (Killed, String) {
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    const ATTEMPTS: usize = 5;
    let _one_at_a_time = STARTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..ATTEMPTS {
        let mut xvfb = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb runs (Debian's xvfb package; scripts/test installs it)");
        let stdout = xvfb.stdout.take().expect("stdout");
        let mut number = String::new();
        // End of output without a number: this Xvfb gave up.
        let _ = BufReader::new(stdout).read_line(&mut number);
        let number = number.trim().to_owned();
        let socket = format!("/tmp/.X11-unix/X{number}");
        if !number.is_empty() && std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return (Killed(xvfb), format!(":{number}"));
        }
        let _ = xvfb.kill();
        let _ = xvfb.wait();
    }
    panic!("Xvfb did not start a display in {ATTEMPTS} attempts");
}

/// Ids of the visible windows on `display` titled exactly `title` (a
/// regular expression: brackets need a backslash).
pub fn windows_titled(display: &str, title: &str) -> Vec<String> {
    let output = Command::new("xdotool")
        .args(["search", "--onlyvisible", "--name", &format!("^{title}$")])
        .env("DISPLAY", display)
        .output()
        .expect("xdotool runs (scripts/test installs it)");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A child started as the leader of its own process group
/// (`CommandExt::process_group(0)`); the whole group is killed when the test
/// ends, so that the helpers it starts (WebKitWebDriver, the app) go too.
pub struct KilledGroup(pub Child);

impl Drop for KilledGroup {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// Calls `found` every `every` until it gives a value, and returns that;
/// fails saying `what` was awaited once `patience` has passed. For the
/// blocking tests (the async ones have the driver's `wait_for`).
pub fn poll_until<T>(
    what: &str,
    patience: std::time::Duration,
    every: std::time::Duration,
    mut found: impl FnMut() -> Option<T>,
) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(started.elapsed() < patience, "waited in vain for {what}");
        std::thread::sleep(every);
    }
}

/// Whether process `pid` runs (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// The processes whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The parent is the second field after the ")" that closes the name.
            let parent: u32 = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (parent == pid).then_some(child)
        })
        .collect()
}
