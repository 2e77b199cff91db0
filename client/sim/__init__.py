"""The lab: whole federations on one machine (real processes), data sources, partitioning, reports."""
