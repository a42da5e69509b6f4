"""Replay request traces through our autoscaler and two reference policies (dstack, SkyServe).

A simulated cluster runs one second per step. Arrivals are drawn from a trace's rate either as
seeded Poisson counts or as a steady rate (evenly spaced requests). Each policy sees the
gateway's counters as its system would (dstack pulls stats every 15 s and decides every 10 s,
SkyServe decides every 20 s, ours every 1 s like the controller), asks for a replica count, and
new replicas become ready `startup` seconds later (paid for while they start); removed replicas
stop at once. Per trace, arrival mode and policy it prints, over several seeds (mean ± spread):

- overload: per second, the requests above what the ready replicas serve at target
  (max(0, arrivals - ready x target)), summed; no smoothing.
- cost: replica-seconds, starting replicas included.

Besides the fixed traces, `flash-crowd` is a 25x step for 4 minutes every 20 minutes and `mmpp`
a two-state Markov-modulated Poisson rate whose busy periods come back every few minutes; its
state sequence is drawn per seed, the same for both arrival modes.

Target (PASS/FAIL per trace x mode): overload at most 70% of the better reference's, at no more
than 1.2x the replica-seconds of the cheaper reference. The reference policies are written from
the peers' documented behaviour, not from their code:

- dstack: requests per second averaged over the window (60 s); desired = ceil(rps / target)
  clamped to the range; a scale-up only when the last scaling event is at least
  scale_up_delay old, a scale-down only when it is at least scale_down_delay old; from zero at
  once; decisions every 10 s on stats pulled every 15 s.
- SkyServe: queries per second over the last 60 s; target = ceil(qps / target_qps_per_replica);
  a change only after delay / 20 s consecutive 20-s decisions agree; from zero at once.

    python bench/autoscale.py [--seeds 5] [--first-seed 1] [--hours H] [--trace NAME ...]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from gpustack_iac.runtime.autoscaler import GroupConfig, LoadSample, ScalingConfig, ServiceAutoscaler
from gpustack_iac.runtime.scaling.window import LoadWindow

SERVICE_TIME = 0.5  # seconds a request takes on a replica; only feeds the in-flight gauge
MAX_BACKLOG_SECONDS = 30.0  # clients give up after this long, so the queue stays bounded
SCALE_UP_DELAY = 60.0
SCALE_DOWN_DELAY = 300.0
WINDOW = 60.0


@dataclass(frozen=True)
class Case:
    """One trace with the cluster it runs on."""

    name: str
    rates: Callable[[float, random.Random], list[float]]  # (hours, seeded rng) -> rate per second
    target: float = 10.0
    startup: float = 60.0
    min_total: int = 1
    max_total: int = 40
    hours: float = 2.0


# --- traces: rps per second (the rng draws the random ones; fixed traces ignore it) ---------------
def steady(hours: float, rng: random.Random) -> list[float]:
    return [45.0] * int(hours * 3600)


def diurnal(hours: float, rng: random.Random) -> list[float]:
    n = int(hours * 3600)
    return [5.0 + 80.0 * (1 - math.cos(2 * math.pi * t / n)) / 2 for t in range(n)]


def spike(hours: float, rng: random.Random) -> list[float]:
    n = int(hours * 3600)
    start = n // 3
    return [80.0 if start <= t < start + 600 else 8.0 for t in range(n)]


def bursts(hours: float, rng: random.Random) -> list[float]:
    return [30.0 if t % 1800 >= 1200 else 0.0 for t in range(int(hours * 3600))]


def near_target(hours: float, rng: random.Random) -> list[float]:
    return [8.0] * int(hours * 3600)


def flash_crowd(hours: float, rng: random.Random) -> list[float]:
    """A 25x step (8 -> 200 rps) for 4 minutes, every 20 minutes from minute 10."""
    return [200.0 if 600 <= t % 1200 < 840 else 8.0 for t in range(int(hours * 3600))]


def mmpp(hours: float, rng: random.Random) -> list[float]:
    """Two-state Markov-modulated Poisson rate: quiet 5 rps, busy 50 rps.

    Sojourns are exponential (quiet: mean 4 min, busy: mean 2 min), so busy periods come back
    every few minutes at random; the state sequence is drawn per seed.
    """
    n = int(hours * 3600)
    out: list[float] = []
    busy = False
    while len(out) < n:
        stay = max(1, int(rng.expovariate(1 / (120.0 if busy else 240.0))))
        out.extend([50.0 if busy else 5.0] * stay)
        busy = not busy
    return out[:n]


CASES: tuple[Case, ...] = (
    Case("steady", steady),
    Case("diurnal", diurnal),
    Case("spike", spike, hours=1.0),
    Case("bursts", bursts, min_total=0),
    Case("near-target", near_target, hours=1.0),
    Case("slow-start", spike, target=4.0, startup=180.0, hours=1.0),
    Case("flash-crowd", flash_crowd, hours=1.0),
    Case("mmpp", mmpp),
)


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:  # normal approximation keeps large rates cheap
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def arrivals(rates: list[float], mode: str, rng: random.Random) -> list[int]:
    if mode == "poisson":
        return [poisson(rng, r) for r in rates]
    out, carry = [], rng.random()  # steady-rate: evenly spaced, the phase drawn from the seed
    for r in rates:
        carry += r
        n = int(carry)
        carry -= n
        out.append(n)
    return out


# --- policies: step(now, sample, ready_total) -> desired total ------------------------------------
class Ours:
    def __init__(self, case: Case, initial: int, clock: Callable[[], float]) -> None:
        scaling = ScalingConfig("rps", case.target, SCALE_UP_DELAY, SCALE_DOWN_DELAY, window=WINDOW)
        self._a = ServiceAutoscaler([GroupConfig("g", case.min_total, case.max_total, None)], scaling, clock=clock)
        self._initial = initial

    def step(self, now: float, sample: LoadSample, ready: int) -> int:
        self._a.observe(sample)
        return self._a.decide({"g": ready}, set())["g"]


class Dstack:
    """dstack's documented rule (see the module docstring)."""

    def __init__(self, case: Case, initial: int, clock: Callable[[], float]) -> None:
        self._c = case
        self._window = LoadWindow(WINDOW)
        self._current = initial
        self._last_event = -math.inf
        self._pulled: LoadSample | None = None

    def step(self, now: float, sample: LoadSample, ready: int) -> int:
        c = self._c
        if self._current == 0 and sample.waiting > 0:
            # From zero at once: the held request itself triggers it, not the next decision.
            self._current, self._last_event = 1, now
            return self._current
        if int(now) % 15 == 0:
            self._pulled = sample
            self._window.observe(sample)
        if int(now) % 10 != 0 or self._pulled is None:
            return self._current
        count, elapsed = self._window.arrivals(WINDOW, now)
        if elapsed <= 0:
            return self._current  # one pull so far: no rate yet
        rps = count / elapsed
        want = max(c.min_total, min(c.max_total, math.ceil(rps / c.target - 1e-9)))
        if self._current == 0 and (self._pulled.waiting > 0 or count > 0):
            want = max(want, 1)
            self._current, self._last_event = want, now
        elif want > self._current and now - self._last_event >= SCALE_UP_DELAY:
            self._current, self._last_event = want, now
        elif want < self._current and now - self._last_event >= SCALE_DOWN_DELAY:
            self._current, self._last_event = want, now
        return self._current


