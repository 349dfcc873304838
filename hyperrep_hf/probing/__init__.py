"""Stage 4, probing: probes, baselines, evaluation, the peers' protocol, probe heads, metrics.

Linear / MLP probes and metrics (``probes``), baselines (``baselines``), evaluation of a model on zoos with its
report, plots and OOD study (``evaluation``), the peers' protocol (``protocols``), probe heads saved into a model
folder (``probe_heads``) and the offline ``evaluate`` metric modules (``metrics/``, loaded by path).
"""

from .probes import (
    MLPProbe,
    ProbeReport,
    ProbeResult,
    RidgeProbe,
    SoftmaxProbe,
    fit_mlp_probes,
    fit_probes,
    kendall_tau,
    metric_path,
    r2_score,
    reconstruction_r2,
)

__all__ = [
    "MLPProbe",
    "ProbeReport",
    "ProbeResult",
    "RidgeProbe",
    "SoftmaxProbe",
    "fit_mlp_probes",
    "fit_probes",
    "kendall_tau",
    "metric_path",
    "r2_score",
    "reconstruction_r2",
]
