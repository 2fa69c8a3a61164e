"""``python -m bench <name>``: each benchmark prints its figures as one JSON last line.

Names: ``dataset`` (snapshot + CODES.jsonl + gates.json), ``decide`` (pure decision
function), ``scan`` (node vs bare aiohttp baseline under wrk), ``baseline`` (the bare
server alone, also ``python -m bench.baseline``), ``sync`` (a node bootstrapping from a
real core, and change propagation core -> node), ``service`` (CPU per scan of the node's
own work, without HTTP), ``ab`` (two node configurations alternated at a fixed rate),
``commit`` (one durable commit: LMDB against the scan journal).
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from bench import ab, baseline, commit, dataset, decide, scan, service, sync

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="name", required=True)
    commands = {
        "dataset": dataset,
        "decide": decide,
        "scan": scan,
        "baseline": baseline,
        "sync": sync,
        "service": service,
        "ab": ab,
        "commit": commit,
    }
    for name, module in commands.items():
        doc = (module.__doc__ or "").strip().splitlines()[0]
        module.add_arguments(sub.add_parser(name, help=doc, description=doc))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return int(commands[args.name].main(args))


if __name__ == "__main__":
    sys.exit(main())
