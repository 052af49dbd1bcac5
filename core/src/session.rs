//! What the app remembers between runs, in its data folder:
//! - `settings.json`: the server address, also before anyone logs in;
//! - `session.json`: the logged-in user and their token, readable by the
//!   user only (0600), removed at logout;
//! - `cache-<user id>.sqlite`: that user's cache (see `cache`);
//! - `unsent-<user id>.json`: messages a session the server ended had not
//!   sent, until that user's next login here sends them.

use std::path::{Path, PathBuf};

use natter_shared::User;
use serde::{Deserialize, Serialize};

use crate::cache::{Outgoing, SET_ASIDE, SQLITE_SUFFIXES};
use crate::error::{CoreError, CoreResult};
use crate::server_url::ServerUrl;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    #[serde(default)]
    pub server_url: ServerUrl,
}

/// A logged-in user on a server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub server_url: ServerUrl,
    pub token: String,
    pub user: User,
}

/// The app's files, all under one folder.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
}

impl Files {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Files { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Claims the folder for this process, for as long as the returned file
    /// is open: a second copy of the app on the same folder (started again
    /// from the menu while the first sits in the tray) would share its
    /// session and cache, and each would take, and hide from its window,
    /// part of the other's messages.
    /// The file holds the claiming process's id (`claimant`).
    pub fn claim(&self) -> CoreResult<std::fs::File> {
        use std::io::Write;

        std::fs::create_dir_all(&self.dir)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.lock_file())?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                write!(file, "{}", std::process::id())?;
                Ok(file)
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(CoreError::AlreadyRunning(self.dir.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(err)) => Err(err.into()),
        }
    }

    /// The process that claimed the folder last (`claim`), when it says;
    /// whether it still runs is for the caller to find out.
    pub fn claimant(&self) -> Option<u32> {
        std::fs::read_to_string(self.lock_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn lock_file(&self) -> PathBuf {
        self.dir.join("natter.lock")
    }

    pub fn cache(&self, user_id: &str) -> PathBuf {
        self.dir
            .join(format!("cache-{}.sqlite", file_safe(user_id)))
    }

    fn unsent_file(&self, user_id: &str) -> PathBuf {
        self.dir.join(format!("unsent-{}.json", file_safe(user_id)))
    }

    /// Keeps the messages a session the server ended had not sent, for
    /// that user's next login here, which sends them (`unsent`): the
    /// session's cache goes with it, and they would be lost unseen (written
    /// offline, say, in an app closed until its token had expired). Added
    /// to any kept before, readable by the user only.
    pub fn keep_unsent(&self, user_id: &str, unsent: &[Outgoing]) -> CoreResult<()> {
        let mut kept = self.unsent(user_id);
        for outgoing in unsent {
            if !kept.iter().any(|k| k.client_id == outgoing.client_id) {
                kept.push(outgoing.clone());
            }
        }
        write_private(&self.unsent_file(user_id), &serde_json::to_vec(&kept)?)
    }

    /// What `keep_unsent` kept for `user_id`, in the order written.
    pub fn unsent(&self, user_id: &str) -> Vec<Outgoing> {
        read_json(&self.unsent_file(user_id)).unwrap_or_default()
    }

    pub fn forget_unsent(&self, user_id: &str) -> CoreResult<()> {
        remove_if_there(&self.unsent_file(user_id))
    }

    /// Settings as saved, or the defaults when there are none or they do
    /// not parse (a hand-edited file must not keep the app from starting).
    pub fn settings(&self) -> Settings {
        read_json(&self.dir.join("settings.json")).unwrap_or_default()
    }

    pub fn save_settings(&self, settings: &Settings) -> CoreResult<()> {
        write_private(
            &self.dir.join("settings.json"),
            &serde_json::to_vec_pretty(settings)?,
        )
    }

    pub fn session(&self) -> Option<Session> {
        read_json(&self.dir.join("session.json"))
    }

    pub fn save_session(&self, session: &Session) -> CoreResult<()> {
        write_private(
            &self.dir.join("session.json"),
            &serde_json::to_vec(session)?,
        )
    }

    /// The profile pictures kept so that avatars show offline too: of the
    /// people the session met, so they go with it (`forget_session`).
    pub fn pics(&self) -> PathBuf {
        self.dir.join("pics")
    }

    /// Forgets the session, the pictures it kept, and that user's cache
    /// (`forget_cache`).
    pub fn forget_session(&self, user_id: Option<&str>) -> CoreResult<()> {
        remove_if_there(&self.dir.join("session.json"))?;
        let cache = match user_id {
            Some(user_id) => self.forget_cache(user_id),
            None => Ok(()),
        };
        // Avatars are less than messages: their failure does not keep
        // the cache, nor fail the logout (the next login tries again).
        self.forget_pics();
        cache
    }

    /// Deletes the pictures kept (`pics`), logging a failure.
    pub fn forget_pics(&self) {
        if let Err(err) = std::fs::remove_dir_all(self.pics())
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %err, "deleting the pictures a session kept");
        }
    }

