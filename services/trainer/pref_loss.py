"""Preference losses on sequence log-probabilities: DPO (sigmoid, hinge, IPO), ORPO, SimPO, KTO.

The formulas are TRL's (`DPOTrainer.dpo_loss`, `KTOTrainer.kto_loss`) combined the way
LLaMA-Factory's CustomDPOTrainer / CustomKTOTrainer combine them, so a LLaMA-Factory YAML
(`pref_loss`, `pref_beta`, `pref_ftx`, `simpo_gamma`, `dpo_label_smoothing`,
`kto_chosen_weight`, `kto_rejected_weight`) means the same thing here. They are written
out instead of subclassing TRL's trainers because those bring their own data pipeline,
collators and logging, while this project's Trainer subclass already owns tokenization,
data order, resume and trainer_log.jsonl; the functions below are the whole of what TRL
would add (tests/unit/test_trainer_prefs.py checks each against a hand computation).

Conventions (LLaMA-Factory's): sigmoid and hinge compare *summed* response log-probs;
ipo, orpo and simpo use the per-token *average*. Rewards are beta x (policy - reference)
log-probs, or beta x the policy's average log-prob for the reference-free orpo/simpo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from services.trainer.loss import causal_lm
from services.trainer.templates import IGNORE_INDEX

AVERAGED_LOSSES = frozenset({"ipo", "orpo", "simpo"})


@dataclass(frozen=True)
class PrefParams:
    """The preference keys of a TrainConfig, as the losses need them."""

    loss_type: str = "sigmoid"  # sigmoid | hinge | ipo | orpo | simpo (stage dpo)
    beta: float = 0.1
    ftx: float = 0.0
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5
    kto_chosen_weight: float = 1.0
    kto_rejected_weight: float = 1.0


@dataclass
class PairLoss:
    """Per-pair losses and the rewards TRL logs for them."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


@dataclass
class KtoLoss:
    losses: torch.Tensor  # desirable examples' losses, then undesirable ones'
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    kl: torch.Tensor


# ---- log-probabilities -------------------------------------------------------------------


def logps_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[Any, Any]:
    """(sum of the label tokens' log-probs, number of label tokens) per row.

    LLaMA-Factory's `get_batch_logps`: position t predicts label t+1; -100 is ignored.
    """
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    mask = labels != IGNORE_INDEX
    labels[~mask] = 0
    per_token = torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2)
    return (per_token * mask).sum(-1), mask.sum(-1)


def sequence_logps(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    label_only: bool,
) -> tuple[Any, Any]:
    """(summed log-probs, label count) of each row's labelled tokens under `model`.

    With `label_only` the output head runs only at labelled positions (see loss.py): the
    same numbers without the batch x length x vocab logits tensor.
    """
    if not label_only:
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return logps_from_logits(out.logits.float(), labels)
    m = causal_lm(model)
    hidden = m.get_decoder()(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX
    logits = m.get_output_embeddings()(hidden[:, :-1, :][keep]).float()
    token_logps = -F.cross_entropy(logits, target[keep], reduction="none")
    rows = keep.nonzero()[:, 0]
    sums = torch.zeros(labels.shape[0], dtype=token_logps.dtype, device=token_logps.device)
    return sums.index_add(0, rows, token_logps), keep.sum(-1)


# ---- stage dpo ---------------------------------------------------------------------------


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    p: PrefParams,
) -> PairLoss:
    """TRL's sigmoid (with conservative label smoothing), hinge and IPO losses."""
    logits = (chosen - rejected) - (ref_chosen - ref_rejected)
    if p.loss_type == "sigmoid":
        ls = p.label_smoothing
        losses = -F.logsigmoid(p.beta * logits) * (1 - ls) - F.logsigmoid(-p.beta * logits) * ls
    elif p.loss_type == "hinge":
        losses = torch.relu(1 - p.beta * logits)
    elif p.loss_type == "ipo":  # beta is IPO's tau
        losses = (logits - 1 / (2 * p.beta)) ** 2
    else:
        raise ValueError(f"not a reference-based preference loss: {p.loss_type}")
    return PairLoss(
        losses,
        p.beta * (chosen - ref_chosen).detach(),
        p.beta * (rejected - ref_rejected).detach(),
    )


def orpo_loss(chosen_avg: torch.Tensor, rejected_avg: torch.Tensor, p: PrefParams) -> PairLoss:
    """ORPO: the chosen answer's NLL plus beta x the odds-ratio loss (no reference)."""
    log_odds = (chosen_avg - rejected_avg) - (
        torch.log1p(-torch.exp(chosen_avg)) - torch.log1p(-torch.exp(rejected_avg))
    )
    losses = -chosen_avg + p.beta * -F.logsigmoid(log_odds)
    return PairLoss(losses, p.beta * chosen_avg.detach(), p.beta * rejected_avg.detach())


def simpo_loss(chosen_avg: torch.Tensor, rejected_avg: torch.Tensor, p: PrefParams) -> PairLoss:
    """SimPO: a margin of gamma between length-normalized log-probs (no reference)."""
    logits = (chosen_avg - rejected_avg) - p.simpo_gamma / p.beta
    losses = -F.logsigmoid(p.beta * logits)
    return PairLoss(losses, p.beta * chosen_avg.detach(), p.beta * rejected_avg.detach())


