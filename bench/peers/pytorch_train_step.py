#!/usr/bin/python3
"""PyTorch peer for build/bin/train_step_bench: samples/s of one training step (forward,
backward, SGD with momentum) at batch 64 on one thread, for the same mlp and cnn.

Uses Debian's python3-torch (1.13) with OpenBLAS:
`apt-get install python3-torch libopenblas0-pthread`. Prints one
line per model: `pytorch <model> <samples/s>`.
"""
import os
import sys
import time

# One thread everywhere: torch's intra-op pool, OpenMP and OpenBLAS's own pthreads (which
# otherwise oversubscribe the cores and run ~10x slower).
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import torch
import torch.nn.functional as F

from peers_common import Mlp, SimpleCnn


def samples_per_second(model, seconds=2.0, batch=64):
    torch.manual_seed(0)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for _ in range(20):
        step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return n * batch / (time.perf_counter() - start)


if __name__ == "__main__":
    torch.set_num_threads(1)
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    for name, model in (("mlp", Mlp()), ("cnn", SimpleCnn())):
        print(f"pytorch {name} {samples_per_second(model, seconds):.0f}", flush=True)
