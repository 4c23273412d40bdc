#!/usr/bin/env python3
"""Generate the shared conformance vectors of tests/vectors (SPEC §5).

This script is the ONLY way the JSON files beside it are written.

    python3 tests/vectors/generate.py          # write index.json and the topic files
    python3 tests/vectors/generate.py --check  # regenerate in memory; exit 1 if any file drifts

Expected buckets are computed here, independently of the Rust policy, with the PyPI
`xxhash` package (tests/vectors/requirements.txt):

    bucket = xxh3_64(utf8(feature_name + ":" + canonical_id)) % 100

where canonical_id is the lowercase hyphenated UUID text when the id is a UUID in
hyphenated (any case), {braced} or 32-hex-digit form, and the id as given otherwise.
For the percentage strategy `eligible = bucket < rollout_percentage` is computed here too.
Every other expectation (reasons, rules, categories, levels, actions) is written by hand
from SPEC §2 in the tables below.

Everything is deterministic: the "random" UUIDs come from seeded random.Random instances,
so regenerating gives byte-identical files.
"""

from __future__ import annotations

import json
import random
import re
import sys
import uuid
from pathlib import Path

import xxhash

HERE = Path(__file__).resolve().parent
FEATURE = "hybrid_progressive_capture"  # the seed's feature (SPEC §5 default)
THRESHOLDS = {"test": 10, "small": 25, "medium": 50, "large": 75, "enterprise": 100}
CATEGORIES = list(THRESHOLDS)

# ---------------------------------------------------------------------------------------
# The independent implementation of SPEC §2.1 (bucketing) and the id canonicalisation.
# ---------------------------------------------------------------------------------------

_HYPHENATED = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_BRACED = re.compile(r"^\{[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}$")
_SIMPLE = re.compile(r"^[0-9a-fA-F]{32}$")


def canonical_id(repo_id: str) -> str:
    """The hash input for an id: canonical UUID text for the three UUID forms, else as given."""
    if _HYPHENATED.match(repo_id) or _BRACED.match(repo_id) or _SIMPLE.match(repo_id):
        return str(uuid.UUID(repo_id))
    return repo_id


def bucket(feature_name: str, repo_id: str) -> int:
    """SPEC §2.1: xxh3_64 (seed 0) of `feature:canonical_id`, mod 100."""
    return xxhash.xxh3_64_intdigest((feature_name + ":" + canonical_id(repo_id)).encode("utf-8")) % 100


def _self_test() -> None:
    # Reference values of xxh3_64 (xxHash's own test vector for empty input) and of SPEC §5's example.
    assert xxhash.xxh3_64_intdigest(b"") == 0x2D06800538D394C2, "xxhash is not xxh3_64 with seed 0"
    assert bucket(FEATURE, "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11") == 59, "SPEC §5 example bucket"
    u = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11"
    assert canonical_id(u.upper()) == u
    assert canonical_id("{" + u.upper() + "}") == u
    assert canonical_id(u.replace("-", "")) == u
    assert canonical_id("owner/name") == "owner/name"


# ---------------------------------------------------------------------------------------
# Deterministic ids.
# ---------------------------------------------------------------------------------------


def seeded_uuids(seed: str, n: int) -> list[str]:
    """`n` fixed pseudo-random version-4 UUIDs (lowercase hyphenated) from a named seed."""
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


_ID_RNG = random.Random("rollout-vectors:picked-ids")
_USED: set[str] = set()


def pick_id(want, feature: str = FEATURE, also=lambda rid: True) -> str:
    """The next seeded UUID whose bucket for `feature` satisfies `want` (an int or a predicate)
    and for which `also(id)` holds.

    Ids are drawn from one seeded stream in a fixed order, so the same calls give the same
    ids on every run; no id is handed out twice.
    """
    pred = (lambda b: b == want) if isinstance(want, int) else want
    for _ in range(100_000):
        rid = str(uuid.UUID(int=_ID_RNG.getrandbits(128), version=4))
        if rid not in _USED and pred(bucket(feature, rid)) and also(rid):
            _USED.add(rid)
            return rid
    raise RuntimeError("no id found")


# ---------------------------------------------------------------------------------------
# Case builders. Key order in the output: name, op, inputs, expect.
# ---------------------------------------------------------------------------------------


def _repo(repo_id: str, category="absent") -> dict:
    r = {"id": repo_id}
    if category != "absent":
        r["category"] = category
    return r


def _feature(config: dict) -> str:
    return config.get("feature_name", FEATURE)


def _check_percentage(config: dict, repo_id: str, eligible: bool, reason: str) -> None:
    """Guard the hand-written percentage rows against the independently computed bucket."""
    if reason in ("in_percentage", "outside_percentage"):
        inside = bucket(_feature(config), repo_id) < config.get("rollout_percentage", 0)
        assert inside == eligible == (reason == "in_percentage"), (config, repo_id, reason)


def elig(name: str, config: dict, repo_id: str, eligible: bool, reason: str, category="absent") -> dict:
    _check_percentage(config, repo_id, eligible, reason)
    return {
        "name": name,
        "op": "is_eligible",
        "config": config,
        "repository": _repo(repo_id, category),
        "expect": {"eligible": eligible, "reason": reason, "bucket": bucket(_feature(config), repo_id)},
    }


def pct_case(name: str, config: dict, repo_id: str, category="absent") -> dict:
    """A percentage-strategy case whose expectation is computed: eligible = bucket < percentage."""
    b = bucket(_feature(config), repo_id)
    inside = b < config.get("rollout_percentage", 0)
    return elig(name, config, repo_id, inside, "in_percentage" if inside else "outside_percentage", category)


