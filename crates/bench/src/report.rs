//! The figures of a run: the JSON object (`--json`) and the human table, plus the generator's
//! own CPU use.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::stats::Histogram;

/// The fields every `--json` report carries (the contract; others only when asked).
pub const REQUIRED_JSON_FIELDS: [&str; 6] = [
    "ops_per_s",
    "p50_us",
    "p99_us",
    "p999_us",
    "errors",
    "generator_cpu",
];

/// Everything a run measured. Optional parts are left out of the JSON when not asked for.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub target: String,
    /// The target was spoken to over TLS, on its `tls_port`.
    pub tls: bool,
    /// `closed` (N pipelined connections) or `open` (fixed rate).
    pub mode: String,
    pub per_request: bool,
    pub connections: usize,
    /// Lines in flight per connection (closed loop).
    pub window: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Distinct client ids the IAMATs cycled through.
    pub ids: u64,
    pub mix: String,
    pub duration_s: f64,
    /// Replies received (errors included).
    pub ops: u64,
    pub ops_per_s: f64,
    /// `? ` replies, malformed replies, and requests left unanswered.
    pub errors: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// The generator thread's CPU time (user + system) over wall time during the run, in
    /// cores: 1.0 means it was busy the whole time and may be the bottleneck.
    pub generator_cpu: f64,
    /// Open loop: how late requests left the generator, from their due time to their write
    /// (already counted in the latencies; a floor the server cannot go below).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_late_p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_late_p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_late_p999_us: Option<f64>,
    /// Open loop: how late the schedule thread woke up for a due time (the first part of
    /// `send_late`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pacer_late_p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_ops_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_generator_cpu: Option<f64>,
    /// ops_per_s / echo_ops_per_s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_echo: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<PropagationReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation_p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation_p99_us: Option<f64>,
}

/// The propagation probe's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PropagationReport {
    /// The server polled for the probe updates.
    pub to: String,
    pub samples: u64,
    /// Probes not visible at `to` within the probe timeout.
    pub lost: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// The mean poll round trip: the measurement's resolution.
    pub resolution_us: f64,
}

pub fn micros(nanos: u64) -> f64 {
    (nanos as f64 / 1000.0 * 10.0).round() / 10.0
}

/// Latency figures of a phase.
#[derive(Debug, Clone, Default)]
pub struct PhaseFigures {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub cpu: f64,
    pub latency: Histogram,
    /// Open loop: due time to write, per request.
    pub send_late: Histogram,
    /// Open loop: due time to the schedule thread's wake-up, per due time.
    pub pacer_late: Histogram,
}

impl PhaseFigures {
    pub fn ops_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            ((self.ops as f64 / secs) * 10.0).round() / 10.0
        } else {
            0.0
        }
    }
}

impl Report {
    pub fn fill_main(&mut self, phase: &PhaseFigures) {
        let h = &phase.latency;
        self.ops = phase.ops;
        self.errors = phase.errors;
        self.ops_per_s = phase.ops_per_s();
        self.p50_us = micros(h.quantile(0.5));
        self.p90_us = micros(h.quantile(0.9));
        self.p99_us = micros(h.quantile(0.99));
        self.p999_us = micros(h.quantile(0.999));
        self.max_us = micros(h.max());
        self.mean_us = micros(h.mean() as u64);
        self.generator_cpu = (phase.cpu * 100.0).round() / 100.0;
        if phase.send_late.count() > 0 {
            let late = &phase.send_late;
            self.send_late_p50_us = Some(micros(late.quantile(0.5)));
            self.send_late_p99_us = Some(micros(late.quantile(0.99)));
            self.send_late_p999_us = Some(micros(late.quantile(0.999)));
            self.pacer_late_p99_us = Some(micros(phase.pacer_late.quantile(0.99)));
        }
    }

    pub fn fill_echo(&mut self, echo: &PhaseFigures) {
        let rate = echo.ops_per_s();
        self.echo_ops_per_s = Some(rate);
        self.echo_p50_us = Some(micros(echo.latency.quantile(0.5)));
        self.echo_p99_us = Some(micros(echo.latency.quantile(0.99)));
        self.echo_generator_cpu = Some((echo.cpu * 100.0).round() / 100.0);
        if rate > 0.0 {
            self.ratio_to_echo = Some((self.ops_per_s / rate * 1000.0).round() / 1000.0);
        }
    }

    pub fn fill_propagation(&mut self, to: &str, h: &Histogram, lost: u64, resolution: &Histogram) {
        let p = PropagationReport {
            to: to.to_owned(),
            samples: h.count(),
            lost,
            p50_us: micros(h.quantile(0.5)),
            p99_us: micros(h.quantile(0.99)),
            max_us: micros(h.max()),
            resolution_us: micros(resolution.mean() as u64),
        };
        self.propagation_p50_us = Some(p.p50_us);
        self.propagation_p99_us = Some(p.p99_us);
        self.propagation = Some(p);
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }

