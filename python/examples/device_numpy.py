#!/usr/bin/env python3
"""A fedge device in Python: numpy SGD on a shard file, through fedge.Device.

    python3 device_numpy.py --coordinator 127.0.0.1:50051 --enrollment-token-file token \\
        --shard shards/client-00002.shard --state-file device.json --insecure

It trains models made of dense, relu, leaky_relu, sigmoid, scaler and flatten layers (an MLP,
such as the "mlp" architecture) with the task's SGD settings (learning rate, momentum,
Nesterov, weight decay, epochs, batch size, max steps) on softmax cross-entropy, and declines
any other task with a reason. --save-tasks DIR writes each task's decoded weights to
DIR/round-NNNN.npz.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Dict, List, Tuple

import numpy as np

import fedge
from fedge.v1 import job_pb2

SUPPORTED = {"dense", "relu", "leaky_relu", "sigmoid", "scaler", "flatten"}


class Mlp:
    """Forward and backward of a ModelSpec's layers in numpy (float32)."""

    def __init__(self, spec):
        self.layers = []
        for layer in spec.layers:
            kind = layer.WhichOneof("kind")
            if kind not in SUPPORTED:
                raise NotImplementedError(f"layer {layer.name} is {kind}; this device trains "
                                          f"{sorted(SUPPORTED)} layers only")
            self.layers.append((layer.name, kind, layer))

    def forward(self, w: Dict[str, np.ndarray], x: np.ndarray):
        cache = []
        h = x.reshape(x.shape[0], -1)
        for name, kind, spec in self.layers:
            cache.append(h)
            if kind == "dense":
                h = h @ w[f"{name}.weight"].T          # y = x·Wᵀ + b, W is [out, in]
                if not spec.dense.no_bias:
                    h = h + w[f"{name}.bias"]
            elif kind == "relu":
                h = np.maximum(h, 0)
            elif kind == "leaky_relu":
                slope = spec.leaky_relu.negative_slope or 0.01
                h = np.where(h > 0, h, slope * h)
            elif kind == "sigmoid":
                h = 1.0 / (1.0 + np.exp(-h))
            elif kind == "scaler":
                h = h / spec.scaler.rate
        return h, cache

    def backward(self, w, cache, out, g) -> Dict[str, np.ndarray]:
        grads = {}
        for (name, kind, spec), h_in in zip(reversed(self.layers), reversed(cache)):
            if kind == "dense":
                grads[f"{name}.weight"] = g.T @ h_in
                if not spec.dense.no_bias:
                    grads[f"{name}.bias"] = g.sum(axis=0)
                g = g @ w[f"{name}.weight"]
            elif kind == "relu":
                g = g * (h_in > 0)
            elif kind == "leaky_relu":
                g = g * np.where(h_in > 0, 1.0, spec.leaky_relu.negative_slope or 0.01)
            elif kind == "sigmoid":
                s = 1.0 / (1.0 + np.exp(-h_in))
                g = g * s * (1 - s)
            elif kind == "scaler":
                g = g / spec.scaler.rate
        return grads


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> Tuple[float, np.ndarray, int]:
    """Mean loss over the batch, its gradient in the logits, and the correct count."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = labels.shape[0]
    loss = float(-np.log(np.maximum(p[np.arange(n), labels], 1e-30)).mean())
    g = p
    g[np.arange(n), labels] -= 1.0
    return loss, (g / n).astype(np.float32), int((logits.argmax(axis=1) == labels).sum())


def preprocess(features: np.ndarray, p: job_pb2.Preprocessing) -> np.ndarray:
    """Shards hold pixels in [0, 1] (UNIT_RANGE); STANDARDIZE is (x − mean) / std."""
    if p.kind == job_pb2.Preprocessing.KIND_STANDARDIZE:
        mean = p.mean if p.HasField("mean") else 0.2860
        std = p.std if p.HasField("std") else 0.3530
        return ((features - mean) / std).astype(np.float32)
    return features


def make_trainer(shard: fedge.Shard, save_dir: str | None, seed: int):
    rng = np.random.default_rng(seed)

    def train(task: fedge.Task):
        if save_dir:
            os.makedirs(save_dir, exist_ok=True)
            np.savez(os.path.join(save_dir, f"round-{task.round:04d}.npz"), **task.weights)
        try:
            net = Mlp(task.spec)
        except NotImplementedError as e:
            return fedge.Decline(str(e))
        t = task.training
        if t.optimizer not in (job_pb2.OPTIMIZER_KIND_UNSPECIFIED, job_pb2.OPTIMIZER_KIND_SGD):
            return fedge.Decline("device_numpy.py trains with SGD only")
        x_all = preprocess(shard.features, task.header.preprocessing)
        y_all = shard.labels
        w = {k: v.copy() for k, v in task.weights.items()}
        velocity = {k: np.zeros_like(v) for k, v in w.items()}
        lr, mom, wd = t.learning_rate or 0.01, t.momentum, t.weight_decay
        batch = t.batch_size or 64
        steps = seen = correct = 0
        loss_sum = 0.0
        start = time.monotonic()
        for _ in range(t.epochs or 1):
            order = rng.permutation(shard.num_examples)
            for b in range(0, len(order), batch):
                if t.max_steps and steps >= t.max_steps:
                    break
                idx = order[b:b + batch]
                logits, cache = net.forward(w, x_all[idx])
                loss, g, right = softmax_cross_entropy(logits, y_all[idx])
                grads = net.backward(w, cache, logits, g)
                for k in w:  # PyTorch's SGD: v = μv + (g + λw); w −= lr·(g + μv if Nesterov else v)
                    gk = grads[k] + wd * w[k] if wd else grads[k]
                    if mom:
                        velocity[k] = mom * velocity[k] + gk
                        gk = gk + mom * velocity[k] if t.nesterov else velocity[k]
                    w[k] = (w[k] - lr * gk).astype(np.float32)
                steps += 1
                seen += len(idx)
                correct += right
                loss_sum += loss * len(idx)
        n = min(shard.num_examples, max(seen, 1))
        return fedge.Update(weights=w, num_examples=n, train_loss=loss_sum / max(seen, 1),
                            train_accuracy=correct / max(seen, 1), steps=steps,
                            train_seconds=time.monotonic() - start)

    return train


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coordinator", required=True, help="the coordinator's device address")
    ap.add_argument("--enrollment-token-file", required=True)
    ap.add_argument("--shard", required=True, help="a shard file (partition_fmnist's output)")
    ap.add_argument("--state-file", help="keeps the device id and key across restarts")
    ap.add_argument("--tls-ca")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--insecure", action="store_true", help="plaintext gRPC (loopback tests)")
    ap.add_argument("--rounds", type=int, help="answer this many tasks, then leave")
    ap.add_argument("--exit-when-no-job", action="store_true")
    ap.add_argument("--save-tasks", help="write each task's decoded weights here (.npz)")
    ap.add_argument("--seed", type=int, default=0, help="batch shuffling seed")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    shard = fedge.read_shard(args.shard)
    with open(args.enrollment_token_file) as f:
        token = f.read().strip()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with fedge.Device(args.coordinator, token, shard.num_examples, state_file=args.state_file,
                      tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                      insecure=args.insecure) as device:
        answered = device.run(make_trainer(shard, args.save_tasks, args.seed), stop=stop,
                              max_tasks=args.rounds, exit_when_no_job=args.exit_when_no_job)
        device.leave("device_numpy.py done")
    print(f"device_numpy: answered {answered} task(s) as {device.client_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
