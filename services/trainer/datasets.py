"""LLaMA-Factory datasets: dataset_info.json, the alpaca and sharegpt formats, validation.

Datasets are named in `dataset_info.json` inside `dataset_dir`, exactly as LLaMA-Factory
reads them (file_name, formatting, ranking, columns, tags, num_samples), so a user's
existing data folder works unchanged. Every record is checked before a model is loaded:
a problem is reported with the file, the record index (and the JSONL line) and the field,
because "KeyError: 'conversations'" at step 1,400 of a run helps nobody. Records that
are well-formed but have nothing to learn from (an empty response) are not errors; they
are skipped and counted, as LLaMA-Factory skips them, and the count is shown.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from services.common.errors import BadInput

DATA_CONFIG = "dataset_info.json"
MAX_REPORTED_ERRORS = 15
DATA_SUFFIXES = (".json", ".jsonl", ".txt")

Role = Literal["user", "assistant", "tool", "system"]


@dataclass
class Message:
    role: Role
    content: str


@dataclass
class Conversation:
    """One record, normalized: alternating user/tool and assistant turns."""

    source: str  # "file record N" for messages
    index: int
    messages: list[Message]
    system: str | None = None
    tools: Any = None
    chosen: Message | None = None
    rejected: Message | None = None
    kto_tag: bool | None = None  # stage kto: True = a desirable response, False = not

    @property
    def prompt(self) -> list[Message]:
        return self.messages[:-1]

    @property
    def response(self) -> str:
        return self.messages[-1].content if self.messages else ""


@dataclass
class DatasetAttr:
    """One entry of dataset_info.json, with LLaMA-Factory's defaults."""

    name: str
    file_name: str | None = None
    hf_hub_url: str | None = None
    formatting: Literal["alpaca", "sharegpt", "openai"] = "alpaca"
    ranking: bool = False
    split: str = "train"
    subset: str | None = None
    num_samples: int | None = None
    # alpaca columns
    prompt: str | None = "instruction"
    query: str | None = "input"
    response: str | None = "output"
    history: str | None = None
    # common columns
    system: str | None = None
    tools: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    kto_tag: str | None = None
    # sharegpt columns and tags
    messages: str = "conversations"
    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str = "system"
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedDataset:
    attr: DatasetAttr
    conversations: list[Conversation]
    files: list[Path]
    empty: int = 0  # well-formed records with nothing to train on (skipped)
    records: int = 0


@dataclass
class Problems:
    """Collects record errors so the user sees them all at once, not one per run."""

    items: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, where: str, fld: str, msg: str) -> None:
        self.count += 1
        if len(self.items) < MAX_REPORTED_ERRORS:
            self.items.append(f"{where}, field '{fld}': {msg}")

    def raise_if_any(self, what: str, hint: str | None = None) -> None:
        if not self.count:
            return
        more = (
            f"\n  ... and {self.count - len(self.items)} more"
            if self.count > len(self.items)
            else ""
        )
        raise BadInput(
            f"{self.count} invalid record(s) in {what}:\n  " + "\n  ".join(self.items) + more,
            hint=hint
            or "Fix or remove these records. Formats: alpaca {instruction, input, output, "
            "system, history} or sharegpt {conversations: [{from, value}, ...]}, as "
            "declared in dataset_info.json.",
        )


# ---- dataset_info.json ----------------------------------------------------------------


