#!/usr/bin/env python3
"""Which tensors' rounding changes the example CNN's predictions (issue 13).

Reads the float32 tensors that `history_bench --dump_dir=DIR` writes
(<epoch>_<name>.f32, the example's Sequential: conv 0, BatchNorm 1, conv 4,
BatchNorm 5, Linear 9, Linear 11) and replays the lossy codec's default
quantizer (7 / 6 bits, range rule) in numpy, without a store's later
keyframes: epoch 0 a keyframe (max|w| / 63), every later epoch a
delta against the previous reconstruction (max|delta| / 31), tensors under
1 024 elements at 16 bits. For each setting it prints the share of
predictions that change, over every epoch, on 10 000 Fashion-MNIST
training images (50 000 to 59 999: not the benchmark's validation split,
so the figures are comparable with each other, not with history_bench's):
  - every large tensor quantized (the codec's default before issue 13's
    kernel bits);
  - only the first Linear (9.weight, 95% of the parameters) quantized;
  - only the second convolution's kernel (4.weight, 4% of them);
  - every large tensor, the kernel one bit finer, and two bits finer.
Needs Debian's python3-torch; an analysis, not a test.

    build/bench/history_bench --store=STORE --dump_dir=DIR
    /usr/bin/python3 bench/codec_sensitivity.py DIR
"""
import argparse
import gzip

import numpy as np
import torch
import torch.nn.functional as F

NAMES = ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
         "1.running_var", "4.weight", "4.bias", "5.weight", "5.bias",
         "5.running_mean", "5.running_var", "9.weight", "9.bias",
         "11.weight", "11.bias"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=9)
    a = ap.parse_args()
    torch.set_num_threads(2)
    states = [{n: np.fromfile(f"{a.dir}/{e}_{n}.f32", dtype=np.float32)
               for n in NAMES} for e in range(a.epochs)]
    with gzip.open(f"{a.data}/train-images-idx3-ubyte.gz", "rb") as f:
        raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
    images = torch.tensor(raw.reshape(-1, 1, 28, 28)[50000:60000]
                          .astype(np.float32) / 255.0)

    def predict(w):
        t = {n: torch.from_numpy(v.astype(np.float32)) for n, v in w.items()}

        def bn(x, p):
            return F.batch_norm(x, t[p + ".running_mean"],
                                t[p + ".running_var"], t[p + ".weight"],
                                t[p + ".bias"], False, 0.0, 1e-5)
        out = []
        with torch.no_grad():
            for i in range(0, images.shape[0], 1000):
                x = F.conv2d(images[i:i + 1000], t["0.weight"].reshape(
                    16, 1, 3, 3), t["0.bias"], padding=1)
                x = F.max_pool2d(F.relu(bn(x, "1")), 2)
                x = F.conv2d(x, t["4.weight"].reshape(32, 16, 3, 3),
                             t["4.bias"], padding=1)
                x = F.max_pool2d(F.relu(bn(x, "5")), 2).flatten(1)
                x = F.relu(x @ t["9.weight"].reshape(64, -1).T + t["9.bias"])
                x = x @ t["11.weight"].reshape(10, 64).T + t["11.bias"]
                out.append(x.argmax(1))
        return torch.cat(out)

    exact = [predict(s) for s in states]

    def changed(quantized, kernel_extra=0):
        prev, flips = None, 0
        for e, s in enumerate(states):
            r = {}
            for n in NAMES:
                v = s[n].astype(np.float64)
                base = np.zeros_like(v) if prev is None else prev[n]
                d = v - base
                if v.size < 1024 or n not in quantized:
                    bits = 16
                else:
                    bits = (7 if prev is None else 6) + (
                        kernel_extra if n in ("0.weight", "4.weight") else 0)
                step = np.abs(d).max() / (2 ** (bits - 1) - 1) or 1.0
                r[n] = base + np.round(d / step) * step
            flips += (predict(r) != exact[e]).sum().item()
            prev = r
        return 100.0 * flips / (len(states) * images.shape[0])

    large = {n for n in NAMES if states[0][n].size >= 1024}
    print("| quantized at 7 / 6 bits | changed predictions |")
    print("|---|---|")
    print("| every large tensor | %.3f%% |" % changed(large))
    print("| 9.weight only (Linear, 100 352 values) | %.3f%% |" %
          changed({"9.weight"}))
    print("| 4.weight only (conv kernel, 4 608 values) | %.3f%% |" %
          changed({"4.weight"}))
    for k in (1, 2):
        print("| every large tensor, kernels %d bit(s) finer | %.3f%% |" %
              (k, changed(large, k)))


if __name__ == "__main__":
    main()