def size_case(name: str, config: dict, repo_id: str, category) -> dict:
    """A repository_size case; the table of SPEC §2.2 rows 7-8 (thresholds written above)."""
    if category is None:
        eligible, reason = False, "uncategorized"
    elif config["rollout_percentage"] >= THRESHOLDS[category]:
        eligible, reason = True, "category_included"
    else:
        eligible, reason = False, "category_excluded"
    return elig(name, config, repo_id, eligible, reason, category)


def route(name: str, config: dict, repo_id: str, job: dict, processor: str, rule: str,
          eligible: bool, reason: str, category="absent") -> dict:
    _check_percentage(config, repo_id, eligible, reason)
    assert (rule == "not_eligible") == (not eligible)
    assert processor == ("github_actions" if rule in ("historical_range", "large_batch", "scheduled_bulk") else "inngest")
    return {
        "name": name,
        "op": "route",
        "config": config,
        "repository": _repo(repo_id, category),
        "job": job,
        "expect": {"processor": processor, "rule": rule, "eligible": eligible, "reason": reason,
                   "bucket": bucket(_feature(config), repo_id)},
    }


PRIORITY = {"test": 100, "small": 80, "medium": 60, "large": 40, "enterprise": 20}


def categorize(name: str, stars: int, contributors: int, prs: int, category: str, score: int) -> dict:
    """`category` and `score` are written by hand; priority and the test flag follow from the table."""
    return {
        "name": name,
        "op": "categorize",
        "stats": {"star_count": stars, "contributor_count": contributors, "pr_count": prs},
        "expect": {"category": category, "priority_level": PRIORITY[category],
                   "is_test_repository": category == "test", "monthly_activity_score": score},
    }


def win(processor: str, errors: int, total: int, avg=None) -> dict:
    w = {"processor_type": processor, "success_count": total - errors, "error_count": errors, "total_jobs": total}
    if avg is not None:
        w["average_processing_time"] = avg
    return w


def health(name: str, config: dict, windows: list, level: str, action: str) -> dict:
    errors = sum(w["error_count"] for w in windows)
    total = sum(w["total_jobs"] for w in windows)
    rate = 100.0 * errors / total if total else 0.0
    # The level is written by hand; make sure it does not hinge on float rounding order.
    if total:
        alt = errors / total * 100.0
        for limit in (2.5, 10.0, float(config.get("max_error_rate", 5.0))):
            assert (rate > limit) == (alt > limit), (name, rate, alt, limit)
    return {
        "name": name,
        "op": "evaluate_health",
        "config": config,
        "windows": windows,
        "expect": {"level": level, "action": action, "error_rate": rate},
    }


def error(name: str, op: str, substring: str, **inputs) -> dict:
    case = {"name": name, "op": op}
    case.update(inputs)
    case["expect"] = {"error": substring}
    return case


# ---------------------------------------------------------------------------------------
# The topic files.
# ---------------------------------------------------------------------------------------


def tour() -> dict:
    spec_id = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11"  # the example of SPEC §5, bucket 59
    in_half = pick_id(lambda b: b < 50)
    target = pick_id(lambda b: b >= 50)
    big = pick_id(lambda b: True)
    p50 = {"feature_name": FEATURE, "rollout_percentage": 50, "rollout_strategy": "percentage"}
    cases = [
        elig("0% selects nobody", {"feature_name": FEATURE, "rollout_percentage": 0, "rollout_strategy": "percentage"},
             spec_id, False, "outside_percentage", None),
        elig("the same repository at 60% is in (bucket 59 < 60)",
             {"feature_name": FEATURE, "rollout_percentage": 60, "rollout_strategy": "percentage"},
             spec_id, True, "in_percentage", None),
        pct_case("50%: a repository whose bucket is below 50 is in", p50, in_half),
        elig("the emergency stop beats everything, even a target",
             {"rollout_percentage": 100, "emergency_stop": True, "target_repositories": [target]},
             target, False, "emergency_stop"),
        elig("whitelist: a targeted repository is in at 0%",
             {"rollout_percentage": 0, "rollout_strategy": "whitelist", "target_repositories": [target]},
             target, True, "targeted"),
        size_case("repository_size at 50% admits medium repositories",
                  {"rollout_percentage": 50, "rollout_strategy": "repository_size"}, big, "medium"),
        route("a job for recent data goes to inngest", {"rollout_percentage": 100}, big,
              {"job_type": "pr-sync", "time_range_days": 1, "trigger_source": "automatic"},
              "inngest", "recent_data", True, "in_percentage"),
        route("a 30-day historical capture goes to github_actions", {"rollout_percentage": 100}, big,
              {"job_type": "historical-sync", "time_range_days": 30, "trigger_source": "scheduled"},
              "github_actions", "historical_range", True, "in_percentage"),
        route("a repository outside the rollout always stays on inngest", {"rollout_percentage": 0}, big,
              {"job_type": "historical-sync", "time_range_days": 30, "trigger_source": "scheduled"},
              "inngest", "not_eligible", False, "outside_percentage"),
        categorize("a small repository", 40, 5, 80, "small", 53),
        categorize("an enterprise repository (activity capped at 100)", 20000, 800, 50000, "enterprise", 100),
        health("1 error in 1,000 jobs is ok", {"rollout_percentage": 25},
               [win("inngest", 0, 500, 120.5), win("github_actions", 1, 500, 4200.0)], "ok", "none"),
        health("15% errors over 20 jobs: critical, roll back", {"rollout_percentage": 25},
               [win("inngest", 1, 10), win("github_actions", 2, 10)], "critical", "rollback"),
    ]
    return {"description": "A readable tour: one or two cases per operation. Read this file first.", "cases": cases}