def read_dataset_info(dataset_dir: Path) -> dict[str, Any]:
    path = dataset_dir / DATA_CONFIG
    if not path.is_file():
        raise BadInput(
            f"No {DATA_CONFIG} in {dataset_dir}.",
            hint="Set dataset_dir to the folder that holds dataset_info.json "
            "(LLaMA-Factory layout), e.g. dataset_dir: samples/llm_sft",
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise BadInput(f"{path} is not valid JSON: {e}") from e
    if not isinstance(info, dict):
        raise BadInput(f"{path} must be a JSON object of dataset name -> attributes.")
    return info


def dataset_attr(name: str, dataset_dir: Path) -> DatasetAttr:
    info = read_dataset_info(dataset_dir)
    if name not in info:
        raise BadInput(
            f"Dataset '{name}' is not defined in {dataset_dir / DATA_CONFIG}.",
            hint="Defined: " + (", ".join(sorted(info)) or "none"),
        )
    entry = info[name]
    where = f"{dataset_dir / DATA_CONFIG} entry '{name}'"
    if not isinstance(entry, dict):
        raise BadInput(f"{where} must be an object with file_name and formatting.")
    attr = DatasetAttr(name=name, raw=entry)
    if "file_name" in entry:
        attr.file_name = str(entry["file_name"])
    elif "hf_hub_url" in entry:
        attr.hf_hub_url = str(entry["hf_hub_url"])
    elif "ms_hub_url" in entry or "script_url" in entry or "om_hub_url" in entry:
        raise BadInput(
            f"{where}: only file_name and hf_hub_url datasets are supported.",
            hint="Download the data and point file_name at the local file.",
        )
    else:
        raise BadInput(f"{where} has no file_name.", hint='Add "file_name": "your_data.json".')
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt", "openai"):
        raise BadInput(f"{where}: formatting '{formatting}' is not alpaca, sharegpt or openai.")
    attr.formatting = formatting
    if formatting == "openai":  # sharegpt with OpenAI's role/content vocabulary
        attr.role_tag, attr.content_tag = "role", "content"
        attr.user_tag, attr.assistant_tag, attr.system_tag = "user", "assistant", "system"
        attr.observation_tag, attr.function_tag = "tool", "function"
        attr.messages = "messages"
    attr.ranking = bool(entry.get("ranking", False))
    attr.split = str(entry.get("split", "train"))
    attr.subset = entry.get("subset")
    ns = entry.get("num_samples")
    if ns is not None and (not isinstance(ns, int) or ns < 1):
        raise BadInput(f"{where}: num_samples must be a positive integer.")
    attr.num_samples = ns
    columns = entry.get("columns") or {}
    tags = entry.get("tags") or {}
    if not isinstance(columns, dict) or not isinstance(tags, dict):
        raise BadInput(f"{where}: columns and tags must be objects.")
    allowed_cols = {
        "system",
        "tools",
        "images",
        "videos",
        "audios",
        "chosen",
        "rejected",
        "kto_tag",
    }
    allowed_cols |= (
        {"prompt", "query", "response", "history"} if formatting == "alpaca" else {"messages"}
    )
    for k, v in columns.items():
        if k not in allowed_cols:
            raise BadInput(
                f"{where}: unknown column mapping '{k}' for {formatting}.",
                hint="Allowed: " + ", ".join(sorted(allowed_cols)),
            )
        if k in ("images", "videos", "audios"):
            raise BadInput(f"{where}: column '{k}' (multimodal data) is not supported.")
        setattr(attr, k, v)
    if attr.ranking:  # LLaMA-Factory needs these mapped; their obvious names are the default
        attr.chosen = attr.chosen or "chosen"
        attr.rejected = attr.rejected or "rejected"
    if formatting != "alpaca":
        allowed_tags = {
            "role_tag",
            "content_tag",
            "user_tag",
            "assistant_tag",
            "observation_tag",
            "function_tag",
            "system_tag",
        }
        for k, v in tags.items():
            if k not in allowed_tags:
                raise BadInput(
                    f"{where}: unknown tag '{k}'.",
                    hint="Allowed: " + ", ".join(sorted(allowed_tags)),
                )
            setattr(attr, k, v)
    return attr


# ---- reading files ----------------------------------------------------------------------


def _data_files(attr: DatasetAttr, dataset_dir: Path) -> list[Path]:
    assert attr.file_name is not None
    p = Path(attr.file_name)
    p = p if p.is_absolute() else dataset_dir / p
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in DATA_SUFFIXES and f.is_file())
        if not files:
            raise BadInput(f"Dataset '{attr.name}': folder {p} has no .json/.jsonl files.")
        return files
    if not p.is_file():
        raise BadInput(
            f"Dataset '{attr.name}': file {p} does not exist.",
            hint=f"Fix file_name in {dataset_dir / DATA_CONFIG}.",
        )
    if p.suffix not in DATA_SUFFIXES:
        raise BadInput(
            f"Dataset '{attr.name}': {p.name} is not .json, .jsonl or .txt.",
            hint="Convert it to JSON (a list of records) or JSON Lines.",
        )
    return [p]


