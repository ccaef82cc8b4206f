//! Finding the running herd whatever herd.yaml says now. A supervisor records where it runs
//! (its run_dir) in a pointer file beside the herd file, `.herd.yaml.run_dir`, so an
//! operator whose herd.yaml is broken, or names another run_dir, still reaches the
//! supervisor and the nodes it runs, through the copy of the file it applied.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::APPLIED_COPY;
use herd_config::config::{Environment, HerdConfig};
use herd_os::pidlock::PidLock;

/// Where the supervisor of the herd file at `config_path` records its run_dir.
pub fn pointer_path(config_path: &Path) -> PathBuf {
    let path = std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let name = path
        .file_name()
        .map_or("herd.yaml".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.run_dir"))
}

/// Records `config.run_dir` as where this herd runs (the supervisor, when it starts).
pub fn record_run_dir(config: &HerdConfig) -> std::io::Result<()> {
    let pointer = pointer_path(&config.path);
    let aside = pointer.with_extension("run_dir.new");
    std::fs::write(&aside, config.run_dir.as_os_str().as_encoded_bytes())?;
    std::fs::rename(aside, pointer)
}

/// The run_dir a supervisor of this herd file recorded, if any.
fn recorded_run_dir(config_path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(pointer_path(config_path)).ok()?;
    Some(PathBuf::from(text.trim_end_matches('\n'))).filter(|p| p.is_absolute())
}

/// Whether a supervisor or a node holds its lock in `run_dir`.
fn alive_in(run_dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return false;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lock"))
        .any(|lock| PidLock::holder(&lock).ok().flatten().is_some())
}

/// The herd as the commands that act on a running herd see it (status, stop, kill, send,
/// tail, pause, resume): the herd file when it is valid and names the run_dir the herd runs
/// in; otherwise the copy the supervisor applied, with one warning line saying why. Errors
/// only when the file is broken and there is no applied copy to fall back on. The flag says
/// whether the copy was used.
pub fn for_running_herd(config_path: &Path) -> Result<(HerdConfig, bool)> {
    load_running(config_path).map(|(config, _, from_copy)| (config, from_copy))
}

/// [`for_running_herd`], with the text the herd was read from (the supervisor keeps it as
/// its applied copy).
pub fn load_running(config_path: &Path) -> Result<(HerdConfig, String, bool)> {
    let recorded = recorded_run_dir(config_path);
    let env = Environment::of_process();
    let copy_of = |dir: &Path| -> Result<(HerdConfig, String)> {
        let copy = dir.join(APPLIED_COPY);
        let text = std::fs::read_to_string(&copy)?;
        Ok((
            HerdConfig::parse(&text, &std::path::absolute(config_path)?, &env)?,
            text,
        ))
    };
    match HerdConfig::load_with_text(config_path, &env) {
        Ok((config, text)) => match recorded {
            Some(dir) if dir != config.run_dir && alive_in(&dir) => match copy_of(&dir) {
                Ok((applied, text)) => {
                    warn(&format!(
                        "{} names run_dir {}, but the herd runs under {}; using the copy \
                             the supervisor applied (to move the herd: herdctl stop all, then \
                             herdctl start all)",
                        config.path.display(),
                        config.run_dir.display(),
                        dir.display()
                    ));
                    Ok((applied, text, true))
                }
                Err(_) => Ok((config, text, false)),
            },
            _ => Ok((config, text, false)),
        },
        Err(broken) => {
            let folder = std::path::absolute(config_path)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_default();
            let dir = recorded.unwrap_or_else(|| folder.join("run"));
            let copy = dir.join(APPLIED_COPY);
            let Ok((applied, text)) = copy_of(&dir) else {
                return Err(broken);
            };
            warn(&format!(
                "{broken:#}; using the copy the supervisor applied ({}) until the file is \
                 fixed (`herdctl reload` refuses it)",
                copy.display()
            ));
            Ok((applied, text, true))
        }
    }
}

/// The herd file, else (broken) the supervisor's applied copy, without a word: for shell
/// completion, which must never print into the command line.
pub fn load_quietly(config_path: &Path) -> Result<(HerdConfig, bool)> {
    let env = Environment::of_process();
    match HerdConfig::load(config_path, &env) {
        Ok(config) => Ok((config, false)),
        Err(broken) => {
            let folder = std::path::absolute(config_path)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_default();
            let dir = recorded_run_dir(config_path).unwrap_or_else(|| folder.join("run"));
            HerdConfig::load_copy(&dir.join(APPLIED_COPY), config_path, &env)
                .map(|config| (config, true))
                .map_err(|_| broken)
        }
    }
}

/// Refuses a herd file whose run_dir differs from the one the herd runs in (start, restart,
/// reload): a second supervisor there would not see the running nodes.
pub fn check_run_dir(config: &HerdConfig) -> Result<()> {
    if let Some(dir) = recorded_run_dir(&config.path) {
        if dir != config.run_dir && alive_in(&dir) {
            bail!(
                "run_dir changed from {} to {} while the herd runs under {}; put run_dir back, \
                 or move the herd: herdctl stop all (with the old run_dir), then herdctl start all",
                dir.display(),
                config.run_dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

fn warn(text: &str) {
    eprintln!("herdctl: warning: {text}");
}
