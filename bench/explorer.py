"""The explorer page's latency: from the pen's last movement to the updated prediction and
every layer's picture on screen, in headless Chromium against ``cnn-serve``.

    python -m bench.explorer [--draws 30] [--model digit_odd]

Starts ``cnn-serve`` (one worker), opens ``/``, draws a 7 with mouse strokes ``--draws``
times (clearing between), and prints the page's own measurement (``data-update-ms``: pen up
-> every feature-map picture decoded) as median, p90 and max. Needs Debian's ``chromium``.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from bench.run import free_port, start
from tests.service.conftest import CHROMIUM, FLAGS
from tests.service.test_explorer_browser import SEVEN, _draw


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--model", default="digit_odd")
    args = parser.parse_args()
    if CHROMIUM is None:
        print("bench: chromium not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    port = free_port()
    proc, _ = start("cnn-serve", args.model, port)
    times = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("[data-testid=layer]")
            for _ in range(args.draws + 1):  # the first one warms up
                page.click("#clear")
                page.wait_for_function("() => !document.body.dataset.updateMs")
                _draw(page, SEVEN)
                page.wait_for_function("() => document.body.dataset.updateMs")
                page.wait_for_timeout(300)  # the last update of the stroke has landed
                times.append(float(page.evaluate("document.body.dataset.updateMs")))
                page.evaluate("delete document.body.dataset.updateMs")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
    times = sorted(times[1:])
    print(
        f"explorer, {args.model}: pen up -> prediction and every layer's picture, "
        f"{len(times)} drawings: median {statistics.median(times):.0f} ms, "
        f"p90 {times[int(0.9 * (len(times) - 1))]:.0f} ms, max {times[-1]:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