def read_records(path: Path) -> list[tuple[str, Any]]:
    """(location, record) pairs; the location names the file and record (and JSONL line)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadInput(f"{path} is not UTF-8 text: {e}") from e
    if path.suffix == ".txt":  # plain text for stage pt: one document per line
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return [(f"{path} record {i}", {"text": ln}) for i, ln in enumerate(lines)]
    if path.suffix == ".jsonl":
        out = []
        n = 0
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise BadInput(
                    f"{path} record {n} (line {lineno}) is not valid JSON: {e}",
                    hint="Each line of a .jsonl file must be one JSON object.",
                ) from e
            out.append((f"{path} record {n} (line {lineno})", rec))
            n += 1
        return out
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BadInput(f"{path} is not valid JSON: {e}") from e
    if isinstance(data, dict):  # some exports wrap the list: {"data": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise BadInput(f"{path} must hold a JSON list of records.")
        data = lists[0]
    if not isinstance(data, list):
        raise BadInput(f"{path} must hold a JSON list of records.")
    return [(f"{path} record {i}", rec) for i, rec in enumerate(data)]


def _hub_records(attr: DatasetAttr) -> list[tuple[str, Any]]:
    from huggingface_hub import constants  # optional: only for hub datasets (transformers' dep)

    if constants.HF_HUB_OFFLINE:
        raise BadInput(
            f"Dataset '{attr.name}' comes from the hub ({attr.hf_hub_url}) but HF_HUB_OFFLINE=1.",
            hint="Download it once and set file_name to the local file.",
        )
    try:
        import datasets

        ds = datasets.load_dataset(attr.hf_hub_url, attr.subset, split=attr.split)
    except Exception as e:
        raise BadInput(f"Could not load '{attr.hf_hub_url}' from the hub: {e}") from e
    return [(f"{attr.hf_hub_url} record {i}", dict(r)) for i, r in enumerate(ds)]


# ---- converting and validating records ------------------------------------------------


def _opt_str(rec: dict[str, Any], col: str | None, where: str, probs: Problems) -> str | None:
    if not col or col not in rec or rec[col] is None:
        return None
    v = rec[col]
    if not isinstance(v, str):
        probs.add(where, col, f"must be a string, got {type(v).__name__}")
        return None
    return v


def _tools(rec: dict[str, Any], col: str | None, where: str, probs: Problems) -> Any:
    if not col or not rec.get(col):
        return None
    v = rec[col]
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError as e:
            probs.add(where, col, f"is not valid JSON: {e}")
            return None
    if not isinstance(v, (list, dict)):
        probs.add(where, col, "must be a JSON list of tool definitions")
        return None
    return v


def _alpaca(
    rec: dict[str, Any], attr: DatasetAttr, where: str, idx: int, probs: Problems
) -> Conversation | None:
    before = probs.count
    msgs: list[Message] = []
    if attr.history and rec.get(attr.history) is not None:
        hist = rec[attr.history]
        if not isinstance(hist, list):
            probs.add(where, attr.history, "must be a list of [instruction, response] pairs")
        else:
            for j, pair in enumerate(hist):
                ok = isinstance(pair, (list, tuple)) and len(pair) == 2
                if not ok or not all(isinstance(x, str) for x in pair):
                    probs.add(where, f"{attr.history}[{j}]", "must be a pair of two strings")
                    continue
                msgs += [Message("user", pair[0]), Message("assistant", pair[1])]
    parts = [
        s
        for s in (_opt_str(rec, attr.prompt, where, probs), _opt_str(rec, attr.query, where, probs))
        if s
    ]
    msgs.append(Message("user", "\n".join(parts)))
    conv = Conversation(where, idx, msgs)
    conv.system = _opt_str(rec, attr.system, where, probs)
    conv.tools = _tools(rec, attr.tools, where, probs)
    if attr.ranking:
        for col in (attr.chosen, attr.rejected):
            if not col or not isinstance(rec.get(col), str):
                probs.add(where, str(col), "a preference record needs a string here")
        if probs.count == before:
            conv.chosen = Message("assistant", rec[str(attr.chosen)])
            conv.rejected = Message("assistant", rec[str(attr.rejected)])
    else:
        col = attr.response or "output"
        if col not in rec:
            probs.add(where, col, "is missing (the response to train on)")
        elif not isinstance(rec[col], str):
            probs.add(where, col, f"must be a string, got {type(rec[col]).__name__}")
        else:
            msgs.append(Message("assistant", rec[col]))
    return conv if probs.count == before else None


def _sharegpt(
    rec: dict[str, Any], attr: DatasetAttr, where: str, idx: int, probs: Problems
) -> Conversation | None:
    before = probs.count
    col = attr.messages
    turns = rec.get(col)
    if not isinstance(turns, list):
        probs.add(where, col, "is missing or not a list of messages")
        return None
    tag_role: dict[str, Role] = {
        attr.user_tag: "user",
        attr.observation_tag: "tool",
        attr.assistant_tag: "assistant",
        attr.function_tag: "assistant",
    }
    odd, even = (attr.user_tag, attr.observation_tag), (attr.assistant_tag, attr.function_tag)
    system = _opt_str(rec, attr.system, where, probs)
    msgs: list[Message] = []
    start = 0
    for j, m in enumerate(turns):
        fld = f"{col}[{j}]"
        if not isinstance(m, dict):
            probs.add(where, fld, "must be an object with role and content")
            return None
        role, content = m.get(attr.role_tag), m.get(attr.content_tag)
        if not isinstance(content, str):
            probs.add(where, f"{fld}.{attr.content_tag}", "is missing or not a string")
            return None
        if j == 0 and attr.system_tag and role == attr.system_tag:
            system, start = content, 1
            continue
        expected = odd if (j - start) % 2 == 0 else even
        if role not in expected:
            probs.add(
                where,
                f"{fld}.{attr.role_tag}",
                f"is '{role}', expected one of {list(expected)} at this position "
                "(turns must alternate user/observation and assistant/function_call)",
            )
            return None
        msgs.append(Message(tag_role[role], content))
    n = len(msgs)
    if attr.ranking:
        if n % 2 != 1:
            probs.add(where, col, "a preference record's conversation must end with a user turn")
        for c in (attr.chosen, attr.rejected):
            v = rec.get(c) if c else None
            if not isinstance(v, dict) or v.get(attr.role_tag) not in even:
                probs.add(where, str(c), "must be an assistant message object")
            elif not isinstance(v.get(attr.content_tag), str):
                probs.add(where, f"{c}.{attr.content_tag}", "is missing or not a string")
    elif n == 0:
        probs.add(where, col, "is empty")
    elif n % 2 != 0:
        probs.add(
            where,
            f"{col}[{len(turns) - 1}]",
            "the conversation must end with an assistant (gpt) turn",
        )
    if probs.count != before:
        return None
    conv = Conversation(where, idx, msgs, system=system)
    conv.tools = _tools(rec, attr.tools, where, probs)
    if attr.ranking:
        ch, rj = rec[str(attr.chosen)], rec[str(attr.rejected)]
        conv.chosen = Message("assistant", ch[attr.content_tag])
        conv.rejected = Message("assistant", rj[attr.content_tag])
    return conv if probs.count == before else None


def _is_empty(conv: Conversation, stage: str) -> bool:
    if stage == "pt":
        return not (conv.messages and conv.messages[0].content.strip())
    if conv.chosen is not None:
        return False
    if not conv.messages or not conv.messages[0].content.strip():
        return True
    return any(m.role == "assistant" and not m.content.strip() for m in conv.messages)


def check_stage_fit(attr: DatasetAttr, stage: str, dataset_dir: Path) -> None:
    """Preference stages need their own record kinds; say what to add before reading."""
    entry = f"'{attr.name}' in {dataset_dir / DATA_CONFIG}"
    if stage == "dpo" and not attr.ranking:
        raise BadInput(
            f'Dataset {entry} has no "ranking": true, but stage dpo trains on preference '
            "records (a prompt, a chosen and a rejected answer).",
            hint=f'Add "ranking": true to the entry {attr.name}; its records need chosen and '
            "rejected: alpaca {instruction, input, chosen, rejected} or sharegpt "
            "{conversations ending with a user turn, chosen: {from, value}, rejected: {...}}.",
        )
    if stage == "kto" and attr.ranking:
        raise BadInput(
            f"Dataset {entry} holds paired preferences (ranking: true); stage kto trains on "
            "single answers labelled good or bad.",
            hint="Use stage: dpo for chosen/rejected pairs, or give kto a dataset whose "
            'records carry a true/false label mapped as "columns": {"kto_tag": "label"}.',
        )


def _with_kto_tag(
    conv: Conversation, rec: dict[str, Any], attr: DatasetAttr, where: str, probs: Problems
) -> Conversation | None:
    col = attr.kto_tag or "kto_tag"
    v = rec.get(col)
    if not isinstance(v, bool):
        probs.add(
            where,
            col,
            "is missing or not true/false (stage kto: true marks a desirable answer, false "
            'an undesirable one; map another column with "columns": {"kto_tag": NAME})',
        )
        return None
    conv.kto_tag = v
    return conv


def load_dataset(
    name: str,
    dataset_dir: Path,
    *,
    stage: str = "sft",
    max_samples: int | None = None,
    seed: int = 42,
) -> LoadedDataset:
    """Read and validate every record of one dataset; raise BadInput listing all problems."""
    attr = dataset_attr(name, dataset_dir)
    check_stage_fit(attr, stage, dataset_dir)
    if attr.hf_hub_url:
        files: list[Path] = []
        pairs = _hub_records(attr)
    else:
        files = _data_files(attr, dataset_dir)
        pairs = [p for f in files for p in read_records(f)]
    probs = Problems()
    convs: list[Conversation] = []
    empty = 0
    for idx, (where, rec) in enumerate(pairs):
        if not isinstance(rec, dict):
            probs.add(where, "(record)", f"must be a JSON object, got {type(rec).__name__}")
            continue
        if stage == "pt" and attr.formatting == "alpaca":
            col = attr.prompt or "text"
            col = col if col in rec else "text"
            if not isinstance(rec.get(col), str):
                probs.add(where, col, "plain-text (pt) records need a string here")
                continue
            conv: Conversation | None = Conversation(where, idx, [Message("user", rec[col])])
        elif attr.formatting == "alpaca":
            conv = _alpaca(rec, attr, where, idx, probs)
        else:
            conv = _sharegpt(rec, attr, where, idx, probs)
        if conv is not None and stage == "kto":
            conv = _with_kto_tag(conv, rec, attr, where, probs)
        if conv is None:
            continue
        if _is_empty(conv, stage):
            empty += 1
            continue
        convs.append(conv)
    probs.raise_if_any(f"dataset '{name}'")
    if attr.num_samples and attr.num_samples < len(convs):
        rng = random.Random(seed)
        keep = sorted(rng.sample(range(len(convs)), attr.num_samples))
        convs = [convs[i] for i in keep]
    if max_samples is not None:
        convs = convs[:max_samples]
    return LoadedDataset(attr, convs, files, empty=empty, records=len(pairs))


def load_datasets(
    names: list[str],
    dataset_dir: Path,
    *,
    stage: str,
    max_samples: int | None,
    seed: int,
) -> list[LoadedDataset]:
    out = [
        load_dataset(n, dataset_dir, stage=stage, max_samples=max_samples, seed=seed) for n in names
    ]
    if stage in ("sft", "pt"):
        ranked = [d.attr.name for d in out if d.attr.ranking]
        if ranked:
            raise BadInput(
                f"Dataset(s) {', '.join(ranked)} hold preference records (ranking: true); "
                f"their records are valid, but stage {stage} needs instruction data.",
                hint="Train on them with stage: dpo (pref_loss sigmoid, hinge, ipo, orpo or "
                "simpo), or use an alpaca/sharegpt SFT dataset.",
            )
    return out


def data_hash(datasets: list[LoadedDataset]) -> str:
    """sha256 over each dataset's name, its dataset_info entry and its files' bytes."""
    h = hashlib.sha256()
    for d in datasets:
        h.update(d.attr.name.encode())
        h.update(json.dumps(d.attr.raw, sort_keys=True).encode())
        for f in d.files:
            h.update(f.read_bytes())
        if d.attr.hf_hub_url:
            h.update(d.attr.hf_hub_url.encode())
    return h.hexdigest()
