"""Our own autoscaler for queue workers: a scaling policy and a process supervisor."""

from smsgw.supervise.policy import Decision, Scaler, ScalingPolicy, desired_workers
from smsgw.supervise.supervisor import (
    Supervisor,
    SupervisorMetrics,
    add_supervise_arguments,
    run_supervise,
)

__all__ = [
    "Decision",
    "Scaler",
    "ScalingPolicy",
    "Supervisor",
    "SupervisorMetrics",
    "add_supervise_arguments",
    "desired_workers",
    "run_supervise",
]
