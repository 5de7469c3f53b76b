"""fedge: the Python SDK of the fedge federated-learning framework.

- fedge.Admin: operators' API (start, stop, watch jobs; rounds, devices, model export).
- fedge.Device: a device of a fleet (register, fetch and decode tasks, upload updates).
- fedge.codec: the tensor payload encodings and chunked transfer of docs/protocol.md.
- fedge.read_shard: shard files as partition_fmnist writes them.
- fedge.v1: the protobuf messages and gRPC stubs generated from proto/ at build time.
"""

from fedge._channel import FedgeError
from fedge.admin import Admin, AdminError, model_weights
from fedge.device import Decline, Device, DeviceError, Task, Update, __version__
from fedge.shard import Shard, ShardError, read_shard

__all__ = ["Admin", "AdminError", "Decline", "Device", "DeviceError", "FedgeError", "Shard", "ShardError",
           "Task", "Update", "model_weights", "read_shard", "__version__"]