    /// Deletes a user's cache, SQLite's side files and a cache set aside as
    /// unreadable too: nothing of theirs stays.
    pub fn forget_cache(&self, user_id: &str) -> CoreResult<()> {
        let cache = self.cache(user_id);
        for aside in ["", SET_ASIDE] {
            for suffix in SQLITE_SUFFIXES {
                let mut path = cache.clone().into_os_string();
                path.push(aside);
                path.push(suffix);
                remove_if_there(Path::new(&path))?;
            }
        }
        Ok(())
    }

    /// The users other than `user_id` with a cache here, or what is left
    /// of one (SQLite's side files, a cache set aside as unreadable): one
    /// kept when a session the server ended could not set its unsent
    /// messages aside, or one a logout failed to delete. Each is the part
    /// of the files' names that stands for them, which names their files
    /// as their id does (`file_safe` changes nothing in it).
    pub fn others_with_a_cache(&self, user_id: &str) -> Vec<String> {
        let mine = file_safe(user_id);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut others: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|name| {
                let (user, _) = name.strip_prefix("cache-")?.split_once(".sqlite")?;
                (user != mine && file_safe(user) == user).then(|| user.to_owned())
            })
            .collect();
        others.sort();
        others.dedup();
        others
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::warn!(file = %path.display(), error = %err, "ignoring an unreadable file");
            None
        }
    }
}

/// A user id as part of a file name: other than letters, digits and `-`,
/// each character becomes `_`.
fn file_safe(user_id: &str) -> String {
    user_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes a file readable by its owner only, atomically (a crash leaves the
/// old file or the new one, never half of one). A write that fails leaves
/// no temporary copy behind (it may hold messages or a token).
fn write_private(path: &Path, bytes: &[u8]) -> CoreResult<()> {
    let temp = path.with_extension("tmp");
    let written = write_then_rename(&temp, path, bytes);
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

fn write_then_rename(temp: &Path, path: &Path, bytes: &[u8]) -> CoreResult<()> {
    use std::io::Write;

    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(temp, path)?;
    Ok(())
}

fn remove_if_there(path: &Path) -> CoreResult<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that cannot take the file's place (a folder stands there, as
    /// a full disk would fail it) leaves no temporary copy of its text.
    #[test]
    fn a_failed_private_write_leaves_no_temporary_copy() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("unsent-ann.json");
        std::fs::create_dir(&path).expect("a folder in the way");
        assert!(write_private(&path, b"[\"a message\"]").is_err());
        assert!(!dir.path().join("unsent-ann.tmp").exists());
    }

    #[test]
    fn the_session_file_is_private_and_forgotten_at_logout() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = Files::new(dir.path());
        assert!(files.session().is_none());
        let session = Session {
            server_url: ServerUrl::default(),
            token: "t".into(),
            user: User {
                id: "u1".into(),
                name: "Ann".into(),
                email: "ann@example.org".into(),
                pic: None,
            },
        };
        files.save_session(&session).expect("saved");
        let cache = files.cache("u1");
        let beside = |suffix: &str| {
            let mut path = cache.clone().into_os_string();
            path.push(suffix);
            PathBuf::from(path)
        };
        let cache_files = [
            "",
            "-wal",
            ".unreadable",
            ".unreadable-wal",
            ".unreadable-shm",
        ]
        .map(beside);
        for file in &cache_files {
            std::fs::write(file, b"cache").expect("cache file");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("session.json"))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(files.session().map(|s| s.user.id), Some("u1".into()));
        files.forget_session(Some("u1")).expect("forgotten");
        assert!(files.session().is_none());
        for file in &cache_files {
            assert!(!file.exists(), "{} is left", file.display());
        }
    }

    /// Other users' caches are found by any of their files, once each, and
    /// not the user's own; a name that is not a cache's is not one.
    #[test]
    fn other_users_caches_are_found_by_any_of_their_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = Files::new(dir.path());
        for name in [
            "cache-me.sqlite",
            "cache-me.sqlite-wal",
            "cache-a.sqlite",
            "cache-a.sqlite-wal",
            "cache-b.sqlite.unreadable",
            "cache-c.sqlite-shm",
            "cache-d.txt",
            "unsent-e.json",
            "settings.json",
        ] {
            std::fs::write(dir.path().join(name), b"").expect("written");
        }
        assert_eq!(files.others_with_a_cache("me"), ["a", "b", "c"]);
        files.forget_cache("b").expect("forgotten");
        assert!(!dir.path().join("cache-b.sqlite.unreadable").exists());
        assert_eq!(files.others_with_a_cache("me"), ["a", "c"]);
    }

    #[test]
    fn broken_settings_fall_back_to_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("settings.json"), b"{not json").expect("written");
        assert_eq!(
            Files::new(dir.path()).settings().server_url,
            ServerUrl::default()
        );
    }
}
