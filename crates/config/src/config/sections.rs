//! The herd file's sections, checked one by one: each takes its part of the file model and
//! returns its settings or an error that names the file, the key and the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use serde_saphyr::Spanned;

use super::defaults::*;
use super::model::{RawClients, RawLimits, RawLinks, RawLogs, RawReconnect, RawSupervisor};
use super::settings::{
    ClientsSettings, Forwarding, Limits, LinkSettings, LogRotation, LogSettings, ReconnectSettings,
    SupervisorSettings,
};
use super::Environment;
use crate::auth::{HerdSecret, SecretSource, SECRET_ENV, SECRET_FILE_NAME};

/// The `logs:` section, checked; `dir` is `log_dir:` resolved.
pub(super) fn logs_config(raw: &RawLogs, dir: PathBuf, shown: &str) -> Result<LogSettings> {
    let logs = LogSettings {
        dir,
        rotation: raw.rotation.unwrap_or(LogRotation::Daily),
        keep: nonzero(
            shown,
            "logs.keep",
            raw.keep,
            DEFAULT_LOG_KEEP,
            &format!("keep at least 1 file (default {DEFAULT_LOG_KEEP})"),
        )?,
        max_file_bytes: raw.max_file_bytes,
        max_line_bytes: raw.max_line_bytes.unwrap_or(DEFAULT_LOG_MAX_LINE_BYTES),
        level: raw.level.unwrap_or_default(),
        order_window: Duration::from_millis(
            raw.order_window_ms.unwrap_or(DEFAULT_LOG_ORDER_WINDOW_MS),
        ),
        redact: raw.redact.unwrap_or_default(),
    };
    if logs.order_window > Duration::from_millis(MAX_LOG_ORDER_WINDOW_MS) {
        bail!(
            "{shown}: logs.order_window_ms is {}; use at most {MAX_LOG_ORDER_WINDOW_MS} \
             (default {DEFAULT_LOG_ORDER_WINDOW_MS})",
            logs.order_window.as_millis()
        );
    }
    if logs.max_file_bytes.is_some_and(|b| b < MIN_LOG_FILE_BYTES) {
        bail!(
            "{shown}: logs.max_file_bytes is {}; use at least {MIN_LOG_FILE_BYTES} (or leave \
             it out to rotate by time only)",
            logs.max_file_bytes.unwrap_or_default()
        );
    }
    if logs.max_line_bytes < MIN_LOG_LINE_BYTES {
        bail!(
            "{shown}: logs.max_line_bytes is {}; use at least {MIN_LOG_LINE_BYTES} (default \
             {DEFAULT_LOG_MAX_LINE_BYTES})",
            logs.max_line_bytes
        );
    }
    Ok(logs)
}

/// The `links:` section, checked: every zero is an error.
pub(super) fn links_config(raw: RawLinks, shown: &str) -> Result<LinkSettings> {
    let millis = |key: &str, value: Option<u64>, default: u64| {
        nonzero(shown, key, value, default, &format!("use e.g. {default}"))
            .map(Duration::from_millis)
    };
    Ok(LinkSettings {
        queue: nonzero(
            shown,
            "links.queue",
            raw.queue,
            DEFAULT_LINK_QUEUE,
            &format!("use e.g. {DEFAULT_LINK_QUEUE}"),
        )?,
        write_timeout: millis(
            "links.write_timeout_ms",
            raw.write_timeout_ms,
            DEFAULT_LINK_WRITE_TIMEOUT_MS,
        )?,
        answer_timeout: millis(
            "links.answer_timeout_ms",
            raw.answer_timeout_ms,
            DEFAULT_LINK_ANSWER_TIMEOUT_MS,
        )?,
        forwarding: match raw.forwarding.as_deref() {
            None => Default::default(),
            Some(text) => Forwarding::parse(text).ok_or_else(|| {
                anyhow::anyhow!(
                    "{shown}: links.forwarding is {text:?}; use flood (every neighbour but the \
                     sender) or tree (along the origin's spanning tree)"
                )
            })?,
        },
    })
}

