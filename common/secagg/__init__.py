"""Secure aggregation (SecAgg, Bonawitz et al. 2017): the coordinator learns the sum of the sites' vectors only.

Torch-free and transport-free: `site.SecAggSite` and `coordinator.SecAggCoordinator` are state machines that
exchange the plain dataclasses of `protocol`; `field` encodes floats, `masking` expands seeds into masks, `keys`
agrees and derives keys, `shamir` shares secrets, `noise` is each site's share of DP noise.
docs/secure-aggregation.md gives the threat model.
"""
