"""The whole workflow clicked through the real FiftyOne App in headless Chromium.

The App server runs with the plugin loaded; the test opens the operator browser with the
backtick key, fills each form, executes it, and checks what lands in the database and on disk.
A screenshot of every step is saved under ``artifacts/browser/`` (``VLSR_SCREENSHOTS`` to change).
"""

import csv
import os
import re
import socket
import time
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright
from spreadsheet import edit_label_map

from vlsr_core.fo.review import review_state
from vlsr_core.model.random_clip import save_random_clip

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("VLSR_SCREENSHOTS", Path(__file__).resolve().parents[1] / "artifacts" / "browser"))
LABELS = [["helmet", "Helmets"], ["helmit"], ["screwdriver"], ["drill"], ["Lathe Information", "helmet"]]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(check, what, timeout=180, page=None):
    """Wait for ``check()`` to be true: the App executes operators in its own process."""
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return
        time.sleep(0.5)
    if page is not None:
        shot(page, "failed-" + what.replace(" ", "-"))
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def app(dataset, tmp_path):
    samples = []
    for i, labels in enumerate(LABELS):
        path = tmp_path / f"img{i}.png"
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path)
        samples.append(fo.Sample(filepath=str(path), gt=fo.Classifications(
            classifications=[fo.Classification(label=l) for l in labels])))
    dataset.add_samples(samples)
    session = fo.launch_app(dataset, port=_free_port(), remote=True, auto=False)
    yield dataset, session
    session.close()


@pytest.fixture(scope="module", autouse=True)
def no_old_failure_shots():
    """Screenshots of an earlier run's failures would pass for this run's."""
    for old in SHOTS.glob("failed-*.png"):
        old.unlink()


@pytest.fixture
def page(request):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the browser tests need {CHROMIUM} (as root: apt-get install chromium); "
                    "leave them out with -m 'not browser'")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        yield page
        if request.node.rep_call.failed:
            shot(page, "failed-at-the-end")  # what the App showed when the test failed
        browser.close()