/// The `limits:` section, checked: zero (or a line too short to be useful) is an error.
pub(super) fn limits_config(raw: RawLimits, shown: &str) -> Result<Limits> {
    let max_line_bytes = raw.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES);
    if max_line_bytes < MIN_MAX_LINE_BYTES {
        bail!(
            "{shown}: limits.max_line_bytes is {max_line_bytes}; use at least \
             {MIN_MAX_LINE_BYTES} (default {DEFAULT_MAX_LINE_BYTES})"
        );
    }
    Ok(Limits {
        max_line_bytes,
        max_connections: at_least(
            shown,
            "limits.max_connections",
            raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            MIN_MAX_CONNECTIONS,
            &format!(
                "fewer leaves no room for an operator's `herdctl send` beside a few clients; \
                 default {DEFAULT_MAX_CONNECTIONS}"
            ),
        )?,
        idle_timeout: Duration::from_secs(nonzero(
            shown,
            "limits.idle_timeout_s",
            raw.idle_timeout_s,
            DEFAULT_IDLE_TIMEOUT_S,
            &format!("use e.g. {DEFAULT_IDLE_TIMEOUT_S}"),
        )?),
        max_client_id_bytes: nonzero(
            shown,
            "limits.max_client_id_bytes",
            raw.max_client_id_bytes,
            DEFAULT_MAX_CLIENT_ID_BYTES,
            &format!("use e.g. {DEFAULT_MAX_CLIENT_ID_BYTES}"),
        )?,
        max_future: Duration::from_secs(nonzero(
            shown,
            "limits.max_future_s",
            raw.max_future_s,
            DEFAULT_MAX_FUTURE_S,
            &format!("use e.g. {DEFAULT_MAX_FUTURE_S} (clients' clocks may run ahead a little)"),
        )?),
        max_connections_per_ip: nonzero(
            shown,
            "limits.max_connections_per_ip",
            raw.max_connections_per_ip,
            DEFAULT_MAX_CONNECTIONS_PER_IP,
            &format!("use e.g. {DEFAULT_MAX_CONNECTIONS_PER_IP}"),
        )?,
        first_line_timeout: Duration::from_secs(nonzero(
            shown,
            "limits.first_line_timeout_s",
            raw.first_line_timeout_s,
            DEFAULT_FIRST_LINE_TIMEOUT_S,
            &format!("use e.g. {DEFAULT_FIRST_LINE_TIMEOUT_S}"),
        )?),
        write_timeout: Duration::from_secs(nonzero(
            shown,
            "limits.write_timeout_s",
            raw.write_timeout_s,
            DEFAULT_WRITE_TIMEOUT_S,
            &format!("use e.g. {DEFAULT_WRITE_TIMEOUT_S}"),
        )?),
        close_after_reply: raw.close_after_reply.unwrap_or(false),
    })
}

/// The `clients:` section, checked: zero would expire or refuse everything.
pub(super) fn clients_config(raw: &RawClients, shown: &str) -> Result<ClientsSettings> {
    if raw.ttl_s == Some(0) {
        bail!("{shown}: clients.ttl_s is 0; use e.g. 86400, or leave it out to keep locations");
    }
    if raw.max == Some(0) {
        bail!("{shown}: clients.max is 0; use e.g. 1000000, or leave it out for no bound");
    }
    Ok(ClientsSettings {
        ttl_s: raw.ttl_s,
        tombstone_ttl_s: nonzero(
            shown,
            "clients.tombstone_ttl_s",
            raw.tombstone_ttl_s,
            DEFAULT_TOMBSTONE_TTL_S,
            &format!(
                "use e.g. {DEFAULT_TOMBSTONE_TTL_S} (longer than any server stays down, or a \
                 forgotten client can come back from it)"
            ),
        )?,
        max: raw.max,
    })
}

/// Where the herd secret comes from: `HERD_SECRET` > `secret:` > `secret_file:` >
/// `herd.secret` beside the herd file; `insecure_open_links: true` is the only way to none.
pub(super) fn secret_source(
    inline: Option<Spanned<String>>,
    file: Option<Spanned<PathBuf>>,
    open: Option<Spanned<bool>>,
    env: &Environment,
    folder: &Path,
    shown: &str,
) -> Result<SecretSource> {
    let open_line = open
        .as_ref()
        .filter(|o| o.value)
        .map(|o| o.referenced.line());
    if let (Some(line), true) = (open_line, inline.is_some() || file.is_some()) {
        bail!(
            "{shown} line {line}: insecure_open_links: true and a secret exclude each other; \
             remove one of them"
        );
    }
    if let (Some(s), Some(f)) = (&inline, &file) {
        bail!(
            "{shown} line {}: both secret: (line {}) and secret_file: are set; keep one",
            f.referenced.line(),
            s.referenced.line()
        );
    }
    if let Some(from_env) = &env.secret {
        return HerdSecret::checked(from_env, SECRET_ENV).map(SecretSource::Env);
    }
    if let Some(s) = inline {
        let from = format!("{shown} line {}", s.referenced.line());
        return HerdSecret::checked(&s.value, &from).map(SecretSource::Inline);
    }
    if let Some(f) = file {
        return Ok(SecretSource::File(f.value));
    }
    if open_line.is_some() {
        return Ok(SecretSource::Open);
    }
    Ok(SecretSource::Default(folder.join(SECRET_FILE_NAME)))
}

