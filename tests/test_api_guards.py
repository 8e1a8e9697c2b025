"""The Python API meets the CLI's guards: keyword arguments through the config schema, arrays
through the data checks, and one assembly path (a recipe built from keywords equals the same
recipe built from its experiment file, state for state and step for step)."""

import os
import time

import numpy as np
import pytest
from conftest import REPO

import crossbar_ep as cx
from crossbar_ep.errors import ConfigError, CrossbarEPError, DataError


def small_net(**kw):
    return cx.make_network([12, 8, 6, 3], seed=0, **{"beta_i": 0.1, "beta_f": 0.3, "lr": 0.05,
                                                     **kw})


def data(n=20, n_in=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, n_in)), np.arange(n) % 3


@pytest.mark.parametrize("kwargs,where", [
    ({"lr": float("nan")}, "training.lr"),
    ({"lr": 1e30}, "training.lr"),
    ({"lr": -0.1}, "training.lr"),
    ({"lr": [0.1, 0.1]}, "training.lr"),                 # short list: L + 1 = 3 values
    ({"beta_i": float("nan")}, "model.beta_i"),
    ({"beta_i": [0.1, 0.1, 0.1]}, "model.beta_i"),       # wrong length (2 hidden layers)
    ({"dtype": "int32"}, "training.dtype"),
    ({"activation": "relu"}, "model.activation"),
    ({"residual": [(2, 1)]}, "model.residual"),
    ({"feedback": "random", "random_feedback": [(1, 2)]}, "random_feedback"),
])
def test_make_network_checks_every_argument_like_the_config(kwargs, where):
    with pytest.raises(ConfigError, match=where) as err:
        small_net(**kwargs)
    assert str(err.value).startswith("make_network")


@pytest.mark.parametrize("sizes", [[12, 0, 3], [12, 16.5, 3], [12, 3], "784-10"])
def test_make_network_refuses_bad_sizes(sizes):
    with pytest.raises(ConfigError, match="make_network"):
        cx.make_network(sizes)


def test_a_huge_network_is_refused_before_any_allocation():
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="weights"):
        cx.make_network([784, 100000, 100000, 10])
    from crossbar_ep.config.memory import available_bytes
    have = available_bytes()
    if have is not None and have < 30 * 2**30:       # under the weight limit, over RAM
        with pytest.raises(ConfigError, match="memory"):
            cx.make_network([784, 30000, 30000, 10], dtype="float64")
    assert time.perf_counter() - t0 < 20.0


@pytest.mark.parametrize("kwargs,where", [
    ({"T": 0}, "training.T"), ({"K": 0}, "training.K"), ({"T": 10**12}, "training.T"),
    ({"T": 1}, "training.T"),                 # below the 2 hidden layers
    ({"mode": "fast"}, "settling.mode"), ({"average_last": 0}, "settling.average_last"),
    ({"nudging": "both"}, "training.nudging"), ({"batch_size": -5}, "training.batch_size"),
    ({"optimizer": "rmsprop"}, "training.optimizer"), ({"lr": float("inf")}, "training.lr"),
])
def test_learners_check_their_options(kwargs, where):
    net = small_net()
    with pytest.raises(ConfigError, match=where):
        cx.ep_learner(net, **{"T": 10, "K": 4, **kwargs})


@pytest.mark.parametrize("periphery,where", [
    ({"dac_bits": 0}, "dac_bits"), ({"dac_bits": -3}, "dac_bits"),
    ({"read_noise": -0.1}, "read_noise"), ({"adc_bits": 1}, "adc_bits"),
])
def test_attach_crossbar_checks_a_hand_made_periphery(periphery, where):
    net = small_net()
    with pytest.raises(ConfigError, match=where):
        cx.attach_crossbar(net, "W1", "ideal", periphery=cx.Periphery(**periphery))


@pytest.mark.parametrize("kwargs,where", [
    ({"tile_rows": 0}, "tile_rows"), ({"tile_cols": -1}, "tile_cols"),
    ({"weight_range_factor": 0}, "weight_range_factor"), ({"lr": -1.0}, "lr"),
    ({"signed": "single"}, "signed"),
])
def test_attach_crossbar_checks_its_arguments(kwargs, where):
    net = small_net()
    with pytest.raises(ConfigError, match=where):
        cx.attach_crossbar(net, "W1", "ideal", **kwargs)


@pytest.mark.parametrize("bad,match", [
    ("nan", "not finite"), ("labels", "outside the classes"), ("neg", "outside the classes"),
    ("features", "features per sample"), ("empty", "no samples"), ("ydim", "one integer label"),
    ("bs0", "batch_size"), ("bs-5", "batch_size"), ("float_labels", "integer class labels"),
])
def test_fit_checks_the_data_like_the_cli(bad, match):
    net = small_net()
    model = cx.ep_learner(net, T=8, K=4, optimizer="sgd")
    x, y = data()
    kw = {}
    if bad == "nan":
        x[3, 5] = np.nan
    elif bad == "labels":
        y = y.copy()
        y[2] = 3
    elif bad == "neg":
        y = y - 1
    elif bad == "features":
        x = x[:, :10]
    elif bad == "empty":
        x, y = x[:0], y[:0]
    elif bad == "ydim":
        y = y[:, None]
    elif bad == "bs0":
        kw["batch_size"] = 0
    elif bad == "bs-5":
        kw["batch_size"] = -5
    elif bad == "float_labels":
        y = y + 0.5
    before = {k: v.copy() for k, v in net.trainable()}
    with pytest.raises((DataError, ConfigError), match=match):
        cx.fit(model, x, y, epochs=1, **kw)
    for k, v in net.trainable():          # nothing trained on bad data
        np.testing.assert_array_equal(v, before[k])


