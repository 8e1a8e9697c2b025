"""The Python API's builders: networks, settle engines and learners from keyword arguments.

Each builder turns its keyword arguments into the config sections a YAML file would give
(:mod:`crossbar_ep.api_checks`: the same schema, ranges and cross-field checks) and hands them
to the same builder the CLI uses (:mod:`crossbar_ep.config.build`), so a notebook and an
experiment file assemble identical objects::

    net = cx.make_network([784, 512, 512, 10], seed=0, beta_i=0.01, lr=1e-3)
    model = cx.ep_learner(net, T=18, K=10, optimizer="adam", nudging="centered",
                          crossbar={"device": "ecram_li_tang2018",
                                    "periphery": {"dac_bits": 7, "adc_bits": 9}})
    net, model = cx.from_experiment("mnist_3hl_crossbar")   # a shipped experiment, built
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.api_checks import options, sizes_of
from crossbar_ep.errors import ConfigError
from crossbar_ep.model.network import Network

# training keys that describe the net (make_network) rather than its learner
_NET_TRAINING = ("lr", "dtype", "beta_f")


def _data_section(n_in: int, n_out: int) -> dict:
    return {"dataset": "synthetic", "synthetic_features": n_in, "synthetic_classes": n_out,
            "synthetic_train": 1, "synthetic_test": 1}


def _config(raw: dict, where: str, memory: bool = False):
    """The checked Config of ``raw``; ``memory``: also refuse a net whose estimated peak
    memory exceeds what the machine has (as ``crossbar-ep run`` does)."""
    from crossbar_ep.config.experiment import config_from_dict
    cfg = config_from_dict(raw, where)
    if memory:
        from crossbar_ep.config.memory import check_memory
        check_memory(cfg)
    return cfg


def make_network(sizes, seed: int | np.random.Generator = 0, *, alpha: float = 1.0,
                 beta_i=0.01, beta_f: float = 0.1, feedback: str = "symmetric",
                 activation: str = "tanh", bias: bool = False, residual=(),
                 random_feedback=None, lr=0.01, dtype: str = "float32",
                 feedback_gain: str = "uniform") -> Network:
    """An FRE-RNN of layer sizes ``(n_in, n_1, ..., n_L, n_out)``, weights drawn from
    ``seed`` (an int or a Generator) as a run of the same config draws them.

    alpha: forward scale of W_1..W_{L-1}; beta_i: feedback gain (one value or L); beta_f:
    output nudge gain; feedback: ``symmetric`` or ``random``; activation: ``tanh``,
    ``hard_sigmoid`` or ``shifted_sigmoid``; residual: forward skip links (a, b), a < b,
    1-based hidden layers; random_feedback: fixed random feedback links (a, b), a > b (an
    AGT graph; needs ``feedback="random"``); lr: one rate or L + 1 (W_0 .. W_{L-1}, W_f);
    feedback_gain: ``uniform`` or ``graded`` skip feedback gains (``docs/config.md``).
    Every argument is checked like the config key of the same name."""
    from crossbar_ep.config.build import build_network
    from crossbar_ep.model.network import make_network as _make

    where = "make_network"
    sizes = sizes_of(sizes, where)
    L = len(sizes) - 2
    res = [list(p) for p in residual or ()]
    model = {"hidden": list(sizes[1:-1]), "alpha": alpha, "beta_i": _plain(beta_i),
             "feedback": feedback, "activation": activation, "bias": bias,
             "residual": {"kind": "pairs" if res else "none", "pairs": res,
                          "feedback_gain": feedback_gain}}
    cfg = _config({"data": _data_section(sizes[0], sizes[-1]), "model": model,
                   "training": {"lr": _plain(lr), "dtype": dtype, "beta_f": beta_f,
                                "T": max(L, 1)}}, where, memory=True)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(
        _seed(seed, where))
    if random_feedback is None:
        return build_network(cfg, sizes[0], sizes[-1], rng)
    links = _feedback_links(random_feedback, L, feedback, where)
    return _make(sizes, rng, alpha=alpha, beta_i=cfg.beta_per_layer(), beta_f=beta_f,
                 feedback=feedback, activation=activation, bias=bias,
                 residual=cfg.residual_pairs(), random_feedback=links,
                 lr=cfg.lr_per_matrix(), dtype=dtype, feedback_gain=feedback_gain)


def make_conv_network(in_shape, channels, n_out: int, seed: int | np.random.Generator = 0,
                      *, kernel=5, padding=0, beta_i=0.01, beta_f: float = 0.25, lr=1e-3,
                      activation: str = "hard_sigmoid", feedback: str = "symmetric",
                      dtype: str = "float32") -> Network:
    """A conv FRE-RNN: input maps ``in_shape`` (C, H, W), conv layers of ``channels`` output
    channels (kernel, padding: one value or one per layer; each followed by 2 x 2
    max-pooling), ``n_out`` classes; checked like ``model.conv`` and the other config keys."""
    from crossbar_ep.config.build import build_network

    where = "make_conv_network"
    shape = [int(v) for v in sizes_of([*in_shape, 1], where)[:-1]] if len(in_shape) == 3 \
        else None
    if shape is None:
        raise ConfigError(f"{where}: in_shape: give (channels, height, width), got "
                          f"{list(in_shape)}")
    n_in = int(np.prod(shape))
    model = {"activation": activation, "feedback": feedback, "beta_i": _plain(beta_i),
             "conv": {"channels": _plain(channels), "kernel": _plain(kernel),
                      "padding": _plain(padding), "input_shape": shape}}
    cfg = _config({"data": _data_section(n_in, int(n_out)), "model": model,
                   "training": {"lr": _plain(lr), "dtype": dtype, "beta_f": beta_f,
                                "T": len(channels)}}, where, memory=True)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(
        _seed(seed, where))
    return build_network(cfg, n_in, int(n_out), rng)


def learner_config(net: Network, where: str, crossbar=None, **keys):
    """A Config whose ``training``, ``settling`` and ``crossbar`` sections come from keyword
    arguments (any key of those sections; ``crossbar`` a dict of the crossbar section or a
    :class:`CrossbarConfig`), checked against ``net``'s depth and sizes."""
    from crossbar_ep.config.experiment import Config, CrossbarConfig, to_plain
    from crossbar_ep.model.options import SettlingConfig
    from crossbar_ep.schema import section_keys

    settling_keys = {f.name for f in section_keys(SettlingConfig)}
    raw = {"training": {k: _plain(v) for k, v in keys.items() if k not in settling_keys},
           "settling": {k: v for k, v in keys.items() if k in settling_keys}}
    if isinstance(crossbar, CrossbarConfig):
        crossbar = to_plain(crossbar)
    if crossbar is not None:
        raw["crossbar"] = {"enabled": True, **crossbar}
    conv = getattr(net, "convs", None)
    raw["data"] = _data_section(net.sizes[0], net.sizes[-1])
    if conv:
        g = conv[0].g
        raw["model"] = {"activation": net.activation,
                        "conv": {"channels": [c.g.c_out for c in conv],
                                 "kernel": [c.g.k for c in conv],
                                 "padding": [c.g.pad for c in conv],
                                 "input_shape": [g.c_in, g.h_in, g.w_in]}}
    else:
        raw["model"] = {"hidden": list(net.sizes[1:-1]), "activation": net.activation}
    raw["training"].setdefault("dtype", str(net.dtype))
    raw["training"].setdefault("beta_f", net.beta_f)
    cfg = _config(raw, where)
    if not isinstance(cfg, Config):      # pragma: no cover - config_from_dict returns Config
        raise TypeError(type(cfg))
    return cfg


