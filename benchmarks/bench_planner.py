"""The instrumentation planner's budget accuracy, and what planning and analysis cost.

On the bank app under its workload: for several budgets, ``plan`` (call counting for
1 s, the code analysis, the choice), then a 4 s recording of the plan; the figure is
the measured rate of call, return and exception events against the budget (goal:
within ±25%). The recording is measured over the span of its events. Planning time and
the code analysis's time are printed against a bare rpc round trip of the same run.
"""

from __future__ import annotations

import time

import elixirscope
from elixirscope.code_analysis import analyze_node
from elixirscope.planner import apply_plan, make_plan
from elixirscope.recordings import open_recording
from elixirscope.sample_nodes import start_sample

BUDGETS = (200.0, 500.0, 1000.0)
SECONDS = 4.0


def main() -> None:
    import tempfile
    from pathlib import Path

    with start_sample("bank", name_prefix="b_plan", workload=True) as bank, \
            tempfile.TemporaryDirectory() as tmp:
        time.sleep(2.0)  # the workload ramps up after the node starts
        with elixirscope.connect(bank.name, bank.cookie) as node:
            began = time.perf_counter()
            for _ in range(20):
                node.rpc("erlang", "node", [])
            rpc = (time.perf_counter() - began) / 20
            began = time.perf_counter()
            analysis = node.run(analyze_node(node.anode))
            analyzed = time.perf_counter() - began
        functions = sum(len(m.functions) for m in analysis.modules)
        print(f"analyze: {len(analysis.modules)} modules, {functions} functions in "
              f"{analyzed * 1000:.0f} ms ({analyzed / rpc:,.0f}x an rpc round trip of "
              f"{rpc * 1000:.2f} ms)")
        print(f"{'budget':>8} {'planned':>8} {'measured':>9} {'measured/budget':>16} "
              f"{'plan took':>10}")
        for budget in BUDGETS:
            with elixirscope.attach(bank.name, bank.cookie) as scope:
                began = time.perf_counter()
                plan = scope.node.run(make_plan(scope.node.anode, budget,
                                                focus="slow transfers"))
                planned_in = time.perf_counter() - began
                path = Path(tmp) / f"plan-{budget:.0f}.duckdb"
                recorder = scope.record(path)
                apply_plan(scope, plan)
                time.sleep(SECONDS)
                recorder.stop()
            with open_recording(path) as rec:
                events, seconds = rec.con.execute(
                    "SELECT count(*), (max(ts) - min(ts)) / 1e9 FROM events "
                    "WHERE kind IN (1, 2, 3)").fetchone()
            rate = events / seconds if seconds else 0.0
            print(f"{budget:8,.0f} {plan.expected_events_per_s:8,.0f} {rate:9,.0f} "
                  f"{rate / budget:15.2f}x {planned_in:9.2f}s")


if __name__ == "__main__":
    main()
