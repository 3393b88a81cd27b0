"""Training: what B1 and B2 share (``common``: accelerate, checkpoints, resume, disk plan,
throughput) and stage 2's model assembly and loss (``stage2``)."""