def bucketing() -> dict:
    cases = []
    b0, b1, b98, b99 = pick_id(0), pick_id(1), pick_id(98), pick_id(99)
    for pct, rid, b in [(0, b0, 0), (1, b0, 0), (1, b1, 1), (99, b98, 98), (99, b99, 99),
                        (100, b99, 99), (100, b0, 0)]:
        cases.append(pct_case(f"bucket {b} at {pct}%", {"rollout_percentage": pct}, rid))

    # The ramp is monotonic: a repository with bucket b is out at b% and in from (b+1)%.
    for b in (0, 37, 50, 98):
        rid = pick_id(b)
        for pct in (b, b + 1):
            cases.append(pct_case(f"ramp: bucket {b} is {'in' if pct > b else 'out'} at {pct}%",
                                  {"rollout_percentage": pct}, rid))

    # Id forms: every UUID form hashes as the canonical lowercase hyphenated text.
    rid = pick_id(lambda b: 30 <= b < 70)
    forms = [("canonical", rid), ("uppercase", rid.upper()), ("braced", "{" + rid + "}"),
             ("braced uppercase", "{" + rid.upper() + "}"), ("32 hex digits", rid.replace("-", "")),
             ("mixed case", rid[:18] + rid[18:].upper())]
    for label, form in forms:
        assert bucket(FEATURE, form) == bucket(FEATURE, rid)
        cases.append(pct_case(f"id form: {label} UUID has the canonical bucket", {"rollout_percentage": 50}, form))

    # Anything that is not one of those forms is hashed exactly as given.
    texts = ["bdougie/contributor.info", "owner/name", "Owner/Name", "12345",
             rid[:-1],                       # 35 characters: not a UUID
             rid[:-1] + "g",                 # a non-hex digit
             rid + "0",                      # one digit too many
             " " + rid,                      # leading space is not trimmed
             "x" * 300]                      # a long id
    for t in texts:
        assert canonical_id(t) == t
    for t in texts:
        label = t if len(t) <= 40 else f"{len(t)}-character id"
        cases.append(pct_case(f"text id hashed as given: {label!r}", {"rollout_percentage": 50}, t))

    # The feature name is part of the hash: the same repository lands elsewhere.
    other = "hybrid_progressive_capture_v2"
    rid = pick_id(lambda b: b < 50, also=lambda i: bucket(other, i) >= 50)
    cases.append(pct_case("feature name: in at 50% for the seed feature", {"rollout_percentage": 50}, rid))
    cases.append(pct_case("feature name: the same repository is out at 50% for another feature",
                          {"feature_name": other, "rollout_percentage": 50}, rid))
    cases.append(pct_case("feature name: a long feature name (256 characters)",
                          {"feature_name": "f" * 256, "rollout_percentage": 50}, rid))
    cases.append(pct_case("feature name: non-ASCII feature name hashed as UTF-8",
                          {"feature_name": "fonctionnalité_é", "rollout_percentage": 50}, rid))

    # The bucket table: 40 seeded-random repositories, each at 1, 10, 50 and 99 %.
    for i, rid in enumerate(seeded_uuids("rollout-vectors:bucket-table", 40)):
        for pct in (1, 10, 50, 99):
            cases.append(pct_case(f"bucket table #{i:02} at {pct}%", {"rollout_percentage": pct}, rid))
    return {"description": "SPEC §2.1 bucketing: boundaries, the monotonic ramp, id canonicalisation, "
                           "feature names, and a table of seeded-random repositories (buckets from Python xxhash).",
            "cases": cases}


