#!/usr/bin/python3
"""Checks posttrain's exports (tools/export.h) from Python, on the directory
that export_test writes when POSTTRAIN_EXPORT_DIR is set:

    model.safetensors  WriteSafetensors: weights and the model spec
    model.pt           WriteTorchScript: the TorchScript module
    inputs.f32         raw little-endian float32 inputs
    inputs.shape       one text line "N C H W"
    predictions.txt    the C++ model's class for each input, one per line
    logits.f32         (optional) the C++ model's float32 outputs [N, classes]

(a) loads model.pt with torch.jit.load and predicts; (b) reads
model.safetensors from the documented layout only (struct, json,
np.frombuffer), rebuilds the network from the spec in its metadata with
torch.nn.functional and predicts; (c) compares both with predictions.txt
(and logits.f32 when present, within --atol). Prints one summary line;
exits 1 on any mismatch.

    POSTTRAIN_EXPORT_DIR=build/export_check build/tests/export_test \\
        --gtest_filter=ExportForPython.*
    /usr/bin/python3 scripts/check_exports.py build/export_check

On a run directory of `posttrain improve` with the test set's IDX file and
the predictions `posttrain eval --predictions` wrote:

    build/tools/posttrain eval --model=RUN --data=IMAGES,LABELS \
        --attacks=none --predictions=RUN/predictions.txt
    /usr/bin/python3 scripts/check_exports.py RUN --images=IMAGES

Needs Debian's python3-torch and python3-numpy. The C++ tests do not.
"""
import argparse
import base64
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

MAX_HEADER = 100 << 20
DTYPES = {  # safetensors dtype -> numpy dtype (little-endian)
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
    "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1",
}


class CheckError(Exception):
    pass