def pair_loss(
    policy: tuple[torch.Tensor, torch.Tensor],
    lengths: torch.Tensor,
    reference: tuple[torch.Tensor, torch.Tensor] | None,
    p: PrefParams,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The batch loss and its metrics from summed log-probs of [chosen..., rejected...].

    `policy` and `reference` are (summed log-probs, label counts) over 2B rows, chosen
    first; `lengths` are the policy rows' label counts.
    """
    logps, _ = policy
    n = logps.shape[0] // 2
    avg = logps / lengths.clamp(min=1)
    use = avg if p.loss_type in AVERAGED_LOSSES else logps
    chosen, rejected = use[:n], use[n:]
    if p.loss_type == "orpo":
        out = orpo_loss(chosen, rejected, p)
    elif p.loss_type == "simpo":
        out = simpo_loss(chosen, rejected, p)
    else:
        if reference is None:
            raise ValueError(f"pref_loss {p.loss_type} needs reference log-probs")
        ref_sum, ref_len = reference
        ref = ref_sum / ref_len.clamp(min=1) if p.loss_type in AVERAGED_LOSSES else ref_sum
        out = dpo_loss(chosen, rejected, ref[:n], ref[n:], p)
    sft = -avg[:n]
    losses = out.losses + p.ftx * sft if p.ftx > 1e-6 else out.losses
    cr, rr = out.chosen_rewards, out.rejected_rewards
    metrics = {
        "rewards/chosen": cr.mean().item(),
        "rewards/rejected": rr.mean().item(),
        "rewards/accuracies": (cr > rr).float().mean().item(),
        "rewards/margins": (cr - rr).mean().item(),
        "logps/chosen": chosen.detach().mean().item(),
        "logps/rejected": rejected.detach().mean().item(),
    }
    if p.loss_type == "orpo":
        metrics["sft_loss"] = sft.detach().mean().item()
        metrics["odds_ratio_loss"] = ((out.losses.detach() - sft.detach()) / p.beta).mean().item()
    return losses.mean(), metrics


# ---- stage kto ---------------------------------------------------------------------------


def kto_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    policy_kl: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    ref_kl: torch.Tensor,
    p: PrefParams,
) -> KtoLoss:
    """TRL's KTO loss: each answer against a KL baseline from mismatched prompt/answers."""
    kl = (policy_kl - ref_kl).mean().detach().clamp(min=0)
    chosen_ratio = chosen - ref_chosen
    rejected_ratio = rejected - ref_rejected
    chosen_losses = 1 - torch.sigmoid(p.beta * (chosen_ratio - kl))
    rejected_losses = 1 - torch.sigmoid(p.beta * (kl - rejected_ratio))
    losses = torch.cat(
        (p.kto_chosen_weight * chosen_losses, p.kto_rejected_weight * rejected_losses), 0
    )
    return KtoLoss(losses, p.beta * chosen_ratio.detach(), p.beta * rejected_ratio.detach(), kl)


def feedback_loss(
    policy: tuple[torch.Tensor, torch.Tensor],
    policy_kl: torch.Tensor,
    reference: tuple[torch.Tensor, torch.Tensor],
    tags: torch.Tensor,
    p: PrefParams,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The KTO batch loss and its metrics, as LLaMA-Factory's CustomKTOTrainer makes them.

    Metrics are sums and counts (`rewards/chosen_sum`, `count/chosen`, ...): a micro-batch
    may hold no desirable or no undesirable answer, so means are formed at logging time
    over every micro-batch since the last log (`aggregate_metrics`).
    """
    logps, lengths = policy
    ref_logps, ref_kl = reference
    out = kto_loss(
        logps[tags], logps[~tags], policy_kl, ref_logps[tags], ref_logps[~tags], ref_kl, p
    )
    loss = out.losses.nanmean()
    n_chosen = int(tags.sum())
    if p.ftx > 1e-6 and n_chosen:  # LLaMA-Factory's rescaling of the SFT term
        sft = -(logps[tags] / lengths[tags].clamp(min=1))
        loss = loss + p.ftx * sft.nanmean() / n_chosen * len(tags)
    metrics: dict[str, float] = {"kl": out.kl.item()}
    for split, rewards, lp in (
        ("chosen", out.chosen_rewards, logps[tags]),
        ("rejected", out.rejected_rewards, logps[~tags]),
    ):
        if len(rewards):
            metrics[f"rewards/{split}_sum"] = rewards.nansum().item()
            metrics[f"logps/{split}_sum"] = lp.detach().nansum().item()
            metrics[f"count/{split}"] = float(len(rewards))
    return loss, metrics


# ---- logging -----------------------------------------------------------------------------


def aggregate_metrics(stored: dict[str, list[float]], prefix: str = "") -> dict[str, float]:
    """Per-micro-batch metrics -> the values logged for the steps since the last log.

    Plain metrics are averaged (LLaMA-Factory's DPO); `X/split_sum` with `count/split` are
    summed and divided (its KTO), and KTO's reward margin is formed from the two means.
    `kl` is averaged too.
    """
    out: dict[str, float] = {}
    for split in ("chosen", "rejected"):
        count = sum(stored.get(f"count/{split}", []))
        for key in ("rewards", "logps"):
            sums = stored.get(f"{key}/{split}_sum")
            if sums is not None and count:
                out[f"{prefix}{key}/{split}"] = sum(sums) / count
    for key, values in stored.items():
        if key.endswith("_sum") or key.startswith("count/") or not values:
            continue
        out[f"{prefix}{key}"] = sum(values) / len(values)
    chosen, rejected = out.get(f"{prefix}rewards/chosen"), out.get(f"{prefix}rewards/rejected")
    if f"{prefix}rewards/margins" not in out and chosen is not None and rejected is not None:
        out[f"{prefix}rewards/margins"] = chosen - rejected
    return {k: v for k, v in out.items() if not math.isnan(v)}