def eligibility() -> dict:
    a = pick_id(lambda b: True)   # the repository under test
    other = pick_id(lambda b: True)
    in50 = pick_id(lambda b: b < 50)
    out50 = pick_id(lambda b: b >= 50)
    c = []
    # Row 1: the emergency stop.
    c += [
        elig("row 1: stop at 100%", {"rollout_percentage": 100, "emergency_stop": True}, a, False, "emergency_stop"),
        elig("row 1: stop beats inactive", {"rollout_percentage": 100, "emergency_stop": True, "is_active": False},
             a, False, "emergency_stop"),
        elig("row 1: stop beats exclusion", {"rollout_percentage": 100, "emergency_stop": True,
                                             "excluded_repositories": [a]}, a, False, "emergency_stop"),
        elig("row 1: stop beats a target", {"rollout_percentage": 100, "emergency_stop": True,
                                            "target_repositories": [a]}, a, False, "emergency_stop"),
        elig("row 1: stop under whitelist", {"rollout_strategy": "whitelist", "emergency_stop": True,
                                             "target_repositories": [a]}, a, False, "emergency_stop"),
        elig("row 1: stop under repository_size", {"rollout_strategy": "repository_size", "rollout_percentage": 100,
                                                   "emergency_stop": True}, a, False, "emergency_stop", "test"),
        elig("row 1 not matched: stop off at 100%", {"rollout_percentage": 100, "emergency_stop": False},
             a, True, "in_percentage"),
    ]
    # Row 2: inactive.
    c += [
        elig("row 2: inactive at 100%", {"rollout_percentage": 100, "is_active": False}, a, False, "inactive"),
        elig("row 2: inactive beats a target", {"rollout_percentage": 100, "is_active": False,
                                                "target_repositories": [a]}, a, False, "inactive"),
        elig("row 2: inactive beats exclusion", {"rollout_percentage": 100, "is_active": False,
                                                 "excluded_repositories": [a]}, a, False, "inactive"),
        elig("row 2 not matched: is_active defaults to true in case files", {"rollout_percentage": 100},
             a, True, "in_percentage"),
    ]
    # Row 3: exclusion.
    c += [
        elig("row 3: excluded at 100%", {"rollout_percentage": 100, "excluded_repositories": [a]}, a, False, "excluded"),
        elig("row 3: exclusion beats target", {"rollout_percentage": 100, "target_repositories": [a],
                                               "excluded_repositories": [a]}, a, False, "excluded"),
        elig("row 3: excluded under whitelist even when targeted",
             {"rollout_strategy": "whitelist", "target_repositories": [a], "excluded_repositories": [a]},
             a, False, "excluded"),
        elig("row 3: excluded under repository_size", {"rollout_strategy": "repository_size",
                                                       "rollout_percentage": 100, "excluded_repositories": [a]},
             a, False, "excluded", "test"),
        elig("row 3: an uppercase id in excluded_repositories excludes the lowercase form",
             {"rollout_percentage": 100, "excluded_repositories": [a.upper()]}, a, False, "excluded"),
        elig("row 3: a lowercase excluded id excludes the uppercase form",
             {"rollout_percentage": 100, "excluded_repositories": [a]}, a.upper(), False, "excluded"),
        elig("row 3: a braced excluded id excludes the canonical form",
             {"rollout_percentage": 100, "excluded_repositories": ["{" + a + "}"]}, a, False, "excluded"),
        elig("row 3: a text id (owner/name) can be excluded",
             {"rollout_percentage": 100, "excluded_repositories": ["acme/widgets"]}, "acme/widgets", False, "excluded"),
        elig("row 3 not matched: another repository is excluded",
             {"rollout_percentage": 100, "excluded_repositories": [other]}, a, True, "in_percentage"),
        elig("row 3 not matched: text ids are case-sensitive",
             {"rollout_percentage": 100, "excluded_repositories": ["Acme/Widgets"]}, "acme/widgets",
             True, "in_percentage"),
    ]
    # Row 4: target.
    c += [
        elig("row 4: targeted at 0% (percentage strategy)", {"rollout_percentage": 0, "target_repositories": [a]},
             a, True, "targeted"),
        elig("row 4: targeted under whitelist", {"rollout_strategy": "whitelist", "target_repositories": [other, a]},
             a, True, "targeted"),
        elig("row 4: targeted under repository_size while uncategorised",
             {"rollout_strategy": "repository_size", "rollout_percentage": 0, "target_repositories": [a]},
             a, True, "targeted", None),
        elig("row 4: targeted under repository_size beats category_excluded",
             {"rollout_strategy": "repository_size", "rollout_percentage": 5, "target_repositories": [a]},
             a, True, "targeted", "enterprise"),
        elig("row 4: an uppercase target id targets the lowercase form",
             {"rollout_strategy": "whitelist", "target_repositories": [a.upper()]}, a, True, "targeted"),
        elig("row 4: a 32-hex-digit target id targets the hyphenated form",
             {"rollout_strategy": "whitelist", "target_repositories": [a.replace("-", "")]}, a, True, "targeted"),
        elig("row 4: a text id (owner/name) can be targeted",
             {"rollout_strategy": "whitelist", "target_repositories": ["acme/widgets"]}, "acme/widgets",
             True, "targeted"),
        elig("row 4 not matched: outside the percentage when another repository is targeted",
             {"rollout_percentage": 50, "target_repositories": [other]}, out50, False, "outside_percentage"),
    ]
    # Row 5: whitelist without a target.
    c += [
        elig("row 5: whitelist, not targeted, 100%", {"rollout_strategy": "whitelist", "rollout_percentage": 100,
                                                      "target_repositories": [other]}, a, False, "not_targeted"),
        elig("row 5: whitelist with empty lists", {"rollout_strategy": "whitelist", "rollout_percentage": 100,
                                                   "target_repositories": [], "excluded_repositories": []},
             a, False, "not_targeted"),
        elig("row 5: whitelist ignores the category", {"rollout_strategy": "whitelist", "rollout_percentage": 100},
             a, False, "not_targeted", "test"),
    ]
    # Row 6: percentage.
    c += [
        elig("row 6: in the percentage (bucket < 50)", {"rollout_percentage": 50}, in50, True, "in_percentage"),
        elig("row 6: outside the percentage (bucket >= 50)", {"rollout_percentage": 50}, out50, False,
             "outside_percentage"),
        elig("row 6: empty lists, in", {"rollout_percentage": 50, "target_repositories": [],
                                        "excluded_repositories": []}, in50, True, "in_percentage"),
        elig("row 6: empty lists, out", {"rollout_percentage": 50, "target_repositories": [],
                                         "excluded_repositories": []}, out50, False, "outside_percentage"),
        elig("row 6: the category does not matter to the percentage strategy", {"rollout_percentage": 50},
             out50, False, "outside_percentage", "test"),
        elig("row 6: explicit default strategy and feature", {"feature_name": FEATURE, "rollout_percentage": 50,
                                                              "rollout_strategy": "percentage"},
             in50, True, "in_percentage", None),
    ]
    # Rows 7 and 8 (repository_size; the full grid is in 03-repository-size.json).
    c += [
        size_case("row 7: repository_size, category null", {"rollout_strategy": "repository_size",
                                                             "rollout_percentage": 100}, a, None),
        elig("row 7: repository_size, category absent", {"rollout_strategy": "repository_size",
                                                         "rollout_percentage": 100}, a, False, "uncategorized"),
        size_case("row 8: repository_size, included", {"rollout_strategy": "repository_size",
                                                       "rollout_percentage": 25}, a, "small"),
        size_case("row 8: repository_size, excluded", {"rollout_strategy": "repository_size",
                                                       "rollout_percentage": 25}, a, "medium"),
    ]
    return {"description": "SPEC §2.2 eligibility: every row, matched and not matched, in table order.", "cases": c}


def repository_size() -> dict:
    c = []
    for cat in CATEGORIES:
        rid = pick_id(lambda b: True)
        for pct in (0, 5, 10, 20, 25, 49, 50, 74, 75, 99, 100):
            c.append(size_case(f"{cat} at {pct}%", {"rollout_strategy": "repository_size", "rollout_percentage": pct},
                               rid, cat))
    rid = pick_id(lambda b: True)
    for pct in (0, 50, 100):
        c.append(size_case(f"uncategorised at {pct}%", {"rollout_strategy": "repository_size",
                                                         "rollout_percentage": pct}, rid, None))
    return {"description": "SPEC §2.2 rows 7-8: repository_size thresholds (test 10, small 25, medium 50, "
                           "large 75, enterprise 100) for every category at every step and between steps.",
            "cases": c}


