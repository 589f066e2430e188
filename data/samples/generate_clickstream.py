"""Writes data/samples/clickstream.jsonl: a small, realistic clickstream
(page views, clicks, add-to-cart, purchases of a few hundred users over one
hour) for the README's quickstart. Deterministic: the same file every run.

    python3 data/samples/generate_clickstream.py
"""
import json
import os
import random

rng = random.Random(20261126)
pages = ["/", "/search", "/product/{}", "/cart", "/checkout", "/account"]
events = []
t = 1_795_000_000_000  # ms since the epoch
for i in range(2000):
    t += rng.randint(50, 3500)
    user = f"user-{rng.randint(1, 300):04d}"
    kind = rng.choices(["page_view", "click", "add_to_cart", "purchase"], weights=[60, 30, 7, 3])[0]
    page = rng.choice(pages).format(rng.randint(100, 999))
    ev = {"event_id": f"ev-{i:06d}", "user_id": user, "type": kind, "page": page, "ts": t}
    if kind in ("add_to_cart", "purchase"):
        ev["amount_cents"] = rng.randint(199, 25000)
    events.append(ev)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clickstream.jsonl")
with open(out, "w") as f:
    for ev in events:
        f.write(json.dumps(ev, separators=(",", ":")) + "\n")
print(f"wrote {len(events)} events to {out}")
