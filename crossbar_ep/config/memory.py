"""Peak memory of a run, estimated from its config before anything large is allocated, and
the check that refuses a run the machine cannot hold (docs/limits.md, "Memory").

The estimate adds, in bytes:

- the process itself (Python, NumPy, Numba's compiled kernels): ``BASE_BYTES``;
- the data set: while it loads, ``LOAD_BYTES_PER_VALUE`` per value (raw bytes and the
  conversion's temporaries); afterwards its arrays, ``itemsize`` per value;
- the network's state (weights, optimiser slots, device arrays of every crossbar operator,
  feedback matrices), per weight as measured on two small proxy nets of the same config
  (same depth, links, card and optimiser; hidden layers 8 and 16 wide) whose NumPy arrays
  are counted, times the real net's weights;
- the updates' temporaries, ``itemsize`` x ``TRANSIENT_ITEMS`` per weight (plus
  ``CROSSBAR_TRANSIENT_BYTES`` on crossbar arrays);
- the states of a batch, ``itemsize`` x ``ACTIVATION_ITEMS`` per value of a training or
  an evaluation batch (whichever is larger) over the input, every hidden layer and the
  output (conv nets: their feature maps and patch matrices).

The constants were fitted to peak RSS measured on dense, conv and crossbar runs;
``tests/test_memory.py`` measures peak RSS of such runs in subprocesses and compares.
"""

from __future__ import annotations

import math

import numpy as np

from crossbar_ep.errors import ConfigError

GIB = float(1 << 30)
MIB = float(1 << 20)
BASE_BYTES = 256 * (1 << 20)     # with Numba compiling its kernels (less when cached)
LOAD_BYTES_PER_VALUE = {"float32": 10.0, "float64": 8.0}
TRANSIENT_ITEMS = {"ep": 4.0, "bp": 1.5}
CROSSBAR_TRANSIENT_BYTES = 16.0
ACTIVATION_ITEMS = {"train": 7.0, "eval": 1.0}
CONV_ACTIVATION_ITEMS = {"train": 2.5, "eval": 1.0}
CONV_BASE_BYTES = 64 * (1 << 20)   # the conv kernels' compiled code
DATA_SHAPES = {"mnist": (60000, 10000, 784, 10), "fashion-mnist": (60000, 10000, 784, 10),
               "cifar10": (50000, 10000, 3072, 10)}


def data_shape(cfg) -> tuple:
    """(training samples loaded, test samples, features, classes) of the config's data."""
    d = cfg.data
    if d.dataset == "synthetic":
        return d.synthetic_train, d.synthetic_test, d.synthetic_features, d.synthetic_classes
    n_train, n_test, n_in, n_cls = DATA_SHAPES.get(d.dataset, DATA_SHAPES["mnist"])
    return n_train, n_test, n_in, n_cls


def _array_bytes(root) -> int:
    """Bytes of every NumPy array reachable from ``root`` (attributes, containers), each
    buffer counted once."""
    seen, total, stack = set(), 0, [root]
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, (str, bytes, int, float, bool, type(None), type)):
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            if o.base is None:
                total += o.nbytes
            else:
                stack.append(o.base)
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        else:
            d = getattr(o, "__dict__", None)
            if isinstance(d, dict):
                stack.extend(d.values())
            for s in getattr(type(o), "__slots__", ()):
                if isinstance(s, str) and hasattr(o, s):
                    stack.append(getattr(o, s))
    return total


def _learner(cfg, n_in: int, n_out: int):
    from crossbar_ep.config.build import build_network, make_learner, make_optimizer
    net = build_network(cfg, n_in, n_out, np.random.default_rng(0))
    opt = make_optimizer(cfg.training, net.trainable(), net.lr)
    return net, make_learner(cfg, net, opt)


def _weights(net, sizes: list) -> int:
    """Trained and fixed-feedback matrix entries of ``net``'s topology at layer ``sizes``."""
    n = sum(sizes[p.src] * sizes[p.dst] for p in net.projections)
    return n + sum(sizes[f.src] * sizes[f.dst] for f in net.feedbacks if not f.tied)


def _proxy(cfg, width: int, n_cls: int):
    from dataclasses import replace
    hidden = (width,) * len(cfg.model.hidden)
    small = replace(cfg, model=replace(cfg.model, hidden=hidden))
    net, learner = _learner(small, width, n_cls)
    sizes = [width, *hidden, n_cls]
    return _array_bytes(learner), _weights(net, sizes), net


