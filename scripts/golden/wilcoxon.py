#!/usr/bin/env python3
"""Golden values for common/results_test.cc's Wilcoxon cases, from
scipy.stats.wilcoxon (Debian's python3-scipy), two-sided, default
zero_method ("wilcox") and no continuity correction. Prints C++ initializers
that the test embeds; the C++ tests do not need Python.

    python3 scripts/golden/wilcoxon.py
"""
import scipy
from scipy.stats import wilcoxon

# (name, x, y, method): "exact" for tie- and zero-free cases of at most 50
# pairs (the C++ side uses the exact distribution there), "approx" for the
# others (ties or more than 50 pairs: the normal approximation with the
# tie-corrected variance on both sides).
CASES = [
    ("six_all_positive", [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0], "exact"),
    ("ten_mixed", [1.5, -0.25, 3.0, 2.25, -1.0, 4.5, 0.75, 5.5, 2.75, -3.5],
     [0.0] * 10, "exact"),
    ("ties", [1, 2, 2, 3, 3, 3, 4, 5], [0, 0, 0, 0, 0, 0, 0, 9], "approx"),
    ("sixty", [((i * 37) % 101) / 10.0 for i in range(60)],
     [((i * 53) % 97) / 10.0 for i in range(60)], "approx"),
]

print(f"// scipy {scipy.__version__}")
for name, x, y, method in CASES:
    r = wilcoxon(x, y, zero_method="wilcox", correction=False,
                 alternative="two-sided", method=method)
    print(f'  {{"{name}", {{{", ".join(repr(float(v)) for v in x)}}},')
    print(f'   {{{", ".join(repr(float(v)) for v in y)}}},')
    print(f'   {float(r.statistic)!r}, {float(r.pvalue)!r}}},')
