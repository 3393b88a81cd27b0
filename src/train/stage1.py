"""Stage 1 training: B1's loss and the retrieval metrics it reports.

The loss is the source-enhanced InfoNCE on cosine similarity: targets [t; s] against candidates
[f; s] at temperature 0.07, row i's positive is candidate i, plus 1e-4 x the mean absolute
difference between the extended sources [s; s] (raw) and the candidates [f; s] (so half of its
terms are zero), the L1 term exactly as the authors compute it. t and s are the raw CLIP
embeddings of the target and the source, f the unit-norm fusion embedding
(``src.models.fusion.FusionModel``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.fusion import FusionModel

TEMPERATURE = 0.07
L1_WEIGHT = 1e-4


def fusion_logits(target: torch.Tensor, source: torch.Tensor, fusion: torch.Tensor,
                  temperature: float = TEMPERATURE) -> torch.Tensor:
    """(2B, 2B) cosine similarities of the extended targets [t; s] against the candidates
    [f; s], divided by the temperature."""
    t_ext = F.normalize(torch.cat([target, source]).float(), dim=-1)
    c_ext = F.normalize(torch.cat([fusion, source]).float(), dim=-1)
    return t_ext @ c_ext.t() / temperature


def fusion_loss(target: torch.Tensor, source: torch.Tensor, fusion: torch.Tensor,
                temperature: float = TEMPERATURE, l1_weight: float = L1_WEIGHT) -> tuple[torch.Tensor, dict]:
    """Source-enhanced InfoNCE (mean over the 2B rows; row i's positive is candidate i) plus
    ``l1_weight`` x the mean absolute difference of the extended sources [s; s] and the
    candidates [f; s]. Inputs (B, D): raw ``target`` and ``source``, unit-norm ``fusion``.

    Returns (loss, stats) with stats ``infonce``, ``l1`` and the in-batch ``top1`` (share of the
    first B rows, the targets, whose own fusion embedding scores highest), all detached."""
    logits = fusion_logits(target, source, fusion, temperature)
    labels = torch.arange(logits.shape[0], device=logits.device)
    infonce = F.cross_entropy(logits, labels)
    l1 = F.l1_loss(torch.cat([fusion, source]).float(), torch.cat([source, source]).float())
    loss = infonce + l1_weight * l1
    b = target.shape[0]
    with torch.no_grad():
        top1 = (logits[:b].argmax(dim=1) == labels[:b]).float().mean()
    return loss, {"infonce": infonce.detach(), "l1": l1.detach(), "top1": top1}


def retrieval_ranks(target: torch.Tensor, fusion: torch.Tensor) -> torch.Tensor:
    """Rank (1 = best) of each target's own fusion embedding among all fusion embeddings, by
    cosine similarity; ties count against the positive."""
    sim = F.normalize(target.float(), dim=-1) @ F.normalize(fusion.float(), dim=-1).t()
    positive = sim.diagonal().unsqueeze(1)
    return (sim >= positive).sum(dim=1)


def retrieval_metrics(target: torch.Tensor, fusion: torch.Tensor, ks=(1, 5)) -> dict:
    """top-k accuracies and mean rank of the positive over an evaluation set (N, D) x (N, D)."""
    ranks = retrieval_ranks(target, fusion).float()
    out = {f"top{k}": float((ranks <= k).float().mean()) for k in ks}
    out["mean_rank"] = float(ranks.mean())
    out["count"] = int(ranks.numel())
    return out


@torch.no_grad()
def embed_dataset(model: FusionModel, batches, device=None, gather=None, temperature: float = TEMPERATURE,
                  l1_weight: float = L1_WEIGHT) -> dict:
    """Embeddings of every (source, pose, target) batch in eval mode, concatenated on the CPU and
    ordered by the batches' ``index``; ``loss`` is each batch's training loss, averaged over
    samples.
    ``batches`` yields dicts as FusionDataset gives. ``gather`` (e.g. accelerate's
    ``gather_for_metrics``) collects the results of every process."""
    was_training = model.training
    model.eval()
    parts: dict[str, list] = {"source": [], "pose": [], "fusion": [], "target": [], "index": [], "loss": []}
    for batch in batches:
        args = [batch[k] if device is None else batch[k].to(device) for k in ("source", "pose", "target")]
        out = model(*args)
        loss, _ = fusion_loss(out["target"], out["source"], out["fusion"], temperature, l1_weight)
        out["index"] = torch.as_tensor(batch["index"], device=out["fusion"].device)
        out["loss"] = loss.detach().float().expand(out["index"].shape[0])  # per sample: a weighted mean
        if gather is not None:
            out = gather({k: out[k].contiguous() for k in parts})
        for k in parts:
            parts[k].append(out[k].cpu() if k == "index" else out[k].float().cpu())
    model.train(was_training)
    if not parts["index"]:
        raise ValueError("no batches to embed")
    result = {k: torch.cat(v) for k, v in parts.items()}
    order = result["index"].argsort()
    result = {k: v[order] for k, v in result.items()}
    result["loss"] = float(result["loss"].mean())
    return result


def evaluate_retrieval(model: FusionModel, batches, device=None, gather=None, temperature: float = TEMPERATURE,
                       l1_weight: float = L1_WEIGHT) -> dict:
    """Retrieval metrics (top1, top5, mean_rank, count) and mean loss over an evaluation set."""
    emb = embed_dataset(model, batches, device, gather, temperature, l1_weight)
    return {**retrieval_metrics(emb["target"], emb["fusion"]), "loss": emb["loss"]}


__all__ = [
    "L1_WEIGHT", "TEMPERATURE", "embed_dataset", "evaluate_retrieval", "fusion_logits", "fusion_loss",
    "retrieval_metrics", "retrieval_ranks",
]
