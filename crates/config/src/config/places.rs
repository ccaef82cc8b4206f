//! `places:` checked: a setting of one provider under another is an error, so a user never
//! believes a setting is in effect when it is not.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_saphyr::Spanned;

use super::defaults::*;
use super::model::RawPlaces;
use super::sections::nonzero;
use super::settings::{GoogleSettings, PlacesConfig, ProviderKind, UpstreamSettings};

/// The `places:` section, checked: settings of one provider under another are errors, so a
/// user never believes a setting is in effect when it is not.
pub(super) fn places_config(
    raw: RawPlaces,
    shown: &str,
    resolve: impl Fn(PathBuf) -> PathBuf,
) -> Result<PlacesConfig> {
    let provider = raw.provider.unwrap_or(ProviderKind::Offline);
    // Each key and the providers that take it.
    use ProviderKind::{Google, Offline, X};
    let keys: [(&str, bool, &[ProviderKind]); 9] = [
        ("file", raw.file.is_some(), &[Offline]),
        ("api", raw.api.is_some(), &[Google]),
        ("endpoint", raw.endpoint.is_some(), &[Google, X]),
        ("timeout_ms", raw.timeout_ms.is_some(), &[Google, X]),
        ("cache_ttl_s", raw.cache_ttl_s.is_some(), &[Google, X]),
        ("cache_entries", raw.cache_entries.is_some(), &[Google, X]),
        (
            "max_requests_per_s",
            raw.max_requests_per_s.is_some(),
            &[Google, X],
        ),
        ("max_in_flight", raw.max_in_flight.is_some(), &[Google, X]),
        ("allow_http", raw.allow_http.is_some(), &[Google, X]),
    ];
    for (key, set, takers) in keys {
        if set && !takers.contains(&provider) {
            let names: Vec<&str> = takers.iter().map(|p| p.name()).collect();
            let uses: Vec<String> = names.iter().map(|n| format!("`provider: {n}`")).collect();
            bail!(
                "{shown}: places.{key} is a setting of the {} provider{}, not of {}; use {} \
                 under places: or remove {key}",
                names.join(" and "),
                if names.len() > 1 { "s" } else { "" },
                provider.name(),
                uses.join(" or "),
            );
        }
    }
    let api = raw.api.unwrap_or_default();
    let default_endpoint = match provider {
        X => X_DEFAULT_ENDPOINT,
        _ => api.default_endpoint(),
    };
    let default_ttl = match provider {
        X => DEFAULT_X_CACHE_TTL_S,
        _ => DEFAULT_GOOGLE_CACHE_TTL_S,
    };
    let upstream = |endpoint: Option<Spanned<String>>| -> Result<UpstreamSettings> {
        let endpoint = match endpoint {
            None => reqwest::Url::parse(default_endpoint).expect("the services' URLs parse"),
            Some(e) => {
                let line = e.referenced.line();
                let url = match reqwest::Url::parse(&e.value) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
                    _ => bail!(
                        "{shown} line {line}: places.endpoint {:?} is not an http:// or https:// \
                         URL; leave it out to use {default_endpoint}",
                        e.value,
                    ),
                };
                if url.scheme() == "http" && raw.allow_http != Some(true) {
                    bail!(
                        "{shown} line {line}: places.endpoint {:?} is plain http, which would \
                         send your key and every query in the clear; use an https:// URL (or, \
                         for a local test server, add allow_http: true under places:)",
                        e.value,
                    );
                }
                if provider == X && (url.query().is_some() || url.fragment().is_some()) {
                    bail!(
                        "{shown} line {line}: places.endpoint {:?} has a query or fragment; for \
                         provider x it is the API's base URL (like {X_DEFAULT_ENDPOINT}), to \
                         which /2/tweets/search/recent is added",
                        e.value,
                    );
                }
                url
            }
        };
        let timeout_ms = nonzero(
            shown,
            "places.timeout_ms",
            raw.timeout_ms,
            DEFAULT_UPSTREAM_TIMEOUT_MS,
            &format!("use e.g. {DEFAULT_UPSTREAM_TIMEOUT_MS}"),
        )?;
        let cache_entries = nonzero(
            shown,
            "places.cache_entries",
            raw.cache_entries,
            DEFAULT_UPSTREAM_CACHE_ENTRIES,
            "keep at least 1 (to turn caching off, set cache_ttl_s: 0)",
        )?;
        let max_requests_per_s = nonzero(
            shown,
            "places.max_requests_per_s",
            raw.max_requests_per_s,
            DEFAULT_UPSTREAM_MAX_REQUESTS_PER_S,
            &format!(
                "use e.g. {DEFAULT_UPSTREAM_MAX_REQUESTS_PER_S} (requests a second this server \
                 may send to the service)"
            ),
        )?;
        let max_in_flight = nonzero(
            shown,
            "places.max_in_flight",
            raw.max_in_flight,
            DEFAULT_UPSTREAM_MAX_IN_FLIGHT,
            &format!(
                "use e.g. {DEFAULT_UPSTREAM_MAX_IN_FLIGHT} (requests waiting for an answer at \
                 once)"
            ),
        )?;
        Ok(UpstreamSettings {
            endpoint,
            timeout: Duration::from_millis(timeout_ms),
            cache_ttl: Duration::from_secs(raw.cache_ttl_s.unwrap_or(default_ttl)),
            cache_entries,
            max_requests_per_s,
            max_in_flight,
            allow_http: raw.allow_http.unwrap_or(false),
        })
    };
    Ok(match provider {
        Offline => PlacesConfig::Offline {
            file: raw.file.map(resolve),
        },
        Google => PlacesConfig::Google(GoogleSettings {
            api,
            upstream: upstream(raw.endpoint)?,
        }),
        X => PlacesConfig::X(upstream(raw.endpoint)?),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::test_herd::{error, parse, CLASSIC};
    use crate::config::*;

    fn google(c: &HerdConfig) -> &GoogleSettings {
        match &c.places {
            PlacesConfig::Google(g) => g,
            other => panic!("not google: {other:?}"),
        }
    }

    fn x(c: &HerdConfig) -> &UpstreamSettings {
        match &c.places {
            PlacesConfig::X(x) => x,
            other => panic!("not x: {other:?}"),
        }
    }

    #[test]
    fn google_places_settings_and_defaults() {
        let c = parse(&format!("{CLASSIC}places: {{ provider: google }}\n")).unwrap();
        assert_eq!(c.places.provider(), ProviderKind::Google);
        let g = google(&c);
        assert_eq!(g.api, GoogleApi::Legacy);
        let u = &g.upstream;
        assert_eq!(u.endpoint.as_str(), GoogleApi::Legacy.default_endpoint());
        assert_eq!(
            u.timeout,
            Duration::from_millis(DEFAULT_UPSTREAM_TIMEOUT_MS)
        );
        assert_eq!(u.cache_ttl, Duration::from_secs(DEFAULT_GOOGLE_CACHE_TTL_S));
        assert_eq!(u.cache_entries, DEFAULT_UPSTREAM_CACHE_ENTRIES);

        let c = parse(&format!(
            "{CLASSIC}places:\n  provider: google\n  api: new\n  timeout_ms: 250\n  \
             cache_ttl_s: 0\n  cache_entries: 5\n"
        ))
        .unwrap();
        let g = google(&c);
        assert_eq!(g.api, GoogleApi::New);
        assert_eq!(
            g.upstream.endpoint.as_str(),
            "https://places.googleapis.com/v1/places:searchNearby"
        );
        assert_eq!(g.upstream.timeout, Duration::from_millis(250));
        assert_eq!(g.upstream.cache_ttl, Duration::ZERO);
        assert_eq!(g.upstream.cache_entries, 5);

        let c = parse(&format!(
            "{CLASSIC}places: {{ provider: google, endpoint: 'http://127.0.0.1:9/x', allow_http: true }}\n"
        ))
        .unwrap();
        assert_eq!(
            google(&c).upstream.endpoint.as_str(),
            "http://127.0.0.1:9/x"
        );
    }

    #[test]
    fn google_places_errors_name_the_fix() {
        let e = error(&format!("{CLASSIC}places: {{ api: new }}\n"));
        assert!(
            e.contains("places.api") && e.contains("provider: google"),
            "{e}"
        );
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: google, file: pois.csv }}\n"
        ));
        assert!(
            e.contains("places.file") && e.contains("provider: offline"),
            "{e}"
        );
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: google, endpoint: 'ftp://x' }}\n"
        ));
        assert!(e.contains("line 7") && e.contains("http://"), "{e}");
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: google, timeout_ms: 0 }}\n"
        ));
        assert!(e.contains("timeout_ms"), "{e}");
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: google, cache_entries: 0 }}\n"
        ));
        assert!(e.contains("cache_ttl_s: 0"), "{e}");
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: google, api: v2 }}\n"
        ));
        assert!(e.contains("line 7") && e.contains("legacy"), "{e}");
    }

    #[test]
    fn x_places_settings_and_defaults() {
        let c = parse(&format!("{CLASSIC}places: {{ provider: x }}\n")).unwrap();
        assert_eq!(c.places.provider(), ProviderKind::X);
        assert_eq!(
            x(&c),
            &UpstreamSettings {
                endpoint: reqwest::Url::parse("https://api.x.com").unwrap(),
                timeout: Duration::from_millis(DEFAULT_UPSTREAM_TIMEOUT_MS),
                cache_ttl: Duration::from_secs(DEFAULT_X_CACHE_TTL_S),
                cache_entries: DEFAULT_UPSTREAM_CACHE_ENTRIES,
                max_requests_per_s: DEFAULT_UPSTREAM_MAX_REQUESTS_PER_S,
                max_in_flight: DEFAULT_UPSTREAM_MAX_IN_FLIGHT,
                allow_http: false,
            }
        );
        let c = parse(&format!(
            "{CLASSIC}places:\n  provider: x\n  endpoint: http://127.0.0.1:9/proxy/\n  \
             timeout_ms: 800\n  cache_ttl_s: 5\n  cache_entries: 7\n  allow_http: true\n  \
             max_requests_per_s: 2\n  max_in_flight: 3\n"
        ))
        .unwrap();
        let u = x(&c);
        assert_eq!(u.endpoint.as_str(), "http://127.0.0.1:9/proxy/");
        assert_eq!(u.timeout, Duration::from_millis(800));
        assert_eq!(u.cache_ttl, Duration::from_secs(5));
        assert_eq!(u.cache_entries, 7);
        assert_eq!((u.max_requests_per_s, u.max_in_flight), (2, 3));
        assert!(u.allow_http);
    }

    #[test]
    fn upstream_spend_and_plain_http_errors_name_the_fix() {
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: google, endpoint: 'http://127.0.0.1:9/x' }}\n"
        ));
        assert!(
            e.contains("plain http") && e.contains("allow_http: true") && e.contains("https://"),
            "{e}"
        );
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: x, max_requests_per_s: 0 }}\n"
        ));
        assert!(e.contains("places.max_requests_per_s is 0"), "{e}");
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: google, max_in_flight: 0 }}\n"
        ));
        assert!(e.contains("places.max_in_flight is 0"), "{e}");
        let e = error(&format!("{CLASSIC}places: {{ allow_http: true }}\n"));
        assert!(e.contains("places.allow_http"), "{e}");
    }

    #[test]
    fn x_places_errors_name_the_fix() {
        let e = error(&format!("{CLASSIC}places: {{ provider: x, api: new }}\n"));
        assert!(
            e.contains("places.api") && e.contains("not of x") && e.contains("provider: google"),
            "{e}"
        );
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: x, file: a.csv }}\n"
        ));
        assert!(e.contains("places.file"), "{e}");
        let e = error(&format!("{CLASSIC}places: {{ endpoint: 'http://h' }}\n"));
        assert!(
            e.contains("google and x providers")
                && e.contains("`provider: google` or `provider: x`"),
            "{e}"
        );
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: x, endpoint: 'https://h/2/tweets/search/recent?q=1' }}\n"
        ));
        assert!(e.contains("line 7") && e.contains("base URL"), "{e}");
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: x, timeout_ms: 0 }}\n"
        ));
        assert!(e.contains("timeout_ms"), "{e}");
        let e = error(&format!("{CLASSIC}places: {{ provider: X }}\n"));
        assert!(e.contains("line 7"), "{e}");
    }
}
