"""Synthetic data made by this project for demos and tests: DeepFashion-like figures with their
exact scorer (``figures``), signing videos (``signing``), and the two demos."""
