//! What the load generator sends: a mix of IAMAT and WHATSAT lines for many distinct client
//! ids at realistic coordinates, and when (open-loop pacing).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

pub use herd_wire::rng::Rng;

/// Real places (lat, lng) the synthetic clients gather around, so WHATSAT finds places.
const CITIES: &[(f64, f64)] = &[
    (34.068930, -118.445127), // Los Angeles (UCLA)
    (37.774929, -122.419416), // San Francisco
    (40.712776, -74.005974),  // New York
    (51.507351, -0.127758),   // London
    (48.856613, 2.352222),    // Paris
    (52.520008, 13.404954),   // Berlin
    (35.689487, 139.691711),  // Tokyo
    (-33.868820, 151.209290), // Sydney
    (19.432608, -99.133209),  // Mexico City
    (-23.550520, -46.633308), // São Paulo
    (28.613939, 77.209023),   // New Delhi
    (1.352083, 103.819839),   // Singapore
    (55.755825, 37.617298),   // Moscow
    (30.044420, 31.235712),   // Cairo
    (-1.292066, 36.821945),   // Nairobi
    (41.878113, -87.629799),  // Chicago
];

/// The share of each command, in percent-like weights (`iamat=90,whatsat=10`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub iamat: u32,
    pub whatsat: u32,
}

impl Mix {
    pub fn parse(text: &str) -> Result<Mix> {
        let mut mix = Mix {
            iamat: 0,
            whatsat: 0,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (verb, weight) = part
                .split_once('=')
                .with_context(|| format!("--mix: {part:?} is not VERB=WEIGHT"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .with_context(|| format!("--mix: {weight:?} is not a whole number"))?;
            match verb.trim().to_ascii_lowercase().as_str() {
                "iamat" => mix.iamat = weight,
                "whatsat" => mix.whatsat = weight,
                other => bail!("--mix: unknown command {other:?} (iamat, whatsat)"),
            }
        }
        match mix.iamat.checked_add(mix.whatsat) {
            Some(0) => bail!("--mix: the weights add up to 0"),
            None => bail!("--mix: the weights add up to more than {}", u32::MAX),
            Some(_) => {}
        }
        Ok(mix)
    }

    pub fn has_whatsat(&self) -> bool {
        self.whatsat > 0
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "iamat={},whatsat={}", self.iamat, self.whatsat)
    }
}

/// Which reply shape a request expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One `AT ...` line.
    Iamat,
    /// An `AT ...` line, a JSON document and an empty line.
    Whatsat,
}

/// The settings shared by every connection's generator.
#[derive(Debug, Clone)]
pub struct GenSettings {
    pub mix: Mix,
    /// Client ids are `<prefix><n>` for n below `ids`.
    pub prefix: String,
    pub ids: u64,
    /// WHATSAT asks about ids below this (the ones seeded before the run).
    pub seeded: u64,
    pub radius_km: f64,
    pub bound: usize,
}

/// One connection's line generator.
#[derive(Debug, Clone)]
pub struct Generator {
    settings: GenSettings,
    rng: Rng,
}

/// A realistic location near one of [`CITIES`] (within about 10 km), as ISO 6709 text.
pub fn location_text(rng: &mut Rng) -> String {
    let (lat, lng) = CITIES[rng.below(CITIES.len() as u64) as usize];
    let lat = lat + (rng.unit() - 0.5) * 0.18;
    let lng = lng + (rng.unit() - 0.5) * 0.18;
    format!("{lat:+.6}{lng:+.6}")
}

/// Now as POSIX seconds with nanoseconds, the way a client sends its time.
pub fn time_text() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// `IAMAT <client> <location> <time>\n`.
pub fn iamat_line(out: &mut Vec<u8>, client: &str, rng: &mut Rng) {
    out.extend_from_slice(
        format!("IAMAT {client} {} {}\n", location_text(rng), time_text()).as_bytes(),
    );
}

impl Generator {
    pub fn new(settings: GenSettings, seed: u64) -> Generator {
        Generator {
            settings,
            rng: Rng::new(seed),
        }
    }

    /// Appends the next request line to `out` and says what reply it expects.
    pub fn next(&mut self, out: &mut Vec<u8>) -> Kind {
        let s = &self.settings;
        let total = u64::from(s.mix.iamat) + u64::from(s.mix.whatsat);
        let whatsat = s.seeded > 0 && self.rng.below(total) < u64::from(s.mix.whatsat);
        if whatsat {
            let id = self.rng.below(s.seeded);
            out.extend_from_slice(
                format!("WHATSAT {}{id} {} {}\n", s.prefix, s.radius_km, s.bound).as_bytes(),
            );
            Kind::Whatsat
        } else {
            let id = self.rng.below(s.ids);
            let client = format!("{}{id}", s.prefix);
            iamat_line(out, &client, &mut self.rng);
            Kind::Iamat
        }
    }
}

