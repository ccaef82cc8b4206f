//! Reading back a `/metrics` page (the Prometheus text format our nodes write, see
//! `metrics/text.rs`): just enough to sum counters and read histograms.

use std::collections::BTreeMap;

/// One sample: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Every sample of a page; comments and lines that do not parse are skipped (a newer node
/// may write what this reader does not know).
pub fn parse(page: &str) -> Vec<Sample> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, rest) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, rest)
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, BTreeMap::new(), rest)
        }
    };
    // A timestamp may follow the value.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `key="value",...}` and what follows the closing brace.
fn parse_labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches(',');
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        text = &rest[end + 1..];
    }
}

/// A page's samples, looked up by name.
#[derive(Debug, Clone, Default)]
pub struct Page {
    samples: Vec<Sample>,
}

impl Page {
    pub fn new(text: &str) -> Page {
        Page {
            samples: parse(text),
        }
    }

    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The sum of every sample named `name` whose labels include `matching`.
    pub fn sum(&self, name: &str, matching: &[(&str, &str)]) -> f64 {
        self.named(name)
            .filter(|s| matching.iter().all(|(k, v)| s.label(k) == Some(v)))
            .map(|s| s.value)
            .sum()
    }

    /// The value of the one unlabelled sample `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.named(name)
            .find(|s| s.labels.is_empty())
            .map(|s| s.value)
    }

    /// Histogram `name`'s cumulative buckets summed over every label set: (bound, count),
    /// by bound.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut by_bound: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in self.named(&bucket) {
            let Some(le) = s.label("le") else { continue };
            let bound = match le {
                "+Inf" => f64::INFINITY,
                le => match le.parse::<f64>() {
                    Ok(b) => b,
                    Err(_) => continue,
                },
            };
            // f64 bits order like the values for non-negative bounds.
            by_bound.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += s.value;
        }
        by_bound.into_values().collect()
    }
}

/// The `q` quantile of the observations between two readings of the same cumulative
/// histogram (`before` may be empty: since start-up), as the upper bound of the bucket it
/// falls in (the histogram knows no better). `None` when nothing was observed.
pub fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let earlier = |bound: f64| {
        before
            .iter()
            .find(|(b, _)| *b == bound)
            .map_or(0.0, |(_, c)| *c)
    };
    let deltas: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, count)| (*bound, (count - earlier(*bound)).max(0.0)))
        .collect();
    let total = deltas.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    deltas
        .iter()
        .find(|(_, cumulative)| *cumulative >= rank)
        .map(|(bound, _)| *bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_back_with_their_labels() {
        let page = Page::new(
            "# HELP x y\n# TYPE x counter\nx{a=\"1\",b=\"q\\\"uote\"} 3\nx{a=\"2\"} 4.5\nup 1\nbad line\n",
        );
        assert_eq!(page.sum("x", &[]), 7.5);
        assert_eq!(page.sum("x", &[("a", "1")]), 3.0);
        assert_eq!(page.named("x").next().unwrap().label("b"), Some("q\"uote"));
        assert_eq!(page.get("up"), Some(1.0));
        assert_eq!(page.get("x"), None);
    }

    #[test]
    fn a_quantile_is_the_bound_of_its_bucket_between_two_readings() {
        let text = |a: u32, b: u32, c: u32| {
            format!(
                "d_bucket{{c=\"I\",le=\"0.001\"}} {a}\nd_bucket{{c=\"I\",le=\"0.01\"}} {b}\nd_bucket{{c=\"I\",le=\"+Inf\"}} {c}\n"
            )
        };
        let before = Page::new(&text(100, 100, 100)).buckets("d");
        let after = Page::new(&text(199, 200, 200)).buckets("d");
        assert_eq!(quantile(&before, &after, 0.99), Some(0.001));
        assert_eq!(quantile(&before, &after, 0.999), Some(0.01));
        assert_eq!(quantile(&after, &after, 0.99), None);
        assert_eq!(quantile(&[], &before, 0.5), Some(0.001));
    }
}