def routing() -> dict:
    r = pick_id(lambda b: True)
    on = {"rollout_percentage": 100}

    def ok(name, job, processor, rule):
        return route(name, on, r, job, processor, rule, True, "in_percentage")

    prs = lambda n: list(range(1001, 1001 + n))  # noqa: E731
    c = [
        # Not eligible: always inngest, whatever the job.
        route("not_eligible: stop, historical job", {"rollout_percentage": 100, "emergency_stop": True}, r,
              {"time_range_days": 30, "trigger_source": "scheduled"}, "inngest", "not_eligible", False, "emergency_stop"),
        route("not_eligible: 0%, large scheduled batch", {"rollout_percentage": 0}, r,
              {"max_items": 5000, "trigger_source": "scheduled"}, "inngest", "not_eligible", False,
              "outside_percentage"),
        route("not_eligible: excluded, recent job", {"rollout_percentage": 100, "excluded_repositories": [r]}, r,
              {"time_range_days": 1}, "inngest", "not_eligible", False, "excluded"),
        route("not_eligible: inactive, empty job", {"rollout_percentage": 100, "is_active": False}, r, {},
              "inngest", "not_eligible", False, "inactive"),
        route("not_eligible: whitelist, not targeted", {"rollout_strategy": "whitelist"}, r,
              {"time_range_days": 7}, "inngest", "not_eligible", False, "not_targeted"),
        route("not_eligible: repository_size, uncategorised", {"rollout_strategy": "repository_size",
                                                                "rollout_percentage": 100}, r,
              {"time_range_days": 7}, "inngest", "not_eligible", False, "uncategorized", None),
        route("not_eligible: repository_size, category excluded", {"rollout_strategy": "repository_size",
                                                                    "rollout_percentage": 50}, r,
              {"max_items": 500}, "inngest", "not_eligible", False, "category_excluded", "large"),
        # Eligible by other reasons: the rules apply.
        route("eligible by target under whitelist: historical", {"rollout_strategy": "whitelist",
                                                                  "target_repositories": [r]}, r,
              {"time_range_days": 7}, "github_actions", "historical_range", True, "targeted"),
        route("eligible by category: large batch", {"rollout_strategy": "repository_size", "rollout_percentage": 75},
              r, {"max_items": 500}, "github_actions", "large_batch", True, "category_included", "large"),
        # Row 1: recent data.
        ok("row 1: time_range_days 1", {"time_range_days": 1}, "inngest", "recent_data"),
        ok("row 1: time_range_days 0 is a value, not an absence", {"time_range_days": 0}, "inngest", "recent_data"),
        ok("row 1 beats the rest: 1 day, 50 PRs, scheduled, 5000 items",
           {"time_range_days": 1, "pr_numbers": prs(50), "trigger_source": "scheduled", "max_items": 5000},
           "inngest", "recent_data"),
        # Row 2: small PR batch.
        ok("row 2: 1 PR", {"pr_numbers": [42]}, "inngest", "small_pr_batch"),
        ok("row 2: 10 PRs", {"pr_numbers": prs(10)}, "inngest", "small_pr_batch"),
        ok("row 2 beats row 4: 5 PRs over 7 days", {"pr_numbers": prs(5), "time_range_days": 7},
           "inngest", "small_pr_batch"),
        ok("row 2 beats row 6: 3 PRs, scheduled, 500 items",
           {"pr_numbers": prs(3), "trigger_source": "scheduled", "max_items": 500}, "inngest", "small_pr_batch"),
        ok("row 2 not matched: 11 PRs", {"pr_numbers": prs(11)}, "inngest", "default"),
        ok("row 2 not matched: 11 PRs, scheduled", {"pr_numbers": prs(11), "trigger_source": "scheduled"},
           "github_actions", "scheduled_bulk"),
        ok("row 2 not matched: empty pr_numbers counts as absent", {"pr_numbers": []}, "inngest", "default"),
        ok("row 2 not matched: empty pr_numbers, 7 days", {"pr_numbers": [], "time_range_days": 7},
           "github_actions", "historical_range"),
        # Row 3: manual small batch.
        ok("row 3: manual, max_items absent", {"trigger_source": "manual"}, "inngest", "manual_small_batch"),
        ok("row 3: manual, max_items 50", {"trigger_source": "manual", "max_items": 50}, "inngest",
           "manual_small_batch"),
        ok("row 3: manual, max_items 0", {"trigger_source": "manual", "max_items": 0}, "inngest",
           "manual_small_batch"),
        ok("row 3 beats row 4: manual over 30 days", {"trigger_source": "manual", "time_range_days": 30},
           "inngest", "manual_small_batch"),
        ok("row 3: manual with 11 PRs", {"trigger_source": "manual", "pr_numbers": prs(11)}, "inngest",
           "manual_small_batch"),
        ok("row 3 not matched: manual, max_items 51", {"trigger_source": "manual", "max_items": 51},
           "github_actions", "large_batch"),
        ok("row 3 not matched: manual, 51 items over 30 days (row 4 first)",
           {"trigger_source": "manual", "max_items": 51, "time_range_days": 30}, "github_actions", "historical_range"),
        # Row 4: historical range.
        ok("row 4: time_range_days 2", {"time_range_days": 2}, "github_actions", "historical_range"),
        ok("row 4: time_range_days 90, automatic", {"time_range_days": 90, "trigger_source": "automatic"},
           "github_actions", "historical_range"),
        ok("row 4 beats row 5: 30 days, 10 items", {"time_range_days": 30, "max_items": 10},
           "github_actions", "historical_range"),
        # Row 5: large batch.
        ok("row 5: max_items 51", {"max_items": 51}, "github_actions", "large_batch"),
        ok("row 5: automatic, 10000 items", {"trigger_source": "automatic", "max_items": 10000},
           "github_actions", "large_batch"),
        ok("row 5 beats row 6: scheduled, 51 items", {"trigger_source": "scheduled", "max_items": 51},
           "github_actions", "large_batch"),
        ok("row 5 not matched: max_items 50", {"max_items": 50}, "inngest", "default"),
        ok("row 5 not matched: max_items 0", {"max_items": 0}, "inngest", "default"),
        # Row 6: scheduled bulk.
        ok("row 6: scheduled", {"trigger_source": "scheduled"}, "github_actions", "scheduled_bulk"),
        ok("row 6: scheduled, 50 items", {"trigger_source": "scheduled", "max_items": 50},
           "github_actions", "scheduled_bulk"),
        ok("row 6: scheduled, max_items 0", {"trigger_source": "scheduled", "max_items": 0},
           "github_actions", "scheduled_bulk"),
        # Row 7: default.
        ok("row 7: empty job", {}, "inngest", "default"),
        ok("row 7: automatic trigger only", {"trigger_source": "automatic"}, "inngest", "default"),
        ok("row 7: job_type alone does not route", {"job_type": "historical-sync"}, "inngest", "default"),
        ok("row 7: automatic, 50 items, 11 PRs",
           {"trigger_source": "automatic", "max_items": 50, "pr_numbers": prs(11)}, "inngest", "default"),
    ]
    return {"description": "SPEC §2.3 routing: not_eligible, then rows 1-7 in order, each matched and not matched, "
                           "with zero-valued fields and empty lists.", "cases": c}


