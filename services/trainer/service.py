"""The trainer's service layer: train, evaluate and chat with an LLM, and turn evaluation
failures into preference data.

`tunestack llm train|eval|chat|prefs` (and a queue job) are thin adapters over these functions:
they parse arguments, call one of them, and print. Defaults that are machine settings
rather than experiment settings (threads, eval batch size, max new tokens, where
dataset_info.json is) come from TrainSettings here, so every surface gets the same ones.

Model names are resolved with `Registry.ensure`: naming a bundled base model provisions
it from its installed package; nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from services.common.distributed import plan_launch
from services.common.logs import quiet_libraries
from services.common.registry import Registry
from services.trainer.chat import ChatSession
from services.trainer.config import load_config, parse_overrides
from services.trainer.evaluate import EvalResult, Progress, evaluate
from services.trainer.inference import load_llm
from services.trainer.launch import train_data_parallel
from services.trainer.prefs_from_eval import PrefsResult, build_prefs
from services.trainer.settings import TrainSettings

if TYPE_CHECKING:
    from services.trainer.train import TrainResult

Say = Callable[[str], None]


@dataclass(frozen=True)
class TrainRequest:
    """A LLaMA-Factory style YAML and `key=value` overrides (YAML scalars) on top of it."""

    config: Path
    overrides: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EvalLlmRequest:
    """`llm eval`: generate for `datasets` and score; None means the settings' default."""

    run: str  # a trained run or a base model (registry name), or a model path
    datasets: list[str]  # names from dataset_info.json
    dataset_dir: Path | None = None  # default: the run's training data dir, else settings
    max_samples: int | None = None
    max_new_tokens: int | None = None
    batch_size: int | None = None
    output_dir: Path | None = None  # default: reports/<run>/predict-<datasets>/
    template: str | None = None  # default: the run's template
    system: str | None = None  # default: the run's default_system


@dataclass(frozen=True)
class PrefsRequest:
    """`llm prefs`: a RAG evaluation's rows -> a preference dataset in `out_dir`."""

    report: Path  # JSONL of question, context, answer, reference (, citation)
    out_dir: Path  # gets <name>.json and a dataset_info.json entry with "ranking": true
    name: str = "rag_prefs"
    citation_pairs: bool = True  # also the right passage cited over a wrong one


def train(
    settings: TrainSettings,
    req: TrainRequest,
    say: Say,
    on_step: Callable[[int, int, str], None] | None = None,
) -> TrainResult | None:
    """Validate the config and train; an interrupted run resumes from its last checkpoint
    when the same request is made again. `on_step(step, max_steps, message)` follows the
    steps (a queued job's progress) in a one-process run.

    With several processes wanted (NPROC_PER_NODE, NNODES, FORCE_TORCHRUN: LLaMA-Factory's
    launcher variables) the run goes through torchrun; on a multi-node run only node 0
    gets a result (None elsewhere: node 0 writes the outputs).
    """
    cfg, ignored = load_config(req.config, parse_overrides(req.overrides))
    launch = plan_launch(settings)
    if launch is not None:
        return train_data_parallel(settings, cfg, req.config, req.overrides, launch, say)
    # train imports torch and transformers at module level (seconds); the CLI imports this
    # module for every `llm` command, so only `llm train` pays for them.
    from services.trainer.train import run_training  # heavy: torch + transformers

    return run_training(
        cfg,
        settings,
        config_path=req.config,
        ignored_keys=ignored,
        say=say,
        progress=settings.progress,
        on_step=on_step,
    )


def evaluate_llm(
    settings: TrainSettings, req: EvalLlmRequest, progress: Progress | None = None
) -> EvalResult:
    """BLEU-4 and ROUGE-1/2/L of greedy answers, written as LLaMA-Factory's do_predict
    files; a trained run also records the scores in its registry record."""
    quiet_libraries()
    return evaluate(
        req.run,
        req.datasets,
        Registry(settings.home_dir),
        dataset_dir=req.dataset_dir,
        fallback_dataset_dir=settings.dataset_dir,
        max_samples=req.max_samples,
        max_new_tokens=req.max_new_tokens or settings.max_new_tokens,
        batch_size=req.batch_size or settings.eval_batch_size,
        output_dir=req.output_dir,
        template=req.template,
        system=req.system,
        progress=progress,
        threads=settings.threads,
    )


def prefs_from_eval(settings: TrainSettings, req: PrefsRequest) -> PrefsResult:
    """Preference pairs (reference answer with its citation over the model's wrong, uncited
    or over-cited answer, and, with `citation_pairs`, over the reference citing a wrong
    passage) for the exact prompt the RAG API serves; train them with stage: dpo."""
    return build_prefs(req.report, req.out_dir, req.name, citation_pairs=req.citation_pairs)


def open_chat(
    settings: TrainSettings,
    run: str,
    *,
    template: str | None = None,
    system: str | None = None,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
) -> ChatSession:
    """Load `run` (base + merged adapter) for a multi-turn chat in its chat template."""
    quiet_libraries()
    llm = load_llm(
        run,
        Registry(settings.home_dir),
        template=template,
        system=system,
        threads=settings.threads,
    )
    return ChatSession(
        llm,
        system=system,
        max_new_tokens=max_new_tokens or settings.max_new_tokens,
        temperature=temperature,
    )


__all__ = [
    "ChatSession",
    "EvalLlmRequest",
    "EvalResult",
    "PrefsRequest",
    "PrefsResult",
    "TrainRequest",
    "evaluate_llm",
    "open_chat",
    "prefs_from_eval",
    "train",
]
