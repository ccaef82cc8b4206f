//! Crash evidence from inside a node: a panic hook that writes the panic, where it happened
//! and a backtrace to the node's log, and one line to stderr (which the supervisor keeps and
//! `herdctl status` quotes). Without it a panicking task vanishes without a trace: tokio
//! catches the panic, and the default hook only prints to stderr.

use std::backtrace::Backtrace;

/// The `tracing` target of panic reports: the log files take them whole, stderr only gets
/// the one-line summary the hook prints itself.
pub const TARGET: &str = "panic";

/// How the hook's one-line summary starts (the supervisor looks for it in stderr).
pub const SUMMARY_PREFIX: &str = "panic in thread ";

/// Replaces the default panic hook. Call once logging is set up.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let message = payload_text(info.payload()).unwrap_or("(a non-text panic payload)");
        let at = info.location().map_or_else(String::new, |l| {
            format!(" at {}:{}:{}", l.file(), l.line(), l.column())
        });
        let summary = format!("{SUMMARY_PREFIX}'{thread}'{at}: {message}");
        tracing::error!(
            target: TARGET,
            "{summary}\nbacktrace:\n{}",
            Backtrace::force_capture()
        );
        // One line, which the supervisor quotes as the node's last words (other threads
        // may still write while a panicking main thread unwinds).
        eprintln!("{}", summary.replace('\n', " "));
    }));
}

/// The environment variable that makes a debug build panic on purpose, so tests can check
/// the evidence a real panic leaves: `task` (a spawned task panics; the node keeps serving)
/// or `main` (the node's main thread panics; the process ends). Release builds ignore it.
pub const INJECT_PANIC_ENV: &str = "HERDCTL_INJECT_PANIC";

/// Panics as [`INJECT_PANIC_ENV`] asks, in debug builds only. Call inside the runtime.
pub fn inject_panic_if_asked() {
    if !cfg!(debug_assertions) {
        return;
    }
    match std::env::var(INJECT_PANIC_ENV).as_deref() {
        Ok("task") => {
            tokio::spawn(async { panic!("injected panic in a task ({INJECT_PANIC_ENV}=task)") });
        }
        Ok("main") => panic!("injected panic in the main thread ({INJECT_PANIC_ENV}=main)"),
        _ => {}
    }
}

/// The text a panic carries (`panic!("...")` gives a `&str` or a `String`), if any.
pub fn payload_text(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}
