"""report.html: one self-contained page (inline CSS, images as data: URIs, no script, no network)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f4f4f4}img{max-width:100%;border:1px solid #eee}code{background:#f4f4f4;padding:0 3px}
.cap{color:#555;font-size:.9em}"""


def inline(text: str) -> str:
    """Escape, then the two Markdown marks the report uses: `code` and **bold**."""
    t = html.escape(str(text))
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)


def table(rows: list[dict]) -> str:
    head = "".join(f"<th>{inline(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{inline(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def page(info: dict, sections: list, img: Path) -> str:
    parts = [f"<h1>Deployment of {inline(Path(info['model']).name)} to {inline(info['board'])}</h1>"]
    for head, body in sections:
        parts.append(f"<h2>{inline(head)}</h2>")
        parts.append(table(body) if isinstance(body, list) else f"<p>{inline(body)}</p>")
        if head == "Model and board":
            parts.append(image(img / "bits.png", "weight bits per layer"))
        if head == "Quality" and info["fd"] is not None:
            parts.append('<p class="cap">FP model\'s samples (left) and the deployed model\'s (right), '
                         "from the same noise:</p>" + image(img / "samples.png", "sample grids"))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mpqdm deploy: "
            f"{inline(info['board'])}</title><style>{CSS}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
