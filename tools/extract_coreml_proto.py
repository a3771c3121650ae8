#!/usr/bin/env python3
"""Extract Apple's Core ML protobuf schema from the coremltools wheel into one FileDescriptorSet.

Why: anec generates its protobuf types with prost-build from a committed descriptor set, so a
fresh machine needs no `protoc`. The schema is Apple's own (BSD-3, see proto/LICENSE.txt): each
`coremltools/proto/*_pb2.py` in the wheel embeds its serialized FileDescriptorProto in an
`AddSerializedFile(b'...')` call, which this script reads with `ast` (nothing is imported or run).

Only what an ML Program needs is kept, with Apple's field numbers unchanged:
  - MIL.proto and FeatureTypes.proto as they are;
  - from Model.proto: Model (its `Type` oneof reduced to `mlProgram = 502`), ModelDescription,
    FunctionDescription, FeatureDescription, Metadata. The other ~30 model kinds are dropped, so
    Model.proto's imports shrink to MIL.proto and FeatureTypes.proto. prost skips the dropped
    fields when decoding, and never writes them.

Usage (the wheel: `pip download --no-deps coremltools==9.0 --python-version 3.11
--platform manylinux2014_x86_64 --only-binary=:all:`; needs the `protobuf` package, which
coremltools' venv has):

    python tools/extract_coreml_proto.py coremltools-9.0-cp311-none-manylinux1_x86_64.whl proto/coreml.fds
"""

import ast
import sys
import zipfile

from google.protobuf import descriptor_pb2

KEEP_FILES = ["FeatureTypes.proto", "MIL.proto", "Model.proto"]
MODEL_MESSAGES = {"Model", "ModelDescription", "FunctionDescription", "FeatureDescription", "Metadata"}
MODEL_TYPE_FIELDS = {"specificationVersion", "description", "isUpdatable", "mlProgram"}


def serialized_file(source: str) -> bytes:
    """The bytes literal passed to AddSerializedFile in a generated *_pb2.py module."""
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
        ):
            return ast.literal_eval(node.args[0])
    raise SystemExit("no AddSerializedFile call found")


def prune_model(fd: descriptor_pb2.FileDescriptorProto) -> None:
    kept = [m for m in fd.message_type if m.name in MODEL_MESSAGES]
    missing = MODEL_MESSAGES - {m.name for m in kept}
    if missing:
        raise SystemExit(f"Model.proto lacks {sorted(missing)}")
    del fd.message_type[:]
    fd.message_type.extend(kept)
    for m in fd.message_type:
        if m.name == "Model":
            fields = [f for f in m.field if f.name in MODEL_TYPE_FIELDS]
            if {f.name for f in fields} != MODEL_TYPE_FIELDS:
                raise SystemExit(f"Model has {[f.name for f in m.field]}")
            ml = next(f for f in fields if f.name == "mlProgram")
            if ml.number != 502:
                raise SystemExit(f"mlProgram is field {ml.number}, expected 502")
            del m.field[:]
            m.field.extend(fields)
    fd.ClearField("dependency")
    fd.ClearField("public_dependency")
    fd.dependency.extend(["FeatureTypes.proto", "MIL.proto"])


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    wheel, out = sys.argv[1], sys.argv[2]
    fds = descriptor_pb2.FileDescriptorSet()
    with zipfile.ZipFile(wheel) as z:
        for name in KEEP_FILES:
            module = "coremltools/proto/" + name.replace(".proto", "_pb2.py")
            fd = descriptor_pb2.FileDescriptorProto.FromString(
                serialized_file(z.read(module).decode("utf-8"))
            )
            if fd.name != name:
                raise SystemExit(f"{module} holds {fd.name}, expected {name}")
            if name == "Model.proto":
                prune_model(fd)
            elif set(fd.dependency) - set(KEEP_FILES):
                raise SystemExit(f"{name} imports {list(fd.dependency)}")
            fds.file.append(fd)
    with open(out, "wb") as f:
        f.write(fds.SerializeToString(deterministic=True))
    for fd in fds.file:
        print(f"{fd.name}: {len(fd.message_type)} messages, {len(fd.enum_type)} enums")


if __name__ == "__main__":
    main()
