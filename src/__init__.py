"""FPDM: pose-guided person image synthesis with a fusion embedding and a diffusion model."""