class SkyServe:
    """SkyServe's documented rule (see the module docstring)."""

    INTERVAL = 20.0

    def __init__(self, case: Case, initial: int, clock: Callable[[], float]) -> None:
        self._c = case
        self._window = LoadWindow(WINDOW)
        self._current = initial
        self._ups = 0
        self._downs = 0

    def step(self, now: float, sample: LoadSample, ready: int) -> int:
        c = self._c
        self._window.observe(sample)
        if self._current == 0 and sample.waiting > 0:
            self._current, self._ups, self._downs = 1, 0, 0  # from zero at once, on the held request
            return self._current
        if int(now) % int(self.INTERVAL) != 0:
            return self._current
        count, elapsed = self._window.arrivals(WINDOW, now)
        qps = count / elapsed if elapsed > 0 else 0.0
        want = max(c.min_total, min(c.max_total, math.ceil(qps / c.target - 1e-9)))
        if self._current == 0 and (sample.waiting > 0 or count > 0):
            self._current, self._ups, self._downs = max(want, 1), 0, 0
            return self._current
        if want > self._current:
            self._ups, self._downs = self._ups + 1, 0
            if self._ups >= SCALE_UP_DELAY / self.INTERVAL:
                self._current, self._ups = want, 0
        elif want < self._current:
            self._downs, self._ups = self._downs + 1, 0
            if self._downs >= SCALE_DOWN_DELAY / self.INTERVAL:
                self._current, self._downs = want, 0
        else:
            self._ups = self._downs = 0
        return self._current


POLICIES: dict[str, Callable[[Case, int, Callable[[], float]], Ours | Dstack | SkyServe]] = {
    "ours": Ours,
    "dstack": Dstack,
    "skyserve": SkyServe,
}


