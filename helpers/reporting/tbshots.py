"""TensorBoard seen, not assumed: screenshots of its Scalars and HParams dashboards (``make tensorboard-shots``)."""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from helpers.paths import Outputs, project_root, shown

#: dashboard -> (experiment under outputs/runs, URL fragment): notebook 03's baseline and tuned runs, and its search
DASHBOARDS = {"scalars": ("03-simpsons-final", "#scalars"), "hparams": ("03-simpsons", "#hparams")}
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser(install: bool = True) -> str:
    """The path of a Chromium-family browser; installs Debian's ``chromium`` when root and allowed."""
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    if install and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing Chromium from the system packages (apt-get install chromium) ...", flush=True)
        subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        return find_browser(install=False)
    raise RuntimeError("no Chromium found: install it (Debian/Ubuntu: `sudo apt-get install chromium`; macOS: "
                       "`brew install --cask chromium`), then run `make tensorboard-shots` again")


def is_blank(png: bytes, min_colours: int = 16, min_std: float = 8.0) -> bool:
    """True for an empty-looking screenshot: almost one colour, or nearly uniform brightness."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    colours = len(np.unique(image.reshape(-1, 3)[:: max(1, image.size // 3 // 200_000)], axis=0))
    return colours < min_colours or float(image.std()) < min_std


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"TensorBoard did not answer at {url} within {timeout:.0f} s")
        time.sleep(0.5)


def screenshot(browser: str, url: str, out: Path, width: int = 1600, height: int = 1000, budget_ms: int = 20_000) -> bytes:
    """A headless Chromium screenshot of ``url`` after ``budget_ms`` of virtual time; returns the PNG bytes."""
    with tempfile.TemporaryDirectory() as profile:
        # WebGL in software (SwiftShader): with the GPU simply disabled the charts stay empty
        subprocess.run([browser, "--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                        "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=120)
    return out.read_bytes()


def capture(runs: Path, out_dir: Path, browser: str) -> dict[str, Path]:
    """Screenshots of every dashboard in :data:`DASHBOARDS`, each over its experiment's runs under ``runs``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = {}
    for name, (experiment, fragment) in DASHBOARDS.items():
        logdir = runs / experiment
        if not logdir.is_dir() or not any(logdir.rglob("events.out.tfevents.*")):
            raise RuntimeError(f"no TensorBoard runs in {shown(logdir)}: run notebook 03 first (`make report`)")
        port = _free_port()
        # run from the project so the page shows a relative log folder, not this machine's path
        shown_dir = logdir.resolve().relative_to(project_root()) if logdir.resolve().is_relative_to(project_root()) else logdir
        server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(shown_dir),
                                   "--host", "127.0.0.1", "--port", str(port)], cwd=project_root(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}/"
            _wait_for(base, timeout=60)
            path = out_dir / f"{name}.png"
            if is_blank(screenshot(browser, base + fragment, path)):
                raise RuntimeError(f"the {name} screenshot ({shown(path)}) is blank: TensorBoard had not rendered")
            saved[name] = path
        finally:
            server.terminate()
            server.wait(timeout=30)
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Outputs.for_budget("full").runs)
    parser.add_argument("--out", type=Path, default=project_root() / "docs" / "tensorboard")
    args = parser.parse_args(argv)
    for name, path in capture(args.runs, args.out, find_browser()).items():
        print(f"{name}: {shown(path)}")
    return 0


if __name__ == "__main__":
    from helpers import plumbing

    sys.exit(plumbing.run(main))