def categorisation() -> dict:
    t = categorize
    c = [
        t("test: 0 stars, 0 contributors, 0 PRs", 0, 0, 0, "test", 0),
        t("test boundary: 0 stars, 2 contributors, 10 PRs", 0, 2, 10, "test", 3),
        t("not test: 1 star", 1, 2, 10, "small", 4),
        t("not test: 3 contributors", 0, 3, 10, "small", 4),
        t("not test: 11 PRs", 0, 2, 11, "small", 3),
        t("small boundary: 50 stars, 10 contributors, 100 PRs", 50, 10, 100, "small", 70),
        t("medium: 51 stars", 51, 10, 100, "medium", 71),
        t("medium: 11 contributors", 50, 11, 100, "medium", 71),
        t("medium: 101 PRs", 50, 10, 101, "medium", 70),
        t("medium boundary: 500 stars, 50 contributors, 1000 PRs", 500, 50, 1000, "medium", 100),
        t("large: 501 stars", 501, 50, 1000, "large", 100),
        t("large: 51 contributors", 0, 51, 0, "large", 51),
        t("large: 1001 PRs", 0, 0, 1001, "large", 100),
        t("large boundary: 5000 stars, 200 contributors, 10000 PRs", 5000, 200, 10000, "large", 100),
        t("enterprise: 5001 stars", 5001, 0, 0, "enterprise", 100),
        t("enterprise: 201 contributors", 0, 201, 0, "enterprise", 100),
        t("enterprise: 10001 PRs", 0, 0, 10001, "enterprise", 100),
        t("enterprise: huge counts", 4_000_000_000, 4_000_000_000, 4_000_000_000, "enterprise", 100),
        t("score: PRs divided by 10, rounded down (19 -> 1)", 1, 1, 19, "small", 3),
        t("score: 9 PRs contribute 0", 0, 1, 9, "test", 1),
        t("score: exactly 100 is not capped", 60, 30, 109, "medium", 100),
        t("score: 101 is capped to 100", 60, 30, 119, "medium", 100),
        t("score: 99", 60, 29, 109, "medium", 99),
    ]
    return {"description": "SPEC §2.4 categorisation: every category boundary, priorities, the test flag, "
                           "and the activity score (integer division, cap 100).", "cases": c}


