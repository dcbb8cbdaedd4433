"""Container / process entrypoint: `python -m services.ui` runs `streamlit run`."""

from __future__ import annotations

import sys
from pathlib import Path

from services.ui.settings import UiSettings


def main() -> None:
    from streamlit.web import cli as stcli

    s = UiSettings()
    app = Path(__file__).with_name("app.py")
    sys.argv = [
        "streamlit",
        "run",
        str(app),
        "--server.address",
        s.host,
        "--server.port",
        str(s.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",  # no Streamlit "Deploy" button: it would not deploy anything of ours
    ]
    sys.exit(stcli.main())


if __name__ == "__main__":
    main()
