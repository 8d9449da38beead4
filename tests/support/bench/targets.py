"""The issue's targets, checked against the facts the sections gathered: one row per figure,
each naming the section that measures it (`scripts/bench --only SECTION`)."""
from __future__ import annotations

from typing import Any, Dict, List

from . import recovery
from .latency import TARGET_MS
from .memory import GROUP_1000_TARGET_MB, IDLE_TARGET_MB
from .report import Target, mb, ms, pct, rate
from .scale import RSS_TARGET_MB

LIKE_FOR_LIKE_GOAL = 0.80  # the worker's trades per CPU-second ÷ the library loop's messages
STORM_SLACK = 1.10  # a start of many workers: within the budget's computed time + 10 %


def evaluate(facts: Dict[str, Any]) -> List[Target]:
    out = _like_for_like(facts.get("backlog") or {})
    out += _ramp(facts)
    out += _original(facts.get("original") or [])
    out += _latency(facts)
    out += _memory(facts)
    out += _scale(facts.get("scale"))
    out += _storm(facts.get("storm") or {})
    for t in recovery.targets(facts):
        t.section = "recovery"
        out.append(t)
    return out


def _like_for_like(drains: Dict[str, Any]) -> List[Target]:
    plain, fast, worker = (drains.get(k) for k in ("plain", "fast", "worker"))
    what = "worker CPU per trade vs websocket-client's loop (same queued backlog)"
    goal = (f"≥ {LIKE_FOR_LIKE_GOAL * 100:.0f} % of the library loop's messages per "
            "CPU-second; as close as possible to the fast loop")
    if not (plain and fast and worker):
        return [Target(what, goal, "–", None, section="ceilings")]
    share = worker["per_cpu_s"] / plain["per_cpu_s"]
    once = bool(worker.get("exactly_once"))
    measured = (f"{worker['us_per_message']:.2f} us per trade stored "
                f"({worker['per_cpu_s']:,.0f}/CPU-s) = {share * 100:.0f} % of the library "
                f"loop ({plain['us_per_message']:.2f} us/msg), "
                f"{worker['per_cpu_s'] / fast['per_cpu_s'] * 100:.0f} % of the fast loop "
                f"({fast['us_per_message']:.2f} us/msg)" + ("" if once else "; NOT exactly once"))
    rates = (f"{rate(worker['mid_rate'])} stored vs the loops' {rate(plain['mid_rate'])} "
             f"and {rate(fast['mid_rate'])} (influxd and the front share the 2 cores)")
    return [Target(what, goal, measured, share >= LIKE_FOR_LIKE_GOAL and once,
                   section="ceilings"),
            Target("worker draining that backlog: trades stored/s", "information", rates,
                   once, info=True, section="ceilings")]


def _ramp(facts: Dict[str, Any]) -> List[Target]:
    best = facts.get("ramp_best_rate")
    cpu_per_k = facts.get("ramp_best_cpu_per_k")
    measured = rate(best)
    if best and cpu_per_k:
        measured += f", worker CPU {pct(cpu_per_k * best / 1000)} of a core"
    return [Target("one worker, one symbol, live: highest offered rate stored with zero loss "
                   "and kept up", "information (bounded by this box's 2 cores)", measured,
                   None if best is None else True, info=True, section="ramp")]


def _original(results: List[Dict[str, Any]]) -> List[Target]:
    """Ours vs the original design: writes and distinct points stored, lowest and top load."""
    what = "vs the original design (64 MB send buffer): distinct trades stored"
    if not results:
        return [Target(what, "", "–", None, section="original")]
    top = max(results, key=lambda r: r["offered_rate"])
    low = min(results, key=lambda r: r["offered_rate"])
    lost = [r["lost"] for r in results]
    ratio = f"{top['ratio']:,.0f}×" if top.get("ratio") else "–"
    return [Target(
        what, "information: ours stores every trade (section 2); the original's loss shown",
        f"original lost {pct(min(lost))}–{pct(max(lost))}: at {rate(low['offered_rate'])} "
        f"{rate(low['writes_rate'])} writes, {rate(low['stored_rate'])} distinct; at "
        f"{rate(top['offered_rate'])} {rate(top['writes_rate'])} writes, "
        f"{rate(top['stored_rate'])} distinct (ours {ratio})",
        True, info=True, section="original")]


