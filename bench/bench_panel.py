"""Responsiveness of the VLSR review panel on a large run, against the App's own grid.

Usage (from the repository root)::

    .venv/bin/python bench/bench_panel.py [n_samples n_labels]   # default 100000 20000

The run is built without a model: ``n_labels`` distinct labels in groups of 1-8 around random
64-d centres, a third of them spelling variants (``bench_merge_modes.make_labels``), 1-3 labels
a sample (every label at least once, the rest by Zipf frequency), and a fake encoder whose image
embeddings lie near the sample's first label. The images are hard links to 16 small PNGs, so
that the App has real media. The three stages then run as usual (``min_cluster_size=1``).

Then, in this process, the panel is driven through ``fiftyone.operators.execute_operator`` as
the App drives it (events with params, state kept between events), and each event is timed,
the median of ROUNDS: ``on_load`` cold (review-state cache cleared) and warm, ``open_cluster``,
``next_page``, ``on_search``, ``take_out`` (an edit: the cache misses) and ``undo``, and
``on_histogram_click`` with the count of the view it sets; then the parts they are made of,
called directly. Every event whose median exceeds PROFILE_ABOVE_S is run once more under
cProfile. Last, the real App in headless Chromium, each round in a new browser context: page
load to the first grid tile and its image; then, once the grid is quiet, the panel opened from
the grid's "+" until its cluster table shows and until every request it caused is answered;
then a cluster's "Members" until they show. The first round is the App server's first (cold),
the median is of the ROUNDS after it. Ratios compare figures measured in this run. About 25
minutes on 2 cores, 13 of them building the run.
"""

import cProfile
import io
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from usage import sizes

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("FIFTYONE_DATABASE_NAME", "vlsr-bench")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_PLUGINS_DIR", str(ROOT))
sys.path.insert(0, str(ROOT))

import fiftyone as fo  # noqa: E402
import fiftyone.core.utils as fou  # noqa: E402
import fiftyone.operators as foo  # noqa: E402
from fiftyone.core.odm.database import get_db_client  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench_merge_modes import make_labels  # noqa: E402
from vlsr_core.fo import browse, review, stages  # noqa: E402
from vlsr_core.model.encoder import ImageBatch  # noqa: E402

URI = "@vlsr/vlsr/vlsr_panel"
DIM = 64
N_IMAGES = 16  # distinct image files; every sample's file is a hard link to one of them
ROUNDS = 5
PROFILE_ABOVE_S = 1.0
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 300_000


# -- the run -----------------------------------------------------------------------------------

class FakeEncoder:
    """CLIPEncoder's interface: label vectors by string, image vectors by the file's number."""

    model_name, prompt, jpeg_draft, batch_size, dim = "fake-clip-64", None, False, 256, DIM

    def __init__(self, label_vectors, image_vectors):
        self.label_vectors, self.image_vectors = label_vectors, image_vectors

    def embed_texts(self, texts, progress=None):
        return np.stack([self.label_vectors[t] for t in texts]).astype(np.float32)

    def iter_image_batches(self, paths):
        rows = [int(Path(p).stem) for p in paths]
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            yield ImageBatch(np.arange(start, start + len(batch)), self.image_vectors[batch], [])


def sample_labels(n_samples, frequencies, rng):
    """Label indices of each sample: 1-3 each, every label at least once, else by frequency."""
    n_labels = len(frequencies)
    counts = rng.integers(1, 4, n_samples)
    if counts.sum() < n_labels:
        raise SystemExit(f"{n_samples} samples cannot carry {n_labels} distinct labels")
    drawn = rng.choice(n_labels, counts.sum(), p=frequencies / frequencies.sum())
    drawn[rng.choice(len(drawn), n_labels, replace=False)] = rng.permutation(n_labels)
    return np.split(drawn, np.cumsum(counts)[:-1])


def build(image_dir, n_samples, n_labels, seed=0):
    """The dataset (non-persistent) and the fake encoder that embeds it."""
    rng = np.random.default_rng(seed)
    labels, emb, frequencies = make_labels(n_labels, DIM, seed)
    per_sample = sample_labels(n_samples, frequencies.astype(np.float64), rng)
    noise = rng.standard_normal((n_samples, DIM)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    images = emb[[s[0] for s in per_sample]] + 0.9 * noise
    images /= np.linalg.norm(images, axis=1, keepdims=True)

    for j in range(N_IMAGES):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image_dir / f"src{j}.png")
    samples = []
    for i, s in enumerate(per_sample):
        path = image_dir / f"{i:06d}.png"
        os.link(image_dir / f"src{i % N_IMAGES}.png", path)
        samples.append(fo.Sample(filepath=str(path), gt=fo.Classifications(
            classifications=[fo.Classification(label=labels[j]) for j in s])))
    ds = fo.Dataset(f"vlsr-bench-panel-{os.getpid()}")
    ds.add_samples(samples, progress=False)
    return ds, FakeEncoder(dict(zip(labels, emb)), images.astype(np.float32))


