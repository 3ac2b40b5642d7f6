"""Which replicas are alive: each one beats into Redis; anyone can read the roll."""

from smsgw.replicas.heartbeat import BEAT_INTERVAL_S, BEAT_TTL_S, Heartbeat, alive, beats

__all__ = ["BEAT_INTERVAL_S", "BEAT_TTL_S", "Heartbeat", "alive", "beats"]
