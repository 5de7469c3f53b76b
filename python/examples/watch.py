#!/usr/bin/env python3
"""Follows a fedge job from Python: one line per round until the job ends.

    FEDGE_OPERATOR_TOKEN=... python3 watch.py --coordinator 127.0.0.1:50052 [JOB_ID]
"""

from __future__ import annotations

import argparse
import sys

import fedge
from fedge.v1 import job_pb2


def main(argv) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job_id", nargs="?", default="", help="default: the running job")
    ap.add_argument("--coordinator", help="admin address (default $FEDGE_COORDINATOR)")
    ap.add_argument("--token-file", help="operator token (default $FEDGE_OPERATOR_TOKEN)")
    ap.add_argument("--tls-ca")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--insecure", action="store_true", help="plaintext (loopback only)")
    args = ap.parse_args(argv)
    token = None
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
    with fedge.Admin(args.coordinator, token=token, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                     tls_key=args.tls_key, insecure=args.insecure) as admin:
        for event in admin.watch(args.job_id, replay_history=True):
            kind = event.WhichOneof("kind")
            if kind == "round_closed":
                r = event.round_closed
                m = r.metrics
                state = job_pb2.RoundState.Name(r.state).removeprefix("ROUND_STATE_").lower()
                print(f"round {r.round:4d}  {state:9s}  acc {m.test_accuracy:.4f}  "
                      f"loss {m.test_loss:.4f}  {m.participants}/{m.sampled} devices  "
                      f"{m.round_seconds:.2f}s", flush=True)
            elif kind == "job_changed":
                s = event.job_changed
                print(f"job {s.job_id}: {job_pb2.JobState.Name(s.state)} after "
                      f"{s.completed_rounds} rounds {s.message}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
