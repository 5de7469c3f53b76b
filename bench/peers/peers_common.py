"""What the PyTorch peers share: the zoo's mlp and cnn as PyTorch modules and the
Fashion-MNIST IDX reader. Imports torch: a script sets its thread variables
(OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS) before importing this module.
"""
import gzip
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Mlp(nn.Module):  # fedge's "mlp": 784-200-200-10
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 200), nn.Linear(200, 200), nn.Linear(200, 10)

    def forward(self, x):
        x = x.view(-1, 784)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class SimpleCnn(nn.Module):  # NIID-Bench's SimpleCNNMNIST, fedge's "cnn"
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1, self.fc2, self.fc3 = nn.Linear(256, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 256)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_fmnist(data_dir, prefix, shape=(-1, 784)):
    """(images as float32 in [0, 1] with `shape`, labels as int64 numpy) of one split."""
    x = idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"), 16).reshape(*shape)
    y = idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"), 8)
    return torch.from_numpy(x.astype(np.float32) / 255.0), y.astype(np.int64)