def open_dataset(page, session, dataset):
    """Open the dataset's grid in the App, wait for its first tile, dismiss the App's notices."""
    page.goto(session.url.replace("0.0.0.0", "localhost") + f"datasets/{dataset.name}", wait_until="load")
    page.locator('[data-cy="looker"]').first.wait_for(timeout=60_000)
    for dismiss in ("Dismiss", "Disable"):
        if page.get_by_text(dismiss, exact=True).count():
            page.get_by_text(dismiss, exact=True).first.click()


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def open_operator(page, label):
    """Open an operator's form through the operator browser (backtick key)."""
    search = page.get_by_placeholder("Search operations by name...")
    for attempt in range(3):  # a key pressed while the App reloads the dataset can go unheard
        page.keyboard.press("Escape")
        page.mouse.click(700, 990)  # focus the page, not a text field
        page.keyboard.press("`")
        try:
            search.wait_for(timeout=10_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    page.keyboard.type(label)
    page.get_by_text(label, exact=True).first.click()
    page.get_by_role("button", name="Execute").first.wait_for()


def fill(page, current_value, new_value, last=False):
    """Replace the text of the form input that shows ``current_value`` (the first, or the
    ``last`` one)."""
    boxes = page.locator(f'input[value="{current_value}"]')
    box = boxes.last if last else boxes.first
    box.fill(str(new_value))
    page.wait_for_timeout(800)  # the form re-resolves (dynamic) after a change


def first_tile_labels(page):
    """The ground-truth labels shown on the first tile of the grid."""
    tags = page.locator('[data-cy="looker"]').first.locator('[data-cy="tag-gt"]')
    return tags.all_inner_texts()


def execute(page):
    button = page.get_by_role("button", name="Execute").first
    _until(button.is_enabled, "a valid form", timeout=30, page=page)
    button.click()


PIPELINE = ["VLSR 1: compute embeddings", "VLSR 2: score labels", "VLSR 3: cluster and merge labels",
            "VLSR 4: edit the label map", "VLSR 4: import an edited label map",
            "VLSR 4: accept or reject suggestions",
            "VLSR 4: undo a review edit", "VLSR 5: apply the review",
            "VLSR 6: export cleaned labels",
            "VLSR: map the embeddings (Embeddings panel, similarity search)", "VLSR: delete run"]


def row_action(page, table, row_text, action):
    """Click ``action`` in the menu of the row of ``table`` (the n-th table of the panel)
    whose first cell is ``row_text``."""
    row = page.locator("table").nth(table).locator("tbody tr").filter(
        has=page.locator("td:first-child").get_by_text(row_text, exact=True))
    row.locator("button").last.click()
    page.get_by_text(action, exact=True).locator("visible=true").first.click()


def choose(page, label, option):
    """Choose ``option`` (a regex on the choice's text) in the panel's dropdown ``label``."""
    page.get_by_text(label, exact=True).first.locator(
        "xpath=following::*[@role='combobox'][1]").click()
    page.get_by_role("option", name=option).first.click()


def attributes_in_the_modal(page, attributes, name):
    """Open the first sample's modal, expand its label field ``gt`` in the sidebar, wait for
    each label attribute of ``attributes`` to show, take screenshot ``name``, close it."""
    tile = page.locator('[data-cy="looker"]').first
    modal = page.locator('[data-cy="modal"]')
    opened = page.get_by_text("Annotate", exact=True)  # the modal sidebar's mode switch

    def open_modal():
        if not opened.is_visible():
            tile.click()  # a click may land before the grid is ready: again until it opens
            page.wait_for_timeout(3000)
        return opened.is_visible()

    _until(open_modal, "a sample's modal", timeout=60, page=page)
    modal.locator('[data-cy="sidebar-field-arrow-enabled-gt"]').click()  # expand the label field
    for attribute in attributes:
        modal.get_by_text(attribute, exact=True).first.wait_for(timeout=30_000)
    shot(page, name)
    page.keyboard.press("Escape")
    _until(lambda: not opened.is_visible(), "the modal closed", timeout=30, page=page)


def open_panel(page, shown):
    """Open the VLSR panel from the grid's panel menu (+) until ``shown`` (a locator) is visible:
    a click can land before the menu is ready."""
    def opened():
        if shown.is_visible():
            return True
        entry = page.get_by_text("VLSR review", exact=True).locator("visible=true")
        if entry.count():
            entry.first.click()
        else:
            page.locator('[data-cy="new-panel-btn"]').first.click()
        page.wait_for_timeout(1500)
        return False

    _until(opened, "the VLSR panel", timeout=90, page=page)


def review_in_the_panel(page, dataset, session):
    """Every review action from the VLSR panel, and Apply: the cluster that paper mode forced
    together is taken apart, renamed, and a suggestion is accepted for a selected sample."""

    open_panel(page, page.get_by_text("Clusters, the most doubtful first (1; page 1 of 1)").first)
    shot(page, "16-panel")

    row_action(page, 0, "helmet", "Members")
    page.get_by_text("Members of the cluster 'helmet', the farthest first (members 1-6 of 6)"
                     ).first.wait_for(timeout=30_000)
    # the open cluster stands alone where the clusters were, its members right under it
    page.get_by_text("Back to all clusters", exact=True).first.wait_for(timeout=30_000)
    assert page.locator("table").nth(0).locator("tbody tr").count() == 1
    # each member says which step joined it: paper mode forced the far ones together by merging
    page.get_by_text("Joined by", exact=True).first.scroll_into_view_if_needed()
    page.get_by_text("merge", exact=True).first.wait_for(timeout=30_000)
    shot(page, "17-panel-members")

    # only the members merging joined, then all again
    members = page.locator("table").nth(1)
    joined_by = members.locator("tbody tr td:nth-child(4)")
    choose(page, "Only members joined by", re.compile(r"^merge \(\d+ labels? in the run\)$"))
    page.get_by_text(re.compile(r"^Members of the cluster 'helmet' joined by merge, the farthest "
                                r"first \(members 1-\d of \d\)$")).first.wait_for(timeout=30_000)
    _until(lambda: set(joined_by.all_inner_texts()) == {"merge"}, "only merged members", timeout=30,
           page=page)
    n_merged = joined_by.count()
    assert 0 < n_merged < 6
    shot(page, "17a-panel-members-joined-by-merge")
    choose(page, "Only members joined by", "all")
    page.get_by_text("Members of the cluster 'helmet', the farthest first (members 1-6 of 6)"
                     ).first.wait_for(timeout=30_000)

    def edits():
        dataset.reload()  # the App's server writes the run
        return [(e.action, e.label, e.to) for e in review_state(dataset, "vlsr").in_force]

    def refreshed(n):  # the panel shows the run with n edits (before the next click on its rows)
        page.get_by_text(re.compile(rf"^Review: {n} edits? in force")).first.wait_for(
            timeout=30_000)

    def edited(n, what):  # the edit is stored, and the panel shows it
        _until(lambda: len(edits()) == n, what, timeout=30, page=page)
        page.get_by_text(f"Edit #{n}: {what}").first.wait_for(timeout=30_000)
        refreshed(n)

    row_action(page, 1, "drill", "Take out (reject merge)")
    edited(1, "take drill out of helmet")
    row_action(page, 1, "Helmets", "Keep (accept merge)")
    edited(2, "keep Helmets in helmet")
    row_action(page, 1, "Lathe Information", "Split out on its own")
    edited(3, "split Lathe Information out on its own")
    shot(page, "18-panel-after-take-out-keep-split")

    row_action(page, 1, "screwdriver", "Move to another cluster…")
    target = page.get_by_placeholder("Type or select a value").last
    target.wait_for(timeout=30_000)
    target.click()
    target.fill("drill")
    page.keyboard.press("Enter")
    page.get_by_text("Edit #4: move screwdriver to the cluster of drill").first.wait_for(
        timeout=30_000)
    shot(page, "19-move-form")
    execute(page)
    _until(lambda: len(edits()) == 4, "move", timeout=30, page=page)
    refreshed(4)

    row_action(page, 0, "helmet", "Rename…")
    page.get_by_text("New name", exact=True).first.wait_for(timeout=30_000)
    name = page.locator("input[type=string]").last
    name.fill("screwdriver")  # a label of another cluster: the form says that the two join
    page.get_by_text("It joins the cluster drill, and the two are named screwdriver.").first.wait_for(
        timeout=30_000)
    shot(page, "20a-rename-form-joins-another-cluster")
    name.fill("safety helmet")
    page.wait_for_timeout(800)
    shot(page, "20-rename-form")
    execute(page)
    _until(lambda: len(edits()) == 5, "rename", timeout=30, page=page)
    refreshed(5)

    # an edit taken back
    row_action(page, 1, "helmit", "Split out on its own")
    edited(6, "split helmit out on its own")
    page.get_by_text("Undo", exact=True).first.click()
    _until(lambda: len(edits()) == 5, "undo", timeout=30, page=page)
    page.get_by_text("Undid edit #6").first.wait_for(timeout=30_000)
    shot(page, "21-panel-after-undo")

    # back to all the clusters; the search box filters them by any of their labels, and
    # clearing it shows all
    page.get_by_text("Back to all clusters", exact=True).first.click()
    page.get_by_text("Label scores:", exact=False).first.wait_for(timeout=30_000)  # back too
    page.get_by_text("Clusters, the most doubtful first (3; page 1 of 1)").first.wait_for(
        timeout=30_000)
    search = page.get_by_text("Find a cluster by label", exact=True).first.locator(
        "xpath=following::input[1]")
    # typed key by key, as a curator types (each key sends the box's value; the replies come
    # after later keys, and once put the box back to an older value, for ever)
    search.press_sequentially("helmit", delay=120)
    page.get_by_text("Clusters, the most doubtful first (1; page 1 of 1)").first.wait_for(
        timeout=30_000)
    page.wait_for_timeout(4000)  # all the replies are in
    assert search.input_value() == "helmit"
    page.get_by_text("Clusters, the most doubtful first (1; page 1 of 1)").first.wait_for(
        timeout=1_000)
    shot(page, "21a-panel-search")
    search.fill("")
    page.get_by_text("Clusters, the most doubtful first (3; page 1 of 1)").first.wait_for(
        timeout=30_000)
    assert edits() == [("reject", "drill", "helmet"), ("accept", "Helmets", "helmet"),
                       ("split", "Lathe Information", None), ("move", "screwdriver", "drill"),
                       ("rename", "helmet", "safety helmet")]

    # a suggestion accepted for a sample selected in the grid
    tile = page.locator('[data-cy="looker"]').first
    tile.hover()
    page.wait_for_timeout(500)
    corner = tile.bounding_box()
    page.mouse.click(corner["x"] + 18, corner["y"] + 18)  # the tile's selection box
    first = dataset.first()
    _until(lambda: session.selected == [first.id], "a selected sample", timeout=30, page=page)
    assert first.filepath.endswith("img0.png")
    page.get_by_text("Suggestions…", exact=True).first.click()
    box = page.get_by_placeholder("Type or select a value").last
    box.wait_for(timeout=30_000)
    box.click()
    box.fill("screwdriver")
    page.keyboard.press("Enter")
    # (moved to the cluster of drill above: the suggestion is shown as what it becomes)
    page.get_by_text("To accept: screwdriver (1, shown as its canonical label "
                     "drill)").first.wait_for(timeout=30_000)
    shot(page, "22-suggestion-form")
    execute(page)
    _until(lambda: len(edits()) == 6, "suggestion", timeout=30, page=page)

    page.get_by_text("Apply review", exact=True).first.click()
    page.get_by_text("not applied yet").first.wait_for(timeout=30_000)
    shot(page, "23-apply-form")
    execute(page)
    _until(lambda: dataset.reload() or dataset.count_values("vlsr_label.label").get("safety helmet"),
           "applied", page=page)
    page.get_by_text("all applied").first.wait_for(timeout=30_000)
    shot(page, "24-panel-applied")
    page.keyboard.press("Escape")
    page.get_by_text("Done", exact=True).first.click() if page.get_by_text(
        "Done", exact=True).count() else None


def test_whole_workflow_in_the_app(app, page, tmp_path):
    dataset, session = app
    clip = save_random_clip(str(tmp_path / "clip"))
    open_dataset(page, session, dataset)
    page.get_by_text("helmit").first.wait_for(timeout=60_000)
    shot(page, "01-dataset")

    # the operators read in pipeline order (the App lists operators used recently first)
    page.keyboard.press("Escape")
    page.mouse.click(700, 990)
    page.keyboard.press("`")
    page.get_by_placeholder("Search operations by name...").wait_for()
    page.keyboard.type("VLSR")
    page.get_by_text("VLSR: delete run", exact=True).first.wait_for(timeout=30_000)
    listed = [t for t in page.get_by_text(re.compile(r"^VLSR[ :]")).all_inner_texts()]
    assert listed == PIPELINE, listed
    shot(page, "01a-operators-in-pipeline-order")
    page.keyboard.press("Escape")

    # 1. compute embeddings: the default hub model cannot be had here, the form says so
    open_operator(page, "VLSR 1: compute embeddings")
    assert page.get_by_text("the Hugging Face Hub cannot be reached").count() == 1
    assert not page.get_by_role("button", name="Execute").first.is_enabled()
    shot(page, "02-embed-form-model-unavailable")
    fill(page, "openai/clip-vit-large-patch14", clip)
    fill(page, "32", 2)
    _until(lambda: page.get_by_text("the Hugging Face Hub cannot be reached").count() == 0,
           "the form to take the local model", timeout=30, page=page)
    # a device this machine lacks is refused before Execute, with the reason
    device = page.locator('input[value="auto"]').first.element_handle()
    device.fill("cuda")
    no_gpu = page.get_by_text("Device 'cuda': this machine has no CUDA GPU").first
    no_gpu.wait_for(timeout=30_000)
    no_gpu.scroll_into_view_if_needed()
    assert not page.get_by_role("button", name="Execute").first.is_enabled()
    shot(page, "03a-embed-form-no-cuda")
    device.fill("auto")
    page.wait_for_timeout(800)
    shot(page, "03-embed-form-filled")
    execute(page)
    _until(lambda: dataset.reload() or dataset.has_field("vlsr_embedding")
           and dataset.count("vlsr_embedding") == 5, "embeddings", page=page)
    page.get_by_text("embedded 5 images").first.wait_for(timeout=30_000)
    shot(page, "04-embed-done")
    config = dataset.get_run_info("vlsr").config
    assert config.model == clip and config.batch_size == 2

    # 2. score labels
    open_operator(page, "VLSR 2: score labels")
    shot(page, "05-score-form")
    execute(page)
    _until(lambda: dataset.reload() or "vlsr-low-similarity" in dataset.list_saved_views(),
           "review views", page=page)
    _until(lambda: dataset.reload() or dataset.count("gt.classifications.vlsr_similarity") == 7,
           "label scores", page=page)
    page.get_by_text("open the review views").first.wait_for(timeout=30_000)
    shot(page, "06-score-done")

    # 3. cluster and merge in the paper's mode: every cluster under 10 samples is merged into its
    # nearest neighbour, so on these 5 images all labels end in one cluster (the review below
    # takes it apart, whatever the random model's embeddings)
    open_operator(page, "VLSR 3: cluster and merge labels")
    page.get_by_text("paper (forced merges)", exact=True).first.click()
    page.wait_for_timeout(800)
    # image evidence belongs to the recommended mode: the paper mode's form does not offer it
    _until(lambda: page.get_by_text("Use image evidence", exact=True).count() == 0,
           "the paper mode's form", timeout=30, page=page)
    shot(page, "07-cluster-form")
    execute(page)
    _until(lambda: dataset.reload() or dataset.has_field("vlsr_label")
           and dataset.count("vlsr_label") == 5, "final labels", page=page)
    page.get_by_text("Largest clusters").first.wait_for(timeout=30_000)
    shot(page, "08-cluster-done")
    results = dataset.load_run_results("vlsr", cache=False)
    assert sorted(results.vocabulary) == sorted({l for ls in LABELS for l in ls})
    assert results.representatives == ["helmet"]  # the most frequent label

    # with a review view open, clustering still defaults to the run's dataset; narrowing warns
    page.keyboard.press("Escape")
    session.view = dataset.limit(2)
    page.get_by_text("2 samples", exact=True).first.wait_for(timeout=30_000)
    for attempt in range(3):  # a form opened while the App takes in the new view lacks its target
        open_operator(page, "VLSR 3: cluster and merge labels")
        try:
            page.get_by_text("Current view", exact=True).first.wait_for(timeout=15_000)
            break
        except Exception:
            if attempt == 2:
                raise
            page.get_by_role("button", name="Cancel").first.click()
    assert page.get_by_text("The target holds").count() == 0
    shot(page, "08b-cluster-form-review-view-open")
    page.get_by_text("Current view", exact=True).first.click()
    page.get_by_text("The target holds 2 of the 5 samples of the run's dataset").first.wait_for(
        timeout=30_000)
    shot(page, "08c-cluster-form-narrowed-target-warns")
    page.get_by_role("button", name="Cancel").first.click()
    session.view = None

    # the sidebar shows the new fields without a manual reload
    page.keyboard.press("Escape")
    page.get_by_text("vlsr_label", exact=True).first.wait_for(timeout=30_000)
    shot(page, "09-sidebar-new-fields")
    attributes_in_the_modal(page, ("vlsr_similarity", "vlsr_canonical", "vlsr_cluster"),
                            "09b-modal-label-scores")

    review_in_the_panel(page, dataset, session)

    # 4. export
    out = tmp_path / "export"
    open_operator(page, "VLSR 6: export cleaned labels")
    page.locator("input[type=string]").last.fill(str(out))  # the form is the last thing on the page
    _until(page.get_by_role("button", name="Execute").first.is_enabled, "a valid form", timeout=30,
           page=page)
    shot(page, "10-export-form")
    execute(page)
    _until(lambda: (out / "label_map.csv").exists() and (out / "image_labels.json").exists(), "export", page=page)
    with open(out / "samples.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and {r["final_label"] for r in rows} == set(dataset.values("vlsr_label.label"))
    # the export holds the review: the edits made in the panel, and the accepted suggestion
    finals = {os.path.basename(r["filepath"]): r["final_label"] for r in rows}
    assert finals["img0.png"] == "drill" and finals["img1.png"] == "safety helmet"
    with open(out / "label_map.csv", newline="") as f:
        canonical = {r["label"]: r["canonical"] for r in csv.DictReader(f)}
    assert canonical == {"helmet": "safety helmet", "Helmets": "safety helmet",
                         "helmit": "safety helmet", "drill": "drill", "screwdriver": "drill",
                         "Lathe Information": "Lathe Information"}
    # counted as Apply counts them
    page.get_by_text("The label map with the 5 label map edits and 1 suggestion decision "
                     "applied").first.wait_for(timeout=30_000)
    shot(page, "11-export-done")

    # a relative folder is refused: it would land wherever the App's server started
    open_operator(page, "VLSR 6: export cleaned labels")
    page.locator("input[type=string]").last.fill("exports")
    page.get_by_text(re.compile("^Give a full path, such as .*/exports: 'exports' is relative")).first.wait_for(
        timeout=30_000)
    shot(page, "11-export-relative-folder-refused")

    # a folder where samples.csv goes is refused before Execute (it failed while executing,
    # with a raw IsADirectoryError)
    blocked = tmp_path / "blocked"
    (blocked / "samples.csv").mkdir(parents=True)
    page.locator("input[type=string]").last.fill(str(blocked))
    page.wait_for_timeout(800)
    page.get_by_text("Overwrite", exact=True).first.click()
    page.get_by_text(re.compile("samples.csv is a folder where the export writes a file")).first.wait_for(
        timeout=30_000)
    assert not page.get_by_role("button", name="Execute").first.is_enabled()
    shot(page, "11a-export-blocked-refused")
    page.keyboard.press("Escape")

    # the exported label map, edited in a spreadsheet, comes back as review edits
    changed = {"screwdriver": "screwdriver", "Lathe Information": "lathe"}
    edited = tmp_path / "edited.csv"
    edit_label_map(out / "label_map.csv", edited, changed)
    dataset.reload()
    before = len(dataset.get_run_info("vlsr").config.review)
    in_force = len(review_state(dataset, "vlsr").in_force)
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Import…").first.click()  # from the panel
    page.get_by_text("Label map CSV", exact=True).first.wait_for(timeout=30_000)
    page.locator("input[type=string]").last.fill(str(edited))
    page.get_by_text(re.compile(r"^Execute records 2 edits \(1 split, 1 rename\)")).first.wait_for(
        timeout=30_000)
    _until(page.get_by_role("button", name="Execute").first.is_enabled, "a valid form", timeout=30,
           page=page)
    shot(page, "11d-import-form")
    execute(page)
    page.get_by_text(re.compile(r"^Recorded 2 edits")).first.wait_for(timeout=30_000)
    # the panel, which opened the form, shows the edits at once
    page.get_by_text(re.compile(rf"^Review: {in_force + 2} edits in force")).first.wait_for(
        timeout=30_000)
    shot(page, "11e-import-done")
    page.keyboard.press("Escape")
    first = before + 1
    dataset.reload()  # the App's server wrote the run
    assert review_state(dataset, "vlsr").label_map.canonical == {**canonical, **changed}
    # and goes back as a whole: the import's first edit, with the later ones
    open_operator(page, "VLSR 4: undo a review edit")
    page.get_by_text("Edit to undo", exact=True).first.wait_for(timeout=30_000)
    page.locator("[role=combobox]").last.click()
    page.get_by_role("option", name=re.compile(f"^#{first} ")).first.click()
    page.get_by_text("Also undo every edit made after it", exact=True).first.click()
    page.wait_for_timeout(800)
    shot(page, "11f-undo-an-import")
    execute(page)
    page.get_by_text(re.compile(f"^Undid 2 edits of run 'vlsr', #{first} to #{first + 1}")).first.wait_for(
        timeout=30_000)
    # the panel, which did not open this form, hears of it too (no click on its Refresh)
    page.get_by_text(re.compile(rf"^Review: {in_force} edits in force")).first.wait_for(
        timeout=30_000)
    shot(page, "11g-panel-after-an-undo-from-the-operator-browser")
    page.keyboard.press("Escape")
    dataset.reload()
    assert review_state(dataset, "vlsr").label_map.canonical == canonical

    # FiftyOne's Embeddings panel on the run's embeddings
    open_operator(page, "VLSR: map the embeddings (Embeddings panel, similarity search)")
    execute(page)
    _until(lambda: dataset.reload() or "vlsr_map" in dataset.list_brain_runs(), "the map",
           page=page)
    page.get_by_text("open the Embeddings panel").first.wait_for(timeout=30_000)
    shot(page, "11b-embeddings-mapped")
    page.keyboard.press("Escape")
    if page.get_by_text("Done", exact=True).count():
        page.get_by_text("Done", exact=True).first.click()
    page.get_by_text("vlsr_map", exact=True).first.click()  # in the Embeddings panel opened
    page.get_by_text(re.compile(r"\b5 points$")).first.wait_for(timeout=30_000)  # the 5 images
    shot(page, "11c-embeddings-panel-map")

    page.keyboard.press("Escape")
    # the grid sorts by a similarity field (indexed by the run)
    lowest = dataset.sort_by("vlsr_min_similarity").first()
    expected = [c.label for c in lowest.gt.classifications]

    clicked = []

    def sort_by_min_similarity():
        if first_tile_labels(page) == expected:
            return True
        # on a loaded machine a click can land before the menu is ready: choose again, at most
        # every 15 s (a sort that did apply shows well within that)
        if len(clicked) < 3 and (not clicked or time.time() - clicked[-1] > 15):
            page.locator('[data-cy="selector-Sort by"]').click()
            page.locator('[data-cy="selector-result-vlsr_min_similarity"]').click(timeout=10_000)
            clicked.append(time.time())
        return False

    _until(sort_by_min_similarity, "grid sorted by vlsr_min_similarity", timeout=60, page=page)
    shot(page, "12-sorted-by-min-similarity")

    # the label field's filters in the sidebar include vlsr_similarity
    page.locator('[data-cy="sidebar-field-arrow-enabled-gt"]').click()  # expand the field
    page.locator('[data-cy="sidebar"]').get_by_text("vlsr_similarity").first.wait_for(timeout=30_000)
    shot(page, "13-filter-by-vlsr-similarity")

    # the review views are there to open
    page.keyboard.press("Escape")
    page.get_by_text("Unsaved view").first.click()
    page.get_by_text("vlsr-low-similarity").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1000)  # let the menu finish fading in
    shot(page, "14-saved-views")
    page.get_by_text("vlsr-low-similarity").first.click()
    low = dataset.load_saved_view("vlsr-low-similarity")
    page.get_by_text(re.compile(rf"^{len(low)} samples?$")).first.wait_for(timeout=30_000)
    shot(page, "15-low-similarity-view")


def add_noise_images(dataset, tmp_path, n, labels_of):
    """Add ``n`` noise images, image ``i`` with the labels ``labels_of(i)`` in ``gt``."""
    samples = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path)
        samples.append(fo.Sample(filepath=str(path), gt=fo.Classifications(classifications=[
            fo.Classification(label=l) for l in labels_of(i)])))
    dataset.add_samples(samples)


