#!/usr/bin/env python3
"""Write the example inputs of docs/policy-authoring.md (deterministic; no packages needed).

- repos.csv: 400 repositories with activity numbers (the policy categorises them), for
  `rollout policy simulate`;
- recorded.jsonl: 600 route requests in the shape a host records them (one case object per
  line), for `rollout policy diff`.

Run from anywhere: `python3 examples/size-aware-policy/generate_inputs.py`.
"""
import json
import os
import random
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(20261129)

ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(400)]
with open(os.path.join(HERE, "repos.csv"), "w") as f:
    f.write("id,star_count,contributor_count,pr_count\n")
    for i, rid in enumerate(ids):
        scale = rng.choice([0, 1, 1, 2, 2, 3, 3, 4])
        stars = [0, 30, 300, 3000, 30000][scale] + (rng.randrange(0, 10) if scale else 0)
        contributors = [1, 8, 40, 150, 400][scale] + rng.randrange(0, 2)
        prs = [5, 80, 800, 8000, 80000][scale] + rng.randrange(0, 6 if scale == 0 else 20)
        f.write(f"{rid},{stars},{contributors},{prs}\n")

categories = [None, "test", "small", "medium", "large", "enterprise"]
jobs = [
    {"trigger_source": "scheduled", "time_range_days": 1},
    {"trigger_source": "scheduled", "pr_numbers": [101, 102]},
    {"trigger_source": "scheduled", "time_range_days": 30},
    {"trigger_source": "scheduled"},
    {"trigger_source": "manual", "max_items": 20},
    {"trigger_source": "automatic", "pr_numbers": [7]},
    {"trigger_source": "automatic", "max_items": 500},
    {"time_range_days": 0},
]
with open(os.path.join(HERE, "recorded.jsonl"), "w") as f:
    for i in range(600):
        rid = rng.choice(ids)
        case = {
            "name": f"recorded #{i}",
            "op": "route",
            "config": {"rollout_percentage": 25, "rollout_strategy": "percentage"},
            "repository": {"id": rid, "category": rng.choice(categories)},
            "job": rng.choice(jobs),
        }
        f.write(json.dumps(case, separators=(",", ":")) + "\n")
