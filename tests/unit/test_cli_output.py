"""The CLI prints text from documents, models and users through rich, whose markup reads
`[word]` as a style and `[/x]` as a closing tag: such text must print as written, never
vanish or stop the command with a MarkupError traceback."""

from __future__ import annotations

import pytest

from platform_cli import output
from platform_cli.commands import documents
from services.common.api_schemas import ChatAnswer, Source
from services.common.errors import TunestackError

HOSTILE = "see [draft] and [/b] or [bold red]this[/]"


def test_an_answer_with_brackets_prints_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    source = Source(
        index=1, id="a", source="a", file_name="[v2] notes.md", chunk_index=0, score=0.5, text=""
    )
    documents.print_answer(HOSTILE, ChatAnswer(content=HOSTILE, sources=[source]))
    out = capsys.readouterr().out
    assert out.count(HOSTILE) == 2 and "[1] [v2] notes.md" in out


def test_an_error_with_brackets_prints_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        output.fail(TunestackError(HOSTILE, hint=HOSTILE))
    err = capsys.readouterr().err
    assert err.count(HOSTILE) == 2
