"""Run the fault-injection state machines for many trials and print what they did.

    make fault-trials            # or: python -m tests.faults.trials --examples 2000

Each trial is a random sequence of ingest, export, DSAR reads, seals, checkpoints, injected faults
(ENOSPC, EIO, timeouts; before or after the call took effect), kills and restarts, ended by a kill
and a recovery with the faults healed. A trial that loses or duplicates an acknowledged event
fails, and the run stops with its shrunk sequence.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from tests.faults import test_stateful as machines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=1000, help="trials per backend")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # every injected fault logs a warning by design
    started = time.monotonic()
    for machine, share in (
        (machines.StoreUnderFaults, 1.0),
        (machines.EmbeddedStoreUnderFaults, 0.25),
    ):
        run_state_machine_as_test(
            machine,
            settings=settings(
                machines.FAST, max_examples=max(1, int(args.examples * share)), database=None
            ),
        )
    totals = machines.TOTALS
    report = {
        "trials": totals.trials,
        "steps": totals.steps,
        "faults_injected": totals.faults_injected,
        "faults_by_operation": dict(totals.by_operation.most_common()),
        "kills": totals.kills,
        "clean_restarts": totals.restarts,
        "events_acknowledged": totals.acknowledged,
        "events_refused_with_503": totals.refused,
        "acknowledged_lost": totals.lost,
        "acknowledged_duplicated": totals.duplicated,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
