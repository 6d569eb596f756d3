#!/usr/bin/env python3
"""Channels-last probe for issue 13 (docs/BENCHMARKS.md).

Times a forward + backward (and a no-grad forward) of the example CNN's
regression model M_T (the CNN without its last Linear, eval mode) on a
batch of 128, with the 4-D activations in NCHW and in channels-last memory
(each layer's 4-D input converted, as ModelView would have to do: the
input has one channel, so its format alone does not propagate), and
prints how far the outputs and gradients differ. Also times max pooling
alone. Run with Debian's python3-torch (1.13): /usr/bin/python3 bench/channels_last_probe.py
"""
import torch, time, torch.nn as nn
torch.set_num_threads(2)
torch.manual_seed(0)
layers = [nn.Conv2d(1,16,3,padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
          nn.Conv2d(16,32,3,padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
          nn.Flatten(), nn.Linear(32*7*7,64), nn.ReLU()]
m = nn.Sequential(*layers).eval()
x = torch.rand(128,1,28,28)
def fwd(inp, cl):
    h = inp
    for l in layers:
        if cl and h.dim() == 4: h = h.contiguous(memory_format=torch.channels_last)
        h = l(h)
    return h
def run(cl, n):
    t = time.perf_counter()
    for _ in range(n):
        m.zero_grad(); y = fwd(x, cl); (y**2).mean().backward()
    return (time.perf_counter() - t) / n, y.detach(), [p.grad.clone() for p in m.parameters()]
def runnog(cl, n):
    t = time.perf_counter()
    with torch.no_grad():
        for _ in range(n): y = fwd(x, cl)
    return (time.perf_counter() - t) / n, y
run(False, 5); run(True, 5)
for rep in range(3):
    a, ya, ga = run(False, 40)
    b, yb, gb = run(True, 40)
    c, _ = runnog(False, 40)
    d, _ = runnog(True, 40)
    rel = max(((g1-g2).abs().max()/g1.abs().max()).item() for g1,g2 in zip(ga,gb))
    print(f"fwd+bwd nchw {a*1e3:.2f} cl {b*1e3:.2f} ratio {b/a:.3f} | nograd fwd nchw {c*1e3:.2f} cl {d*1e3:.2f} ratio {d/c:.3f} | out maxdiff {(ya-yb).abs().max():.3g} grad maxrel {rel:.3g}")
pool = nn.MaxPool2d(2)
h = torch.rand(128, 16, 28, 28)
for fmt in (torch.contiguous_format, torch.channels_last):
    hh = h.contiguous(memory_format=fmt)
    with torch.no_grad():
        for _ in range(5): pool(hh)
        t = time.perf_counter()
        for _ in range(100): pool(hh)
    print(f"max_pool2d [128,16,28,28] {fmt}: {(time.perf_counter() - t) / 100 * 1e3:.3f} ms")