    /// The short human table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let load = match (self.rate, self.per_request) {
            (Some(rate), false) => {
                format!(
                    "open loop at {rate} req/s over {} connections",
                    self.connections
                )
            }
            (Some(rate), true) => {
                format!("open loop at {rate} req/s, {} senders", self.connections)
            }
            (None, false) => format!(
                "closed loop, {} connections x {} in flight",
                self.connections, self.window
            ),
            (None, true) => format!("closed loop, {} at a time", self.connections),
        };
        let per = if self.per_request {
            ", a new connection per request"
        } else {
            ""
        };
        let tls = if self.tls {
            ", over TLS (tls_port)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "target     {} ({load}{per}{tls}), mix {}, {} ids, {} s",
            self.target, self.mix, self.ids, self.duration_s
        );
        let _ = writeln!(
            out,
            "{:<10} {:>12} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "", "ops/s", "errors", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
        );
        let _ = writeln!(
            out,
            "{:<10} {:>12.1} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            "node",
            self.ops_per_s,
            self.errors,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us
        );
        if let (Some(p50), Some(p99), Some(p999)) = (
            self.send_late_p50_us,
            self.send_late_p99_us,
            self.send_late_p999_us,
        ) {
            let _ = writeln!(
                out,
                "{:<10} {:>12} {:>8} {:>10.1} {:>10} {:>10.1} {:>10.1} {:>10}",
                "sent late", "", "", p50, "", p99, p999, ""
            );
        }
        if let (Some(rate), Some(p50), Some(p99)) =
            (self.echo_ops_per_s, self.echo_p50_us, self.echo_p99_us)
        {
            let _ = writeln!(
                out,
                "{:<10} {:>12.1} {:>8} {:>10.1} {:>10} {:>10.1} {:>10} {:>10}",
                "echo", rate, "", p50, "", p99, "", ""
            );
            if let Some(ratio) = self.ratio_to_echo {
                let _ = writeln!(out, "node / echo  {ratio:.3}x");
            }
        }
        if let Some(p) = &self.propagation {
            let _ = writeln!(
                out,
                "propagation {} -> {}: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs over {} probes ({} lost), resolution ~{:.1} µs",
                self.target, p.to, p.p50_us, p.p99_us, p.max_us, p.samples, p.lost, p.resolution_us
            );
        }
        let mut cpu = format!("generator CPU {:.2} cores", self.generator_cpu);
        if let Some(echo_cpu) = self.echo_generator_cpu {
            cpu += &format!(" (echo run: {echo_cpu:.2})");
        }
        cpu += if self
            .generator_cpu
            .max(self.echo_generator_cpu.unwrap_or(0.0))
            > 0.9
        {
            ": near one core, the generator may be the bottleneck"
        } else {
            ""
        };
        let _ = writeln!(out, "{cpu}");
        out
    }
}

/// This thread's CPU time (user + system), from `/proc/thread-self/stat`; zero where that is
/// not available. The generator runs on one thread, so this is the generator's own cost.
pub fn thread_cpu_time() -> Duration {
    match std::fs::read_to_string("/proc/thread-self/stat") {
        Ok(stat) => cpu_time_of_stat(&stat),
        Err(_) => Duration::ZERO,
    }
}

/// The CPU time (user + system) in a `/proc/.../stat` line; zero when it cannot be read.
pub fn cpu_time_of_stat(stat: &str) -> Duration {
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime
    // are fields 14 and 15, in clock ticks.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let total = ticks(11) + ticks(12);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&hz| hz > 0)
        .unwrap_or(100) as u64;
    Duration::from_nanos(total * 1_000_000_000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(values: &[u64], elapsed_ms: u64) -> PhaseFigures {
        let mut latency = Histogram::new();
        for &v in values {
            latency.record(v);
        }
        PhaseFigures {
            ops: values.len() as u64,
            errors: 0,
            elapsed: Duration::from_millis(elapsed_ms),
            cpu: 0.25,
            latency,
            ..PhaseFigures::default()
        }
    }

    #[test]
    fn json_has_the_required_fields_and_only_asked_for_extras() {
        let mut report = Report {
            target: "Alford".into(),
            mode: "closed".into(),
            ..Report::default()
        };
        report.fill_main(&figures(&[1000, 2000, 3000, 4000], 2000));
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        for field in REQUIRED_JSON_FIELDS {
            assert!(value.get(field).is_some(), "{field} missing: {value}");
        }
        assert_eq!(value["ops_per_s"], 2.0);
        assert_eq!(value["p50_us"], 2.0);
        assert_eq!(value["p99_us"], 4.0);
        assert_eq!(value["errors"], 0);
        for field in [
            "echo_ops_per_s",
            "propagation_p50_us",
            "propagation_p99_us",
            "rate",
            "send_late_p99_us",
        ] {
            assert!(value.get(field).is_none(), "{field} present: {value}");
        }

        report.fill_echo(&figures(&[500; 8], 2000));
        let mut prop = Histogram::new();
        prop.record(1_500_000);
        report.fill_propagation("Ball", &prop, 0, &prop);
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(value["echo_ops_per_s"], 4.0);
        assert_eq!(value["ratio_to_echo"], 0.5);
        assert!(value["propagation_p50_us"].as_f64().unwrap() > 1400.0);
        assert!(value["propagation_p99_us"].is_number());
        assert_eq!(value["propagation"]["to"], "Ball");
        assert!(report.to_table().contains("node / echo"));
    }

    #[test]
    fn thread_cpu_time_moves_forward() {
        let before = thread_cpu_time();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(thread_cpu_time() >= before, "{x}");
    }
}
