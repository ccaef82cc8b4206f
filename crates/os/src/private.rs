//! Everything the herd writes is private to the user that runs it: clients' locations sit in
//! the store and the logs, and the run folder holds locks, stderr and the applied herd file
//! (which may carry the secret). Another local user must neither read them nor make the herd
//! write through a link they planted.
//!
//! - [`restrict_umask`]: the node and the supervisor create everything 0700/0600 (sled's
//!   files too, which are not ours to open).
//! - [`folder`]: a data, log or run folder is created 0700; an existing one must belong to
//!   this user and be writable by nobody else (refused with a one-line fix), and one
//!   readable by others is made 0700.
//! - Files are opened with `O_NOFOLLOW` (a planted symbolic link is refused, not followed),
//!   created 0600, and temporary files are created with `O_EXCL` ([`create_new`]).
//!
//! What the herd writes *for* others (`export` output: units, manifests, compose files) is
//! not made here and keeps the caller's umask.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use nix::libc;

/// Mode of a folder the herd creates.
pub const FOLDER_MODE: u32 = 0o700;
/// Mode of a file the herd creates.
pub const FILE_MODE: u32 = 0o600;

/// Makes this process create everything private (umask 077), for the node and the
/// supervisor, whose files hold clients' locations and the applied herd file.
pub fn restrict_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Makes sure `path` is a folder only this user can use: created 0700 (with any missing
/// parents) if absent; refused if it belongs to another user or others may write in it
/// (they could plant links or files there); made 0700 if others may read it. `what` names
/// it in messages ("run_dir").
pub fn folder(path: &Path, what: &str) -> Result<()> {
    folder_for(path, what, nix::unistd::geteuid().as_raw(), None)
}

/// [`folder`] for the user `uid` (group `gid`): the folders created are given to them (which
/// takes root when it is not this process's user), and an existing one must be theirs. For
/// `export systemd` run as root for units that run as the herd file's owner.
pub fn folder_for(path: &Path, what: &str, uid: u32, gid: Option<u32>) -> Result<()> {
    let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
    DirBuilder::new()
        .recursive(true)
        .mode(FOLDER_MODE)
        .create(path)
        .with_context(|| format!("cannot create {what} {}", path.display()))?;
    if uid != nix::unistd::geteuid().as_raw() {
        for created in missing {
            std::os::unix::fs::chown(created, Some(uid), gid)
                .with_context(|| format!("cannot give {} to user {uid}", created.display()))?;
        }
    }
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !meta.is_dir() {
        bail!(
            "{what} {} is not a folder; remove it or set {what} to a folder",
            path.display()
        );
    }
    if meta.uid() != uid {
        bail!(
            "{what} {} belongs to user {}, not to user {uid}, and its owner could plant links \
             in it; use a folder of user {uid} (set {what}) or `chown {uid} {}`",
            path.display(),
            meta.uid(),
            path.display()
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "{what} {} is writable by others (mode {mode:o}), who could plant links in it; \
             run `chmod 700 {}` or set {what} to a folder of your own",
            path.display(),
            path.display()
        );
    }
    if mode & 0o077 != 0 {
        // Ours, and nobody else can change it: keep what is in it from other users' eyes.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(FOLDER_MODE))
            .with_context(|| format!("cannot make {what} {} private", path.display()))?;
    }
    Ok(())
}

/// Options for a private file that is never reached through a symbolic link.
fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE).custom_flags(libc::O_NOFOLLOW);
    options
}

/// `error` from opening `path`, saying what to do when `path` was a symbolic link (which
/// `O_NOFOLLOW` reports as `ELOOP`).
fn explained(path: &Path, error: io::Error) -> io::Error {
    if error.raw_os_error() == Some(libc::ELOOP) {
        return io::Error::new(
            error.kind(),
            format!(
                "{} is a symbolic link, which herdctl never makes and will not follow; \
                 remove it",
                path.display()
            ),
        );
    }
    error
}

/// Opens `path` to append to, created 0600 if absent (logs, stderr files).
pub fn open_append(path: &Path) -> io::Result<File> {
    options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| explained(path, e))
}

/// Opens `path` to read and write, created 0600 if absent, not truncated (lock files).
pub fn open_read_write(path: &Path) -> io::Result<File> {
    options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| explained(path, e))
}

/// Opens an existing `path` to write (a file truncated in place).
pub fn open_existing(path: &Path) -> io::Result<File> {
    options()
        .write(true)
        .open(path)
        .map_err(|e| explained(path, e))
}

/// Opens an existing `path` to read.
pub fn open_read(path: &Path) -> io::Result<File> {
    options()
        .read(true)
        .open(path)
        .map_err(|e| explained(path, e))
}

/// Creates the temporary file `path` (0600), which must not exist: one left by an earlier
/// attempt is removed first (the link itself, if it is one), and if something appears in
/// its place meanwhile the creation fails rather than writes through it.
pub fn create_new(path: &Path) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| explained(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn folders_are_made_private_and_shared_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("a/b");
        folder(&made, "run_dir").unwrap();
        assert_eq!(mode(&made), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);

        let readable = dir.path().join("readable");
        std::fs::create_dir(&readable).unwrap();
        std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o755)).unwrap();
        folder(&readable, "data_dir").unwrap();
        assert_eq!(mode(&readable), 0o700, "tightened");

        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = folder(&shared, "run_dir").unwrap_err().to_string();
        assert!(
            e.contains("writable by others") && e.contains("chmod 700") && !e.contains('\n'),
            "{e}"
        );
        assert_eq!(mode(&shared), 0o1777, "left as it was");

        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(folder(&file, "log_dir").is_err());
    }

    #[test]
    fn root_makes_folders_for_the_user_they_are_for() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: giving a folder to another user needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("var/lib/herd");
        folder_for(&made, "data_dir", 65534, Some(65534)).unwrap();
        for created in [&made, &dir.path().join("var")] {
            let meta = std::fs::metadata(created).unwrap();
            assert_eq!((meta.uid(), meta.mode() & 0o777), (65534, 0o700));
        }
        assert_eq!(
            std::fs::metadata(dir.path()).unwrap().uid(),
            0,
            "not created"
        );
        // Root's own folder is not the user's.
        let e = folder_for(dir.path(), "run_dir", 65534, None).unwrap_err();
        assert!(e.to_string().contains("belongs to user 0"), "{e}");
    }

    #[test]
    fn files_are_private_and_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.stderr");
        open_append(&path).unwrap().write_all(b"one\n").unwrap();
        open_append(&path).unwrap().write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        assert_eq!(mode(&path), 0o600);

        let target = dir.path().join("precious");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("Alford.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for error in [
            open_append(&link).unwrap_err(),
            open_read_write(&link).unwrap_err(),
            open_existing(&link).unwrap_err(),
            open_read(&link).unwrap_err(),
        ] {
            assert!(error.to_string().contains("symbolic link"), "{error}");
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");

        // A temporary file: a leftover (or a planted link) goes, the link's target stays.
        let new = dir.path().join("herd.applied.yaml.new");
        std::os::unix::fs::symlink(&target, &new).unwrap();
        create_new(&new).unwrap().write_all(b"fresh").unwrap();
        assert_eq!(mode(&new), 0o600);
        let mut text = String::new();
        open_read(&new).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "fresh");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
