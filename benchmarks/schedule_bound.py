"""How close to `bench_training.py`'s ideal any scheduler can get: one batch's calls as a graph, no cost of ours.

`bench_training.py` divides wall time by max(critical path, calls / concurrency) x latency. That ideal
ignores the chains inside a problem: generate -> judge, then per generator fuse -> judge and extract,
then the critic's extraction. With every call taking the same latency, a call with `h` calls on its
longest chain to the batch's end (itself included) must start `h` latencies before the end at the
latest, and no slot starts two calls less than one latency apart, so a batch needs at least
`h - 1 + ceil(N_h / concurrency)` latencies for every `h` (`N_h`: calls with a chain of `h` or more).
This prints that bound and the length of a greedy schedule of the same graph with the model client's
priorities (the calls still behind a call on its problem's chain, most first, as `causal_grpo.llm`
counts them; problems in dataset order), both in latencies and over the ideal.

The batch's shape comes from the arguments: how many groups a problem's generators extract from and
whether the critic's extraction runs (both only when a group's rewards spread). The defaults are the
counts of one run of `bench_training.py`'s 256-in-flight phase: 202 generator extractions and 70 critic
extractions over 90 problems (counted by agent, 2026-12-07).

    .venv/bin/python benchmarks/schedule_bound.py [--problems 90 --concurrency 256 ...]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
from dataclasses import dataclass

from causal_grpo.llm import CALLS_BEHIND


@dataclass(frozen=True)
class Call:
    """One model call: its problem, its place on the chain, and the calls that wait on it (by index)."""

    problem: int
    behind: int  # its priority in the client: calls after it on the full chain (`causal_grpo.llm.CALLS_BEHIND`)
    tail: int  # calls on its longest chain to the batch's end, itself included
    then: tuple[int, ...]


def batch(problems: int, generators: int, rollouts: int, extractions: int, critic_extractions: int) -> list[Call]:
    """The batch's calls, the critic's extractions in its first problems.

    Only the longest-chain count of calls with a call behind them depends on where the generators'
    extractions fall: those of a problem without the critic's extraction have none. They go there
    first, which makes that count the least of any arrangement, so the bound holds however a run
    spread them.
    """
    if extractions > generators * problems or critic_extractions > problems:
        raise ValueError("more extractions than groups, or critic extractions than problems")
    without = problems - critic_extractions
    first = min(extractions, generators * without)  # to the problems without the critic's extraction
    rest = extractions - first

    def share(total: int, among: int, k: int) -> int:
        return total // among + (k < total % among) if among else 0

    calls: list[Call] = []

    def add(problem: int, behind: int, then: tuple[int, ...] = ()) -> int:
        # calls are added last first, so every call's followers are in place and its tail follows from theirs
        calls.append(Call(problem, behind, 1 + max((calls[i].tail for i in then), default=0), then))
        return len(calls) - 1

    # the client's numbers: its agents' usual places, and the two later ones the nodes give with `followed_by`
    judge_of_fusion, critic_extraction = 1, 0
    for p in range(problems):
        critic = p < critic_extractions
        extracts = share(rest, critic_extractions, p) if critic else share(first, without, p - critic_extractions)
        last = (add(p, critic_extraction),) if critic else ()
        fused = tuple(add(p, CALLS_BEHIND["critic"], (add(p, judge_of_fusion, last),)) for _ in range(generators))
        # every fusion and extraction waits on all of the problem's judged rollouts (the `groups` barrier)
        fan_out = fused + tuple(add(p, CALLS_BEHIND["extractor"], last) for _ in range(extracts))
        for _ in range(generators * rollouts):
            add(p, CALLS_BEHIND["generator"], (add(p, CALLS_BEHIND["judge"], fan_out),))
    return calls


def least_latencies(calls: list[Call], concurrency: int) -> int:
    """The bound of the docstring: max over h of h - 1 + ceil(N_h / concurrency)."""
    tails = sorted((c.tail for c in calls), reverse=True)
    return max(h - 1 + math.ceil(sum(t >= h for t in tails) / concurrency) for h in range(1, tails[0] + 1))


def greedy_latencies(calls: list[Call], concurrency: int) -> int:
    """Latencies of a schedule that starts, each latency, the ready calls of highest priority first."""
    left = [0] * len(calls)
    for call in calls:
        for nxt in call.then:
            left[nxt] += 1
    order = itertools.count()
    ready = [(-c.behind, c.problem, next(order), i) for i, c in enumerate(calls) if not left[i]]
    heapq.heapify(ready)
    rounds = 0
    while ready:
        started = [heapq.heappop(ready)[-1] for _ in range(min(concurrency, len(ready)))]
        rounds += 1
        for i in started:
            for nxt in calls[i].then:
                left[nxt] -= 1
                if not left[nxt]:
                    heapq.heappush(ready, (-calls[nxt].behind, calls[nxt].problem, next(order), nxt))
    return rounds


def main(argv: list[str] | None = None) -> None:
    """Print the bound and the greedy schedule for the batch the arguments describe."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=90)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--generators", type=int, default=3)
    parser.add_argument("--rollouts", type=int, default=3, help="Rollouts per generator.")
    parser.add_argument("--extractions", type=int, default=202, help="Generator extractions in the batch.")
    parser.add_argument("--critic-extractions", type=int, default=70, help="Critic extractions in the batch.")
    args = parser.parse_args(argv)
    calls = batch(args.problems, args.generators, args.rollouts, args.extractions, args.critic_extractions)
    ideal = max(max(c.tail for c in calls), len(calls) / args.concurrency)
    least, greedy = least_latencies(calls, args.concurrency), greedy_latencies(calls, args.concurrency)
    print(f"{len(calls)} calls, {args.concurrency} in flight; bench_training's ideal: {ideal:.2f} latencies")
    print(f"least any schedule needs: {least} latencies ({least / ideal:.3f}x the ideal)")
    print(f"greedy schedule, the client's priorities: {greedy} latencies ({greedy / ideal:.3f}x the ideal)")


if __name__ == "__main__":
    main()