def run_stages(ds, encoder):
    for name, stage in (("compute_embeddings", lambda: stages.compute_embeddings(ds, "gt", encoder=encoder)),
                        ("score_labels", lambda: stages.score_labels(ds)),
                        ("cluster_and_merge", lambda: stages.cluster_and_merge(ds, min_cluster_size=1))):
        t = time.perf_counter()
        stage()
        print(f"  {name}: {time.perf_counter() - t:.1f} s", flush=True)


@contextmanager
def built_run(n_samples, n_labels):
    """``(dataset, its folder)`` of a run built as :func:`build` and :func:`run_stages` build
    it, in a temporary folder; both deleted after."""
    with tempfile.TemporaryDirectory() as tmp:
        print(f"building {n_samples:,} samples, {n_labels:,} labels", flush=True)
        ds, encoder = build(Path(tmp), n_samples, n_labels)
        try:
            run_stages(ds, encoder)
            yield ds, tmp
        finally:
            ds.delete()


# -- the panel, driven as the App drives it ----------------------------------------------------

class Panel:
    """One open panel: keeps its state between events, as the App does (tests/test_panel.py)."""

    def __init__(self, dataset):
        self.dataset, self.state, self.data, self.requests = dataset, {}, {}, []

    def event(self, method, **params):
        r = foo.execute_operator(URI, dataset=self.dataset, params=dict(
            __method__=method, panel_id="p1", panel_state=dict(self.state), **params))
        self.requests = r.executor.to_json()["requests"]
        for q in self.requests:
            if q["operator_uri"] == "patch_panel_state":
                self.state.update(q["params"]["state"])
            elif q["operator_uri"] == "patch_panel_data":
                self.data.update(q["params"]["data"])
        return self

    def sent(self, operator):
        return [q["params"] for q in self.requests if q["operator_uri"] == operator]


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def median_of(f, rounds=ROUNDS):
    return float(np.median([timed(f) for _ in range(rounds)]))


def profile(what, f, top=12):
    """Print the ``top`` panel, engine and FiftyOne-collection functions of one call of ``f`` by
    cumulative time. FiftyOne runs an operator in a thread pool, out of cProfile's sight: while
    this lasts, it runs in the calling thread, under the profiler."""
    prof = cProfile.Profile()

    async def run_profiled(func, *args):
        return prof.runcall(func, *args)

    run_sync_task, fou.run_sync_task = fou.run_sync_task, run_profiled
    try:
        f()
    finally:
        fou.run_sync_task = run_sync_task
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).sort_stats("cumulative")
    stats.print_stats(r"vlsr_core|vlsr_panel|fiftyone/core/collections", top)
    lines = out.getvalue().splitlines()
    start = next(i for i, l in enumerate(lines) if l.lstrip().startswith("ncalls"))
    print(f"\n  cProfile of {what}, {stats.total_tt:.2f} s: the panel's, the engine's and FiftyOne "
          "collections' functions by cumulative time")
    site_packages = str(Path(fo.__file__).parents[1]) + "/"
    for line in lines[start:]:
        if line.strip():
            print("   ", line.replace(site_packages, "").replace(str(ROOT) + "/", ""))


def tallest_bar(panel):
    """The x of the histogram bar holding the most labels (the click a user is likeliest to make)."""
    bars = panel.data["histogram"][0]
    return bars["x"][int(np.argmax(bars["y"]))]


def doubtful_row(panel):
    """The page row of the first cluster with more than one label (its farthest member can be
    taken out)."""
    return next(i for i, c in enumerate(panel.state["clusters"]) if c["labels"] > 1)