/// The `reconnect:` section, checked.
pub(super) fn reconnect_config(raw: &RawReconnect, shown: &str) -> Result<ReconnectSettings> {
    let initial = raw.initial_ms.unwrap_or(100);
    let max = raw.max_ms.unwrap_or(2000);
    ordered_pair(shown, "reconnect", ("initial_ms", initial), ("max_ms", max))?;
    let sync_interval = nonzero(
        shown,
        "reconnect.sync_interval_s",
        raw.sync_interval_s,
        DEFAULT_SYNC_INTERVAL_S,
        &format!("use e.g. {DEFAULT_SYNC_INTERVAL_S} (anti-entropy cannot run continuously)"),
    )?;
    Ok(ReconnectSettings {
        initial: Duration::from_millis(initial),
        max: Duration::from_millis(max),
        sync_interval: Duration::from_secs(sync_interval),
    })
}

/// The `supervisor:` section, checked.
pub(super) fn supervisor_config(raw: &RawSupervisor, shown: &str) -> Result<SupervisorSettings> {
    let backoff_initial = raw.backoff_initial_ms.unwrap_or(500);
    let backoff_max = raw.backoff_max_ms.unwrap_or(30_000);
    ordered_pair(
        shown,
        "supervisor",
        ("backoff_initial_ms", backoff_initial),
        ("backoff_max_ms", backoff_max),
    )?;
    Ok(SupervisorSettings {
        stop_timeout: Duration::from_millis(raw.stop_timeout_ms.unwrap_or(5000)),
        backoff_initial: Duration::from_millis(backoff_initial),
        backoff_max: Duration::from_millis(backoff_max),
        stable_after: Duration::from_secs(raw.stable_after_s.unwrap_or(10)),
        max_quick_crashes: raw.max_quick_crashes.unwrap_or(5),
        start_timeout: Duration::from_millis(at_least(
            shown,
            "supervisor.start_timeout_ms",
            raw.start_timeout_ms.unwrap_or(DEFAULT_START_TIMEOUT_MS),
            MIN_START_TIMEOUT_MS,
            &format!(
                "a node loading its store needs time to answer; default \
                 {DEFAULT_START_TIMEOUT_MS}"
            ),
        )?),
        health_interval: Duration::from_millis(at_least(
            shown,
            "supervisor.health_interval_ms",
            raw.health_interval_ms.unwrap_or(DEFAULT_HEALTH_INTERVAL_MS),
            MIN_HEALTH_INTERVAL_MS,
            &format!(
                "a probe must be answered within it, even by a busy node; default \
                 {DEFAULT_HEALTH_INTERVAL_MS}"
            ),
        )?),
        health_failures: nonzero(
            shown,
            "supervisor.health_failures",
            raw.health_failures,
            DEFAULT_HEALTH_FAILURES,
            &format!(
                "use e.g. {DEFAULT_HEALTH_FAILURES} (probes failed in a row before a restart)"
            ),
        )?,
    })
}

/// A setting that must not be zero: its value (or `default` when absent), else an error
/// naming the key and `fix`.
pub(super) fn nonzero<T: Copy + PartialEq + Default>(
    shown: &str,
    key: &str,
    value: Option<T>,
    default: T,
    fix: &str,
) -> Result<T> {
    let value = value.unwrap_or(default);
    if value == T::default() {
        bail!("{shown}: {key} is 0; {fix}");
    }
    Ok(value)
}

/// A setting with a smallest workable value: `value`, else an error naming the key, the
/// minimum and `why`.
pub(super) fn at_least<T: Copy + PartialOrd + std::fmt::Display>(
    shown: &str,
    key: &str,
    value: T,
    min: T,
    why: &str,
) -> Result<T> {
    if value < min {
        bail!("{shown}: {key} is {value}; use at least {min} ({why})");
    }
    Ok(value)
}