def health_file() -> dict:
    on = {"rollout_percentage": 25}
    h = health
    c = [
        h("no windows: rate 0, ok", on, [], "ok", "none"),
        h("windows with zero jobs: rate 0, ok", on, [win("inngest", 0, 0), win("github_actions", 0, 0)], "ok", "none"),
        h("ok: 2.5% exactly", on, [win("github_actions", 25, 1000)], "ok", "none"),
        h("warning: 2.51%", on, [win("github_actions", 251, 10000)], "warning", "none"),
        h("warning: 5% equals max_error_rate 5.0, no rollback", on, [win("github_actions", 5, 100)],
          "warning", "none"),
        h("warning: 5.1% above max_error_rate, rollback", on, [win("github_actions", 51, 1000)],
          "warning", "rollback"),
        h("warning: exactly 10%", on, [win("github_actions", 100, 1000)], "warning", "rollback"),
        h("critical: 10.1%", on, [win("github_actions", 101, 1000)], "critical", "rollback"),
        h("critical: every job failed", on, [win("github_actions", 50, 50)], "critical", "rollback"),
        h("errors are summed over processors", on,
          [win("inngest", 0, 100, 250.0), win("github_actions", 30, 100, 9000.0)], "critical", "rollback"),
        h("a healthy processor dilutes the rate", on,
          [win("inngest", 0, 900), win("github_actions", 30, 100)], "warning", "none"),
        h("min jobs: exactly 10 jobs fires", on, [win("inngest", 1, 5), win("github_actions", 1, 5)],
          "critical", "rollback"),
        h("min jobs: 9 jobs do not fire", on, [win("github_actions", 9, 9)], "critical", "none"),
        h("min jobs: custom 100, 99 jobs do not fire", {"rollout_percentage": 25, "min_jobs_for_rollback": 100},
          [win("github_actions", 50, 99)], "critical", "none"),
        h("min jobs: custom 100, 100 jobs fire", {"rollout_percentage": 25, "min_jobs_for_rollback": 100},
          [win("github_actions", 50, 100)], "critical", "rollback"),
        h("min jobs: custom 1, one failed job fires", {"rollout_percentage": 25, "min_jobs_for_rollback": 1},
          [win("github_actions", 1, 1)], "critical", "rollback"),
        h("min jobs: custom 0 with no jobs: rate 0 does not exceed the max",
          {"rollout_percentage": 25, "min_jobs_for_rollback": 0}, [], "ok", "none"),
        h("already at 0%: no rollback", {"rollout_percentage": 0}, [win("github_actions", 50, 100)],
          "critical", "none"),
        h("1% still fires", {"rollout_percentage": 1}, [win("github_actions", 50, 100)], "critical", "rollback"),
        h("emergency stop on: no rollback", {"rollout_percentage": 25, "emergency_stop": True},
          [win("github_actions", 50, 100)], "critical", "none"),
        h("auto-rollback off: no rollback", {"rollout_percentage": 25, "auto_rollback_enabled": False},
          [win("github_actions", 50, 100)], "critical", "none"),
        # SPEC §2.5 as amended: the seed's "critical: immediate rollback" holds even when
        # max_error_rate is set above 10 %.
        h("custom max 20%: 15% is critical and rolls back", {"rollout_percentage": 25, "max_error_rate": 20.0},
          [win("github_actions", 15, 100)], "critical", "rollback"),
        h("custom max 50%: 10.5% is critical and rolls back", {"rollout_percentage": 25, "max_error_rate": 50.0},
          [win("github_actions", 21, 200)], "critical", "rollback"),
        h("custom max 20%: exactly 10% is a warning, no rollback", {"rollout_percentage": 25, "max_error_rate": 20.0},
          [win("github_actions", 10, 100)], "warning", "none"),
        h("custom max 20%: critical with too few jobs does not roll back",
          {"rollout_percentage": 25, "max_error_rate": 20.0, "min_jobs_for_rollback": 50},
          [win("github_actions", 15, 49)], "critical", "none"),
        h("custom max 1%: 2% is ok yet rolls back", {"rollout_percentage": 25, "max_error_rate": 1.0},
          [win("github_actions", 2, 100)], "ok", "rollback"),
        h("custom max 0%: any error rolls back", {"rollout_percentage": 100, "max_error_rate": 0.0},
          [win("inngest", 1, 1000)], "ok", "rollback"),
        h("custom max 0%: no error, no rollback", {"rollout_percentage": 100, "max_error_rate": 0.0},
          [win("inngest", 0, 1000)], "ok", "none"),
        h("the monitoring window does not change the evaluation",
          {"rollout_percentage": 25, "monitoring_window_hours": 1}, [win("inngest", 6, 100)], "warning", "rollback"),
    ]
    return {"description": "SPEC §2.5 health: levels (ok <= 2.5 < warning <= 10 < critical), the rollback "
                           "conditions one by one, min_jobs_for_rollback, and the error rate.", "cases": c}


def regressions() -> dict:
    c = []
    # §7.1: a signed 32-bit hash made about half of all repositories eligible at 0 %.
    for i, rid in enumerate(seeded_uuids("rollout-vectors:regression-7.1", 20)):
        case = pct_case(f"regression §7.1: 0% selects nobody (repository {i:02})", {"rollout_percentage": 0}, rid)
        assert case["expect"]["reason"] == "outside_percentage"
        c.append(case)
    # §7.2: repository_size admitted everyone at any percentage other than 0/10/25/50/75.
    rid = pick_id(lambda b: True)
    for pct in (5, 20, 99):
        for cat in CATEGORIES + [None]:
            case = size_case(f"regression §7.2: repository_size at {pct}% for {cat or 'uncategorised'}",
                             {"rollout_strategy": "repository_size", "rollout_percentage": pct}, rid, cat)
            c.append(case)
        assert not all(x["expect"]["eligible"] for x in c[-6:])
    # §7.3: the eligible count ignored exclusions, the stop and the size strategy; routing and eligibility
    # must agree on the bucket and honour them under every strategy.
    rid = pick_id(lambda b: True)
    for strategy in ("percentage", "whitelist", "repository_size"):
        base = {"rollout_strategy": strategy, "rollout_percentage": 100, "target_repositories": [rid]}
        c.append(elig(f"regression §7.3: {strategy}: exclusion wins", dict(base, excluded_repositories=[rid]),
                      rid, False, "excluded", "test"))
        c.append(elig(f"regression §7.3: {strategy}: the stop wins", dict(base, emergency_stop=True),
                      rid, False, "emergency_stop", "test"))
        c.append(route(f"regression §7.3: {strategy}: an excluded repository routes as not eligible",
                       dict(base, excluded_repositories=[rid]), rid, {"time_range_days": 30},
                       "inngest", "not_eligible", False, "excluded", "test"))
    same = pick_id(lambda b: b < 50)
    c.append(pct_case("regression §7.3: eligibility and routing share one bucket (is_eligible)",
                      {"rollout_percentage": 50}, same))
    c.append(route("regression §7.3: eligibility and routing share one bucket (route)", {"rollout_percentage": 50},
                   same, {"time_range_days": 30}, "github_actions", "historical_range", True, "in_percentage"))
    # §7.4: categorisation read a missing column; it works from the stats alone.
    c.append(categorize("regression §7.4: categorize from stats alone (test)", 0, 1, 3, "test", 1))
    c.append(categorize("regression §7.4: categorize from stats alone (medium)", 300, 20, 400, "medium", 100))
    c.append(categorize("regression §7.4: categorize from stats alone (large)", 1200, 90, 2500, "large", 100))
    # §7.9: auto-rollback re-fired at 0 % and needed more than 10 jobs.
    c.append(health("regression §7.9: exactly 10 jobs fire", {"rollout_percentage": 10},
                    [win("github_actions", 6, 10)], "critical", "rollback"))
    c.append(health("regression §7.9: already at 0% does not re-fire", {"rollout_percentage": 0},
                    [win("github_actions", 6, 10)], "critical", "none"))
    c.append(health("regression §7.9: already at 0% with many jobs does not re-fire", {"rollout_percentage": 0},
                    [win("inngest", 300, 1000), win("github_actions", 300, 1000)], "critical", "none"))
    return {"description": "One or more cases per bug of the original (SPEC §7) that the rules can show; "
                           "each fails on the old behaviour.", "cases": c}


