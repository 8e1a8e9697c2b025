"""crossbar-ep: train feedback-regulated residual recurrent networks (FRE-RNN) with
Equilibrium Propagation, on an ideal digital backend or in situ on resistive crossbar arrays.

The Python API (``docs/api.md``)::

    import crossbar_ep as cx
    net = cx.make_network([784, 256, 256, 10], beta_i=0.05, beta_f=0.5)
    cx.attach_crossbar(net, "W1", "device_models/ecram_li_tang2018.yaml")
    model = cx.ep_learner(net, T=20, K=10)
    history = cx.fit(model, x, y, epochs=3, validation=(x_test, y_test))

Names are imported on first use, so ``crossbar-ep --help`` stays fast.
"""

from importlib import import_module

from crossbar_ep.errors import CheckpointError, ConfigError, CrossbarEPError, DataError
from crossbar_ep.numba_cache import drop_stale_caches

drop_stale_caches()          # before any cached kernel loads (crossbar_ep/numba_cache.py)

__version__ = "0.1.0"

_LAZY = {
    # network and operators
    "make_network": "api", "make_conv_network": "api", "from_experiment": "api",
    "Network": "model.network", "Block": "model.network",
    "add_heads": "model.heads",
    "WeightOperator": "model.operators", "DigitalMatrix": "model.operators",
    # crossbar arrays and their physics
    "CrossbarMatrix": "crossbar.array", "Periphery": "crossbar.periphery",
    "DeterministicPulses": "crossbar.pulses", "StochasticCoincidence": "crossbar.pulses",
    "MixedPrecision": "crossbar.mixed_precision", "TikiTaka": "crossbar.tiki_taka",
    "UpdateSettings": "crossbar.update_settings", "make_rule": "crossbar.rules",
    "load_card": "devices.card", "DeviceCard": "devices.card",
    "fit_card": "devices.fit_card", "plot_card_fit": "plots.device_fit",
    "WireSettings": "circuit.ir_drop", "Wires": "circuit.nodal", "IVLaw": "circuit.iv",
    # learning
    "Settler": "model.settle", "EPLearner": "model.learners", "BPLearner": "model.learners",
    "Adam": "model.optim", "SGD": "model.optim",
    "attach_crossbar": "api", "settler": "api", "options": "api", "ep_learner": "api",
    "bp_learner": "api", "fit": "api",
    "evaluate": "api", "MetricsCSV": "api", "SaveWeights": "api", "Traces": "api",
    # configs and runs (the CLI's path)
    "load_config": "config.experiment", "load_dataset": "io.data",
    "summarise_run": "runs.summary", "summary_table": "runs.summary",
}

__all__ = ["CrossbarEPError", "ConfigError", "DataError", "CheckpointError", "__version__",
           *_LAZY]


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'crossbar_ep' has no attribute {name!r}")
    value = getattr(import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