@pytest.fixture
def large_cluster_app(dataset, tmp_path):
    """250 distinct labels on 50 noise images, which paper mode forces into one cluster (every
    cluster is under the minimum size and merges into its nearest)."""
    from vlsr_core.fo.stages import run_vlsr

    add_noise_images(dataset, tmp_path, 50, lambda i: [f"part {5 * i + j:03d}" for j in range(5)])
    run_vlsr(dataset, "gt", model=save_random_clip(str(tmp_path / "clip")), num_workers=0,
             mode="paper", min_cluster_size=1000)
    assert len(dataset.load_run_results("vlsr").representatives) == 1
    session = fo.launch_app(dataset, port=_free_port(), remote=True, auto=False)
    yield dataset, session
    session.close()


def test_a_large_cluster_in_pages_in_the_panel(large_cluster_app, page):
    dataset, session = large_cluster_app
    open_dataset(page, session, dataset)
    open_panel(page, page.get_by_text("Clusters, the most doubtful first (1; page 1 of 1)").first)
    row_action(page, 0, dataset.load_run_results("vlsr").representatives[0], "Members")
    page.get_by_text("Members of the cluster", exact=False).first.wait_for(timeout=30_000)
    page.get_by_text(re.compile(r"the farthest first \(members 1-100 of 250\)$")).first.wait_for(
        timeout=30_000)
    members = page.locator("table").nth(1).locator("tbody tr")
    # (the title is in the panel's state, the table in its layout, which the App may draw a
    # moment later: until then the second table is the merge steps', of 4 rows)
    _until(lambda: members.count() == 100, "the first 100 members", timeout=30, page=page)
    shot(page, "p0-panel-large-cluster-opened")  # as the click left it: no scrolling
    # the members are in view as the click left them (the histogram steps aside)
    box = members.first.bounding_box()
    assert box["y"] + box["height"] <= page.viewport_size["height"], box
    first_page = members.locator("td:first-child").all_inner_texts()

    def page_to(button, span):
        # the buttons are at the foot of a long table: scroll there, click, wait for the label
        link = page.get_by_role("button", name=button, exact=True).last
        link.scroll_into_view_if_needed()
        link.click()
        page.get_by_text(re.compile(rf"the farthest first \(members {span} of 250\)$")).first.wait_for(
            timeout=30_000)

    page_to("Next", "101-200")
    second_page = members.locator("td:first-child").all_inner_texts()
    assert len(second_page) == 100 and not set(first_page) & set(second_page)
    page_to("Next", "201-250")
    assert members.count() == 50
    # the last page: no Next (its title is in the panel's state, its buttons in the layout,
    # which the App may draw a moment later)
    _until(lambda: page.get_by_role("button", name="Next", exact=True).count() == 0,
           "no Next button on the last page", timeout=15, page=page)
    shot(page, "p1-panel-last-page-of-members-foot")
    page.get_by_text(re.compile(r"\(members 201-250 of 250\)$")).first.scroll_into_view_if_needed()
    shot(page, "p2-panel-last-page-of-members-head")
    page_to("Previous", "101-200")
    assert members.locator("td:first-child").all_inner_texts() == second_page


