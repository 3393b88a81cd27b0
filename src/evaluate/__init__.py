"""C1 and C2's back-ends: generating the test set (``generate``), the C1 -> C2 hand-off
(``handoff``), the image metrics and FID (``metrics``, ``fid_weights``), pose accuracy
(``pose_accuracy``) and the temporal figures of videos (``temporal``)."""