/// A pair of settings that must satisfy `0 < low <= high` (a backoff's first and largest
/// delay).
pub(super) fn ordered_pair(
    shown: &str,
    section: &str,
    low: (&str, u64),
    high: (&str, u64),
) -> Result<()> {
    if low.1 == 0 || high.1 < low.1 {
        bail!(
            "{shown}: {section} needs 0 < {} <= {} (got {} and {})",
            low.0,
            high.0,
            low.1,
            high.1
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::auth::HerdSecret;
    use crate::config::test_herd::{error, parse, CLASSIC};
    use crate::config::*;

    #[test]
    fn the_log_order_window_has_a_default_and_a_ceiling() {
        let c = parse(CLASSIC).unwrap();
        assert_eq!(c.logs.order_window, Duration::from_millis(200));
        let c = parse(&format!("{CLASSIC}logs: {{ order_window_ms: 0 }}\n")).unwrap();
        assert_eq!(c.logs.order_window, Duration::ZERO);
        let e = error(&format!("{CLASSIC}logs: {{ order_window_ms: 20000 }}\n"));
        assert!(
            e.contains("logs.order_window_ms is 20000; use at most 10000"),
            "{e}"
        );
    }

    #[test]
    fn limits_have_safe_defaults_and_reject_zero() {
        let c = parse(CLASSIC).unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.limits.max_line_bytes, 1 << 20);
        assert_eq!(c.limits.max_connections, 1024);
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.limits.max_client_id_bytes, 256);

        let c = parse(&format!(
            "{CLASSIC}limits:\n  max_line_bytes: 4096\n  max_connections: 10\n  \
             idle_timeout_s: 1\n  max_client_id_bytes: 64\n"
        ))
        .unwrap();
        assert_eq!(
            c.limits,
            Limits {
                max_line_bytes: 4096,
                max_connections: 10,
                idle_timeout: Duration::from_secs(1),
                max_client_id_bytes: 64,
                ..Limits::default()
            }
        );

        for (key, fix) in [
            ("max_line_bytes", "at least 128"),
            ("max_connections", "at least 4"),
            ("idle_timeout_s", "e.g. 300"),
            ("max_client_id_bytes", "e.g. 256"),
            ("max_future_s", "e.g. 86400"),
            ("max_connections_per_ip", "e.g. 512"),
            ("first_line_timeout_s", "e.g. 10"),
            ("write_timeout_s", "e.g. 10"),
        ] {
            let e = error(&format!("{CLASSIC}limits: {{ {key}: 0 }}\n"));
            assert!(
                e.contains(&format!("limits.{key}")) && e.contains(fix),
                "{e}"
            );
        }
        // Values that cannot work are refused, naming the minimum (issue 21: a herd with
        // max_connections: 2 restarted itself in a loop).
        for (yaml, wanted) in [
            (
                "limits: { max_connections: 2 }",
                "limits.max_connections is 2; use at least 4",
            ),
            (
                "supervisor: { health_interval_ms: 50 }",
                "supervisor.health_interval_ms is 50; use at least 100",
            ),
            (
                "supervisor: { start_timeout_ms: 999 }",
                "supervisor.start_timeout_ms is 999; use at least 1000",
            ),
        ] {
            let e = error(&format!("{CLASSIC}{yaml}\n"));
            assert!(e.contains(wanted), "{e}");
        }
        let e = error(&format!("{CLASSIC}limits: {{ max_line_bytes: 100 }}\n"));
        assert!(e.contains("at least 128"), "{e}");
        let e = error(&format!("{CLASSIC}limits: {{ max_lines: 5 }}\n"));
        assert!(e.contains("line 7"), "{e}");
        let e = error(&format!("{CLASSIC}limits: {{ max_connections: -1 }}\n"));
        assert!(e.contains("line 7"), "{e}");
    }

    #[test]
    fn links_have_bounded_defaults_and_reject_zero() {
        assert_eq!(parse(CLASSIC).unwrap().links, LinkSettings::default());
        let c = parse(&format!(
            "{CLASSIC}links: {{ queue: 10, write_timeout_ms: 250, answer_timeout_ms: 750, \
             forwarding: tree }}\n"
        ))
        .unwrap();
        assert_eq!(
            c.links,
            LinkSettings {
                queue: 10,
                write_timeout: Duration::from_millis(250),
                answer_timeout: Duration::from_millis(750),
                forwarding: Forwarding::Tree,
            }
        );
        let e = error(&format!("{CLASSIC}links: {{ forwarding: gossip }}\n"));
        assert!(
            e.contains("links.forwarding is \"gossip\"; use flood"),
            "{e}"
        );
        for key in ["queue", "write_timeout_ms", "answer_timeout_ms"] {
            let e = error(&format!("{CLASSIC}links: {{ {key}: 0 }}\n"));
            assert!(e.contains(&format!("links.{key} is 0")), "{e}");
        }
    }

    #[test]
    fn every_zero_is_an_error_naming_the_key() {
        for (yaml, key) in [
            (
                "reconnect: { sync_interval_s: 0 }",
                "reconnect.sync_interval_s",
            ),
            ("logs: { keep: 0 }", "logs.keep"),
            (
                "supervisor: { start_timeout_ms: 0 }",
                "supervisor.start_timeout_ms",
            ),
            (
                "supervisor: { health_interval_ms: 0 }",
                "supervisor.health_interval_ms",
            ),
            (
                "supervisor: { health_failures: 0 }",
                "supervisor.health_failures",
            ),
        ] {
            let e = error(&format!("{CLASSIC}{yaml}\n"));
            assert!(
                e.contains(&format!("{key} is 0; use")) || e.contains(&format!("{key} is 0; keep")),
                "{e}"
            );
        }
        for (yaml, wanted) in [
            (
                "reconnect: { initial_ms: 0 }",
                "0 < initial_ms <= max_ms (got 0 and 2000)",
            ),
            (
                "reconnect: { initial_ms: 300, max_ms: 200 }",
                "(got 300 and 200)",
            ),
            (
                "supervisor: { backoff_initial_ms: 0 }",
                "supervisor needs 0 < backoff_initial_ms <= backoff_max_ms",
            ),
        ] {
            let e = error(&format!("{CLASSIC}{yaml}\n"));
            assert!(e.contains(wanted), "{e}");
        }
    }

    #[test]
    fn supervisor_health_settings_and_defaults() {
        let c = parse(CLASSIC).unwrap();
        assert_eq!(c.supervisor.start_timeout, Duration::from_secs(30));
        assert_eq!(c.supervisor.health_interval, Duration::from_secs(5));
        assert_eq!(c.supervisor.health_failures, 3);
        assert_eq!(c.reconnect.sync_interval, Duration::from_secs(30));
        let c = parse(&format!(
            "{CLASSIC}supervisor: {{ start_timeout_ms: 1000, health_interval_ms: 250, \
             health_failures: 2 }}\n"
        ))
        .unwrap();
        assert_eq!(c.supervisor.start_timeout, Duration::from_millis(1000));
        assert_eq!(c.supervisor.health_interval, Duration::from_millis(250));
        assert_eq!(c.supervisor.health_failures, 2);
    }

    #[test]
    fn the_secret_comes_from_one_place_and_never_reaches_the_digest() {
        let folder = Path::new("/etc/herd");
        assert_eq!(
            parse(CLASSIC).unwrap().secret,
            SecretSource::Default(folder.join("herd.secret"))
        );
        let long = "k".repeat(40);
        let c = parse(&format!("{CLASSIC}secret: {long}\n")).unwrap();
        assert_eq!(
            c.secret,
            SecretSource::Inline(HerdSecret::new(long.clone()))
        );
        let other = parse(&format!("{CLASSIC}secret: {}\n", "j".repeat(40))).unwrap();
        assert_eq!(
            c.digest, other.digest,
            "the digest must not depend on the secret"
        );
        let c = parse(&format!("{CLASSIC}secret_file: keys/s\n")).unwrap();
        assert_eq!(c.secret, SecretSource::File(folder.join("keys/s")));
        let c = parse(&format!("{CLASSIC}insecure_open_links: true\n")).unwrap();
        assert!(c.secret.is_open());
        let e = error(&format!("{CLASSIC}secret: a\n"));
        assert!(
            e.contains("line 7") && e.contains("openssl rand -hex 32"),
            "{e}"
        );
        let e = error(&format!(
            "{CLASSIC}secret: {long}\ninsecure_open_links: true\n"
        ));
        assert!(e.contains("exclude each other"), "{e}");
        let e = error(&format!("{CLASSIC}secret: {long}\nsecret_file: x\n"));
        assert!(e.contains("keep one"), "{e}");

        // HERD_SECRET, as the caller read it, wins over the file.
        let from_env = "e".repeat(40);
        let env = Environment {
            secret: Some(from_env.clone()),
        };
        let text = format!("{CLASSIC}secret: {long}\n");
        let c = HerdConfig::parse(&text, &folder.join("herd.yaml"), &env).unwrap();
        assert_eq!(c.secret, SecretSource::Env(HerdSecret::new(from_env)));
        let short = Environment {
            secret: Some("a".into()),
        };
        let e = HerdConfig::parse(CLASSIC, &folder.join("herd.yaml"), &short).unwrap_err();
        assert!(format!("{e:#}").contains("HERD_SECRET"), "{e:#}");
    }
}