TOOLS = ["hammer", "drill", "saw", "wrench", "pliers", "chisel", "file", "level", "clamp", "vise",
         "ruler", "tape", "glue", "nail", "screw", "bolt", "washer", "rivet", "anvil", "sander"]


@pytest.fixture
def rare_app(dataset, tmp_path):
    """20 tool names on 10 images, clustered with the defaults: every cluster is under 10
    samples, so merging leaves them alone as rare."""
    from vlsr_core.fo.stages import run_vlsr

    add_noise_images(dataset, tmp_path, 10, lambda i: [TOOLS[(2 * i + j) % 20] for j in range(3)])
    run_vlsr(dataset, "gt", model=save_random_clip(str(tmp_path / "clip")), num_workers=0)
    session = fo.launch_app(dataset, port=_free_port(), remote=True, auto=False)
    yield dataset, session
    session.close()


def test_rare_clusters_join_their_nearest_from_the_panel(rare_app, page):
    dataset, session = rare_app
    open_dataset(page, session, dataset)
    open_panel(page, page.get_by_text(re.compile(r"^Clusters, the most doubtful first")).first)
    n_rare = len(dataset.load_run_results("vlsr").representatives)  # all of them
    choose(page, "List", f"rare clusters (under 10 samples: {n_rare})")
    title = page.get_by_text(re.compile(r"^Rare clusters, the nearest to another cluster first "
                                        r"\((\d+) rows?(, two clusters nearest to each other "
                                        r"in one)?; page"))
    title.first.wait_for(timeout=30_000)
    page.locator("table").nth(0).scroll_into_view_if_needed()
    shot(page, "r1-panel-rare-clusters")
    first = page.locator("table").nth(0).locator("tbody tr").first.locator("td").first.inner_text()
    row_action(page, 0, first, "Join the nearest cluster")
    page.get_by_text(re.compile(rf"^Edit #1: {first} joins the cluster ")).first.wait_for(
        timeout=30_000)
    page.get_by_text(f"rare clusters (under 10 samples: {n_rare - 1}), the nearest "
                     "to another first", exact=True).first.wait_for(timeout=30_000)
    shot(page, "r2-panel-rare-cluster-joined")
    dataset.reload()
    [edit] = review_state(dataset, "vlsr").in_force
    assert (edit.action, edit.label) == ("rename", first)


