//! Who holds a TCP port or a file: so a message can say "port 12000 is held by pid 4242
//! (nc -l 12000)" instead of a raw OS error. Linux only (/proc); elsewhere, and for other
//! users' processes the kernel hides, the answer is as much as can be known.

use std::path::Path;

/// The process listening on TCP `port` (any local address), described for a message:
/// `pid 4242 (nc -l 12000)`, or `a process of uid 1001` when its pid cannot be seen.
/// `None` when nothing listens there (or /proc cannot say).
pub fn describe_port(port: u16) -> Option<String> {
    let (inode, uid) = listening_socket(port)?;
    match pid_with_socket(inode) {
        Some(pid) => Some(describe_pid(pid)),
        None => Some(format!("a process of uid {uid} that this user cannot see")),
    }
}

/// `pid 4242 (herdctl run Alford)`: a pid and its command line, as far as /proc shows it.
pub fn describe_pid(pid: u32) -> String {
    match command_line(pid) {
        Some(command) => format!("pid {pid} ({command})"),
        None => format!("pid {pid}"),
    }
}

/// The process's command line, arguments joined by spaces, cut to a readable length.
pub fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let mut words = words.into_iter();
    // The program by its file name alone: the folder says little and takes the room.
    let program = words.next()?;
    let program = Path::new(&program)
        .file_name()
        .map_or(program.clone(), |f| f.to_string_lossy().into_owned());
    let line: String = std::iter::once(program)
        .chain(words)
        .collect::<Vec<_>>()
        .join(" ");
    const MAX: usize = 80;
    Some(match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    })
}

/// The process holding a lock (flock or POSIX record lock) on `file`, from /proc/locks.
pub fn lock_holder(file: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(file).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks
        .lines()
        // `->` lines are processes waiting for the lock, not holding it.
        .filter(|line| !line.contains("->"))
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let locked: u64 = fields.get(5)?.rsplit(':').next()?.parse().ok()?;
            let pid = fields.get(4)?.parse().ok()?;
            (locked == inode).then_some(pid)
        })
}

/// The inode and owner uid of a listening TCP socket on `port` (IPv4 or IPv6).
fn listening_socket(port: u16) -> Option<(u64, u32)> {
    const LISTEN: &str = "0A";
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local = fields.get(1)?;
                    let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
                    let listening = *fields.get(3)? == LISTEN;
                    let uid = fields.get(7)?.parse().ok()?;
                    let inode = fields.get(9)?.parse().ok()?;
                    (listening && local_port == port && inode != 0).then_some((inode, uid))
                })
                .collect::<Vec<_>>()
        })
        .next()
}

/// The first process (by /proc order) with an open descriptor on socket `inode`.
fn pid_with_socket(inode: u64) -> Option<u32> {
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.filter_map(|fd| fd.ok()).any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str())
                })
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_port_is_traced_to_this_process() {
        use nix::sys::socket::{
            bind, getsockname, listen, socket, AddressFamily, Backlog, SockFlag, SockType,
            SockaddrIn,
        };
        // One socket holds the port throughout, bound before it listens: nothing else (on
        // this shared machine, or another test) can take the port between the two checks.
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::new(127, 0, 0, 1, 0),
        )
        .unwrap();
        let port = getsockname::<SockaddrIn>(std::os::fd::AsRawFd::as_raw_fd(&fd))
            .unwrap()
            .port();
        assert_eq!(describe_port(port), None, "bound, not listening yet");
        listen(&fd, Backlog::new(1).unwrap()).unwrap();
        let said = describe_port(port).expect("a listener on the port");
        assert!(
            said.starts_with(&format!("pid {} (", std::process::id())),
            "{said}"
        );
    }

    #[test]
    fn a_locked_file_is_traced_to_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("some.lock");
        let lock = crate::pidlock::PidLock::acquire(&path).unwrap().unwrap();
        assert_eq!(lock_holder(&path), Some(std::process::id()));
        drop(lock);
        assert_eq!(lock_holder(&path), None);
    }
}
