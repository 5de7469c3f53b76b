#!/usr/bin/python3
"""PyTorch peer of fedge's language model (model/transformer.h), for the parity and speed
comparison of bench/peers/compare_lm.sh.

  pytorch_lm.py parity DIR     trains from DIR's weights on DIR's batches (written by
                               `lm_train_bench --dump DIR`), writes DIR/pytorch_losses.txt and
                               prints the largest relative difference from fedge's losses
  pytorch_lm.py speed [SECS]   training tokens/s of the same model and batch, one thread

The module mirrors fedge's layout: Llama-style pre-norm blocks (RMSNorm, causal attention with
rotate-half rotary positions, SwiGLU), no biases, the output tied to the embedding, Adam.
Needs: apt-get install python3-torch libopenblas0-pthread
"""
import math
import os
import sys
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULTS = dict(vocab_size=4096, dim=256, num_layers=4, num_heads=4, ffn_dim=768, context=128,
                norm_epsilon=1e-5, rope_base=10000.0, batch=8, len=128, steps=100, lr=1e-3)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(cfg):
    hd = cfg["dim"] // cfg["num_heads"]
    half = hd // 2
    i = torch.arange(half, dtype=torch.float64)
    theta = cfg["rope_base"] ** (-2.0 * i / hd)
    angles = torch.arange(cfg["context"], dtype=torch.float64)[:, None] * theta[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rope(x, cos, sin):  # x [B, H, T, hd]
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[: x.shape[2]], sin[: x.shape[2]]
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["dim"]
        self.heads = cfg["num_heads"]
        self.wq, self.wk = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.wv, self.wo = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, d = x.shape
        hd = d // self.heads
        q = self.wq(x).view(b, t, self.heads, hd).transpose(1, 2)
        k = self.wk(x).view(b, t, self.heads, hd).transpose(1, 2)
        v = self.wv(x).view(b, t, self.heads, hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        s = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        s = s.masked_fill(mask[:t, :t], float("-inf"))
        a = F.softmax(s, dim=-1) @ v
        return self.wo(a.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, f = cfg["dim"], cfg["ffn_dim"]
        self.w1, self.w3 = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False)
        self.w2 = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn_norm = RMSNorm(cfg["dim"], cfg["norm_epsilon"])
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg["dim"], cfg["norm_epsilon"])
        self.ffn = FeedForward(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.ffn(self.ffn_norm(x))


class TransformerLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["dim"])
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["num_layers"]))
        self.norm = RMSNorm(cfg["dim"], cfg["norm_epsilon"])
        cos, sin = rope_tables(cfg)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        mask = torch.triu(torch.ones(cfg["context"], cfg["context"], dtype=torch.bool), 1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, tokens):
        x = self.tok_emb(tokens)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        return self.norm(x) @ self.tok_emb.weight.t()


def read_config(d):
    cfg = dict(DEFAULTS)
    with open(os.path.join(d, "config.txt")) as f:
        for line in f:
            k, v = line.split()
            cfg[k] = float(v) if k in ("norm_epsilon", "rope_base", "lr") else int(v)
    return cfg


def load_weights(model, d):
    state = model.state_dict()
    flat = np.fromfile(os.path.join(d, "weights.f32"), dtype="<f4")
    off = 0
    with open(os.path.join(d, "params.txt")) as f:
        for line in f:
            name, *shape = line.split()
            shape = [int(s) for s in shape]
            n = int(np.prod(shape))
            t = torch.from_numpy(flat[off: off + n].copy()).view(*shape)
            assert state[name].shape == t.shape, (name, state[name].shape, t.shape)
            state[name].copy_(t)
            off += n
    assert off == flat.size, "weights.f32 holds more values than params.txt names"


def train_step(model, opt, tokens, targets, vocab):
    opt.zero_grad()
    loss = F.cross_entropy(model(tokens).view(-1, vocab), targets.view(-1))
    loss.backward()
    opt.step()
    return loss.item()


def parity(d):
    cfg = read_config(d)
    model = TransformerLM(cfg)
    load_weights(model, d)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    b, t, steps = cfg["batch"], cfg["len"], cfg["steps"]
    data = np.fromfile(os.path.join(d, "batches.i32"), dtype="<i4").reshape(steps, 2, b, t)
    losses = []
    for s in range(steps):
        tokens = torch.from_numpy(data[s, 0].astype(np.int64))
        targets = torch.from_numpy(data[s, 1].astype(np.int64))
        losses.append(train_step(model, opt, tokens, targets, cfg["vocab_size"]))
    with open(os.path.join(d, "pytorch_losses.txt"), "w") as f:
        f.writelines(f"{l:.9g}\n" for l in losses)
    fedge = [float(x) for x in open(os.path.join(d, "fedge_losses.txt"))]
    rel = [abs(a - p) / abs(p) for a, p in zip(fedge, losses)]
    worst = max(range(len(rel)), key=lambda i: rel[i])
    print(f"parity steps {steps} first_loss {losses[0]:.6f} last_loss {losses[-1]:.6f} "
          f"max_rel_diff {rel[worst]:.3e} at_step {worst + 1}")


def speed(seconds):
    cfg = dict(DEFAULTS)
    torch.manual_seed(0)
    model = TransformerLM(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    b, t, v = cfg["batch"], cfg["len"], cfg["vocab_size"]
    tokens = torch.randint(0, v, (b, t))
    targets = torch.randint(0, v, (b, t))
    for _ in range(3):
        train_step(model, opt, tokens, targets, v)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        train_step(model, opt, tokens, targets, v)
        n += 1
    print(f"pytorch lm {n * b * t / (time.perf_counter() - start):.0f}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if len(sys.argv) >= 3 and sys.argv[1] == "parity":
        parity(sys.argv[2])
    elif len(sys.argv) >= 2 and sys.argv[1] == "speed":
        speed(float(sys.argv[2]) if len(sys.argv) > 2 else 5.0)
    else:
        sys.exit(__doc__)
