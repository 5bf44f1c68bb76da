"""Benchmarks that run their clients in forked processes, as a web server's workers are."""

from __future__ import annotations


def run_forked(procs: list, results) -> list:
    """Start the processes and gather one result from each. None is left behind: a child that died
    before putting its result (and the others, stuck at its barrier) would keep pytest from ending."""
    try:
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=600) for _ in procs]  # before join: a full pipe would block the child
        for proc in procs:
            proc.join(60)
        assert [proc.exitcode for proc in procs] == [0] * len(procs)
        return outcomes
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
