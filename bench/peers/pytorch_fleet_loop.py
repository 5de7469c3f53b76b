#!/usr/bin/python3
"""PyTorch peer for the fleet demo (scripts/demo.sh, examples/fleet/run.sh): the same FedAvg
job written as one in-process PyTorch loop. 10 clients hold NIID-Bench's label-Dirichlet
split (alpha 0.5) drawn with np.random.seed(0), the split partition_fmnist --rng numpy
writes for the fleet; each round every client trains a copy of the cnn (SimpleCNNMNIST) for
one epoch, batch 64, SGD lr 0.01 momentum 0.9, pixels in [0, 1]; the server takes the
example-weighted mean of the models and evaluates on the 10,000 test images. Prints each
round's accuracy and seconds (training and aggregation; evaluation timed apart), then the
mean round time, the figure the fleet's summary prints as "mean round time".

  /usr/bin/python3 bench/peers/pytorch_fleet_loop.py [--threads 2] [--rounds 20]

Uses Debian's python3-torch (1.13) with OpenBLAS; --threads sets torch's intra-op threads
(and OpenMP's, OpenBLAS's).
"""
import argparse
import os
import time

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--rounds", type=int, default=20)
parser.add_argument("--clients", type=int, default=10)
parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
args = parser.parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import torch  # noqa: E402  (after the thread variables)
import torch.nn.functional as F  # noqa: E402

from peers_common import SimpleCnn, load_fmnist  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(0)


def label_dirichlet(y, n_parties, beta):
    """NIID-Bench's partition_data(..., 'noniid-labeldir', ...) after np.random.seed(0)."""
    np.random.seed(0)
    min_size, n = 0, y.shape[0]
    while min_size < 10:
        idx_batch = [[] for _ in range(n_parties)]
        for k in range(10):
            idx_k = np.where(y == k)[0]
            np.random.shuffle(idx_k)
            p = np.random.dirichlet(np.repeat(beta, n_parties))
            p = np.array([q * (len(j) < n / n_parties) for q, j in zip(p, idx_batch)])
            p = p / p.sum()
            cuts = (np.cumsum(p) * len(idx_k)).astype(int)[:-1]
            idx_batch = [j + part.tolist() for j, part in zip(idx_batch, np.split(idx_k, cuts))]
            min_size = min(len(j) for j in idx_batch)
    for j in range(n_parties):
        np.random.shuffle(idx_batch[j])
    return [np.array(j) for j in idx_batch]


x_train, y_train_np = load_fmnist(args.data, "train", (-1, 1, 28, 28))
x_test, y_test_np = load_fmnist(args.data, "t10k", (-1, 1, 28, 28))
y_train, y_test = torch.from_numpy(y_train_np), torch.from_numpy(y_test_np)
shards = label_dirichlet(y_train_np, args.clients, 0.5)
print("shard sizes", [len(s) for s in shards], flush=True)

central = SimpleCnn()
round_seconds = []
for rnd in range(1, args.rounds + 1):
    start = time.perf_counter()
    global_state = {k: v.clone() for k, v in central.state_dict().items()}
    total = {k: torch.zeros_like(v) for k, v in global_state.items()}
    examples = 0
    for shard in shards:
        local = SimpleCnn()
        local.load_state_dict(global_state)
        opt = torch.optim.SGD(local.parameters(), lr=0.01, momentum=0.9)
        order = torch.from_numpy(shard[np.random.permutation(len(shard))])
        xs, ys = x_train[order], y_train[order]
        for b in range(0, len(shard), 64):
            opt.zero_grad()
            F.cross_entropy(local(xs[b:b + 64]), ys[b:b + 64]).backward()
            opt.step()
        with torch.no_grad():
            for k, v in local.state_dict().items():
                total[k] += len(shard) * v
        examples += len(shard)
    with torch.no_grad():
        central.load_state_dict({k: total[k] / examples for k in global_state})
    round_seconds.append(time.perf_counter() - start)
    with torch.no_grad():
        correct = 0
        for b in range(0, 10000, 500):
            correct += (central(x_test[b:b + 500]).argmax(1) == y_test[b:b + 500]).sum().item()
    print(f"round {rnd:2d}  acc {correct / 10000:.4f}  {round_seconds[-1]:.2f} s", flush=True)
print(f"pytorch mean round time {np.mean(round_seconds):.2f} s over {args.rounds} rounds "
      f"({args.threads} thread(s))")