def settler(net: Network, T: int = 20, K: int = 10, *, meter=None, **keys):
    """The settle engine of ``net``: free phase T, nudged phase K (steps of the discrete map,
    or units of tau with ``mode="ode"``), and any key of the ``training`` (``nudge_error``)
    or ``settling`` sections (``mode``, ``method``, ``dt_over_tau``, ``early_stop``,
    ``tolerance``, ``average_last``, ...; ``docs/config.md``)."""
    from crossbar_ep.model.settle import Settler
    cfg = learner_config(net, "settler", T=T, K=K, **keys)
    return Settler(net, training=cfg.training, settling=cfg.settling, meter=meter)


def ep_learner(net: Network, T: int = 20, K: int = 10, *, optimizer="adam", lr=None,
               normalised: bool = False, crossbar=None, **keys):
    """An EP learner over ``net`` assembled as the CLI assembles a run's: free phase T and
    nudged phase K; ``optimizer`` ``"adam"``, ``"sgd"`` or an optimiser object; ``lr`` sets
    every learning rate (else ``net.lr``); ``normalised``: updates divided by the nudge's
    path gain; ``crossbar``: the crossbar section as a dict (``device``, ``layers``,
    ``periphery``, ``update``, ``weight_range_factor``, ``time_per_batch_s``, ...) to put the
    matrices on arrays with their pulse rule, device clock and observers; and any key of the
    ``training`` and ``settling`` sections (``nudging``, ``nudge_error``, ``readout_error``,
    ``batch_size``, ``momentum``, ``grad_clip_norm``, ``mode``, ``average_last``, ...).
    Arrays attached before with :func:`attach_crossbar` are observed for pulse statistics
    (``learner.pulses``) and read energy (``learner.settler.meter``)."""
    from crossbar_ep.config.build import make_learner, make_optimizer

    opt_obj = None if isinstance(optimizer, str) else optimizer
    if opt_obj is None:
        keys["optimizer"] = optimizer
    if lr is not None:
        keys["lr"] = lr
    keys["update_norm"] = "normalised" if normalised else keys.get("update_norm", "raw")
    cfg = learner_config(net, "ep_learner", crossbar=crossbar, T=T, K=K, **keys)
    if lr is not None:
        for key, v in zip(_lr_keys(net), _per_matrix(cfg, net)):
            net.lr[key] = v
    opt = opt_obj if opt_obj is not None else make_optimizer(cfg.training, net.trainable(),
                                                             net.lr)
    return make_learner(cfg, net, opt)