@dataclass
class Result:
    replica_seconds: float = 0.0
    overload: float = 0.0  # requests above ready capacity, summed per second
    launches: int = 0


def simulate(policy_name: str, case: Case, rates: list[float], arrived: list[int]) -> Result:
    clock = [0.0]
    # The run starts where the first second's rate would have the cluster (bursts: at zero).
    initial = max(case.min_total, min(case.max_total, math.ceil(rates[0] / case.target - 1e-9)))
    policy = POLICIES[policy_name](case, initial, lambda: clock[0])
    ready_at: list[float] = [-case.startup] * initial
    total, backlog, res = 0, 0.0, Result()
    for t, (rate, n) in enumerate(zip(rates, arrived)):
        now = float(t)
        clock[0] = now
        ready = sum(1 for r in ready_at if r <= now)
        cap = ready * case.target
        res.overload += max(0.0, n - cap)
        served = min(n + backlog, cap)
        backlog = min(n + backlog - served, MAX_BACKLOG_SECONDS * max(rate, 1.0))
        total += n
        in_flight = int(round(served * SERVICE_TIME + backlog))
        sample = LoadSample(now, total, in_flight, int(backlog) if ready == 0 else 0)
        want = policy.step(now, sample, ready)
        if want > len(ready_at):
            res.launches += want - len(ready_at)
            ready_at.extend([now + case.startup] * (want - len(ready_at)))
        elif want < len(ready_at):
            ready_at.sort()  # drop the youngest (still starting) replicas first
            del ready_at[want:]
        res.replica_seconds += len(ready_at)
    return res


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{mean:10.0f} ±{sd:<7.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=1, help="check a policy change on seeds it was not tuned on")
    ap.add_argument("--hours", type=float, default=None, help="override every trace's length")
    ap.add_argument("--trace", action="append", choices=[c.name for c in CASES], help="run only these traces")
    args = ap.parse_args()
    print(f"seeds={args.first_seed}..{args.first_seed + args.seeds - 1} delays up/down={SCALE_UP_DELAY:g}/{SCALE_DOWN_DELAY:g}s window={WINDOW:g}s; "
          "overload = requests above ready x target, per second; cost = replica-seconds (starting included)")
    print(f"{'trace':12} {'arrivals':8} {'policy':9} {'replica-s mean ±sd':>19} {'overload mean ±sd':>19} {'launches':>8}")
    verdicts, ok = [], True
    for case in CASES:
        if args.trace and case.name not in args.trace:
            continue
        hours = args.hours if args.hours is not None else case.hours
        for mode in ("poisson", "steady-rate"):
            per: dict[str, list[Result]] = {p: [] for p in POLICIES}
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                # The rate trace depends on the seed alone, so both arrival modes replay the same one.
                rates = case.rates(hours, random.Random(f"{seed}-{case.name}-rates"))
                arrived = arrivals(rates, mode, random.Random(f"{seed}-{case.name}-{mode}"))
                for p in POLICIES:
                    per[p].append(simulate(p, case, rates, arrived))
            means: dict[str, tuple[float, float]] = {}
            for p, results in per.items():
                cost = [r.replica_seconds for r in results]
                over = [r.overload for r in results]
                launches = statistics.fmean(r.launches for r in results)
                means[p] = (statistics.fmean(cost), statistics.fmean(over))
                print(f"{case.name:12} {mode:8} {p:9} {spread(cost)} {spread(over)} {launches:8.1f}")
            best_over = min(means["dstack"][1], means["skyserve"][1])
            cheap_cost = min(means["dstack"][0], means["skyserve"][0])
            ours_cost, ours_over = means["ours"]
            over_ok = ours_over <= 0.7 * best_over + 1e-9
            cost_ok = ours_cost <= 1.2 * cheap_cost + 1e-9
            passed = over_ok and cost_ok
            ok &= passed
            share = f"{ours_over / best_over:.0%}" if best_over else ("0/0" if ours_over == 0 else "inf")
            ratio = f"{ours_cost / cheap_cost:.2f}x" if cheap_cost else ("0/0" if ours_cost == 0 else "inf")
            verdicts.append(
                f"{'PASS' if passed else 'FAIL'}  {case.name:12} {mode:11} overload {share:>5} of the better reference "
                f"(<= 70%: {'yes' if over_ok else 'no'}), cost {ratio} the cheaper "
                f"(<= 1.2x: {'yes' if cost_ok else 'no'})"
            )
    print()
    print("\n".join(verdicts))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