/// Open-loop pacing for one connection: the k-th request is due at `start + k * interval`,
/// whatever happened to earlier ones. A late sender catches up by sending everything that is
/// due (never skipping), and latency is measured from the due time, so a stall shows up in
/// the latencies instead of being hidden (no coordinated omission).
#[derive(Debug, Clone)]
pub struct Pacer {
    next: Instant,
    interval: Duration,
    end: Instant,
}

impl Pacer {
    /// `rate` requests per second over all `connections`; this is connection `index`'s share,
    /// offset so the connections interleave evenly.
    pub fn new(start: Instant, end: Instant, rate: f64, connections: usize, index: usize) -> Pacer {
        let interval = Duration::from_secs_f64(connections as f64 / rate);
        let offset = Duration::from_secs_f64(index as f64 / rate);
        Pacer {
            next: start + offset,
            interval,
            end,
        }
    }

    /// The time between this pacer's due times.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When the next request is due, or `None` once the run is over.
    pub fn next_due(&self) -> Option<Instant> {
        (self.next < self.end).then_some(self.next)
    }

    /// Takes the next due time if it is at or before `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<Instant> {
        let due = self.next_due()?;
        if due > now {
            return None;
        }
        self.next += self.interval;
        Some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spreads_the_rate_over_connections_without_skipping() {
        let start = Instant::now();
        let end = start + Duration::from_secs(1);
        let (rate, connections) = (1000.0, 4);
        let mut all = Vec::new();
        for index in 0..connections {
            let mut pacer = Pacer::new(start, end, rate, connections, index);
            // Nothing is due before its time.
            if index > 0 {
                assert_eq!(pacer.take_due(start), None);
            }
            // A sender that only wakes up at the end (a total stall) still gets every
            // request, each with its own due time.
            while let Some(due) = pacer.take_due(end) {
                all.push(due);
            }
            assert_eq!(pacer.next_due(), None);
        }
        assert_eq!(all.len(), 1000);
        all.sort();
        for pair in all.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_micros(999) && gap <= Duration::from_micros(1001),
                "{gap:?}"
            );
        }
        assert_eq!(all[0], start);
    }

    #[test]
    fn pacer_releases_one_at_a_time_when_on_schedule() {
        let start = Instant::now();
        let end = start + Duration::from_millis(10);
        let mut pacer = Pacer::new(start, end, 1000.0, 1, 0);
        assert_eq!(pacer.take_due(start), Some(start));
        assert_eq!(pacer.take_due(start), None);
        let second = start + Duration::from_millis(1);
        assert_eq!(pacer.next_due(), Some(second));
        assert_eq!(pacer.take_due(second), Some(second));
    }

    #[test]
    fn mix_parses_weights() {
        assert_eq!(
            Mix::parse("iamat=90,whatsat=10").unwrap(),
            Mix {
                iamat: 90,
                whatsat: 10
            }
        );
        assert_eq!(Mix::parse("WHATSAT=1").unwrap().iamat, 0);
        assert!(Mix::parse("iamat=0").is_err());
        assert!(Mix::parse("foo=1").is_err());
        assert!(Mix::parse("iamat").is_err());
    }

    #[test]
    fn generated_lines_are_valid_protocol() {
        let settings = GenSettings {
            mix: Mix::parse("iamat=50,whatsat=50").unwrap(),
            prefix: "b1-".into(),
            ids: 1000,
            seeded: 10,
            radius_km: 50.0,
            bound: 20,
        };
        let mut generator = Generator::new(settings, 7);
        let (mut iamats, mut whatsats) = (0, 0);
        for _ in 0..1000 {
            let mut line = Vec::new();
            let kind = generator.next(&mut line);
            assert_eq!(line.pop(), Some(b'\n'));
            let parsed = herd_wire::protocol::parse_line(&line)
                .unwrap_or_else(|| panic!("invalid: {}", String::from_utf8_lossy(&line)));
            match (kind, parsed) {
                (Kind::Iamat, herd_wire::protocol::Command::Iamat(_)) => iamats += 1,
                (Kind::Whatsat, herd_wire::protocol::Command::Whatsat(w)) => {
                    assert_eq!((w.radius_km, w.bound), (50.0, 20));
                    whatsats += 1
                }
                other => panic!("mismatch {other:?}"),
            }
        }
        assert!(iamats > 400 && whatsats > 400, "{iamats} {whatsats}");
    }
}
