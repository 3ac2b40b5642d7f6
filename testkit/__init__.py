"""Test support shared by tests/ and bench/; not part of the smsgw wheel (pyproject's
package discovery includes `smsgw*` only).

- `fake_provider`: the fake SMS provider (Twilio, Vonage and Airtel IQ shapes, fault
  injection from `faults`, its own segment counter `segment_count`), in-process or as
  `python -m testkit.fake_provider`; `fast_fake`: a bare fake Twilio for transport costs.
- `services`: private redis-server (optionally persistent) and dynalite on free ports.
- `processes`: start a server with a port file, wait until it is ready, stop it.
- `harness` and `scenarios`: the fault suite's skeleton (smsgw replicas, fake provider
  processes, an open-loop load) and its scenarios, asserted by tests/faults and tabled by
  `bench.faults_table`.

It imports smsgw and nothing from tests/ or bench/ (tests/test_layers.py checks it).
"""