def bp_learner(net: Network, *, optimizer="adam", lr=None, **keys):
    """The backpropagation twin of ``net`` (the feed-forward net it tends to as
    beta_i -> 0); ``optimizer``, ``lr`` and the ``training`` keys as for
    :func:`ep_learner`."""
    from crossbar_ep.config.build import make_learner, make_optimizer

    opt_obj = None if isinstance(optimizer, str) else optimizer
    if opt_obj is None:
        keys["optimizer"] = optimizer
    if lr is not None:
        keys["lr"] = lr
    cfg = learner_config(net, "bp_learner", algorithm="bp", **keys)
    if lr is not None:
        for key, v in zip(_lr_keys(net), _per_matrix(cfg, net)):
            net.lr[key] = v
    opt = opt_obj if opt_obj is not None else make_optimizer(cfg.training, net.trainable(),
                                                             net.lr)
    return make_learner(cfg, net, opt)


def from_experiment(experiment: str, overrides: list | None = None, data=None):
    """(net, learner) of an experiment file or shipped experiment name, built exactly as
    ``crossbar-ep run`` builds them (``overrides``: ``["training.seed=1", ...]``); the data
    set is loaded for its sizes unless ``data`` (a loaded data set) is given."""
    from crossbar_ep.config.build import build_network, make_learner, make_optimizer
    from crossbar_ep.config.experiment import load_config
    from crossbar_ep.io.data import load_dataset

    cfg = load_config(experiment, list(overrides or []))
    if data is None:
        data = load_dataset(cfg.data, np.dtype(cfg.training.dtype), cfg.training.seed)
    rng = np.random.default_rng(cfg.training.seed)
    net = build_network(cfg, data.n_features, data.n_classes, rng)
    opt = make_optimizer(cfg.training, net.trainable(), net.lr)
    return net, make_learner(cfg, net, opt)


# ---------------------------------------------------------------------------- helpers
def _plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, tuple):
        return [_plain(a) for a in v]
    if isinstance(v, list):
        return [_plain(a) for a in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _seed(seed, where: str) -> int:
    from crossbar_ep.schema import MAX_SEED, Where, p_int
    return p_int(lo=0, hi=MAX_SEED)(seed, Where(where, "seed"))


def _feedback_links(links, L: int, feedback: str, where: str) -> list:
    if feedback != "random":
        raise ConfigError(f"{where}: random_feedback: fixed random feedback links need "
                          f"feedback='random'")
    out = []
    for i, pair in enumerate(links):
        p = tuple(pair)
        if len(p) != 2 or not all(isinstance(a, (int, np.integer)) for a in p):
            raise ConfigError(f"{where}: random_feedback[{i}]: expected (from, to), got {p}")
        a, b = int(p[0]), int(p[1])
        if not (1 <= b < a <= L) or a - b < 2:
            raise ConfigError(f"{where}: random_feedback[{i}]: a feedback link (from, to) runs "
                              f"down between non-adjacent hidden layers 1..{L}, got {p}")
        out.append((a, b))
    return out


def _lr_keys(net: Network) -> list:
    return [p.name for p in net.projections] + [f"b{k}" for k in sorted(net.b)]


def _per_matrix(cfg, net: Network) -> list:
    """Learning rate of every projection and bias as the config builder assigns them."""
    lrs = cfg.lr_per_matrix() if isinstance(cfg.training.lr, tuple) else \
        (cfg.training.lr,) * (net.L + 1)
    L = net.L
    out = [lrs[p.dst - 1] if p.dst <= L else lrs[L] for p in net.projections]
    return out + [lrs[k - 1] if k <= L else lrs[L] for k in sorted(net.b)]


__all__ = ["make_network", "make_conv_network", "settler", "options", "ep_learner",
           "bp_learner", "from_experiment", "learner_config"]
