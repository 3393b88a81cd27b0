"""Training: what B1 and B2 share (``common``: accelerate, checkpoints, resume, disk plan,
throughput), stage 1's loss and retrieval metrics (``stage1``), stage 2's model assembly and
loss (``stage2``) and the FLOP count behind B2's MFU (``flops``)."""
