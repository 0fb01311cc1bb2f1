"""`tre check`: the isolation and compliance report of a running cluster (I/O and NCA)."""