def estimate(cfg) -> dict:
    """Peak bytes of a run of ``cfg`` and their parts: ``peak``, ``base``, ``data_load``,
    ``data``, ``state``, ``transient``, ``activations``; ``weights`` and ``state_per_weight``
    (bytes).  Builds only small proxy nets (or, for a conv net, the net itself: its kernels
    are small)."""
    t = cfg.training
    item = np.dtype(t.dtype).itemsize
    n_train, n_test, n_in, n_cls = data_shape(cfg)
    values = (n_train + n_test) * n_in
    data_load = values * LOAD_BYTES_PER_VALUE[t.dtype]
    if cfg.data.train_subset:
        n_train = min(n_train, cfg.data.train_subset)
    if cfg.data.test_subset:
        n_test = min(n_test, cfg.data.test_subset)
    data = (n_train + n_test) * n_in * item
    xbar = cfg.crossbar.enabled
    acts, base = ACTIVATION_ITEMS, BASE_BYTES
    if cfg.model.conv.enabled:
        acts, base = CONV_ACTIVATION_ITEMS, BASE_BYTES + CONV_BASE_BYTES
        net, learner = _learner(cfg, n_in, n_cls)
        state = float(_array_bytes(learner))
        weights = sum(w.size for _, w in net.trainable())
        per_weight = state / max(1, weights)
        units = n_in + n_cls + _conv_units(cfg)
    else:
        b1, w1, _ = _proxy(cfg, 8, min(n_cls, 8))
        b2, w2, net = _proxy(cfg, 16, min(n_cls, 8))
        per_weight = max(0.0, (b2 - b1) / max(1, w2 - w1))
        weights = _weights(net, [n_in, *cfg.model.hidden, n_cls])
        state = per_weight * weights
        units = n_in + sum(cfg.model.hidden) + n_cls
    transient = weights * (item * TRANSIENT_ITEMS[t.algorithm] +
                           (CROSSBAR_TRANSIENT_BYTES if xbar else 0.0))
    activations = units * item * max(acts["train"] * t.batch_size,
                                     acts["eval"] * t.eval_batch_size)
    peak = base + max(data_load, data + state + transient + activations)
    return {"peak": peak, "base": base, "data_load": data_load, "data": data,
            "state": state, "transient": transient, "activations": activations,
            "weights": weights, "state_per_weight": per_weight}


def _conv_units(cfg) -> int:
    """Values per sample of a conv net's feature maps and patch matrices."""
    from crossbar_ep.model.conv import conv_geoms
    c = cfg.model.conv
    L = len(c.channels)
    per = (lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * L)
    geoms = conv_geoms(cfg.image_shape(), c.channels, per(c.kernel), per(c.padding))
    return sum(g.positions * (g.patch + g.c_out) for g in geoms)


UPPER_BYTES_PER_WEIGHT = 512.0      # above any measured model (crossbar cards: <= 280)


def quick_bound(cfg) -> float | None:
    """An upper bound of :func:`estimate` by arithmetic alone (every pair of layers linked
    both ways, ``UPPER_BYTES_PER_WEIGHT`` per weight); None for conv nets."""
    if cfg.model.conv.enabled:
        return None
    t = cfg.training
    item = np.dtype(t.dtype).itemsize
    n_train, n_test, n_in, n_cls = data_shape(cfg)
    units = n_in + sum(cfg.model.hidden) + n_cls
    load = (n_train + n_test) * n_in * max(LOAD_BYTES_PER_VALUE.values())
    acts = units * item * max(ACTIVATION_ITEMS["train"] * t.batch_size,
                              ACTIVATION_ITEMS["eval"] * t.eval_batch_size)
    return BASE_BYTES + load + float(units) ** 2 * UPPER_BYTES_PER_WEIGHT + acts


def available_bytes() -> float | None:
    """Memory this process can still use: ``MemAvailable`` of /proc/meminfo, lowered to a
    cgroup's remaining limit; None where neither is known."""
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found.append(float(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit, encoding="ascii") as fh:
                text = fh.read().strip()
            with open(usage, encoding="ascii") as fh:
                used = float(fh.read().strip())
        except (OSError, ValueError):
            continue
        if text.isdigit() and float(text) < 1 << 60:
            found.append(max(0.0, float(text) - used))
    return min(found) if found else None


def describe(e: dict) -> str:
    """The estimate in words: the peak and its parts (GiB), bytes per weight."""
    per = e["state_per_weight"] + e["transient"] / max(1, e["weights"])
    return (f"about {e['peak'] / GIB:.2f} GiB at its peak (data {e['data'] / GIB:.2f} GiB, "
            f"{max(e['data_load'] - e['data'], 0) / GIB:.2f} GiB more while it loads; "
            f"{e['weights']:.3g} weights at {per:.0f} bytes each: "
            f"{(e['state'] + e['transient']) / GIB:.2f} GiB; batch states "
            f"{e['activations'] / GIB:.2f} GiB; the process {e['base'] / GIB:.2f} GiB)")


def check_memory(cfg, available: float | None = None) -> dict | None:
    """Refuse (ConfigError) a config whose estimated peak exceeds the memory available, or
    ``training.memory_limit_gib`` when set (0: no check).  Returns the estimate (None when
    the check was not needed: no limit known, or an arithmetic upper bound fits)."""
    limit = getattr(cfg.training, "memory_limit_gib", None)
    if limit == 0:
        return None
    if limit is None and available is None:
        available = available_bytes()
        if available is None:
            return None
    bound = quick_bound(cfg)
    if bound is not None and bound <= (limit * GIB if limit is not None else available):
        return None          # far below the limit: no proxy nets built
    e = estimate(cfg)
    if limit is not None:
        have, where = limit * GIB, f"the limit training.memory_limit_gib = {limit:g}"
    else:
        have = available
        where = f"{have / GIB:.2f} GiB available on this machine"
    if e["peak"] > have:
        need = math.ceil(e["peak"] / GIB * 10) / 10
        raise ConfigError(
            f"{cfg.source}: the run needs {describe(e)}, more than {where}; nothing was "
            f"started.  Use narrower layers, smaller batches or a smaller data set; or, where "
            f"the machine that trains has the memory (a cluster node), set the limit: "
            f"--set training.memory_limit_gib={need:g} (0 switches the check off)")
    return e
