"""Builds the fedge Python SDK. The protobuf messages and gRPC stubs (fedge.v1) are generated
from ../proto at build time with Debian's protoc and grpc_python_plugin (packages
protobuf-compiler and protobuf-compiler-grpc); FEDGE_PROTO_DIR names another proto folder.
"""

import os
import re
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = ["model.proto", "transfer.proto", "job.proto", "coordinator.proto", "admin.proto"]


def generate(proto_dir: str, out_dir: str) -> None:
    protoc = shutil.which("protoc")
    plugin = shutil.which("grpc_python_plugin")
    if not protoc or not plugin:
        raise SystemExit("fedge: building the SDK needs protoc and grpc_python_plugin "
                         "(Debian: apt install protobuf-compiler protobuf-compiler-grpc)")
    missing = [p for p in PROTOS if not os.path.exists(os.path.join(proto_dir, p))]
    if missing:
        raise SystemExit(f"fedge: {proto_dir} lacks {missing}; set FEDGE_PROTO_DIR to fedge's "
                         "proto folder")
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run([protoc, f"-I{proto_dir}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
                    f"--plugin=protoc-gen-grpc_python={plugin}", f"--grpc_python_out={out_dir}",
                    *[os.path.join(proto_dir, p) for p in PROTOS]], check=True)
    # The .proto files import each other by bare name; inside the package the generated
    # modules import each other relatively.
    for name in os.listdir(out_dir):
        if name.endswith((".py", ".pyi")) and "_pb2" in name:
            path = os.path.join(out_dir, name)
            with open(path) as f:
                text = f.read()
            text = re.sub(r"^import (\w+_pb2) as ", r"from . import \1 as ", text, flags=re.M)
            with open(path, "w") as f:
                f.write(text)
    with open(os.path.join(out_dir, "__init__.py"), "w") as f:
        f.write('"""Messages and gRPC stubs generated from fedge\'s proto/ (package fedge.v1)."""\n')


class BuildWithStubs(build_py):
    """build_py, then the generated fedge.v1 package into the build tree (never the source)."""

    def run(self):
        super().run()
        proto_dir = os.environ.get("FEDGE_PROTO_DIR", os.path.join(HERE, "..", "proto"))
        generate(os.path.abspath(proto_dir), os.path.join(self.build_lib, "fedge", "v1"))


setup(cmdclass={"build_py": BuildWithStubs})
