#!/usr/bin/python3
"""PyTorch peer for fedge-sim's throughput: the federated loop of
examples/sim_throughput.textproto written plainly with PyTorch: 100 clients holding IID
shards of 600 Fashion-MNIST training examples, 20 sampled per round, 10 rounds; each client
trains a copy of the mlp (784-200-200-10) for one epoch, batch 32, SGD lr 0.05 momentum 0.9;
the server takes the example-weighted mean of the deltas and evaluates on the 10,000 test
examples after every round. Prints the client updates per second over the rounds (data
loading excluded), the figure fedge-sim's summary line prints.

  /usr/bin/python3 bench/peers/pytorch_fedavg_loop.py [--threads 2]

Uses Debian's python3-torch (1.13); --threads sets torch's intra-op threads (and OpenMP's,
OpenBLAS's), so that both run on the same cores.
"""
import argparse
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--rounds", type=int, default=10)
parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
args = parser.parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from peers_common import Mlp, load_fmnist  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(0)


def load(prefix):
    x, y = load_fmnist(args.data, prefix)
    return x, torch.from_numpy(y)


x_train, y_train = load("train")
x_test, y_test = load("t10k")
rng = np.random.default_rng(0)
perm = rng.permutation(60000)
shards = [perm[i * 600:(i + 1) * 600] for i in range(100)]

central = Mlp()
updates = 0
start = time.perf_counter()
for rnd in range(1, args.rounds + 1):
    sampled = rng.choice(100, size=20, replace=False)
    global_state = {k: v.clone() for k, v in central.state_dict().items()}
    total = {k: torch.zeros_like(v) for k, v in global_state.items()}
    examples = 0
    for c in sampled:
        local = Mlp()
        local.load_state_dict(global_state)
        opt = torch.optim.SGD(local.parameters(), lr=0.05, momentum=0.9)
        idx_c = torch.from_numpy(shards[c][rng.permutation(600)])
        xs, ys = x_train[idx_c], y_train[idx_c]
        for b in range(0, 600, 32):
            opt.zero_grad()
            loss = F.cross_entropy(local(xs[b:b + 32]), ys[b:b + 32])
            loss.backward()
            opt.step()
        with torch.no_grad():
            for k, v in local.state_dict().items():
                total[k] += 600 * (v - global_state[k])
        examples += 600
        updates += 1
    with torch.no_grad():
        central.load_state_dict({k: global_state[k] + total[k] / examples for k in global_state})
        correct = 0
        for b in range(0, 10000, 256):
            correct += (central(x_test[b:b + 256]).argmax(1) == y_test[b:b + 256]).sum().item()
    print(f"round {rnd:2d}  acc {correct / 10000:.4f}", flush=True)
elapsed = time.perf_counter() - start
print(f"pytorch {updates} client updates in {elapsed:.2f} s: {updates / elapsed:.1f} per second "
      f"({args.threads} thread(s))")
