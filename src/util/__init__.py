"""What every stage uses: atomic file writes, devices and dtypes, resolving weights by hub id or
folder, image and video helpers, the one line an error is reported by, and the safe reader of
Lightning checkpoints."""
