"""Published numbers of Liu & Chen (arXiv 2508.11659) that the dynamics figures are drawn
beside.  Values marked approximate in the source were read off the paper's figures; the rest
come from the authors' notebooks and result files (mean of 5 runs, 50 epochs).  Keys are
beta_i (or alpha, P) as floats; None where the paper shows no value."""

from __future__ import annotations

BETAS = (0.001, 0.01, 0.1, 0.25, 1.0, 2.0, 4.0)

# Fig 5, 3 hidden layers of 64, T/K 30/15 (b-d read off the figure)
FIG5 = {
    "spectral_radius": {
        ("symmetric", "init"): (0.05, 0.2, 0.8, 1.2, 2.4, 3.4, 4.7),
        ("symmetric", "trained"): (0.2, 0.6, 2.2, 2.5, 4.2, 5.6, 5.9),
        ("random", "init"): (0.02, 0.1, 0.4, 0.6, 1.2, 1.8, 2.4),
        ("random", "trained"): (0.1, 0.3, 0.9, 1.7, 1.8, 2.8, None),   # > 8 at 4
    },
    "ftmle": {
        ("symmetric", "init"): (-2.6, -1.6, -0.5, -0.15, 0.05, 0.05, 0.05),
        ("random", "init"): (-3.2, None, None, None, None, None, 0.3),
        ("symmetric", "trained"): (-2.1, None, None, None, -0.25, None, -1.3),
    },
    "conv_steps": {
        ("symmetric", "init"): (9, 12, 30, 120, 200, 140, 80),
        ("random", "init"): (9, 11, 17, 25, 60, None, None),          # no convergence
        ("symmetric", "trained"): (11, 16, 35, 50, 70, 35, 19),
    },
    # best test accuracy, % (the figure plots the last epoch)
    "test_acc": {
        ("symmetric", "trained"): (97.30, 97.61, 97.48, 96.79, 62.59, 34.80, 20.94),
        ("random", "trained"): (95.32, 96.93, 96.64, 96.60, 91.08, 63.12, 27.40),
    },
}

# Fig 6 / Table S1: symmetric, 64 units, T = 10 L, K = 5 L; best test %, by depth
FIG6 = {
    2: (97.69, 97.57, 97.25, 96.22, 93.12, 66.04, 40.92),
    3: (97.22, 97.64, 97.41, 96.60, 55.86, 32.64, 22.11),
    5: (93.54, 95.54, 97.60, 90.63, 25.31, 17.88, 14.61),
    10: (87.15, 89.99, 92.54, 41.84, 14.07, 14.30, 14.23),
}

# Fig 4c: 5 hidden layers of 64; best test % by beta_i (rows) and alpha (columns)
FIG4_BETAS = (0.01, 0.1, 0.25, 0.5, 1.0)
FIG4_ALPHAS = (0.1, 0.25, 0.5, 1.0)
FIG4 = (
    (93.57, 96.30, 95.86, 95.47),
    (89.05, 95.02, 96.90, 97.63),
    (77.47, 93.91, 95.80, 83.42),
    (43.69, 93.95, 52.93, 39.34),
    (33.21, 90.82, 58.00, 26.06),
)

# Fig S8: AGT link probability P, 10 hidden layers, random feedback; best test %
FIGS8 = {0.0: 87.57, 0.02: 91.75, 0.1: 96.01, 0.2: 96.72, 0.5: 96.71, 1.0: 96.32}