@pytest.fixture
def boxes_app(dataset, tmp_path):
    """Four photos with boxes: one over the whole image, one of 100 x 80 pixels, one too small."""
    samples = []
    for i in range(4):
        path = tmp_path / f"box{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(path)
        samples.append(fo.Sample(filepath=str(path), gt=fo.Detections(detections=[
            fo.Detection(label="drill press", bounding_box=[0, 0, 1, 1]),
            fo.Detection(label=["screw", "bolt"][i % 2], bounding_box=[0.1, 0.5, 0.3125, 0.3333]),
            fo.Detection(label="washer", bounding_box=[0.8, 0.1, 0.0125, 0.0167])])))
    dataset.add_samples(samples)
    session = fo.launch_app(dataset, port=_free_port(), remote=True, auto=False)
    yield dataset, session
    session.close()


def test_boxes_scored_on_their_crops_in_the_app(boxes_app, page, tmp_path):
    dataset, session = boxes_app
    clip = save_random_clip(str(tmp_path / "clip"))
    open_dataset(page, session, dataset)

    # the embed form offers crops for a Detections field, and their settings once chosen
    open_operator(page, "VLSR 1: compute embeddings")
    crops = page.get_by_text("Score each box on its crop", exact=True).first
    crops.scroll_into_view_if_needed()
    assert page.get_by_text("Crop context", exact=True).count() == 0
    crops.click()
    page.get_by_text("Crop context", exact=True).first.wait_for(timeout=30_000)
    fill(page, "openai/clip-vit-large-patch14", clip)
    page.get_by_text("Smallest box to crop (pixels)", exact=True).first.scroll_into_view_if_needed()
    shot(page, "c1-embed-form-crops")
    execute(page)
    _until(lambda: dataset.reload() or dataset.has_field("vlsr_crop_embeddings")
           and dataset.count("vlsr_crop_embeddings") == 4, "crop embeddings", page=page)
    page.get_by_text("cut and embedded 8 boxes (4 more too small").first.wait_for(timeout=30_000)
    shot(page, "c2-embed-done")

    open_operator(page, "VLSR 2: score labels")
    execute(page)
    _until(lambda: dataset.reload() or dataset.count("gt.detections.vlsr_crop_similarity") == 12,
           "crop scores", page=page)
    page.get_by_text("12 boxes: 8 on their crops, 4 on the whole image").first.wait_for(
        timeout=30_000)
    shot(page, "c3-score-done")
    page.get_by_text("vlsr_min_crop_similarity").first.wait_for(timeout=30_000)
    dataset.reload()
    assert "crop" in dataset.get_saved_view_info("vlsr-low-similarity")["description"]

    # a sample's modal shows each box's crop score beside its image score
    page.keyboard.press("Escape")
    attributes_in_the_modal(page, ("vlsr_similarity", "vlsr_crop_similarity", "vlsr_crop_fallback",
                                   "vlsr_crop_gap"), "c4-modal-crop-scores")

    # image evidence on a run with crops reads the boxes' crops, and the result says so (too
    # few labels here to use them: 4 labels on 4 photos)
    open_operator(page, "VLSR 3: cluster and merge labels")
    fill(page, "10", 1)  # min cluster size
    page.get_by_text("Use image evidence", exact=True).first.click()
    page.wait_for_timeout(800)
    shot(page, "c5-cluster-form-image-evidence")
    execute(page)
    said = page.get_by_text(re.compile(r"image evidence from the boxes' crops \(each crop counted "
                                       r"as an image\) not used \(fewer than 10 labels")).first
    said.wait_for(timeout=60_000)
    shot(page, "c6-cluster-done-image-evidence-from-crops")
    assert dataset.get_run_info("vlsr").config.image_evidence is True

    # the panel's histogram says it counts crop scores
    page.keyboard.press("Escape")
    open_panel(page, page.get_by_text("box crop-label score").first)
    shot(page, "c7-panel-crop-histogram")


