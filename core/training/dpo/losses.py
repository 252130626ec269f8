"""DPO losses: the pair log-probs under policy and reference, and the sigmoid (DPO), IPO and RPO terms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


class LossSettings(Protocol):
    """The DPOSettings fields the loss reads (settings import LOSSES from here, so not the other way round)."""

    loss: str
    beta: float
    sft_weight: float


@dataclass
class PairLogps:
    """Summed completion log-probs of each pair under the policy and the reference, and completion lengths."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    reference_chosen: torch.Tensor
    reference_rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor

    @property
    def chosen_logratio(self) -> torch.Tensor:
        """log pi(chosen) - log pi_ref(chosen)."""
        return self.policy_chosen - self.reference_chosen

    @property
    def rejected_logratio(self) -> torch.Tensor:
        """log pi(rejected) - log pi_ref(rejected)."""
        return self.policy_rejected - self.reference_rejected


def sigmoid_loss(logps: PairLogps, beta: float) -> torch.Tensor:
    """DPO: -log sigmoid(beta * (chosen log-ratio - rejected log-ratio)), per pair."""
    return -F.logsigmoid(beta * (logps.chosen_logratio - logps.rejected_logratio))


def ipo_loss(logps: PairLogps, beta: float) -> torch.Tensor:
    """IPO (Azar et al. 2023, eq. 17): (h - 1/(2 beta))^2 per pair, h from per-token mean log-ratios.

    Averaging over completion tokens (as TRL does, agreed with the IPO authors) keeps the
    target 1/(2 beta) meaningful whatever the answers' lengths.
    """
    h = (logps.chosen_logratio / logps.chosen_tokens.clamp(min=1)
         - logps.rejected_logratio / logps.rejected_tokens.clamp(min=1))
    return (h - 1 / (2 * beta)) ** 2


LOSSES: dict[str, Callable[[PairLogps, float], torch.Tensor]] = {"sigmoid": sigmoid_loss, "ipo": ipo_loss}


def chosen_nll(logps: PairLogps) -> torch.Tensor:
    """Mean per-token negative log-likelihood of each chosen answer under the policy."""
    return -logps.policy_chosen / logps.chosen_tokens.clamp(min=1)


def total_loss(logps: PairLogps, settings: LossSettings) -> torch.Tensor:
    """The batch loss: the preference loss plus sft_weight times the chosen answers' NLL."""
    return (LOSSES[settings.loss](logps, settings.beta) + settings.sft_weight * chosen_nll(logps)).mean()


def step_metrics(logps: PairLogps, loss: torch.Tensor, beta: float) -> dict:
    """Loss, implicit rewards beta * log-ratio, their margin, how often chosen out-rewards rejected,
    and the chosen answers' mean token NLL (rising NLL is the first sign of collapse)."""
    chosen_reward = beta * logps.chosen_logratio.detach()
    rejected_reward = beta * logps.rejected_logratio.detach()
    margin = chosen_reward - rejected_reward
    return {"loss": float(loss.detach()), "reward_chosen": float(chosen_reward.mean()),
            "reward_rejected": float(rejected_reward.mean()), "margin": float(margin.mean()),
            "accuracy": float((margin > 0).float().mean()), "chosen_nll": float(chosen_nll(logps).detach().mean())}


def sequence_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed log-probs of each row's completion tokens."""
    completion_mask = batch["completion_mask"]
    width = completion_mask.shape[1]
    # Only positions from the first completion token on need logits (prompts are long and
    # alike: 576 image tokens for LLaVA-1.5), which on a 32k vocabulary saves most activation memory.
    keep = width - int(completion_mask.any(dim=0).nonzero()[0])
    inputs = {k: v for k, v in batch.items() if k != "completion_mask"}
    logits = model(**inputs, logits_to_keep=keep + 1, use_cache=False).logits[:, :-1].float()
    targets = batch["input_ids"][:, -keep:]
    token_logps = torch.log_softmax(logits, dim=-1).gather(2, targets.unsqueeze(2)).squeeze(2)
    return (token_logps * completion_mask[:, -keep:]).sum(dim=1)


def preference_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> PairLogps:
    """Policy log-probs (with gradients) and reference log-probs (adapter disabled, no gradients)."""
    n_pairs = batch["input_ids"].shape[0] // 2
    policy = sequence_logps(model, batch)
    with torch.no_grad(), model.disable_adapter():
        reference = sequence_logps(model, batch)
    tokens = batch["completion_mask"].sum(dim=1).to(policy.dtype)
    return PairLogps(policy_chosen=policy[:n_pairs], policy_rejected=policy[n_pairs:],
                     reference_chosen=reference[:n_pairs], reference_rejected=reference[n_pairs:],
                     chosen_tokens=tokens[:n_pairs], rejected_tokens=tokens[n_pairs:])