def panel_events(panel):
    """{event: (before, event, after)}: the panel's events as the App sends them, each with what
    must run before and after it to leave the panel and the run as they were (or None)."""
    def cold_load():
        review._CACHE.clear()
        panel.event("on_load")

    row = doubtful_row(panel)

    def take_out():
        panel.event("open_cluster", row=row)
        panel.event("take_out", row=0)

    return {
        "on_load, cold (state cache cleared)": (None, cold_load, None),
        "on_load, warm": (None, lambda: panel.event("on_load"), None),
        "open_cluster": (None, lambda: panel.event("open_cluster", row=row), None),
        "next_page": (None, lambda: panel.event("next_page"), None),
        "on_search": (None, lambda: panel.event("on_search", value="ab"),
                      lambda: panel.event("on_search", value="")),
        "take_out (an edit: cache miss)": (lambda: panel.event("open_cluster", row=row),
                                           lambda: panel.event("take_out", row=0),
                                           lambda: panel.event("undo")),
        "undo (cache miss)": (take_out, lambda: panel.event("undo"), None),
    }


def run_event(event, timer=timed):
    before, f, after = event
    if before:
        before()
    result = timer(f)
    if after:
        after()
    return result


def panel_timings(ds, key="vlsr"):
    """{what: seconds}, medians of ROUNDS; events that take longer than PROFILE_ABOVE_S are
    profiled."""
    panel = Panel(ds)
    figures = {"on_load, first in the process": timed(lambda: panel.event("on_load"))}
    events = panel_events(panel)
    for what, event in events.items():
        figures[what] = float(np.median([run_event(event) for _ in range(ROUNDS)]))

    x = tallest_bar(panel)
    figures["on_histogram_click (tallest bar)"] = median_of(lambda: panel.event("on_histogram_click", x=x))
    view = fo.DatasetView._build(ds, panel.sent("set_view")[0]["view"])
    print(f"  the tallest bar: {view.count('gt.classifications')} labels on {view.count()} samples")
    figures["  its view: count of samples"] = median_of(view.count)
    figures["  its view: count of labels"] = median_of(lambda: view.count("gt.classifications"))
    figures["  its view: first 20 samples"] = median_of(lambda: list(view.limit(20)))

    state = review.cached_review_state(ds, key)
    figures["parts: score_histogram (kept at scoring)"] = median_of(
        lambda: browse.score_histogram(ds, key))
    config = ds.get_run_info(key).config
    kept, config.score_histogram = config.score_histogram, None
    ds.update_run_config(key, config)
    figures["parts: score_histogram (baseline: two aggregations)"] = median_of(
        lambda: browse.score_histogram(ds, key))
    config.score_histogram = kept
    ds.update_run_config(key, config)
    figures["parts: review_state (on a cache miss)"] = median_of(lambda: review.review_state(ds, key))
    figures["parts: cluster_rows of every cluster"] = median_of(lambda: browse.cluster_rows(state))

    for what, event in events.items():
        if figures[what] > PROFILE_ABOVE_S:
            run_event(event, lambda f: profile(what, f))
    return figures


# -- the App in headless Chromium --------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Traffic:
    """The page's requests to the App server in flight (images and the event stream aside)."""

    def __init__(self, page, server):
        self.server, self.in_flight, self.last = server, set(), time.perf_counter()
        page.on("request", self._start)
        page.on("requestfinished", self._end)
        page.on("requestfailed", self._end)

    def _start(self, request):
        url = request.url
        if url.startswith(self.server) and "/media?" not in url and not url.endswith("/events"):
            self.in_flight.add(request)
            self.last = time.perf_counter()

    def _end(self, request):
        if request in self.in_flight:
            self.in_flight.discard(request)
            self.last = time.perf_counter()

    def quiet(self, page, for_s=1.0):
        """Wait until nothing has been in flight for ``for_s`` seconds; returns the time the
        last request ended."""
        deadline = time.perf_counter() + TIMEOUT_MS / 1000
        while self.in_flight or time.perf_counter() - self.last < for_s:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"requests still in flight: {[r.url for r in self.in_flight]}")
            page.wait_for_timeout(100)
        return self.last