def test_scoring_and_merging_in_shards_from_the_app(app, page, tmp_path):
    """Shards chosen in the forms are queued, a `fiftyone delegated launch` worker runs them,
    and the last one saves the review views that the App then lists."""
    from test_sharding import _workers

    from vlsr_core.fo.stages import compute_embeddings

    dataset, session = app
    dataset.persistent = True  # the worker is another process; the fixture still deletes it
    compute_embeddings(dataset, "gt", model=save_random_clip(str(tmp_path / "clip")), num_workers=0)
    open_dataset(page, session, dataset)

    open_operator(page, "VLSR 2: score labels")
    shards = page.get_by_text("Shards", exact=True).first
    shards.scroll_into_view_if_needed()
    fill(page, "1", 2, last=True)  # Shards, the form's last input
    shot(page, "s1-score-form-shards")
    execute(page)
    page.get_by_text("queued 2 shards").first.wait_for(timeout=60_000)
    shot(page, "s2-score-shards-queued")
    stage = lambda name: dataset.get_run_info("vlsr").config.stages.get(name)  # noqa: E731
    dataset.reload()
    assert stage("score").startswith("shards:") and not dataset.has_saved_view("vlsr-low-similarity")
    # while they wait, the forms say the stage is in progress as shards
    page.keyboard.press("Escape")
    open_operator(page, "VLSR 3: cluster and merge labels")
    page.get_by_text("runs as 2 delegated shards (2 queued); the last to finish completes it").first.wait_for(
        timeout=30_000)
    shot(page, "s2b-forms-say-scoring-runs-in-shards")

    workers = _workers(1)
    try:
        _until(lambda: dataset.reload() or stage("score") == "complete", "the score shards", page=page)
        open_operator(page, "VLSR 3: cluster and merge labels")
        page.get_by_text("Shards", exact=True).first.scroll_into_view_if_needed()
        fill(page, "10", 1)  # minimum cluster size
        fill(page, "1", 2, last=True)
        execute(page)
        page.get_by_text("queued 2 shards").first.wait_for(timeout=60_000)
        shot(page, "s3-cluster-shards-queued")
        _until(lambda: dataset.reload() or stage("cluster") == "complete", "the cluster shards",
               page=page)
    finally:
        for w in workers:
            w.terminate()
            w.wait(timeout=30)
    # the check above reloads the dataset before it reads the stage, which the last shard marks
    # complete after it saved the views: read them again
    dataset.reload()
    assert dataset.count("gt.classifications.vlsr_similarity") == 7
    assert dataset.count("vlsr_label") == len(LABELS)
    assert dataset.has_saved_view("vlsr-low-similarity") and dataset.has_saved_view("vlsr-final-label-changed")

    # the App, reloaded, offers the views the last shards saved
    page.keyboard.press("Escape")
    page.reload(wait_until="load")
    page.get_by_text("helmit").first.wait_for(timeout=60_000)
    page.get_by_text("Unsaved view").first.click()
    page.get_by_text("vlsr-low-similarity").first.wait_for(timeout=30_000)
    page.wait_for_timeout(800)  # the list's opening animation
    shot(page, "s4-views-saved-by-the-last-shard")