def read_safetensors(path):
    """Returns (metadata dict, {name: np.ndarray}) in file order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise CheckError(f"{path}: truncated")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        raise CheckError(f"{path}: header length {n} out of range")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    body = memoryview(data)[8 + n:]
    tensors = {}
    end = 0
    for name, info in sorted(header.items(),
                             key=lambda kv: kv[1]["data_offsets"][0]):
        begin, stop = info["data_offsets"]
        if begin != end:
            raise CheckError(f"{path}: tensor {name!r} starts at {begin}, "
                             f"expected {end}")
        dtype = np.dtype(DTYPES[info["dtype"]])
        shape = [int(d) for d in info["shape"]]
        count = int(np.prod(shape, dtype=np.int64))
        if stop - begin != count * dtype.itemsize:
            raise CheckError(f"{path}: tensor {name!r} has the wrong size")
        array = np.frombuffer(body[begin:stop], dtype=dtype).reshape(shape)
        if info["dtype"] == "BF16":  # the high half of a float32
            array = (array.astype("<u4") << 16).view("<f4")
        elif info["dtype"] == "BOOL":
            array = array.astype(bool)
        tensors[name] = array
        end = stop
    if end != len(body):
        raise CheckError(f"{path}: {len(body) - end} bytes after the tensors")
    return metadata, tensors


def ints(values):
    return [int(v) for v in values]


class Network:
    """The spec's Sequential, run with torch.nn.functional on the
    safetensors weights (eval mode)."""

    def __init__(self, spec, weights):
        if int(spec.get("version", 0)) != 1:
            raise CheckError(f"model spec version {spec.get('version')}")
        self.weights = {k: torch.from_numpy(np.array(v))
                        for k, v in weights.items()}
        self.used = set()
        self.layers = spec.get("layers", [])

    def tensor(self, path, leaf):
        name = f"{path}.{leaf}"
        if name not in self.weights:
            raise CheckError(f"layer {path!r}: no tensor {name!r}")
        self.used.add(name)
        return self.weights[name]

    def optional(self, path, leaf, present):
        return self.tensor(path, leaf) if present else None

    def forward(self, x):
        self.used = set()
        x = self.run(self.layers, "", x)
        unused = set(self.weights) - self.used
        if unused:
            raise CheckError(f"tensors used by no layer: {sorted(unused)}")
        return x

    def run(self, layers, prefix, x):
        for layer in layers:
            name = base64.b64decode(layer.get("name", "")).decode("utf-8")
            if prefix and not name.startswith(prefix + "."):
                name = f"{prefix}.{name}"
            x = self.layer(layer, name, x)
        return x

    def layer(self, l, path, x):
        kind = l.get("kind", "KIND_UNSPECIFIED")
        get = l.get
        if kind == "SEQUENTIAL":
            return self.run(get("children", []), path, x)
        if kind == "LINEAR":
            return F.linear(x, self.tensor(path, "weight"),
                            self.optional(path, "bias", get("bias", False)))
        if kind == "CONV2D":
            padding = ("same" if get("padding_same", False)
                       else ints(get("padding", [])))
            return F.conv2d(x, self.tensor(path, "weight"),
                            self.optional(path, "bias", get("bias", False)),
                            ints(get("stride", [])), padding,
                            ints(get("dilation", [])), int(get("groups", 1)))
        if kind in ("BATCH_NORM1D", "BATCH_NORM2D"):
            want = (4,) if kind == "BATCH_NORM2D" else (2, 3)
            if x.dim() not in want:
                raise CheckError(f"layer {path!r}: {x.dim()}D input")
            affine = get("affine", False)
            stats = get("track_running_stats", False)
            if stats:
                self.tensor(path, "num_batches_tracked")
            return F.batch_norm(
                x, self.optional(path, "running_mean", stats),
                self.optional(path, "running_var", stats),
                self.optional(path, "weight", affine),
                self.optional(path, "bias", affine),
                training=not stats, momentum=0.0, eps=float(get("eps", 0.0)))
        if kind == "RELU":
            return F.relu(x)
        if kind == "LEAKY_RELU":
            return F.leaky_relu(x, float(get("negative_slope", 0.0)))
        if kind == "SIGMOID":
            return torch.sigmoid(x)
        if kind == "TANH":
            return torch.tanh(x)
        if kind == "GELU":
            return F.gelu(x, approximate=get("approximate", ""))
        if kind == "MAX_POOL2D":
            return F.max_pool2d(x, ints(get("kernel_size", [])),
                                ints(get("stride", [])), ints(get("padding", [])),
                                ints(get("dilation", [])),
                                ceil_mode=get("ceil_mode", False))
        if kind == "AVG_POOL2D":
            return F.avg_pool2d(x, ints(get("kernel_size", [])),
                                ints(get("stride", [])), ints(get("padding", [])),
                                ceil_mode=get("ceil_mode", False),
                                count_include_pad=get("count_include_pad",
                                                      False))
        if kind == "ADAPTIVE_AVG_POOL2D":
            return F.adaptive_avg_pool2d(x, ints(get("output_size", [])))
        if kind == "FLATTEN":
            return torch.flatten(x, int(get("start_dim", 0)),
                                 int(get("end_dim", 0)))
        if kind == "DROPOUT":
            return x  # eval mode
        raise CheckError(f"layer {path!r}: unsupported kind {kind}")


def read_inputs(directory):
    with open(os.path.join(directory, "inputs.shape")) as f:
        shape = [int(v) for v in f.read().split()]
    raw = np.fromfile(os.path.join(directory, "inputs.f32"), dtype="<f4")
    if raw.size != int(np.prod(shape)):
        raise CheckError(f"inputs.f32 has {raw.size} floats, shape {shape}")
    return torch.from_numpy(raw.reshape(shape).astype(np.float32))


def read_idx_images(path):
    """An IDX image file as posttrain reads it: uint8 scaled to [0, 1] or
    float32 as stored, gzip or raw, as [N, 1, H, W]."""
    import gzip
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    (magic,) = struct.unpack(">I", data[:4])
    if magic not in (0x803, 0xD03):
        raise CheckError(f"{path}: IDX magic {magic:#x} is not an image file")
    n, h, w = struct.unpack(">III", data[4:16])
    if magic == 0x803:
        x = np.frombuffer(data, dtype="u1", count=n * h * w, offset=16)
        x = x.astype(np.float32) / 255.0
    else:
        x = np.frombuffer(data, dtype=">f4", count=n * h * w, offset=16)
    return torch.from_numpy(x.astype(np.float32).reshape(n, 1, h, w))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--images", help="an IDX image file (gzip or raw) "
                        "instead of DIR/inputs.f32")
    parser.add_argument("--predictions", help="the predictions file "
                        "(default DIR/predictions.txt)")
    parser.add_argument("--atol", type=float, default=1e-5,
                        help="largest logit difference accepted")
    args = parser.parse_args()
    d = args.directory
    x = read_idx_images(args.images) if args.images else read_inputs(d)
    with open(args.predictions or os.path.join(d, "predictions.txt")) as f:
        expected = torch.tensor([int(line) for line in f if line.strip()])
    if expected.numel() != x.shape[0]:
        raise CheckError(f"{expected.numel()} predictions for "
                         f"{x.shape[0]} inputs")
    logits_path = os.path.join(d, "logits.f32")
    expected_logits = None
    if os.path.exists(logits_path):
        expected_logits = torch.from_numpy(
            np.fromfile(logits_path, dtype="<f4").reshape(x.shape[0], -1))

    problems = []
    # (b) safetensors, numpy and torch.nn.functional only.
    metadata, weights = read_safetensors(os.path.join(d, "model.safetensors"))
    if metadata.get("format") != "pt":
        problems.append(f"metadata format is {metadata.get('format')!r}")
    spec = json.loads(metadata["posttrain.model_spec"])
    with torch.no_grad():
        st_logits = Network(spec, weights).forward(x)
    # (a) TorchScript.
    module = torch.jit.load(os.path.join(d, "model.pt"))
    module.eval()
    with torch.no_grad():
        ts_logits = module(x)
    # The module's tensors are the safetensors tensors, under "l" + name
    # with '.' replaced by '_'.
    ts_state = module.state_dict()
    for name, array in weights.items():
        key = "l" + name.replace(".", "_")
        if key not in ts_state:
            problems.append(f"model.pt has no {key}")
        elif not torch.equal(ts_state[key], torch.from_numpy(np.array(array))):
            problems.append(f"model.pt {key} differs from {name}")
    if len(ts_state) != len(weights):
        problems.append(f"model.pt has {len(ts_state)} tensors, "
                        f"model.safetensors {len(weights)}")

    # (c) compare.
    summary = []
    for label, logits in (("torchscript", ts_logits),
                          ("safetensors", st_logits)):
        predicted = logits.argmax(1)
        matches = int((predicted == expected).sum())
        part = f"{label} {matches}/{expected.numel()} predictions match"
        if matches != expected.numel():
            problems.append(f"{label}: {expected.numel() - matches} "
                            f"predictions differ")
        if expected_logits is not None:
            if logits.shape != expected_logits.shape:
                problems.append(f"{label}: logits shape {tuple(logits.shape)}")
            else:
                diff = float((logits - expected_logits).abs().max())
                part += f" (max |logit diff| {diff:.2e})"
                if not diff <= args.atol:
                    problems.append(f"{label}: logits differ by {diff:.2e}")
        summary.append(part)
    status = "OK" if not problems else "MISMATCH: " + "; ".join(problems)
    print(f"check_exports: {expected.numel()} inputs, {len(weights)} tensors; "
          + ", ".join(summary) + f": {status}")
    return 0 if not problems else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CheckError, KeyError, ValueError, OSError) as e:
        print(f"check_exports: MISMATCH: {e}")
        sys.exit(1)
