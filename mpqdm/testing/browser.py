"""Rendering a page in headless Chromium (Debian's `chromium`): console errors, whether every image
decoded, and a screenshot. The page is loaded from a copy with a small probe script added."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

PROBE = """<script>
window.__errors = [];
const __err = console.error.bind(console);
console.error = (...a) => { window.__errors.push(a.join(' ')); __err(...a); };
window.addEventListener('error', e => window.__errors.push(String(e.message || e.target && e.target.src)), true);
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0,
                                                width: i.naturalWidth, height: i.naturalHeight, alt: i.alt}));
  const pre = document.createElement('pre');
  pre.id = '__probe';
  pre.textContent = JSON.stringify({errors: window.__errors, images: imgs});
  document.body.appendChild(pre);
});
</script>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=3000"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(page: Path, screenshot: Path, width: int = 1200, height: int = 2600) -> dict:
    """{"errors": [console errors and failed loads], "images": [{ok, width, height, alt}], "screenshot"}."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed (bash scripts/install.sh installs Debian's chromium)")
    probe = page.with_name(f".{page.stem}.probe.html")
    probe.write_text(page.read_text().replace("</head>", PROBE + "</head>", 1))
    try:
        r = subprocess.run([exe, *FLAGS, "--enable-logging=stderr", "--v=0", "--dump-dom", probe.resolve().as_uri()],
                           capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink(missing_ok=True)
    m = re.search(r'<pre id="__probe">(.*?)</pre>', r.stdout, re.S)
    if not m:
        raise RuntimeError(f"chromium did not render {page} (exit {r.returncode}): {r.stderr[-1500:]}")
    import html

    out = json.loads(html.unescape(m.group(1)))
    out["errors"] += [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln and ("ERROR" in ln or "Uncaught" in ln)]
    s = subprocess.run([exe, *FLAGS, f"--window-size={width},{height}", f"--screenshot={screenshot.resolve()}",
                        page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    if s.returncode != 0 or not screenshot.is_file():
        raise RuntimeError(f"chromium took no screenshot of {page}: {s.stderr[-1500:]}")
    out["screenshot"] = str(screenshot)
    return out
