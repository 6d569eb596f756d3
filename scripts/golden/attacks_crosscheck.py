#!/usr/bin/python3
"""Independent FGSM, BIM and PGD in PyTorch (Python) on the files that
bench/attack_crosscheck wrote: the example CNN's weights and the attacked
Fashion-MNIST test images, as float32 IDX. Compares each robust accuracy
with the library's (cpp.json) and fails when one differs by more than
0.5 points. Also times its own PGD-40 at eps 0.1 with the same batch size
and threads, for the speed comparison of issues 10 and 13.

    build/bench/attack_crosscheck --out=build/attack_crosscheck
    /usr/bin/python3 scripts/golden/attacks_crosscheck.py build/attack_crosscheck

Needs Debian's python3-torch and python3-numpy. The C++ tests do not.
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    kind, dims = (magic >> 8) & 0xFF, magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    dtype = {0x08: ">u1", 0x0D: ">f4"}[kind]
    arr = np.frombuffer(data, dtype=dtype, offset=4 + 4 * dims)
    return arr.reshape(shape).astype(np.float32 if kind == 0x0D else np.int64)


def make_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))


def grad_sign(model, x, y):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return g.sign()


def fgsm(model, x, y, eps):
    return (x + eps * grad_sign(model, x, y)).clamp(0, 1)


def pgd(model, x, y, eps, alpha, steps, random_start, gen=None):
    adv = x
    if random_start:
        adv = (x + (2 * torch.rand(x.shape, generator=gen) - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        adv = adv + alpha * grad_sign(model, adv, y)
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def batched(fn, x, y, bs):
    return torch.cat([fn(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)])


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def main(out):
    with open(os.path.join(out, "cpp.json")) as f:
        cpp = json.load(f)
    torch.set_num_threads(cpp["threads"])
    bs = cpp["batch_size"]
    model = make_cnn()
    names = open(os.path.join(out, "weights", "names.txt")).read().split()
    state = model.state_dict()
    for n in names:
        state[n] = torch.from_numpy(read_idx(os.path.join(out, "weights", n + ".idx")).copy())
    model.load_state_dict(state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.from_numpy(read_idx(os.path.join(out, "test-images.idx")).copy()).unsqueeze(1)
    y = torch.from_numpy(read_idx(os.path.join(out, "test-labels.idx")).copy())
    ours = {"clean_accuracy": accuracy(model, x, y)}
    gen = torch.Generator().manual_seed(12345)  # not the library's stream
    pgd_seconds = None
    for eps in (0.02, 0.05, 0.1):
        ours["fgsm_%g" % eps] = accuracy(model, batched(lambda a, b: fgsm(model, a, b, eps), x, y, bs), y)
        ours["bim_%g" % eps] = accuracy(model, batched(
            lambda a, b: pgd(model, a, b, eps, 0.01, 20, False), x, y, bs), y)
        t0 = time.perf_counter()
        adv = batched(lambda a, b: pgd(model, a, b, eps, 0.01, 40, True, gen), x, y, bs)
        if eps == 0.1:
            pgd_seconds = time.perf_counter() - t0
        ours["pgd_%g" % eps] = accuracy(model, adv, y)
    theirs = {a["name"]: a["report"]["robust_accuracy"] for a in cpp["attacks"]}
    theirs["clean_accuracy"] = cpp["clean_accuracy"]
    rows, worst = [], 0.0
    for k, v in ours.items():
        d = 100 * abs(v - theirs[k])
        worst = max(worst, d)
        rows.append({"attack": k, "python": round(v, 4), "library": round(theirs[k], 4),
                     "diff_points": round(d, 2)})
    lib_pgd = [a for a in cpp["attacks"] if a["name"] == "pgd_0.1"][0]["seconds"]
    result = {"images": len(x), "threads": cpp["threads"], "batch_size": bs,
              "rows": rows, "worst_diff_points": round(worst, 2),
              "python_pgd40_s": round(pgd_seconds, 2), "library_pgd40_s": round(lib_pgd, 2),
              "library_speed_vs_python": round(pgd_seconds / lib_pgd, 3)}
    print(json.dumps(result, indent=1))
    return 0 if worst <= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/attack_crosscheck"))
