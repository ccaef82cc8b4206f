//! A server's private key file, and who may read it. No other user may be able to read or
//! write the key. The rule is PostgreSQL's for its server key:
//!
//! - a key that belongs to the node's own user must be its only (0600 or 0400);
//! - a key that belongs to root (and the node is not root) may also be readable by its group,
//!   never writable by it: that is how an administrator gives a key to a service (Debian's
//!   `ssl-cert` group, 0640), and the only way the engines can: a Kubernetes Secret volume
//!   makes its files root's and group-readable by the pod's `fsGroup` whatever its
//!   `defaultMode` says (kubernetes/kubernetes#57923), and systemd's `LoadCredential=` leaves
//!   a credential root's with an ACL for the unit's user, which shows as the group bits;
//! - nobody else's key is taken, and a key others may read never.
//!
//! Unlike the files the herd writes (`herd_os::private`), the path may go through symbolic
//! links (a Secret volume's files are links into its current version, certbot's `live/`
//! folder too): the checks are on the file the links lead to.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The text of the key file at `path`, if its owner and mode keep it private.
pub fn read(path: &Path) -> Result<String> {
    let shown = path.display();
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {shown}"))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {shown}"))?;
    if !meta.is_file() {
        bail!("{shown} is not a file; give the key's file");
    }
    let me = nix::unistd::geteuid().as_raw();
    if let Some(problem) = exposure(meta.mode() & 0o7777, meta.uid(), me) {
        bail!("{shown} {problem}");
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("cannot read {shown} as text"))?;
    Ok(text)
}

/// What is wrong with a key of mode `mode` owned by `owner`, read by user `me`, with the
/// fix; `None` when it is private enough.
pub fn exposure(mode: u32, owner: u32, me: u32) -> Option<String> {
    let fix = |mode_wanted: &str| format!("make it private with: chmod {mode_wanted}");
    if mode & 0o007 != 0 {
        return Some(format!(
            "can be read or written by other users (mode {:o}); {}",
            mode & 0o777,
            fix("600")
        ));
    }
    if owner == me {
        if mode & 0o070 != 0 {
            return Some(format!(
                "can be read or written by its group (mode {:o}); {}",
                mode & 0o777,
                fix("600")
            ));
        }
        return None;
    }
    if owner == 0 {
        if mode & 0o030 != 0 {
            return Some(format!(
                "belongs to root and its group may change it (mode {:o}); {}",
                mode & 0o777,
                fix("640")
            ));
        }
        return None;
    }
    Some(format!(
        "belongs to user {owner}, neither this server's user ({me}) nor root; give it to the \
         server's user (chown {me}) and {}",
        fix("600")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 1000;

    #[test]
    fn a_key_of_ones_own_must_be_ones_only() {
        assert_eq!(exposure(0o600, ME, ME), None);
        assert_eq!(exposure(0o400, ME, ME), None);
        for mode in [0o640, 0o440, 0o660, 0o604, 0o644] {
            let problem = exposure(mode, ME, ME).unwrap();
            assert!(problem.contains("chmod 600"), "{mode:o}: {problem}");
        }
    }

    #[test]
    fn roots_key_may_be_given_to_a_group_to_read_only() {
        // A Secret volume with fsGroup, systemd's credential ACL, /etc/ssl/private.
        assert_eq!(exposure(0o440, 0, ME), None);
        assert_eq!(exposure(0o640, 0, ME), None);
        assert_eq!(exposure(0o400, 0, ME), None);
        assert!(exposure(0o660, 0, ME).unwrap().contains("chmod 640"));
        assert!(exposure(0o444, 0, ME).unwrap().contains("other users"));
        // Run as root, root's key is its own: its only.
        assert!(exposure(0o440, 0, 0).is_some());
        assert_eq!(exposure(0o400, 0, 0), None);
    }

    #[test]
    fn another_users_key_is_refused() {
        let problem = exposure(0o600, 1001, ME).unwrap();
        assert!(problem.contains("chown 1000"), "{problem}");
    }

    #[test]
    fn a_key_through_symbolic_links_is_read_and_checked_where_they_lead() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        // A Secret volume's layout: name -> ..data/name, ..data -> the current version.
        let version = dir.path().join("..2026_12_04_17_00_00.1");
        std::fs::create_dir(&version).unwrap();
        std::fs::write(version.join("A.key"), "KEY").unwrap();
        symlink(version.file_name().unwrap(), dir.path().join("..data")).unwrap();
        symlink("..data/A.key", dir.path().join("A.key")).unwrap();
        let key = version.join("A.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read(&dir.path().join("A.key")).unwrap(), "KEY");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o444)).unwrap();
        let e = read(&dir.path().join("A.key")).unwrap_err().to_string();
        assert!(e.contains("other users"), "{e}");
    }
}