def test_deleting_a_run_while_the_app_shows_its_saved_view(app, page, tmp_path):
    """Of two runs, the delete form makes the user pick one; deleting the run whose saved view
    the App shows sends the App to the whole dataset, with no error while the other run's
    saved views remain (the App's server failed on the deleted view's name: a full-page
    'GraphQL API Error')."""
    from vlsr_core.fo.stages import run_vlsr

    dataset, session = app
    clip = save_random_clip(str(tmp_path / "clip"))
    for key in ("vlsr", "tmp"):
        run_vlsr(dataset, "gt", key=key, model=clip, num_workers=0, min_cluster_size=1)
    open_dataset(page, session, dataset)
    page.get_by_text("Unsaved view", exact=True).first.click()
    page.get_by_text("tmp-low-similarity", exact=True).first.click()
    _until(lambda: "view=tmp-low-similarity" in page.url, "the saved view", timeout=30, page=page)

    open_operator(page, "VLSR: delete run")
    page.get_by_text("pick one of the 2 runs of this dataset").first.wait_for(timeout=30_000)
    assert not page.get_by_text("Delete them", exact=True).count()  # nothing chosen, no deletion
    assert not page.get_by_role("button", name="Execute").first.is_enabled()
    shot(page, "d1-delete-form-asks-which-run")
    page.locator('[role="combobox"]').last.click()
    page.get_by_role("option", name=re.compile("^tmp")).first.click()
    page.get_by_text("Delete them", exact=True).first.click()
    page.get_by_text("saved views of run 'tmp'").first.wait_for(timeout=30_000)
    _until(lambda: not page.get_by_text("Tick the box to confirm").count(), "the form checked",
           timeout=30, page=page)
    shot(page, "d2-delete-form-run-picked")
    execute(page)
    _until(lambda: dataset.reload() or dataset.list_runs() == ["vlsr"], "the run deleted", page=page)
    page.get_by_text(f"{len(LABELS)} samples", exact=True).first.wait_for(timeout=30_000)
    page.get_by_text("Unsaved view", exact=True).first.wait_for(timeout=30_000)
    page.wait_for_timeout(3000)  # the App's queries after the deletion
    shot(page, "d3-run-deleted-whole-dataset-shown")
    assert not page.get_by_text("GraphQL API Error").count()
    assert "view=" not in page.url
    # the sidebar lists the fields of the run that stays, not those of the deleted one
    assert page.get_by_text("vlsr_label", exact=True).count()
    assert not page.get_by_text("tmp_label", exact=True).count()