def errors() -> dict:
    r = seeded_uuids("rollout-vectors:errors", 1)[0]
    repo = {"id": r}
    c = [
        error("unknown trigger source `cron`", "route", "trigger_source", config={"rollout_percentage": 100},
              repository=repo, job={"trigger_source": "cron"}),
        error("trigger sources are lowercase: `MANUAL`", "route", "trigger_source",
              config={"rollout_percentage": 100}, repository=repo, job={"trigger_source": "MANUAL"}),
        error("an unknown trigger source is rejected even when not eligible", "route", "trigger_source",
              config={"rollout_percentage": 0}, repository=repo, job={"trigger_source": "webhook"}),
        error("rollout_percentage 101 (is_eligible)", "is_eligible", "rollout_percentage",
              config={"rollout_percentage": 101}, repository=repo),
        error("rollout_percentage 101 (route)", "route", "rollout_percentage",
              config={"rollout_percentage": 101}, repository=repo, job={}),
        error("rollout_percentage 101 (evaluate_health)", "evaluate_health", "rollout_percentage",
              config={"rollout_percentage": 101}, windows=[]),
        error("rollout_percentage -1", "is_eligible", "rollout_percentage",
              config={"rollout_percentage": -1}, repository=repo),
        error("unknown strategy `canary` (is_eligible)", "is_eligible", "rollout_strategy",
              config={"rollout_percentage": 50, "rollout_strategy": "canary"}, repository=repo),
        error("unknown strategy `canary` (route)", "route", "rollout_strategy",
              config={"rollout_percentage": 50, "rollout_strategy": "canary"}, repository=repo, job={}),
        error("unknown category `huge` (repository_size)", "is_eligible", "category",
              config={"rollout_percentage": 50, "rollout_strategy": "repository_size"},
              repository={"id": r, "category": "huge"}),
        error("unknown category `huge` (percentage strategy)", "is_eligible", "category",
              config={"rollout_percentage": 50}, repository={"id": r, "category": "huge"}),
        error("unknown processor `lambda`", "evaluate_health", "processor_type",
              config={"rollout_percentage": 25}, windows=[win("lambda", 1, 10)]),
        error("negative time_range_days", "route", "time_range_days",
              config={"rollout_percentage": 100}, repository=repo, job={"time_range_days": -1}),
        error("negative max_items", "route", "max_items",
              config={"rollout_percentage": 100}, repository=repo, job={"max_items": -1}),
        error("unknown config field `rollout_percent`", "is_eligible", "rollout_percent",
              config={"rollout_percent": 50}, repository=repo),
    ]
    return {"description": "Bad input (project extension of SPEC §5): `\"expect\": {\"error\": \"<substring>\"}` "
                           "means evaluation must fail with an error whose message contains the substring, "
                           "the offending field's name.", "cases": c}


# Order matters: pick_id draws from one seeded stream, so files are built in this fixed order.
FILES = [
    ("00-tour.json", tour),
    ("01-bucketing.json", bucketing),
    ("02-eligibility.json", eligibility),
    ("03-repository-size.json", repository_size),
    ("04-routing.json", routing),
    ("05-categorize.json", categorisation),
    ("06-health.json", health_file),
    ("07-regressions.json", regressions),
    ("08-errors.json", errors),
]


def _dump(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def render() -> dict[str, str]:
    """Every file's text, by name, in index order."""
    _self_test()
    out = {}
    names = set()
    for fname, build in FILES:
        doc = build()
        for case in doc["cases"]:
            assert case["name"] not in names, f"duplicate case name: {case['name']}"
            assert case["expect"], case["name"]
            names.add(case["name"])
        out[fname] = _dump(doc)
    out["index.json"] = _dump({
        "description": "rollout policy conformance vectors (SPEC §5). Generated by tests/vectors/generate.py; "
                       "do not edit by hand.",
        "files": [f for f, _ in FILES],
    })
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv[1:]
    unknown = [a for a in argv[1:] if a != "--check"]
    if unknown:
        print(f"usage: {argv[0]} [--check]", file=sys.stderr)
        return 2
    files = render()
    if check:
        drift = []
        for name, text in files.items():
            path = HERE / name
            if not path.exists() or path.read_bytes() != text.encode("utf-8"):
                drift.append(name)
        known = set(files) | {"README.md", "requirements.txt", "generate.py"}
        stray = sorted(p.name for p in HERE.glob("*.json") if p.name not in known)
        for name in drift:
            print(f"drift: tests/vectors/{name} differs from generate.py's output", file=sys.stderr)
        for name in stray:
            print(f"drift: tests/vectors/{name} is not written by generate.py", file=sys.stderr)
        if drift or stray:
            print("run `python3 tests/vectors/generate.py` and commit the result", file=sys.stderr)
            return 1
        total = sum(len(json.loads(t).get("cases", [])) for t in files.values())
        print(f"tests/vectors: {len(files)} files, {total} cases, no drift")
        return 0
    for name, text in files.items():
        (HERE / name).write_bytes(text.encode("utf-8"))
    total = sum(len(json.loads(t).get("cases", [])) for t in files.values())
    print(f"wrote {len(files)} files, {total} cases to tests/vectors")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
