#!/usr/bin/env python3
"""What a transform could save in the lossy codec's deltas (issue 13).

Reads the float32 tensors that `history_bench --dump_dir=DIR` writes
(<epoch>_<name>.f32) and, for one 2-D weight (default: the example CNN's
first Linear, 9.weight, [64, 1568]), prints per delta epoch:
  - the energy share of its top singular values (how low-rank a delta is);
  - the order-0 entropy of the 6-bit range-rule quantization (the codec's
    default step, max|d| / 31) over the whole tensor and per row;
  - the per-row entropy of the same step applied to the delta rotated into
    its left singular basis (a KLT over the rows), which keeps the weights'
    RMS error the same, and what sending that 64 x 64 basis would cost.
With --write_q=OUT it also writes each delta epoch's quantized values as
int8 (OUT/q<epoch>.bin), to compare general-purpose compressors on them:
    for e in 1 4 7; do zstd -1 -c OUT/q$e.bin | wc -c; done
Needs numpy (Debian's python3-numpy); it is an analysis, not a test.

    bench/codec_analysis.py DIR [--tensor=9.weight --rows=64 --write_q=OUT]
"""
import argparse
import numpy as np


def entropy(q):
    _, c = np.unique(q, return_counts=True)
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--tensor", default="9.weight")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--write_q", default="")
    a = ap.parse_args()

    def load(e):
        w = np.fromfile(f"{a.dir}/{e}_{a.tensor}.f32", dtype=np.float32)
        return w.reshape(a.rows, -1).astype(np.float64)

    print("| epoch | top-8 / top-16 / top-32 energy | H (bits/value) | "
          "H per row | H per row, KLT | KLT basis (8-bit) per value |")
    print("|---|---|---|---|---|---|")
    for e in range(1, a.epochs):
        d = load(e) - load(e - 1)
        step = np.abs(d).max() / 31
        q = np.round(d / step)
        if a.write_q:
            q.astype(np.int8).tofile(f"{a.write_q}/q{e}.bin")
        u, s, _ = np.linalg.svd(d, full_matrices=False)
        energy = np.cumsum(s**2) / np.sum(s**2)
        qc = np.round((u.T @ d) / step)
        basis_bits = 8.0 * u.size / d.size
        print("| %d | %.2f / %.2f / %.2f | %.2f | %.2f | %.2f | %.2f |" % (
            e, energy[7], energy[15], energy[31], entropy(q),
            np.mean([entropy(r) for r in q]),
            np.mean([entropy(r) for r in qc]), basis_bits))


if __name__ == "__main__":
    main()
