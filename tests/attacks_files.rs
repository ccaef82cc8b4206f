//! Another local user against what the herd writes (issue 19, item 5), with the real node
//! (`herdctl run`) and the real supervisor (`herdctl start`). Before: folders 0755 and files
//! 0644 (anyone read clients' locations from the store and the logs), and a run folder
//! anyone could write in was used as is, so links planted there were written through.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::supervised::Supervised;
use common::{run_to_end, Herd, SOLO};

const IAMAT: &str = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n";

/// Every folder and file under `root` (not following links), with its mode.
fn walk(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            found.push((path, meta.mode() & 0o7777, meta.is_dir()));
        }
    }
    found
}

/// `root` and everything in it is this user's only: folders 0700, files without a bit for
/// the group or others.
fn assert_private(root: &Path) {
    let mode = std::fs::metadata(root).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700, "{} is {mode:o}", root.display());
    let found = walk(root);
    assert!(!found.is_empty(), "nothing in {}", root.display());
    for (path, mode, is_dir) in found {
        if is_dir {
            assert_eq!(mode, 0o700, "{} is {mode:o}", path.display());
        } else {
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
        }
    }
}

/// One `herdctl run Alford` to its end (it is expected to refuse): exit status and stderr.
fn run_refused(herd: &Herd) -> String {
    let out = run_to_end(herd.herdctl().args(["run", "Alford"]), b"");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "it ran: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    stderr
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn a_node_makes_its_store_logs_and_lock_private() {
    let herd = Herd::configure(SOLO, "");
    herd.start_node("Alford");
    assert!(herd.send("Alford", IAMAT).starts_with("AT Alford "));
    // The store's journal and the wire log are written within a second or so.
    common::wait_until("the IAMAT in the log", || {
        herd.log_text("Alford").contains("kiwi")
    });
    herd.terminate("Alford");
    for folder in ["data", "logs", "run"] {
        assert_private(&herd.path().join(folder));
    }
}

#[test]
fn the_supervisor_makes_its_files_private() {
    let supervised = Supervised::herd(SOLO, "", "");
    supervised.ok(&["start", "all"]);
    assert!(supervised.serves("Alford"));
    let run = supervised.herd.path().join("run");
    for file in [
        "Alford.stderr",
        "herd.applied.yaml",
        "supervisor.lock",
        "supervisor.sock",
    ] {
        let mode = mode(&run.join(file));
        assert_eq!(mode & 0o077, 0, "{file} is {mode:o}");
    }
    assert_private(&run);
    assert_private(&supervised.herd.path().join("logs"));
}

#[test]
fn a_folder_others_can_write_in_is_refused_and_a_readable_one_is_made_private() {
    let herd = Herd::configure(SOLO, "");
    let run = herd.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let stderr = run_refused(&herd);
    assert!(
        stderr.contains("writable by others") && stderr.contains("chmod 700"),
        "{stderr}"
    );
    assert_eq!(mode(&run), 0o777, "left for its owner to decide");

    // A folder of an older herdctl (0755) is the user's own: made private, and used.
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    herd.start_node("Alford");
    assert_eq!(mode(&run), 0o700);
}

#[test]
fn a_folder_of_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        return common::skip_unless_ci("giving a folder to another user needs root");
    }
    let herd = Herd::configure(SOLO, "");
    let data = herd.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let stderr = run_refused(&herd);
    assert!(
        stderr.contains("data_dir") && stderr.contains("belongs to user 65534"),
        "{stderr}"
    );
}

#[test]
fn a_link_planted_as_the_lock_is_not_followed() {
    let herd = Herd::configure(SOLO, "");
    let precious = herd.path().join("precious");
    std::fs::write(&precious, "keep me\n").unwrap();
    let run = herd.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::symlink(&precious, run.join("Alford.lock")).unwrap();
    let stderr = run_refused(&herd);
    assert!(
        stderr.contains("Alford.lock") && stderr.contains("symbolic link"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
}

#[test]
fn links_planted_in_the_run_folder_are_not_written_through() {
    let supervised = Supervised::herd(SOLO, "", "");
    let path = supervised.herd.path();
    let precious = path.join("precious");
    std::fs::write(&precious, "keep me\n").unwrap();
    let run = path.join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::symlink(&precious, run.join("herd.applied.yaml.new")).unwrap();
    std::os::unix::fs::symlink(&precious, run.join("Alford.stderr")).unwrap();
    // The applied copy is written anew beside the link's name; the node's stderr, which is
    // appended to, is refused: the node does not start, and status says why.
    let out = supervised.run(&["start", "all"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("symbolic link"), "{said}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
    assert!(std::fs::read_to_string(run.join("herd.applied.yaml"))
        .unwrap()
        .contains("Alford"));
    assert_eq!(supervised.node_pid("Alford"), None);
}
