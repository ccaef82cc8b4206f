//! "Is this process alive, and what is its pid?" answered by the kernel, not by a file.
//!
//! The owner holds a POSIX record lock (fcntl F_SETLK) on a file for as long as it lives;
//! anyone can ask the kernel who holds it (F_GETLK) without taking it. A stale file left by a
//! process killed with -9 holds no lock, so it never blocks a start.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Context, Result};
use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;

/// A held lock; released when dropped or when the process exits, however it exits.
#[derive(Debug)]
pub struct PidLock {
    _file: File,
}

fn whole_file_lock(kind: libc::c_short) -> libc::flock {
    // SAFETY: flock is a plain C struct; all-zero is a valid value for every field.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 0; // to the end of the file, however long it grows
    lock
}

impl PidLock {
    /// Takes the lock at `path` (creating the file, 0600, and its folder, the run folder,
    /// private: see [`crate::private`]) and writes this process's pid into it, for people;
    /// or returns the pid of the live process that holds it.
    pub fn acquire(path: &Path) -> Result<std::result::Result<PidLock, u32>> {
        if let Some(folder) = path.parent() {
            crate::private::folder(folder, "run_dir")?;
        }
        let mut file = crate::private::open_read_write(path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        let lock = whole_file_lock(libc::F_WRLCK as libc::c_short);
        if fcntl(file.as_fd(), FcntlArg::F_SETLK(&lock)).is_err() {
            return match PidLock::holder(path)? {
                Some(pid) => Ok(Err(pid)),
                // Released between the two calls: try once more.
                None => PidLock::acquire(path),
            };
        }
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(Ok(PidLock { _file: file }))
    }

    /// The pid of the live process holding the lock at `path`, if any.
    pub fn holder(path: &Path) -> Result<Option<u32>> {
        let file = match crate::private::open_read(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot open {}", path.display()));
            }
        };
        // F_GETLK with a read lock on a read-only descriptor reports a conflicting writer.
        let mut probe = whole_file_lock(libc::F_RDLCK as libc::c_short);
        fcntl(file.as_fd(), FcntlArg::F_GETLK(&mut probe))
            .with_context(|| format!("cannot query the lock on {}", path.display()))?;
        Ok((probe.l_type != libc::F_UNLCK as libc::c_short).then_some(probe.l_pid as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_held_lock_names_its_holder_and_a_stale_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("node.lock");
        assert_eq!(PidLock::holder(&path).unwrap(), None, "no file yet");

        let held = PidLock::acquire(&path).unwrap().expect("free");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(held);

        // A stale file (its writer long gone) holds no lock.
        std::fs::write(&path, "999999\n").unwrap();
        assert_eq!(PidLock::holder(&path).unwrap(), None);
        let again = PidLock::acquire(&path).unwrap();
        assert!(again.is_ok(), "a stale file must not block");

        // A live holder in another process is reported with its pid (python's lockf is
        // fcntl F_SETLK underneath, the same lock a node takes).
        let script = format!(
            "import fcntl,time,sys; f=open('{}','r+'); fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB); print('locked',flush=True); time.sleep(30)",
            dir.path().join("other.lock").display()
        );
        std::fs::write(dir.path().join("other.lock"), "").unwrap();
        let mut child = Command::new("python3")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let holder = PidLock::holder(&dir.path().join("other.lock")).unwrap();
        let acquired = PidLock::acquire(&dir.path().join("other.lock")).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(line.trim(), "locked");
        assert_eq!(holder, Some(child.id()));
        assert_eq!(acquired.unwrap_err(), child.id());
    }
}
