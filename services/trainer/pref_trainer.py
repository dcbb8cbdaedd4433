"""The Trainer for stage dpo and kto: the SFT trainer with a preference loss in its place.

It subclasses the SFT trainer (train.make_trainer_class), so data order, token counts,
checkpoints, resume, callbacks and trainer_log.jsonl are the ones SFT runs already have;
only the loss and its metrics change. The reference model is, as in LLaMA-Factory:
- LoRA without `ref_model`: the policy itself with its adapter disabled, so the base
  weights are held once (peft's `disable_adapter()` context);
- `ref_model` set, or full/freeze tuning: a separate frozen model (for full/freeze a copy
  of the base, since the policy's own weights move);
- pref_loss orpo / simpo: none at all.
Dropout is switched off in the policy (TRL and LLaMA-Factory do the same): with dropout,
the policy and the reference disagree at step 0 and the rewards start as noise.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch

from services.common.errors import BadInput
from services.common.registry import Registry
from services.trainer.config import TrainConfig
from services.trainer.loss import supports_label_only_logits
from services.trainer.model_loading import (
    BaseRef,
    load_reference_model,
    resolve_base,
    trainable_parameters,
)
from services.trainer.pref_loss import (
    PrefParams,
    aggregate_metrics,
    feedback_loss,
    pair_loss,
    sequence_logps,
)

Say = Callable[[str], None]


def pref_params(cfg: TrainConfig) -> PrefParams:
    return PrefParams(
        loss_type=cfg.pref_loss,
        beta=cfg.pref_beta,
        ftx=cfg.pref_ftx,
        label_smoothing=cfg.dpo_label_smoothing,
        simpo_gamma=cfg.simpo_gamma,
        kto_chosen_weight=cfg.kto_chosen_weight,
        kto_rejected_weight=cfg.kto_rejected_weight,
    )


def load_reference(
    cfg: TrainConfig, base: BaseRef, registry: Registry, model: Any, say: Say
) -> Any:
    """The frozen reference model of dpo/kto, or None when it is not a separate model
    (LoRA: the policy with its adapter disabled; orpo/simpo: no reference at all)."""
    if not cfg.use_ref_model:
        return None
    if cfg.ref_model is None and cfg.finetuning_type == "lora":
        say("Reference model: the base model with the adapter disabled (no second copy).")
        return None
    ref = resolve_base(cfg.ref_model, registry) if cfg.ref_model else base
    ref_model = load_reference_model(cfg, ref.hf_dir)
    ours = model.get_input_embeddings().weight.shape[0]
    theirs = ref_model.get_input_embeddings().weight.shape[0]
    if ours != theirs:
        raise BadInput(
            f"ref_model {ref.name} has a vocabulary of {theirs} tokens, the trained model "
            f"{ours}; log-probabilities of one tokenization cannot be compared.",
            hint="Use a reference model with the same tokenizer (usually the base model).",
        )
    _, total = trainable_parameters(ref_model)
    say(f"Reference model: {ref.name} (a frozen copy, {total:,} parameters).")
    return ref_model


def disable_dropout(model: Any) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def make_preference_trainer_class(base: type) -> type:
    """A subclass of the SFT trainer `base` that trains on pairs (dpo) or labels (kto)."""

    class PreferenceTrainer(base):
        def __init__(
            self,
            *a: Any,
            stage: str,
            params: PrefParams,
            use_ref: bool,
            ref_model: Any = None,
            **kw: Any,
        ) -> None:
            super().__init__(*a, **kw)
            self.stage = stage
            self.params = params
            self.use_ref = use_ref
            # The loss is a mean per micro-batch; the Trainer divides it by the
            # accumulation steps only when the model does not take num_items_in_batch.
            self.model_accepts_loss_kwargs = False
            disable_dropout(self.model)
            self.ref_model = ref_model
            self.ref_label_only = False
            if ref_model is not None:
                self.ref_model = ref_model.to(self.args.device).eval()
                self.ref_label_only = self.label_only and supports_label_only_logits(ref_model)
            self.stored: dict[str, dict[str, list[float]]] = {
                "train": defaultdict(list),
                "eval": defaultdict(list),
            }

        # ---- the reference -----------------------------------------------------------
        @contextlib.contextmanager
        def reference(self, model: Any) -> Iterator[tuple[Any, bool]]:
            """(model to score with, label-only head?) for the reference log-probs."""
            if self.ref_model is not None:
                with torch.no_grad():
                    yield self.ref_model, self.ref_label_only
                return
            unwrapped = self.accelerator.unwrap_model(model)
            with torch.no_grad(), unwrapped.disable_adapter():
                yield model, self.label_only

        def logps(
            self, model: Any, batch: dict[str, Any], prefix: str = "", label_only: bool = True
        ) -> tuple[Any, Any]:
            return sequence_logps(
                model,
                batch[f"{prefix}input_ids"],
                batch[f"{prefix}attention_mask"],
                batch[f"{prefix}labels"],
                label_only=label_only,
            )

        # ---- the loss -----------------------------------------------------------------
        def preference_loss(
            self, model: Any, batch: dict[str, Any]
        ) -> tuple[Any, dict[str, float]]:
            policy = self.logps(model, batch, label_only=self.label_only)
            if self.stage == "kto":
                with torch.no_grad():
                    policy_kl, _ = self.logps(model, batch, "kl_", self.label_only)
                with self.reference(model) as (ref, lo):
                    ref_logps, _ = self.logps(ref, batch, label_only=lo)
                    ref_kl, _ = self.logps(ref, batch, "kl_", lo)
                return feedback_loss(
                    policy, policy_kl, (ref_logps, ref_kl), batch["kto_tags"], self.params
                )
            reference = None
            if self.use_ref:
                with self.reference(model) as (ref, lo):
                    reference = self.logps(ref, batch, label_only=lo)
            return pair_loss(policy, policy[1], reference, self.params)

        def compute_loss(
            self,
            model: Any,
            inputs: Any,
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            self.note_batch(model, inputs)
            loss, metrics = self.preference_loss(model, inputs)
            self.store("eval" if not model.training else "train", metrics)
            return (loss, {}) if return_outputs else loss

        def prediction_step(
            self, model: Any, inputs: Any, prediction_loss_only: bool, ignore_keys: Any = None
        ) -> tuple[Any, None, None]:
            inputs = self._prepare_inputs(inputs)
            self.note_batch(model, inputs)
            with torch.no_grad():
                loss, metrics = self.preference_loss(model, inputs)
            self.store("eval", metrics)
            return loss.detach(), None, None

        # ---- metrics ------------------------------------------------------------------
        def store(self, split: str, metrics: dict[str, float]) -> None:
            for k, v in metrics.items():
                self.stored[split][k].append(v)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            """Add the reward metrics of the micro-batches since the last log.

            The final log of a run (train_runtime, ...) takes the steps after the last
            logging_steps boundary, so a run shorter than logging_steps still logs them.
            """
            split = "eval" if any(k.startswith("eval_") for k in logs) else "train"
            pending, self.stored[split] = self.stored[split], defaultdict(list)
            logs.update(aggregate_metrics(pending, "eval_" if split == "eval" else ""))
            super().log(logs, start_time)

    return PreferenceTrainer
