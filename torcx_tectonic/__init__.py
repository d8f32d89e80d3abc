"""torcx-tectonic: keep the torcx configuration of a Kubernetes node in sync.

The package holds all the logic; the generator and the libexec scripts are
thin entry points. Data flows one way: gather facts, decide, act.
"""

__version__ = "0.1.0"
