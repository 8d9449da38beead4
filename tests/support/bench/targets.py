"""The issue's targets, checked against the facts the sections gathered."""
from __future__ import annotations

from typing import Any, Dict, List

from .latency import TARGET_MS
from .memory import GROUP_1000_TARGET_MB, IDLE_TARGET_MB
from .report import Target, mb, ms, rate
from .scale import RSS_TARGET_MB


LIKE_FOR_LIKE_GOAL = 0.80  # the worker's trades per CPU-second ÷ the library loop's messages


def evaluate(facts: Dict[str, Any]) -> List[Target]:
    out: List[Target] = []
    out += _like_for_like(facts.get("backlog") or {})
    best = facts.get("ramp_best_rate")
    ceiling = facts.get("recv_rate")
    per_core, ceiling_core = facts.get("ramp_best_per_core"), facts.get("recv_rate_per_core")
    measured = rate(best)
    if best and ceiling:
        measured += f" = {best / ceiling * 100:.0f} % of the receive ceiling {rate(ceiling)}"
    if per_core and ceiling_core:
        measured += f"; per core {per_core / ceiling_core * 100:.0f} % of the bare loop's"
    out.append(Target("one worker, one symbol: highest rate with zero loss",
                      "no number set: reported with its share of the receive ceiling",
                      measured, None if best is None else True, info=True))
    lat = (facts.get("latency") or {}).get("1000")
    out.append(Target("latency p99 at 1,000 trades/s", f"≤ {TARGET_MS:,.0f} ms (flush + 100 ms)",
                      f"p99 {ms(lat['p99'])} (p50 {ms(lat['p50'])})" if lat else "–",
                      None if not lat or lat["p99"] is None else lat["p99"] <= TARGET_MS))
    idle = (facts.get("idle") or {}).get("rss_mb")
    out.append(Target("RSS, idle single-symbol worker", f"≤ {IDLE_TARGET_MB:.0f} MB", mb(idle),
                      None if idle is None else idle <= IDLE_TARGET_MB))
    group = facts.get("group_1000") or {}
    if group.get("error"):
        out.append(Target("RSS, group of 1,000 quiet symbols", f"≤ {GROUP_1000_TARGET_MB:.0f} MB",
                          "did not connect", False))
    else:
        g = group.get("rss_mb")
        out.append(Target("RSS, group of 1,000 quiet symbols", f"≤ {GROUP_1000_TARGET_MB:.0f} MB",
                          mb(g), None if g is None else g <= GROUP_1000_TARGET_MB))
    scale = facts.get("scale")
    if scale:
        out.append(Target("~1,500 pairs: total RSS (sum over processes)",
                          f"≤ {RSS_TARGET_MB / 1024:.0f} GB",
                          f"{mb(scale['rss_mb'])} in {scale['processes']} processes "
                          f"(PSS {mb(scale['pss_mb'])})", scale["rss_mb"] <= RSS_TARGET_MB))
        out.append(Target("~1,500 pairs: CPU at the typical rate", "< 1 core",
                          f"{scale['cores_typical']:.2f} cores at "
                          f"{rate(scale['offered_typical'])} (10×: {scale['cores_10x']:.2f})",
                          scale["cores_typical"] < 1.0))
        out.append(Target("~1,500 pairs: zero loss", "stored ids == ledger, per symbol",
                          "equal" if scale["zero_loss"] else "differences (see section 6)",
                          bool(scale["zero_loss"])))
    else:
        for what in ("~1,500 pairs: total RSS", "~1,500 pairs: CPU at the typical rate"):
            out.append(Target(what, "", "–", None))
    return out


def _like_for_like(drains: Dict[str, Any]) -> List[Target]:
    plain, fast, worker = (drains.get(k) for k in ("plain", "fast", "worker"))
    what = "worker CPU per trade vs websocket-client's loop (same queued backlog)"
    goal = (f"≥ {LIKE_FOR_LIKE_GOAL * 100:.0f} % of the library loop's messages per "
            "CPU-second; as close as possible to the fast loop")
    if not (plain and fast and worker):
        return [Target(what, goal, "–", None)]
    share = worker["per_cpu_s"] / plain["per_cpu_s"]
    measured = (f"{worker['us_per_message']:.2f} us per trade stored "
                f"({worker['per_cpu_s']:,.0f}/CPU-s) = {share * 100:.0f} % of the library "
                f"loop ({plain['us_per_message']:.2f} us/msg), "
                f"{worker['per_cpu_s'] / fast['per_cpu_s'] * 100:.0f} % of the fast loop "
                f"({fast['us_per_message']:.2f} us/msg)")
    rates = (f"{rate(worker['mid_rate'])} stored vs the loops' {rate(plain['mid_rate'])} "
             f"and {rate(fast['mid_rate'])}")
    once = bool(worker.get("exactly_once"))
    return [Target(what, goal, measured + ("" if once else "; NOT exactly once"),
                   share >= LIKE_FOR_LIKE_GOAL and once),
            Target("worker draining that backlog: trades stored/s", "information", rates,
                   once, info=True)]
