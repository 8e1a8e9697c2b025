"""A whole (small) trained crossbar network as one ngspice netlist with behavioural neurons.

The free phase's fixed point is a DC operating point: every neuron j of hidden layer k is a
behavioural voltage source ``s<k>_<j>`` holding ``kv * rho(h)`` (kv = v_read / input_range
volts per state unit), where h sums the sense currents of the arrays that feed it, converted
back to weight units:

- forward read of projection W (rows driven by the source layer's neuron voltages or the input
  sources, differential column pairs sensed by 0 V sources ``VF<name>_<j>p`` / ``n``):
  ``alpha (I+ - I-) / c``;
- tied feedback (transposed read of the same devices, drawn as a second copy of the array since
  a DC circuit cannot time-multiplex one array): column pairs driven by +-kv s_{k+1} through
  behavioural inverters, rows sensed by ``VB<name>_<i>``: ``beta_k I / c``;

with ``c = kv (G_max - G_min) / S`` amperes per weight-and-state unit, plus the bias.  ngspice's
Newton solve of ``.op`` then lands on the fixed point the settling loop converges to (ideal
wires and periphery), which makes the netlist an independent check of the whole network.
Every interpolated string passes through :func:`crossbar_ep.circuit.spice.netlist_text`.
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.circuit.spice import finish_netlist, netlist_text
from crossbar_ep.errors import CrossbarEPError

MAX_DEVICES = 40000


def network_netlist(net, crossbars: dict, x: np.ndarray, title: str = "crossbar-ep network"
                    ) -> str:
    """Netlist of the free phase of ``net`` (all hidden-to-hidden and input matrices on the
    differential crossbars ``crossbars``) for one input sample x (n_in,)."""
    L = net.L
    cbs = [cb for cb in crossbars.values()]
    if not cbs:
        raise CrossbarEPError("no crossbar arrays in this run")
    per = cbs[0].per
    kv = per.v_read_V / per.input_range
    act = net.activation
    names = {p.name for p in net.projections if p.dst <= L}
    missing = sorted(n for n in names if n not in crossbars)
    if missing:
        raise CrossbarEPError(f"matrices {', '.join(missing)} are not on crossbars; the network "
                              f"netlist needs every hidden-layer matrix on a crossbar")
    if not all(cb.differential for cb in cbs):
        raise CrossbarEPError("the network netlist needs crossbar.signed: differential")
    n_dev = 2 * sum(crossbars[n].n_in * crossbars[n].n_out for n in names)
    n_dev += 2 * sum(crossbars[f.tied].n_in * crossbars[f.tied].n_out
                     for f in net.feedbacks if f.tied)
    if n_dev > MAX_DEVICES:
        raise CrossbarEPError(f"the network has {n_dev} devices (limit {MAX_DEVICES}): export "
                              f"single tiles of a net this size")
    for f in net.feedbacks:
        if not f.tied:
            raise CrossbarEPError(f"feedback {f.name} is a random (digital) matrix; the network "
                                  f"netlist needs tied (symmetric) feedback")
    out = [f"* {netlist_text(title)}",
           "* " + netlist_text(f"free phase of a {'-'.join(map(str, net.sizes))} FRE-RNN as a "
                               f"DC operating point; {kv:g} V per state unit; neurons s<k>_<j> "
                               f"= {kv:g} * {act}(h) V")]
    matrices = [*crossbars, *(f.name for f in net.feedbacks)]
    ident = {n: netlist_text(n, ident=True) for n in matrices}    # element and node names
    x = np.clip(np.asarray(x, float), -per.input_range, per.input_range)

    def node(layer, j):
        return f"x{j}" if layer == 0 else f"s{layer}_{j}"

    for j, v in enumerate(x):
        out.append(f"VX{j} x{j} 0 DC {v * kv:.17g}")
    h_terms = {(k, j): [] for k in range(1, L + 1) for j in range(net.sizes[k])}
    for p in net.projections:
        if p.dst > L:
            continue
        cb, pn = crossbars[p.name], ident[p.name]
        gp, gn = cb.conductances()
        c = cb.current_factor()             # A per (weight x state) unit
        for j in range(cb.n_out):
            for sign, g in (("p", gp), ("n", gn)):
                col = f"f{pn}_{j}{sign}"
                for i in range(cb.n_in):
                    out.append(f"RF{pn}_{i}_{j}{sign} {node(p.src, i)} {col} "
                               f"{1.0 / g[j, i]:.17g}")
                out.append(f"VF{pn}_{j}{sign} {col} 0 DC 0")
            h_terms[(p.dst, j)].append(f"{p.scale / c:.17g}*(i(VF{pn}_{j}p)-"
                                       f"i(VF{pn}_{j}n))")
    inverted = set()
    for f in net.feedbacks:
        cb = crossbars[f.tied]
        gp, gn = cb.conductances()
        c = cb.current_factor()
        for j in range(cb.n_out):          # the source layer's neurons drive the column pairs
            src = node(f.src, j)
            if src not in inverted:
                out.append(f"BINV_{src} m{src} 0 V=-V({src})")
                inverted.add(src)
        fn = ident[f.name]
        for i in range(cb.n_in):
            row = f"b{fn}_{i}"
            for j in range(cb.n_out):
                src = node(f.src, j)
                out.append(f"RB{fn}_{i}_{j}p {src} {row} {1.0 / gp[j, i]:.17g}")
                out.append(f"RB{fn}_{i}_{j}n m{src} {row} {1.0 / gn[j, i]:.17g}")
            out.append(f"VB{fn}_{i} {row} 0 DC 0")
            h_terms[(f.dst, i)].append(f"{f.scale / c:.17g}*i(VB{fn}_{i})")
    for (k, j), terms in h_terms.items():
        b = float(net.b[k][j]) if k in net.b else 0.0
        h = "+".join(terms + [f"{b:.17g}"])
        rho = {"tanh": f"tanh({h})", "shifted_sigmoid": f"1/(1+exp(-4*({h}-0.5)))"}.get(
            act, f"min(max({h},0),1)")
        out.append(f"BS{k}_{j} s{k}_{j} 0 V={kv:.17g}*{rho}")
    out += [".options gmin=1e-20 reltol=1e-12 abstol=1e-20 vntol=1e-15",
            ".op", ".control", "set numdgt=15", "op"]
    nodes = [f"v(s{k}_{j})" for k in range(1, L + 1) for j in range(net.sizes[k])]
    for s in range(0, len(nodes), 8):
        out.append("print " + " ".join(nodes[s:s + 8]))
    out += ["quit", ".endc", ".end", ""]
    return finish_netlist(out)


def states_from_values(values: dict, net, kv: float) -> list:
    """Hidden states [s_1, ..., s_L] (state units) from run_ngspice's printed node voltages."""
    try:
        return [np.array([values[f"v(s{k}_{j})"] for j in range(net.sizes[k])]) / kv
                for k in range(1, net.L + 1)]
    except KeyError as exc:
        raise CrossbarEPError(f"ngspice printed no {exc.args[0]}") from None