def app_round(browser, session, n_samples):
    """Seconds: page load to the first grid tile and its image; "+" to the panel's cluster
    table, and until every request it caused is answered; "Members" to the member table.
    In a new browser context, with the App's layout reset (the session keeps the open panels)."""
    server = session.url.replace("0.0.0.0", "localhost")
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    traffic = Traffic(page, server)
    try:
        t = time.perf_counter()
        with page.expect_response(lambda r: "/media?" in r.url):
            page.goto(server + f"datasets/{session.dataset.name}", wait_until="commit")
        page.locator('[data-cy="looker"]').first.wait_for(state="visible")
        grid = time.perf_counter() - t
        page.get_by_text(f"{n_samples:,} samples").first.wait_for()  # (untimed) let the grid settle
        traffic.quiet(page)
        for dismiss in ("Dismiss", "Disable"):
            if page.get_by_text(dismiss, exact=True).count():
                page.get_by_text(dismiss, exact=True).first.click()
        if page.get_by_text("VLSR review", exact=True).count():
            raise RuntimeError("the panel is already open: the App's layout was not reset")

        t = time.perf_counter()
        page.locator('[data-cy="new-panel-btn"]').first.click()
        page.get_by_text("VLSR review", exact=True).first.click()
        page.get_by_text("Clusters, the most doubtful first").first.wait_for()
        panel = time.perf_counter() - t
        panel_done = traffic.quiet(page) - t

        row = page.locator("table", has_text="Farthest").first.locator("tbody tr").first
        row.hover()  # the row's actions show while it is hovered
        t = time.perf_counter()
        row.locator("button").last.click()
        page.get_by_role("menuitem", name="Members").first.click()
        page.get_by_text("Members of the cluster").first.wait_for()
        members = time.perf_counter() - t
        session.spaces = None  # the next round opens the panel again
        return grid, panel, panel_done, members
    except Exception:
        shot = Path(tempfile.gettempdir()) / "bench_panel_failure.png"
        page.screenshot(path=str(shot))
        print(f"  failed; the page is in {shot}")
        raise
    finally:
        context.close()


def app_timings(ds):
    """[(grid, panel, panel done, members) seconds] of 1 + ROUNDS rounds against one App server."""
    from playwright.sync_api import sync_playwright

    session = fo.launch_app(ds, port=free_port(), remote=True, auto=False)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            try:
                rounds = []
                for i in range(1 + ROUNDS):
                    rounds.append(app_round(browser, session, len(ds)))
                    print("  round {}: grid {:.2f} s, panel {:.2f} s (requests done {:.2f} s), "
                          "members {:.2f} s".format(i, *rounds[-1]), flush=True)
                return rounds
            finally:
                browser.close()
    finally:
        session.close()


# -- the report --------------------------------------------------------------------------------

def report_app(rounds):
    first, rest = rounds[0], np.median(np.asarray(rounds[1:]), axis=0)
    print(f"\nApp in headless Chromium (first round: the App server's first; median of {ROUNDS} after it)")
    print(f"{'':52s} {'first s':>8s} {'median s':>9s}")
    for what, a, b in zip(("page load to the first grid tile and its image",
                           "panel: '+' to its cluster table",
                           "panel: '+' until every request is answered",
                           "panel: 'Members' to the member table"), first, rest):
        print(f"{what:52s} {a:8.2f} {b:9.2f}")
    for what, i in (("panel open", 1), ("panel open, requests answered", 2), ("members", 3)):
        print(f"ratio {what} / grid open: {first[i] / first[0]:.2f} first, {rest[i] / rest[0]:.2f} median")


def main(n_samples=100_000, n_labels=20_000):
    tree = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True).stdout.strip()
    print(f"{n_samples} samples, {n_labels} labels, {DIM}-d; tree {tree}; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="vlsr-bench-panel-") as tmp:
        t = time.perf_counter()
        ds, encoder = build(Path(tmp), n_samples, n_labels)
        try:
            print(f"  dataset built in {time.perf_counter() - t:.1f} s", flush=True)
            run_stages(ds, encoder)
            get_db_client().admin.command("fsync")  # the stages' writes on disk, not in the timings
            steps = review.review_state(ds, "vlsr")  # (not cached: the first on_load stays cold)
            print(f"  {len(steps.label_map.representatives)} clusters of {len(steps.label_map.vocabulary)} "
                  f"labels on {ds.count('gt.classifications')} label occurrences", flush=True)

            print(f"\nPanel events in this process (execute_operator), median of {ROUNDS}, "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
            figures = panel_timings(ds)
            print(f"\n{'event':44s} {'seconds':>8s}")
            for what, seconds in figures.items():
                print(f"{what:44s} {seconds:8.3f}")

            print(f"\nThe App, load average {os.getloadavg()[0]:.1f}", flush=True)
            report_app(app_timings(ds))
            print(f"load average at the end {os.getloadavg()[0]:.1f}")
        finally:
            ds.delete()


if __name__ == "__main__":
    main(*sizes(sys.argv[1:], __doc__, most=2))
