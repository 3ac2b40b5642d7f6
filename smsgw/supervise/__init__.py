"""Our own autoscaler for queue workers: a scaling policy and a process supervisor."""

from smsgw.supervise.policy import Decision, Scaler, ScalingPolicy, desired_workers

__all__ = ["Decision", "Scaler", "ScalingPolicy", "desired_workers"]
