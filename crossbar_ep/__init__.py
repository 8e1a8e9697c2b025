"""crossbar-ep: train feedback-regulated residual recurrent networks (FRE-RNN) with
Equilibrium Propagation, on an ideal digital backend or (later) on resistive crossbars."""

from .errors import CrossbarEPError, ConfigError, DataError

__version__ = "0.1.0"
__all__ = ["CrossbarEPError", "ConfigError", "DataError", "__version__"]