def _latency(facts: Dict[str, Any]) -> List[Target]:
    lat = (facts.get("latency") or {}).get("1000")
    return [Target("latency p99 at 1,000 trades/s", f"≤ {TARGET_MS:,.0f} ms (flush + 100 ms)",
                   f"p99 {ms(lat['p99'])} (p50 {ms(lat['p50'])})" if lat else "–",
                   None if not lat or lat["p99"] is None else lat["p99"] <= TARGET_MS,
                   section="latency")]


def _memory(facts: Dict[str, Any]) -> List[Target]:
    idle = facts.get("idle") or {}
    rss = idle.get("rss_mb")
    out = [Target("RSS, idle single-symbol worker", f"≤ {IDLE_TARGET_MB:.0f} MB",
                  mb(rss) + (f" (USS {mb(idle['uss_mb'])})" if idle.get("uss_mb") else ""),
                  None if rss is None else rss <= IDLE_TARGET_MB, section="memory")]
    group = facts.get("group_1000") or {}
    g = group.get("rss_mb")
    out.append(Target("RSS, group of 1,000 quiet symbols", f"≤ {GROUP_1000_TARGET_MB:.0f} MB",
                      "did not connect" if group.get("error") else mb(g),
                      False if group.get("error") else
                      None if g is None else g <= GROUP_1000_TARGET_MB, section="memory"))
    return out


def _scale(scale: Any) -> List[Target]:
    if not scale:
        return [Target(what, "", "–", None, section="scale")
                for what in ("~1,500 pairs: total RSS", "~1,500 pairs: CPU at the typical rate")]
    pairs = scale.get("pairs")
    return [
        Target("~1,500 pairs: total RSS (sum over processes)", f"≤ {RSS_TARGET_MB / 1024:.0f} GB",
               f"{mb(scale['rss_mb'])} in {scale['processes']} processes "
               f"(PSS {mb(scale['pss_mb'])})", scale["rss_mb"] <= RSS_TARGET_MB,
               section="scale"),
        Target("memory per captured pair, recommended layout", "information",
               "–" if not pairs else
               f"{scale['rss_mb'] / pairs * 1024:,.0f} kB RSS, "
               f"{scale['pss_mb'] / pairs * 1024:,.0f} kB PSS per pair ({pairs:,} pairs, "
               f"{scale['workers']} workers)", True if pairs else None, info=True,
               section="scale"),
        Target("~1,500 pairs: CPU at the typical rate", "< 1 core",
               f"{scale['cores_typical']:.2f} cores at {rate(scale['offered_typical'])} "
               f"(10×: {scale['cores_10x']:.2f})", scale["cores_typical"] < 1.0,
               section="scale"),
        Target("~1,500 pairs: zero loss", "stored ids == ledger, per symbol",
               "equal" if scale["zero_loss"] else "differences (see section 6)",
               bool(scale["zero_loss"]), section="scale")]


def _storm(storm: Dict[str, Any]) -> List[Target]:
    what = "a start of many workers under the host's connection budget"
    goal = f"all connected within the computed time + {(STORM_SLACK - 1) * 100:.0f} %, none refused"
    if not storm:
        return [Target(what, goal, "–", None, section="storm")]
    done = storm.get("all_connected_s")
    refused = sum(int(v) for v in storm["refusals"].values())
    measured = (f"{storm['workers']} workers: {done:.1f} s (computed "
                f"{storm['computed_s']:.0f} s), {refused} refused" if done is not None
                else f"not all {storm['workers']} connected")
    return [Target(what, goal, measured,
                   done is not None and done <= storm["computed_s"] * STORM_SLACK
                   and not refused, section="storm")]
