"""`smsgw supervise`: our own autoscaler for queue workers (the policy is smsgw/scaling.py)."""

from smsgw.supervise.supervisor import (
    Supervisor,
    SupervisorMetrics,
    add_supervise_arguments,
    run_supervise,
)

__all__ = [
    "Supervisor",
    "SupervisorMetrics",
    "add_supervise_arguments",
    "run_supervise",
]
