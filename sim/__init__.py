"""SimPy model of MoE serving with size-B expert queues. Never imports torch.

Implements ``docs/system-model.md``: ``sim.workload`` (arrivals, routing),
``sim.queues`` (batch formation), ``sim.engine`` (the SimPy model of devices,
combine and completion), ``sim.host`` and ``sim.host_terms`` (§8: the CPU
server's shared host, simulated event by event), ``sim.naive`` (the plain
process-per-request model it is checked against), ``sim.output`` (the ``traces.serving`` schema),
``sim.sweep`` (grids on Dask), ``sim.check`` and ``sim.terms`` (sim vs a
measured run, with its measured terms), ``sim.chrome_trace`` (an event trace
for Perfetto) and ``sim.cli`` (``sim run``, ``sim sweep``, ``sim check``).
"""

__all__: list[str] = []
