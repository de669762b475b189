"""Regenerate the protobuf modules from the .proto files beside this one.

Needs grpcio-tools (a development dependency): ``python -m gateway.flightsql.regenerate``.
The generated modules are committed so that the gateway needs only the protobuf runtime.
"""

from __future__ import annotations

from pathlib import Path


def main() -> None:
    from grpc_tools import protoc

    here = Path(__file__).parent
    for proto in sorted(here.glob("*.proto")):
        code = protoc.main(["protoc", f"-I{here}", f"--python_out={here}", str(proto)])
        if code != 0:
            raise SystemExit(f"protoc failed on {proto.name} with exit code {code}")


if __name__ == "__main__":
    main()