def test_predict_of_one_unbatched_sample_says_how():
    net = small_net()
    x, _ = data()
    for model in (cx.ep_learner(net, T=8, K=4), cx.bp_learner(net)):
        with pytest.raises(DataError, match=r"x\[None\]"):
            model.predict(x[0])


def test_attach_crossbar_after_the_learner_is_refused():
    net = small_net()
    model = cx.ep_learner(net, T=8, K=4, optimizer="sgd")
    cx.attach_crossbar(net, "W1", "ideal")
    x, y = data()
    with pytest.raises(CrossbarEPError, match="attach_crossbar after ep_learner"):
        model.train_batch(x[:5], y[:5])


def test_fit_stops_with_a_message_when_training_diverges():
    from crossbar_ep.model.learners import BatchStats

    class Diverging:
        net = small_net()

        def train_batch(self, x, y):
            return BatchStats(float("nan"), 0, 0.0, 0)
    x, y = data(40)
    with pytest.raises(CrossbarEPError, match="epoch 1, batch 1: training diverged"):
        cx.fit(Diverging(), x, y, epochs=2, batch_size=20)


def _state(net):
    out = {}
    for name, op in sorted(net.ops.items()):
        for k, v in op.state_dict().items():
            out[f"{name}:{k}"] = np.array(v, copy=True) if isinstance(v, np.ndarray) else v
    out.update({f"b{k}": v.copy() for k, v in net.b.items()})
    return out


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def test_the_in_situ_recipe_built_from_keywords_equals_the_experiment_file():
    """experiments/mnist_3hl_crossbar.yaml (centered nudging, phase averaging, the device
    clock, the cosine pulse-gain schedule, mixed-precision pulses, 7/9-bit converters with
    input scaling) built by the CLI's path and from keyword arguments: the same state before
    and after one training step on the same batch, and the same clock and pulse gains."""
    from crossbar_ep.config.build import build_network, make_learner, make_optimizer
    from crossbar_ep.config.experiment import load_config, to_plain

    path = os.path.join(REPO, "experiments", "mnist_3hl_crossbar.yaml")
    cfg = load_config(path, ["model.hidden=[24,16,12]"])
    rng = np.random.default_rng(cfg.training.seed)
    net_a = build_network(cfg, 784, 10, rng)
    model_a = make_learner(cfg, net_a, make_optimizer(cfg.training, net_a.trainable(),
                                                      net_a.lr))
    m, t, s, c = (to_plain(cfg.model), to_plain(cfg.training), to_plain(cfg.settling),
                  to_plain(cfg.crossbar))
    net_b = cx.make_network([784, *m["hidden"], 10], seed=t["seed"], beta_i=m["beta_i"],
                            beta_f=t["beta_f"], activation=m["activation"], lr=t["lr"],
                            feedback=m["feedback"])
    c["device"] = os.path.join(REPO, c["device"])
    keys = {k: v for k, v in t.items() if k not in ("T", "K", "optimizer", "lr")}
    model_b = cx.ep_learner(net_b, T=t["T"], K=t["K"], optimizer=t["optimizer"], crossbar=c,
                            **keys, **s)
    _assert_same(_state(net_a), _state(net_b))
    for name, op in net_a.ops.items():
        assert op.seconds_per_update == net_b.ops[name].seconds_per_update > 0
        assert op.lr_base == net_b.ops[name].lr_base
    assert model_b.centered and model_b.settler.average_last == 4
    x = np.random.default_rng(1).random((10, 784)).astype(np.float32)
    y = np.arange(10) % 10
    from crossbar_ep.config.build import set_epoch_rates
    for model, net in ((model_a, net_a), (model_b, net_b)):
        set_epoch_rates(net, model.opt, cfg.training, 3)
        model.train_batch(x, y)
    _assert_same(_state(net_a), _state(net_b))
    assert net_a.ops["W1"].lr == net_b.ops["W1"].lr < cfg.training.lr


def test_every_shipped_experiment_builds_from_the_api():
    from types import SimpleNamespace
    folder = os.path.join(REPO, "experiments")
    names = sorted(f for f in os.listdir(folder) if f.endswith(".yaml"))
    assert len(names) > 20
    from crossbar_ep.config.experiment import load_config, read_yaml
    for f in names:
        if "base" in read_yaml(os.path.join(folder, f)):
            continue                       # a sweep file, not an experiment
        cfg = load_config(os.path.join(folder, f))
        if cfg.model.aux.teacher:
            continue                       # a student needs its trained teacher's run
        n_in = {"cifar10": 3072, "cifar100": 3072}.get(cfg.data.dataset, 784)
        n_out = 100 if cfg.data.dataset == "cifar100" else 10
        shrink = [] if cfg.model.conv.enabled else [
            f"model.hidden=[{','.join('8' for _ in cfg.model.hidden)}]"]
        net, model = cx.from_experiment(os.path.join(folder, f), shrink,
                                        data=SimpleNamespace(n_features=n_in, n_classes=n_out))
        assert net.sizes[0] == n_in and net.sizes[-1] == n_out, f
        assert model.net is net
