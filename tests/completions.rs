//! The committed completion scripts in `completions/` must match what `herdctl completions`
//! prints, so they follow every change to the CLI. To regenerate them after such a change:
//!
//!     HERDCTL_BLESS=1 cargo test --test completions

use std::path::PathBuf;
use std::process::Command;

const BLESS: &str = "HERDCTL_BLESS=1 cargo test --test completions";

fn check(shell: &str, file: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_herdctl"))
        .args(["completions", shell])
        .env_remove("HERD_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "herdctl completions {shell} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let generated = String::from_utf8(output.stdout).unwrap();
    assert!(generated.contains("herdctl"), "{shell}: {generated}");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("completions")
        .join(file);
    if std::env::var_os("HERDCTL_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read completions/{file} ({e}); generate it with: {BLESS}")
    });
    assert!(
        committed == generated,
        "completions/{file} is out of date with the CLI (herdctl completions {shell} prints \
         something else); regenerate the scripts with: {BLESS}"
    );
}

#[test]
fn bash_script_is_up_to_date() {
    check("bash", "herdctl.bash");
}

#[test]
fn zsh_script_is_up_to_date() {
    check("zsh", "_herdctl");
}

#[test]
fn fish_script_is_up_to_date() {
    check("fish", "herdctl.fish");
}

/// The committed bash script completes server names from the herd file given with
/// `--config` (through the hidden `herdctl complete-names`), where a command takes them.
#[test]
fn bash_completes_server_names_from_the_herd_file() {
    let dir = tempfile::tempdir().unwrap();
    let herd = dir.path().join("h.yaml");
    std::fs::write(
        &herd,
        "servers:\n  Alford: { port: 31555 }\n  Ball: { port: 31556 }\n",
    )
    .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("completions")
        .join("herdctl.bash");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_herdctl"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let complete = |words: &str| {
        let program = format!(
            "source '{}'; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _herdctl_with_names; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let output = Command::new("bash")
            .args(["-c", &program])
            .env("PATH", &path)
            .env_remove("HERD_CONFIG")
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let config = herd.display();
    assert_eq!(
        complete(&format!("herdctl --config '{config}' stop ''")),
        "all\nAlford\nBall\n"
    );
    assert_eq!(
        complete(&format!("herdctl --config '{config}' tail B")),
        "Ball\n"
    );
    assert!(
        !complete(&format!("herdctl --config '{config}' send Alford ''")).contains("Ball"),
        "send's second argument is a line, not a server"
    );
}
