"""The VLSR review panel, driven through FiftyOne's operator machinery as the App drives it:
each event runs a panel method, and the state, data and layout it sends back are checked."""

import time

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest

from vlsr_core.fo.review import add_edit, review_state, undo_edit

from fake_clip import FakeEncoder, build

URI = "@vlsr/vlsr/vlsr_panel"


class Panel:
    """One open panel: keeps its state between events, as the App does."""

    def __init__(self, dataset):
        self.dataset, self.state, self.data, self.requests = dataset, {}, {}, []

    def event(self, method, sent_state=None, view=None, **params):
        """Run ``method`` as the App does, with the panel's state (or ``sent_state``: what the
        App held when it sent the event, before the replies to earlier ones came back), the
        grid showing ``view`` (None: the whole dataset)."""
        saved = {"view_name": view.name} if getattr(view, "name", None) else {}  # as the App
        r = foo.execute_operator(URI, dataset=self.dataset, view=view, **saved, params=dict(
            __method__=method, panel_id="p1",
            panel_state=dict(self.state if sent_state is None else sent_state), **params))
        self.requests = r.executor.to_json()["requests"]
        for q in self.requests:
            if q["operator_uri"] == "patch_panel_state":
                self.state.update(q["params"]["state"])
            elif q["operator_uri"] == "patch_panel_data":
                self.data.update(q["params"]["data"])
        return self

    @property
    def shown(self):
        """What the App shows: its state and data merged as lodash's ``merge`` does, a list
        index by index."""
        return _merged(self.state, self.data)

    def search(self, value):
        """Type in the search box: the App puts the value in the state, then sends the event."""
        self.state["query"] = value
        return self.event("on_search", value=value)

    def sent(self, operator):
        return [q["params"] for q in self.requests if q["operator_uri"] == operator]

    @property
    def layout(self):
        return self.sent("show_panel_output")[-1]["output"]


def _merged(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        return {**a, **{k: _merged(a[k], v) if k in a else v for k, v in b.items()}}
    if isinstance(a, list) and isinstance(b, list):
        return [_merged(a[i], v) if i < len(a) else v for i, v in enumerate(b)] + a[len(b):]
    return b


@pytest.fixture
def ran(dataset, tmp_path):
    from vlsr_core.fo.stages import run_vlsr

    images = build(dataset, tmp_path / "images")
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), top_k=3, min_cluster_size=1)
    return dataset


def test_without_a_run_the_panel_says_what_to_do(dataset, tmp_path):
    build(dataset, tmp_path / "images")
    panel = Panel(dataset).event("on_load")
    assert "No VLSR run on this dataset yet" in panel.state["problem"]
    assert "VLSR 1: compute embeddings" in str(panel.layout)


def test_on_a_dataset_vlsr_cannot_run_on_the_panel_says_why():
    """It said to run VLSR 1, whose form then refused the empty or video dataset."""
    other = fo.Dataset()
    try:
        assert Panel(other).event("on_load").state["problem"] == (
            "There are no samples in this dataset")
        other.add_sample(fo.Sample(filepath="/nowhere/v.mp4"))
        assert Panel(other).event("on_load").state["problem"] == (
            "VLSR works on image datasets; this one holds video samples")
    finally:
        other.delete()


def test_the_panel_shows_scores_steps_and_clusters_the_most_doubtful_first(ran):
    panel = Panel(ran).event("on_load")
    n_scores = ran.count("gt.classifications.vlsr_similarity")
    assert sum(panel.data["histogram"][0]["y"]) == n_scores == 14
    plot = str(panel.layout)  # a few labels a bar: the y-axis ticks whole counts, not halves
    assert max(panel.data["histogram"][0]["y"]) <= 10 and "'dtick': 1" in plot
    assert [s["step"].split(" (")[0] for s in panel.shown["steps"]] == [
        "Labels", "After lexical grouping", "After DBSCAN", "Canonical labels after merging",
        "After the review"]
    assert [s["count"] for s in panel.shown["steps"]] == [7, 4, 4, 4, 4]  # helmet/Helmets/helmit, screwdriver/Screwdrivers: lexical
    clusters = panel.state["clusters"]
    assert [c["canonical"] for c in clusters[:2]] == ["helmet", "screwdriver"]  # farthest merges
    assert clusters[0]["labels"] == 3 and clusters[0]["occurrences"] == 7
    assert clusters[0]["farthest"] > clusters[1]["farthest"] > 0 == clusters[2]["farthest"]
    assert panel.state["status"] == "**Review:** no edits yet"
    # the join no closeness of text vouches for is listed under the steps, for a look
    assert "typo: `helmet` / `helmit`" in panel.state["joins"]
    assert "Joins worth a look" in str(panel.layout)
    from vlsr_core.fo.summary import summarize_run

    add_edit(ran, "vlsr", "reject", "helmit")  # looked at, and taken apart: no longer listed
    assert not panel.event("refresh").state["joins"]
    assert "Joins worth a look" not in summarize_run(ran, "vlsr")


def test_the_merge_steps_and_the_histogram_follow_the_run(ran):
    """Clustered again in the paper's mode (one step fewer), the steps table kept the last row
    of the earlier one, even after a reload; with every run deleted, the histogram of the
    deleted run stayed."""
    from vlsr_core.fo.stages import cluster_and_merge

    panel = Panel(ran).event("on_load")
    assert len(panel.shown["steps"]) == 5
    panel.state["steps"] = panel.shown["steps"]  # the App keeps an input's value in the state
    cluster_and_merge(ran, mode="paper", min_cluster_size=1)
    steps = panel.event("refresh").shown["steps"]
    assert [s["step"].split(" (")[0] for s in steps] == [
        "Labels", "After DBSCAN", "Canonical labels after merging", "After the review"]
    assert panel.shown["histogram"] and "'histogram'" in str(panel.layout)
    ran.delete_run("vlsr")
    panel.event("refresh")
    assert "No VLSR run" in panel.state["problem"] and "'histogram'" not in str(panel.layout)


def test_counts_read_as_the_apps_grid_shows_them():
    """Audit: the scope line said "(1316 samples)" beside the grid's "1,316 samples"."""
    from vlsr_core.wording import count

    assert count(1316, "sample") == "1,316 samples"
    assert count(1, "box") == "1 box" and count(1000000, "box") == "1,000,000 boxes"


def test_the_panel_says_it_covers_the_whole_run_while_the_grid_shows_a_part(ran):
    ran.save_view("two", ran.limit(2))
    # the App can send a change of view before the panel's load: it loads then
    assert "Review:" in str(Panel(ran).event("on_change_view").layout)
    # and one whose load a later event overtook (its results are not sent) still renders
    import importlib

    module = importlib.import_module(type(foo.get_operator(URI)).__module__)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(module._Writes, "send", lambda self: None)  # as for an overtaken event
        assert "Loading the run" in str(Panel(ran).event("on_change_view").layout)
    panel = Panel(ran).event("on_load")
    assert not _scope_line(panel)
    panel.event("on_change_view", view=ran.load_saved_view("two"))
    assert _scope_line(panel) == (
        f"*The grid shows the saved view `two` (2 samples); the clusters and scores here are "
        f"those of the whole run ({len(ran)} samples).*")
    assert "The grid shows the saved view" in str(panel.layout)
    # a change of view writes nothing (audit: each write makes the App send the event again:
    # 6 of them queued behind each key typed in the search box; and a write while the sidebar
    # filters the grid made the App drop the filter)
    panel.event("on_change_view", view=ran.load_saved_view("two"))
    assert panel.sent("patch_panel_state") == []
    panel.event("on_change_view", view=ran.limit(3))
    assert panel.sent("patch_panel_state") == [] and "(3 samples)" in _scope_line(panel)
    panel.event("on_load", view=ran.match_tags("none"))  # a filter: the panel reloaded on it
    assert _scope_line(panel).startswith("*The grid shows a filtered view (0 samples)")
    panel.event("on_change_view", view=ran.sort_by("filepath", reverse=True))  # a sort: no part
    assert not _scope_line(panel)
    panel.event("on_change_view")  # back to the whole dataset
    assert not _scope_line(panel) and "The grid shows" not in str(panel.layout)
    # a run made on an unsaved view: what it covers is not known, so nothing is said
    from vlsr_core.fo.runs import save_config

    config = ran.get_run_info("vlsr").config
    config.collection = ""
    save_config(ran, "vlsr", config)
    panel.event("on_change_view", view=ran.load_saved_view("two"))
    assert not _scope_line(panel)


def test_a_run_whose_label_field_is_gone_is_a_message_not_a_traceback(dataset, tmp_path):
    from vlsr_core.fo.stages import compute_embeddings

    images = build(dataset, tmp_path / "images")
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images))  # not scored yet
    dataset.delete_sample_field("gt")
    panel = Panel(dataset).event("on_load")
    assert panel.state["problem"] == ("Run 'vlsr' cannot be shown: No field 'gt'; label fields "
                                      "here: none")
    panel.event("on_change_view")  # (review: loaded again at every change of view)
    assert panel.sent("patch_panel_state") == []


def test_a_long_label_is_cut_in_the_tables_and_acted_on_whole(dataset, tmp_path, monkeypatch):
    """A table is as wide as its longest word: a 300-character label, or even its first 60
    characters without a space, pushed the row menus out of a panel beside the grid. The
    tables show it cut, with break points in long words; the actions get the label whole."""
    import re

    import fake_clip
    from vlsr_core.fo.stages import run_vlsr

    long = "L" + "o" * 298 + "ng"
    monkeypatch.setitem(fake_clip.LABELS, long, ("glove", None, 0.0))
    images = build(dataset, tmp_path / "images", spec=[("a.png", "helmet", [long])])
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    panel = Panel(dataset).event("on_load")
    row = panel.state["clusters"][0]

    def words(text):  # what a browser may put on a line of its own
        return re.split(r"[\s\u200b]+", text)

    assert row["canonical"] == long
    assert row["canonical_shown"].replace("\u200b", "") == (
        long[:20] + "…" + long[-10:] + " (301 characters)")  # (its end: long labels differ there)
    assert max(map(len, words(row["canonical_shown"]))) <= 12
    assert "canonical_shown" in str(panel.layout) and "'canonical'" not in str(panel.layout)
    panel.event("open_cluster", row=0)
    shown = panel.state["members"][0]["shown"]
    assert shown.replace("\u200b", "") == long[:20] + "…" + long[-10:] + " (301 characters) (canonical)"
    assert max(map(len, words(shown))) <= 12
    assert max(map(len, words(panel.state["cluster_name"]))) <= 12
    panel.search(long[:20])  # the start of the name as shown finds it
    assert [r["canonical"] for r in panel.state["clusters"]] == [long]
    panel.event("split", row=0)  # acts on the whole label: it is a cluster of its own already
    assert "already a cluster of its own" in str(panel.sent("notify"))


def test_a_label_with_a_tab_is_found_as_shown_or_typed(dataset, tmp_path, monkeypatch):
    """The panel shows a tab as "⇥": the search finds the label by that glyph, by a space, or
    by the start of the name as the table shows it."""
    import fake_clip
    from vlsr_core.fo.stages import run_vlsr

    monkeypatch.setitem(fake_clip.LABELS, "safety\tvest", ("glove", None, 0.0))
    images = build(dataset, tmp_path / "images", spec=[("a.png", "helmet", ["safety\tvest"])])
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    panel = Panel(dataset).event("on_load")
    assert "safety⇥vest" in [r["canonical_shown"] for r in panel.state["clusters"]]
    for typed in ("safety⇥vest", "Safety Vest", "safety  vest", "y\tv"):
        panel.search(typed)
        assert [r["canonical"] for r in panel.state["clusters"]] == ["safety\tvest"], typed
    panel.search("safetyvest")
    assert panel.state["clusters"] == []


def test_a_label_shown_with_escapes_is_found_as_shown(dataset, tmp_path, monkeypatch):
    """Audit: the panel shows "drill" with a no-break space as ``drill\\xa0`` (beside "drill")
    and a decomposed "café" as ``cafe\\u0301``; typed so, the search found nothing."""
    import fake_clip
    from vlsr_core.fo.stages import run_vlsr

    twins = ["drill\xa0", "cafe\u0301", "a\\b"]
    # (three labels apart: labels all of one embedding now merge, as labels nearly alike do)
    for label, concept in zip(("drill", *twins), ("glove", "glove", "lathe", "screw")):
        monkeypatch.setitem(fake_clip.LABELS, label, (concept, None, 0.0))
    images = build(dataset, tmp_path / "images", spec=[
        (f"{i}.png", "helmet", [label]) for i, label in enumerate(["drill", *twins])])
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    panel = Panel(dataset).event("on_load")
    assert {r["canonical_shown"] for r in panel.state["clusters"]} == {
        "drill", "cafe\\u0301", "a\\\\b"}  # (the twins of "drill" are one cluster)
    for typed, found in (("drill\\xa0", "drill"), ("DRILL\\XA0", "drill"), ("\\x", "drill"),
                         ("e\\u0301", "cafe\u0301"), ("a\\\\b", "a\\b"), ("a\\b", "a\\b")):
        panel.search(typed)
        assert [r["canonical"] for r in panel.state["clusters"]] == [found], typed
    panel.search("drill\\xa0")
    panel.event("open_cluster", row=0)  # the member found comes first
    assert [m["label"] for m in panel.state["members"]][0] == "drill\xa0"


def test_the_members_title_shows_the_cluster_name_as_the_rows_do(dataset, tmp_path, monkeypatch):
    """Walk: the members' title rendered the name as Markdown: '**screw**_driver_' in bold
    and italics, 'a\\b' (shown with its backslash doubled in the rows) with one."""
    import fake_clip
    from vlsr_core.fo.stages import run_vlsr

    names = ["**screw**_driver_", "a\\b"]
    for label, concept in zip(names, ("glove", "lathe")):  # (apart: see above)
        monkeypatch.setitem(fake_clip.LABELS, label, (concept, None, 0.0))
    images = build(dataset, tmp_path / "images", spec=[
        (f"{i}.png", "helmet", [label]) for i, label in enumerate(names)])
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), min_cluster_size=1)
    panel = Panel(dataset).event("on_load")
    for name, title in (("**screw**_driver_", "\\*\\*screw\\*\\*\\_driver\\_"),
                        ("a\\b", "a\\\\\\\\b")):  # (Markdown, of the row's a\\b)
        panel.search(name)
        panel.event("open_cluster", row=0)
        shown = panel.state["members_title"].replace("\u200b", "")  # (breaks in long words)
        assert shown.startswith(f"Members of the cluster '{title}', "), name
        panel.event("close_cluster")


def test_an_action_refused_on_a_row_an_edit_elsewhere_changed_redraws_the_tables(ran):
    """After an edit from the command line, the open cluster's table went on showing a member
    that was no longer there, and an action on it was refused beside it."""
    panel = Panel(ran).event("on_load")
    panel.event("open_cluster", row=0)
    assert [m["label"] for m in panel.state["members"]] == ["helmit", "Helmets", "helmet"]
    add_edit(ran, "vlsr", "split", "helmit")  # (vlsr review split helmit, in a terminal)
    panel.event("take_out", row=0)  # helmit, on its own now
    assert panel.sent("notify")[-1]["variant"] == "error"
    assert [m["label"] for m in panel.state["members"]] == ["Helmets", "helmet"]


def test_a_notebooks_edit_apply_or_new_embeddings_reach_the_panel_on_a_change_of_view(ran):
    """Audit (a notebook beside the App): after add_edit and apply_review from Python, then
    ``session.view = ...``, the panel went on saying "not applied yet", and after the images
    were embedded again "all applied" with no word of the scores out of date."""
    from vlsr_core.fo.review import apply_review
    from vlsr_core.fo.runs import OUTDATED, save_config

    panel = Panel(ran).event("on_load")
    add_edit(ran, "vlsr", "split", "helmit")
    panel.event("on_change_view", view=ran.limit(3))
    assert "1 edit in force" in panel.state["status"]
    assert "not applied yet" in panel.state["status"]
    apply_review(ran, "vlsr")
    panel.event("on_change_view")
    assert "not applied yet" not in panel.state["status"]
    config = ran.get_run_info("vlsr").config  # (as embedding the images again leaves it)
    config.stages = {**config.stages, "score": OUTDATED, "cluster": OUTDATED}
    save_config(ran, "vlsr", config)
    panel.event("on_change_view", view=ran.limit(3))
    assert "**Out of date:** score labels and cluster and merge ran before the last change" in (
        panel.state["status"])
    panel.event("on_change_view", view=ran.limit(3))  # nothing changed: nothing written
    assert panel.sent("patch_panel_state") == []


def _scope_line(panel):
    """The line of the panel saying what part of the run the grid shows, or None."""
    def find(node):
        if isinstance(node, dict):
            if "scope" in node.get("properties", {}):
                return node["properties"]["scope"]
            return next((f for f in map(find, node.values()) if f is not None), None)
        return None

    found = find(panel.layout)
    return None if found is None else found.get("default", found.get("view", {}).get("label"))


def _row_actions(panel, table):
    """{action name: the rows that offer it (None: every row)} of a table the panel shows."""
    def find(node):
        if isinstance(node, dict):
            if table in node.get("properties", {}):
                return node["properties"][table]["view"]["row_actions"]
            return next((f for f in map(find, node.values()) if f is not None), None)
        return None

    return {a["name"]: a.get("rows") for a in find(panel.layout)}


def test_the_member_menu_offers_no_take_out_or_keep_of_a_canonical_label(ran):
    """App audit: the menu of a cluster's canonical label offered Take out, Keep, and a Split of
    a cluster's only label; each ended in an error ('is the canonical label of its cluster')."""
    panel = Panel(ran).event("on_load")
    panel.event("open_cluster", row=0)
    assert [m["label"] for m in panel.state["members"]] == ["helmit", "Helmets", "helmet"]
    actions = _row_actions(panel, "members")
    assert actions["take_out"] == actions["keep"] == [True, True, False]
    assert actions["split"] == [True, True, True]  # (the rest then named by the rule)
    assert actions["move"] is None and actions["show_member"] is None
    panel.event("close_cluster")
    alone = next(i for i, c in enumerate(panel.state["clusters"]) if c["canonical"] == "drill")
    panel.event("open_cluster", row=alone)
    assert [m["label"] for m in panel.state["members"]] == ["drill"]
    actions = _row_actions(panel, "members")
    assert actions["take_out"] == actions["keep"] == actions["split"] == [False]


def test_review_actions_from_the_cluster_browser_reach_the_run(ran):
    panel = Panel(ran).event("on_load")
    panel.event("open_cluster", row=0)
    members = panel.state["members"]
    assert [m["label"] for m in members] == ["helmit", "Helmets", "helmet"]  # farthest first
    assert [m["joined_by"] for m in members] == ["spelling", "spelling", ""]
    assert panel.state["cluster_name"] == "helmet"

    panel.event("take_out", row=0)  # helmit
    assert "Edit #1: take helmit out of helmet" in panel.sent("notify")[0]["message"]
    assert [m["label"] for m in panel.state["members"]] == ["Helmets", "helmet"]
    panel.event("close_cluster")
    panel.search("helmit")
    panel.event("open_cluster", row=0)
    assert [(m["label"], m["joined_by"]) for m in panel.state["members"]] == [("helmit", "review")]
    panel.event("close_cluster")
    panel.search("")
    # edited: the cluster that lost helmit too
    edited = [c for c in panel.state["clusters"] if c["edited"]]
    assert sorted(c["canonical"] for c in edited) == ["helmet", "helmit"]
    panel.event("open_cluster", row=[c["canonical"] for c in panel.state["clusters"]].index("helmet"))
    assert [m["label"] for m in panel.state["members"]] == ["Helmets", "helmet"]
    assert "not applied yet" in panel.state["status"]

    panel.event("keep", row=0)  # Helmets stays with helmet even if clustered apart later
    assert [m["joined_by"] for m in panel.state["members"]] == ["spelling, kept", ""]
    panel.event("split", row=1)  # helmet: on its own now; Helmets represents the rest
    assert [m["label"] for m in panel.state["members"]] == ["helmet"]
    assert review_state(ran, "vlsr").label_map.canonical["Helmets"] == "Helmets"
    state = review_state(ran, "vlsr")
    assert [e.action for e in state.in_force][:2] == ["reject", "accept"]

    panel.event("undo")  # the toast says which edit it took back
    assert "Undid edit #3 (split helmet out on its own); nothing to write" in str(
        panel.sent("notify"))
    panel.event("undo")
    assert [e.action for e in review_state(ran, "vlsr").in_force] == ["reject"]
    # audit: an edit made elsewhere (a notebook) since the panel showed the review was undone
    # by its Undo, unseen; now refused, saying which, and the panel shows it: Undo again undoes it
    theirs = add_edit(ran, "vlsr", "split", "Screwdrivers")
    panel.event("undo")
    assert ("The review changed since the panel showed it: its last edit is now #4 (split "
            "Screwdrivers out on its own), made elsewhere. Nothing was undone") in str(
        panel.sent("notify"))
    assert review_state(ran, "vlsr").in_force[-1] == theirs
    panel.event("undo")
    assert [e.action for e in review_state(ran, "vlsr").in_force] == ["reject"]
    # the edit the panel shows last undone elsewhere: said as such (App walk: "made elsewhere")
    add_edit(ran, "vlsr", "split", "Screwdrivers")
    panel.event("refresh")
    undo_edit(ran, "vlsr")
    panel.event("undo")
    assert "edit #5 (split Screwdrivers out on its own) was undone elsewhere, and its last edit " \
           "in force is now #1" in str(panel.sent("notify"))
    assert [e.action for e in review_state(ran, "vlsr").in_force] == ["reject"]

    panel.event("apply")  # opens the apply form, which writes the fields
    prompt = panel.sent("prompt_user_for_operation")[0]
    assert prompt["operator_uri"] == "@vlsr/vlsr/apply_review" and prompt["params"]["key"] == "vlsr"
    # (App audit: scheduled as a delegated job, the panel said "not applied yet" and nothing of
    # the job until Refresh: the App calls the panel back once it is scheduled, or run)
    assert prompt["on_success"] == f"{URI}#refresh"
    panel.event("import_map")  # the import form, after which the panel shows the new edits
    prompt = panel.sent("prompt_user_for_operation")[0]
    assert prompt["operator_uri"] == "@vlsr/vlsr/import_label_map" and prompt["params"]["key"] == "vlsr"
    assert prompt["on_success"] is None  # the operator refreshes every open panel itself


def test_two_clicks_whose_edits_overlap_both_land(ran, monkeypatch):
    """Two row actions clicked in quick succession run at once: the second was made from the
    review as it was before the first landed. It is made again on top of it, not written over
    it (nor refused)."""
    import vlsr_core.fo.review as review

    panel = Panel(ran).event("on_load")
    panel.event("open_cluster", row=0)
    before = review.review_state(ran, "vlsr")  # what the second click's event read
    seen = dict(panel.state)  # and the rows it was sent with: helmit, Helmets, helmet
    panel.event("take_out", row=0)  # the first click: helmit
    assert [e.label for e in review.review_state(ran, "vlsr").edits] == ["helmit"]
    monkeypatch.setattr(review, "cached_review_state", lambda dataset, key: before)
    panel.event("keep", sent_state=seen, row=1)  # the second: Helmets
    assert "Edit #2: keep Helmets in helmet" in panel.sent("notify")[0]["message"]
    assert [(e.id, e.label) for e in review.review_state(ran, "vlsr").edits] == [
        (1, "helmit"), (2, "Helmets")]


def test_a_click_on_a_row_that_an_edit_elsewhere_moved_meanwhile_records_nothing(ran):
    """The curator asked to take helmit out of helmet: after another curator's move of it to
    drill, made on top, it would have taken helmit out of drill, undoing that move. (The App
    reads the dataset again for each event: the review the click reads holds the move.)"""
    panel = Panel(ran).event("on_load")
    panel.event("open_cluster", row=0)
    seen = dict(panel.state)  # helmit, Helmets, helmet
    add_edit(ran, "vlsr", "move", "helmit", to="drill")  # elsewhere, meanwhile
    panel.event("take_out", sent_state=seen, row=0)
    notify = panel.sent("notify")[0]
    assert notify["variant"] == "error"
    assert notify["message"] == (
        "'helmit' is no longer in the cluster the panel showed: an edit made elsewhere "
        "meanwhile moved it to 'drill'. Nothing was recorded; the rows now show the review as "
        "it is")
    assert [(e.action, e.label) for e in review_state(ran, "vlsr").edits] == [("move", "helmit")]
    assert [m["label"] for m in panel.state["members"]] == ["Helmets", "helmet"]
    panel.event("take_out", row=0)  # the row now shown: Helmets, still in helmet
    assert [(e.action, e.label) for e in review_state(ran, "vlsr").edits] == [
        ("move", "helmit"), ("reject", "Helmets")]


def test_a_click_after_the_run_was_deleted_elsewhere_is_a_message(ran, monkeypatch):
    import vlsr_core.fo.review as review
    from vlsr_core.fo.runs import delete_run

    panel = Panel(ran).event("on_load")
    panel.event("open_cluster", row=0)
    before = review.review_state(ran, "vlsr")
    seen = dict(panel.state)
    delete_run(ran, "vlsr")  # (by `vlsr delete-run` in a terminal, say)
    read, first = review.cached_review_state, iter([before])  # the click's read, then as it is
    monkeypatch.setattr(review, "cached_review_state",
                        lambda dataset, key: next(first, None) or read(dataset, key))
    panel.event("take_out", sent_state=seen, row=0)
    assert panel.sent("notify") == [dict(
        message="Run 'vlsr' was deleted elsewhere", variant="warning")]  # (said once)
    assert panel.state["problem"].startswith("Run 'vlsr' was deleted. No VLSR run on this "
                                             "dataset now: run *VLSR 1")


def test_a_run_deleted_elsewhere_while_the_grid_filters_its_scores_leaves_that_view(ran):
    """App walk: after `vlsr delete-run` with the panel's filter of a score range open,
    Refresh left the grid at 0 samples, filtering on the deleted run's scores."""
    from fiftyone import ViewField as F

    from vlsr_core.fo.runs import delete_run

    panel = Panel(ran).event("on_load")
    scores = ran.filter_labels("gt", F("vlsr_similarity") > -2)
    delete_run(ran, "vlsr")
    panel.event("refresh_all", view=scores)
    assert panel.sent("set_view") == [dict(view=[])]
    assert panel.sent("notify") == [dict(
        message="Run 'vlsr' was deleted elsewhere; the App shows the whole dataset, as the view "
                "open read its fields", variant="warning")]


def test_a_run_deleted_elsewhere_while_the_app_shows_one_of_its_saved_views(ran):
    """App walk: the panel's Refresh then reloaded the App on the gone view's name, which
    FiftyOne answers with a full-page error ("Object of type SavedView is not JSON
    serializable")."""
    from vlsr_core.fo.runs import delete_run

    shown = ran.load_saved_view("vlsr-low-similarity")
    ran.save_view("mine", ran.limit(3))  # (another saved view: the server's failure needs one)
    panel = Panel(ran).event("on_load", view=shown)
    delete_run(ran, "vlsr")
    panel.event("refresh_all", view=shown)  # (the App still names the view)
    assert "reload_dataset" not in [q["operator_uri"] for q in panel.requests]
    # (a saved view that exists first: the App's query again with the name it held then
    # finds one; App walk: with set_view(view) alone, the error page)
    assert panel.sent("set_view") == [dict(name="mine"), dict(view=[])]
    assert panel.sent("notify") == [dict(
        message="Run 'vlsr' was deleted elsewhere; the App shows the whole dataset, as the view "
                "open read its fields", variant="warning")]


def test_a_run_deleted_from_this_apps_operator_browser_is_not_said_deleted_elsewhere(ran):
    """Audit (App walk): the delete's own "Deleted VLSR run 'vlsr'" was followed by a warning
    that the run "was deleted elsewhere"."""
    from vlsr_core.fo.runs import delete_run

    panel = Panel(ran).event("on_load")
    delete_run(ran, "vlsr")  # (the operator: then it asks the panel to refresh, naming it)
    panel.event("refresh", deleted="vlsr")
    assert panel.sent("notify") == []
    assert panel.state["problem"].startswith("Run 'vlsr' was deleted. No VLSR run on this "
                                             "dataset now")


@pytest.mark.parametrize("method,params", [
    ("undo", {}), ("on_search", {"value": "hel"}), ("open_cluster", {"row": 0}),
    ("rename_cluster", {"row": 0}), ("keep", {"row": 0}), ("next_page", {}), ("apply", {}),
    ("import_map", {}), ("move", {"row": 0})])
def test_the_panel_after_its_run_was_deleted_elsewhere_says_so(ran, method, params):
    """Audit (App walk): after `vlsr delete-run` in a terminal, Undo, a search, a cluster's
    Members and Rename replaced the panel with a traceback; a member's Keep said nothing; Next
    and a search said nothing, and the panel then read "No VLSR run on this dataset yet"."""
    from vlsr_core.fo.runs import delete_run

    panel = Panel(ran).event("on_load")
    panel.event("open_cluster", row=0)
    delete_run(ran, "vlsr")
    panel.event(method, **params)  # (no ExecutionError)
    assert panel.state["key"] is None
    assert panel.state["problem"].startswith("Run 'vlsr' was deleted. No VLSR run on this "
                                             "dataset now")
    assert panel.sent("notify") == [dict(
        message="Run 'vlsr' was deleted elsewhere", variant="warning")]  # (said once)
    assert not panel.sent("prompt_user_for_operation")  # (App walk: Apply's form said "yet")
    panel.event("on_change_dataset")
    assert panel.state["problem"].startswith("No VLSR run on this dataset yet")


def test_the_panel_shows_another_run_when_its_run_was_deleted_elsewhere(dataset, tmp_path):
    from vlsr_core.fo.runs import delete_run
    from vlsr_core.fo.stages import run_vlsr

    encoder = FakeEncoder(build(dataset, tmp_path / "images"))
    for key in ("vlsr", "other"):
        run_vlsr(dataset, "gt", key=key, encoder=encoder, min_cluster_size=1)
    ran = dataset
    panel = Panel(ran).event("on_load")
    panel.event("on_change_key", value="vlsr")
    delete_run(ran, "vlsr")
    panel.event("next_page")
    assert panel.state["key"] == "other" and panel.state["problem"] is None
    [notify] = panel.sent("notify")
    assert notify["message"] == "Run 'vlsr' was deleted elsewhere: the panel shows run 'other'"


def test_a_refused_edit_is_a_message_not_a_crash(ran):
    panel = Panel(ran).event("on_load")
    panel.event("open_cluster", row=2)  # drill, alone in its cluster
    panel.event("take_out", row=0)
    notify = panel.sent("notify")[0]
    assert notify["variant"] == "error" and "canonical label of its cluster" in notify["message"]
    assert review_state(ran, "vlsr").edits == []


def test_the_histogram_kept_at_scoring_counts_every_score_of_the_run(ran):
    from vlsr_core.fo.browse import count_score_histogram, score_histogram
    from vlsr_core.fo.stages import score_labels

    score_labels(ran.limit(2), "vlsr")  # a part scored again: the others keep their scores
    kept = score_histogram(ran, "vlsr")
    assert sum(kept.counts) == ran.count("gt.classifications.vlsr_similarity") == 14
    config = ran.get_run_info("vlsr").config
    config.score_histogram = None  # as a run scored by an older version stores it
    ran.update_run_config("vlsr", config)
    assert score_histogram(ran, "vlsr") == kept == count_score_histogram(ran, "gt", "vlsr_similarity")


def test_clicking_a_histogram_bar_shows_the_labels_scoring_in_it(ran):
    panel = Panel(ran).event("on_load")
    edges = panel.state["edges"]
    top = (edges[-2] + edges[-1]) / 2
    panel.event("on_histogram_click", x=top)
    view = fo.DatasetView._build(ran, panel.sent("set_view")[0]["view"])
    scores = view.values("gt.classifications.vlsr_similarity", unwind=True)
    assert scores and min(scores) >= edges[-2] - 1e-9
    assert len(scores) == panel.data["histogram"][0]["y"][-1]

    panel.event("on_histogram_select", data=[{"x": top}, {"x": (edges[0] + edges[1]) / 2}])
    view = fo.DatasetView._build(ran, panel.sent("set_view")[0]["view"])
    assert len(view.values("gt.classifications.vlsr_similarity", unwind=True)) == 14


def test_a_search_overtaken_by_the_next_key_finds_nothing_and_the_last_finds_the_rows(
        ran, monkeypatch):
    """Audit: typed at 80 ms a key, "falthapel" showed its rows 11 s after the last key, behind
    the searches of each of its beginnings, each found in full."""
    import threading

    monkeypatch.setattr(_module(), "SEARCH_WAIT", 1.0)
    first = Panel(ran).event("on_load")
    second = Panel(ran)
    second.state = dict(first.state)
    typing = threading.Thread(target=first.search, args=("screw",))
    typing.start()
    time.sleep(0.2)
    second.search("screwdrivers")  # the next key, while the first waits
    typing.join()
    assert first.sent("patch_panel_state") == []  # (what it found would have come last)
    assert [c["canonical"] for c in second.state["clusters"]] == ["screwdriver"]


def test_finding_a_cluster_by_one_of_its_labels(ran):
    panel = Panel(ran).event("on_load")
    panel.search("SCREWDRIVERS")
    assert [c["canonical"] for c in panel.state["clusters"]] == ["screwdriver"]
    # (App audit: keys sent out of order left the rows of "dr" under a box holding "d": the
    # title says what the rows were found for)
    assert panel.state["clusters_title"].endswith(" — search: `SCREWDRIVERS`")
    # the box is the curator's: a reply that set it would undo what was typed since
    assert panel.sent("patch_panel_state") and not any(
        "query" in q["state"] for q in panel.sent("patch_panel_state"))
    assert "no_match" not in str(panel.layout)
    panel.search("zzz")  # the empty table would say only "No data provided"
    assert panel.state["clusters"] == []
    assert "No cluster has a label containing `zzz`" in str(panel.layout)
    assert "'clusters'" not in str(panel.layout)  # in place of the table, not above it
    panel.search("a`b")  # a backtick in the query does not end the code span
    assert "No cluster has a label containing ``a`b``" in str(panel.layout)
    panel.search("")
    assert len(panel.state["clusters"]) == 4


def test_a_new_search_starts_at_the_first_page_and_reopening_the_panel_keeps_the_page(ran, monkeypatch):
    import sys

    module = sys.modules[type(foo.get_operator(URI)).__module__]
    monkeypatch.setattr(module, "PAGE", 1)
    panel = Panel(ran).event("on_load").event("next_page")
    assert panel.state["page"] == 1
    assert panel.shown["pages_where"] == f"*page 2 of {panel.state['pages']}*"
    panel.event("on_search", value="")  # the box's value, sent again as the panel opens
    assert panel.state["page"] == 1
    panel.search("e")
    assert panel.state["page"] == 0 and panel.state["pages"] > 1


def test_a_row_action_acts_on_the_label_the_curator_saw_even_if_the_run_changed(ran):
    panel = Panel(ran).event("on_load")
    panel.event("open_cluster", row=0)
    assert [m["label"] for m in panel.state["members"]] == ["helmit", "Helmets", "helmet"]
    add_edit(ran, "vlsr", "split", "helmit")  # elsewhere: the rows shift under the curator
    panel.event("take_out", row=1)  # the row that showed Helmets
    edit = review_state(ran, "vlsr").in_force[-1]
    assert (edit.action, edit.label, edit.to) == ("reject", "Helmets", "helmet")


def _module():
    import sys

    return sys.modules[type(foo.get_operator(URI)).__module__]


def _buttons(layout, row):
    """The labels of the buttons in the row of buttons ``row`` of the layout."""
    props = layout["type"]["properties"][row]["type"]["properties"]
    return [p["view"]["label"] for p in props.values()]


def _labels(panel):
    return [m["label"] for m in panel.state["members"]]


def test_members_matching_the_search_come_first_and_a_large_cluster_comes_in_pages(ran, monkeypatch):
    panel = Panel(ran).event("on_load")
    panel.event("open_cluster", row=0)  # helmet, Helmets, helmit
    farthest_first = _labels(panel)
    assert farthest_first[0] == "helmit" and panel.state["n_members"] == 3
    assert "the farthest first (members 1-3 of 3)" in str(panel.layout)
    assert _buttons(panel.layout, "member_pages") == []
    panel.search("helmet")
    assert _labels(panel)[-1] == "helmit"

    monkeypatch.setattr(_module(), "MEMBERS", 2)
    panel.search("")
    assert _labels(panel) == farthest_first[:2]
    assert "the farthest first (members 1-2 of 3)" in str(panel.layout)
    assert _buttons(panel.layout, "member_pages") == ["Next"]
    panel.event("next_members")
    assert _labels(panel) == farthest_first[2:]
    assert "the farthest first (members 3-3 of 3)" in str(panel.layout)
    assert _buttons(panel.layout, "member_pages") == ["Previous"]
    # (audit: the App keeps the table scrolled to its bottom after Next, the title out of
    # sight: under the buttons, where they led)
    order = list(panel.layout["type"]["properties"])
    assert order.index("member_pages_where") == order.index("member_pages") + 1
    assert panel.shown["member_pages_where"] == "*members 3-3 of 3*"
    # a row of the second page acts on the member shown there
    panel.event("show_member", row=0)
    view = fo.DatasetView._build(ran, panel.sent("set_view")[0]["view"])
    assert set(view.distinct("gt.classifications.label")) == {farthest_first[2]}
    assert panel.sent("notify")[0]["message"] == f"Samples with labels of {farthest_first[2]}"
    panel.event("previous_members")
    assert _labels(panel) == farthest_first[:2]
    panel.event("next_members")
    panel.search("helm")  # a new search starts again from the first page
    assert "those containing `helm` first, then the farthest (members 1-2 of 3)" in str(panel.layout)


def test_an_open_cluster_stands_alone_above_its_members_and_back_shows_all_again(ran, monkeypatch):
    monkeypatch.setattr(_module(), "PAGE", 2)
    panel = Panel(ran).event("on_load").event("next_page")
    all_rows = panel.state["clusters"]
    assert len(all_rows) == 2 and panel.state["page"] == 1
    panel.event("open_cluster", row=1)
    opened = all_rows[1]
    # where the clusters were: a way back, the open cluster alone, its members right under it
    order = list(panel.layout["type"]["properties"])
    assert order.index("close_cluster") < order.index("clusters") < order.index("members")
    assert panel.layout["type"]["properties"]["close_cluster"]["view"]["label"] == \
        "Back to all clusters"
    assert panel.state["clusters"] == [opened]
    assert "Clusters, the most doubtful first" not in str(panel.layout)
    panel.event("rename_cluster", row=0)  # the open cluster's own menu still works
    assert panel.sent("prompt_user_for_operation")[0]["params"]["label"] == opened["canonical"]
    panel.event("close_cluster")
    assert panel.state["clusters"] == all_rows and panel.state["page"] == 1
    assert "members" not in panel.layout["type"]["properties"]

    # the search box, with a cluster open, finds its members; Back shows the clusters found
    panel.event("previous_page").event("open_cluster", row=0)  # helmet
    panel.search("helmit")
    assert _labels(panel)[0] == "helmit" and len(panel.state["clusters"]) == 1
    panel.event("close_cluster")
    assert [c["canonical"] for c in panel.state["clusters"]] == ["helmet"]


def _choose(panel, value):
    """Choose in the Joined-by dropdown: the App puts the value in the state, then sends the event."""
    panel.state["joined"] = value
    return panel.event("on_joined", value=value)


def test_joined_by_shows_the_clusters_then_the_members_a_step_joined(ran):
    panel = Panel(ran).event("on_load")
    joined = panel.layout["type"]["properties"]["joined"]
    assert joined["view"]["label"] == "Only clusters with a member joined by"
    # only the steps that joined labels in this run, with their counts
    assert [c["label"] for c in joined["view"]["choices"]] == [
        "all", "spelling (3 labels)", "typo (1 label)"]

    _choose(panel, "spelling")
    assert [c["canonical"] for c in panel.state["clusters"]] == ["helmet", "screwdriver"]
    _choose(panel, "typo")  # helmit, one letter from helmet
    assert [c["canonical"] for c in panel.state["clusters"]] == ["helmet"]
    assert "Clusters with a member joined by typo, the most doubtful first (1;" in str(panel.layout)
    panel.event("open_cluster", row=0)
    assert _labels(panel) == ["helmit"]
    assert panel.layout["type"]["properties"]["joined"]["view"]["label"] == "Only members joined by"
    assert "Members of the cluster 'helmet' joined by typo" in str(panel.layout)
    _choose(panel, "all")
    assert _labels(panel) == ["helmit", "Helmets", "helmet"]

    panel.event("take_out", row=0)  # helmit: now joined by the review (to its own cluster)
    choices = panel.layout["type"]["properties"]["joined"]["view"]["choices"]
    # (the counts are the run's, not the open cluster's: said so)
    assert [c["label"] for c in choices] == ["all", "spelling (2 labels in the run)",
                                             "review (1 label in the run)"]
    _choose(panel, "review")
    panel.event("close_cluster")
    assert [c["canonical"] for c in panel.state["clusters"]] == ["helmit"]
    panel.event("undo")  # no label is joined by the review any more: all clusters again
    assert panel.state["joined"] == "all" and len(panel.state["clusters"]) == 4


def test_the_joins_worth_a_look_say_how_to_walk_them_all(ran, monkeypatch):
    from vlsr_core.fo import summary

    steps = {"typo_joins": [[f"tweezer{i}", f"tweeter{i}"] for i in range(12)]}
    line = summary.joins_to_check(steps, see_all=lambda step: f"choose {step}")
    assert line.endswith("`tweezer9` / `tweeter9`, +2 more (choose typo)")
    assert "+2 more" in summary.joins_to_check(steps) and "choose" not in summary.joins_to_check(steps)

    listed = summary.joins_to_check
    monkeypatch.setattr(summary, "joins_to_check", lambda steps, **kw: listed(steps, shown=0, **kw))
    panel = Panel(ran).event("on_load")
    assert "+1 more (choose typo in Only clusters with a member joined by, above, to walk them all)" in \
        panel.state["joins"]
    _choose(panel, "typo")
    assert [c["canonical"] for c in panel.state["clusters"]] == ["helmet"]


def test_rare_clusters_are_listed_the_nearest_to_another_first(monkeypatch):
    from vlsr_core.engine.pipeline import LabelMap
    from vlsr_core.fo.browse import rare_clusters, rare_rows
    from vlsr_core.fo.review import ReviewState

    vocab = ["drill", "drills", "clothespin", "clothespins", "glove", "###", "auger"]
    emb = np.array([[1, 0, 0, 0], [1, 0.1, 0, 0], [0, 0, 1, 0], [0, 0.2, 1, 0], [0.3, 1, 0, 0.6],
                    [0, 0, 0, 1], [1, 0, 0, -0.1]], dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    clusters = np.array([0, 0, 1, 2, 3, 4, 0])  # clothespin and clothespins apart: a miss
    label_map = LabelMap(vocabulary=vocab, frequencies=np.array([20, 5, 3, 1, 2, 1, 1]),
                         dbscan_clusters=clusters, clusters=clusters,
                         representatives=["drill", "clothespin", "clothespins", "glove", "###"],
                         distance_to_canonical=np.zeros(7, np.float32), steps={})
    state = ReviewState(edits=[], label_map=label_map, outcomes=[], clustered=label_map,
                        embeddings=emb)
    # under 10 samples: all but drill (25); "###" has no letter, kept out of the embedding steps
    assert rare_clusters(label_map, 10).tolist() == [False, True, True, True, False]
    rows = rare_rows(state, 10)
    # clothespin and clothespins are nearest to each other: one row, the more used one's
    assert [(r["canonical"], r["nearest"], r["nearest_label"], r["pair"]) for r in rows] == [
        ("clothespin", "clothespins", "clothespins", True), ("glove", "drill", "drills", False)]
    assert rows[0]["distance"] < rows[1]["distance"] and rows[0]["occurrences"] == 3
    assert [r["canonical"] for r in rare_rows(state, 10, query="GLOV")] == ["glove"]
    assert [r["canonical"] for r in rare_rows(state, 10, query="pins")] == ["clothespin"]
    # of the nearest cluster, its name and the label nearest to the row's: not any other of
    # its labels, which in a large cluster would find most rows
    assert [r["canonical"] for r in rare_rows(state, 10, query="drill")] == ["glove"]
    assert rare_rows(state, 10, query="auger") == []
    # after a review edit (a new state of the same clustering) only new labels are searched
    import dataclasses

    from vlsr_core.fo import browse

    searched = []
    real = browse.top_k_labels
    monkeypatch.setattr(browse, "top_k_labels", lambda q, *a: searched.append(len(q)) or real(q, *a))
    stamp = ("test clustering", id(emb))
    first = dataclasses.replace(state, memo={}, clustering=stamp)
    assert rare_rows(first, 10) == rows and searched == [3]  # the labels of rare clusters
    joined = np.array([0, 0, 1, 1, 3, 4, 0])  # clothespins joined clothespin
    edited = dataclasses.replace(first, memo={}, label_map=dataclasses.replace(
        label_map, clusters=joined))
    assert [r["canonical"] for r in rare_rows(edited, 10)] == ["glove", "clothespin"]
    assert searched == [3]
    # counted in labels, a cluster of two labels is not under 2
    assert rare_clusters(label_map, 2, by_samples=False).tolist() == [False, True, True, True, False]
    assert rare_clusters(label_map, 1, by_samples=False).sum() == 0
    # the paper's mode forces small clusters into neighbours: none is left alone
    paper = dataclasses.replace(label_map, steps={"mode": "paper"})
    assert not rare_clusters(paper, 10).any()


def test_a_rare_cluster_joins_its_nearest_cluster_from_the_panel(dataset, tmp_path):
    from vlsr_core.fo.stages import run_vlsr

    images = build(dataset, tmp_path / "images")
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), top_k=3)  # under 10 samples: rare
    panel = Panel(dataset).event("on_load")
    assert panel.state["n_rare"] == 4
    assert "rare clusters (under 10 samples: 4), the nearest to another first" in str(
        panel.layout)
    panel.state["listing"] = "rare"
    panel.event("on_listing", value="rare")
    rows = panel.state["clusters"]
    assert {r["canonical"] for r in rows} | {r["nearest"] for r in rows} == {
        "helmet", "screwdriver", "drill", "Lathe Information"}
    # the title says two clusters can share a row only when two do
    pairs = [r for r in rows if r["pair"]]
    assert len(rows) + len(pairs) == 4
    together = ", two clusters nearest to each other in one" if pairs else ""
    assert (f"Rare clusters, the nearest to another cluster first ({len(rows)} rows{together}; "
            "page 1 of 1)") in str(panel.layout)
    # its distances are of the closest labels, which merging did not go by alone
    limit = dataset.load_run_results("vlsr").merge_steps["max_merge_distance"]
    assert panel.state["rare_note"] == (
        "*Distance*: between their closest labels; merging joins two clusters only when all "
        f"their labels lie within {limit:.3f} of each other") and "rare_note" in str(panel.layout)
    # a search that finds no rare cluster says which clusters are never rare
    panel.search("zzz")
    assert ("No rare cluster has a label containing `zzz` (the clusters of labels kept out of "
            "merging, with no letter or digit, only digits or over 100 characters, are never "
            "rare: search all clusters)") in str(panel.layout)
    panel.search("")
    label, target = rows[-1]["label"], rows[-1]["nearest"]
    from vlsr_core.fo.browse import cluster_rows

    occurrences = {r["canonical"]: r["occurrences"] for r in cluster_rows(review_state(dataset, "vlsr"))}
    joined = occurrences[rows[-1]["canonical"]] + occurrences[target]
    panel.event("join_nearest", row=len(rows) - 1)
    assert review_state(dataset, "vlsr").label_map.canonical[label] == target
    assert panel.state["n_rare"] == (3 if joined < 10 else 2)  # joined, it may not be rare
    assert label not in {r["label"] for r in panel.state["clusters"]}


def test_the_rare_listing_does_not_offer_back_the_cluster_a_review_took_a_label_out_of(
        dataset, tmp_path):
    """Taken out of helmet, helmit headed the rare listing with helmet as its nearest cluster:
    one click on Join undid the curator's edit."""
    from vlsr_core.fo.stages import run_vlsr

    images = build(dataset, tmp_path / "images")
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), top_k=3)  # under 10 samples: rare

    def nearest(label):
        panel = Panel(dataset).event("on_load")
        panel.state["listing"] = "rare"
        rows = panel.event("on_listing", value="rare").state["clusters"]
        # (two rare clusters nearest to each other share the row of one of them)
        return next((r["nearest"] if r["label"] == label else r["canonical"] for r in rows
                     if r["label"] == label or (r["pair"] and r["nearest"] == label)), None)

    assert review_state(dataset, "vlsr").label_map.canonical["helmit"] == "helmet"
    add_edit(dataset, "vlsr", "reject", "helmit")
    assert nearest("helmit") not in (None, "helmet")


def test_the_panel_and_the_apply_form_say_when_a_copy_of_the_final_labels_is_outdated(ran):
    """A copy is written only when asked for: after an Apply without it, the panel's review line
    and the Apply form say it differs, as the summary does."""
    from fiftyone.operators.executor import ExecutionContext
    from fiftyone.operators.registry import OperatorRegistry

    from vlsr_core.fo.review import add_edit, apply_review

    def apply_form():
        ctx = ExecutionContext(request_params=dict(dataset_name=ran.name, params=dict(key="vlsr")))
        return str(OperatorRegistry().get_operator("@vlsr/vlsr/apply_review")
                   .resolve_input(ctx).to_json())

    add_edit(ran, "vlsr", "rename", "drill", "power drill")
    apply_review(ran, "vlsr", copy_to="reviewed")
    panel = Panel(ran).event("on_load")
    assert "a copy of the final labels" not in panel.state["status"]
    assert "a copy of the final labels" not in apply_form()
    add_edit(ran, "vlsr", "rename", "power drill", "drill (power)")
    apply_review(ran, "vlsr")
    n = ran.count_values("vlsr_label.label")["drill (power)"]
    note = (f"'reviewed', a copy of the final labels, differs from them on {n} sample"
            f"{'' if n == 1 else 's'}: apply with the copy to 'reviewed' to update it")
    assert note in panel.event("refresh").state["status"]
    assert note in apply_form()
    apply_review(ran, "vlsr", copy_to="reviewed")
    assert "a copy of the final labels" not in panel.event("refresh").state["status"]
    # the Refresh button reloads the grid too (App walk: after a run from the command line,
    # the panel read 13 samples beside a grid of 0)
    assert "reload_dataset" in [q["operator_uri"] for q in panel.event("refresh_all").requests]


def test_a_choice_changed_again_before_the_reply_ends_on_the_last(dataset, tmp_path):
    """Two changes within a reply's time: the second event carries the state from before the
    first reply; the rows must end as the last choice says (the List kept the rare rows)."""
    from vlsr_core.fo.stages import run_vlsr

    images = build(dataset, tmp_path / "images")
    run_vlsr(dataset, "gt", encoder=FakeEncoder(images), top_k=3)  # under 10 samples: rare
    panel = Panel(dataset).event("on_load")
    n_clusters = len(panel.state["clusters"])
    before = dict(panel.state)
    panel.state["listing"] = "rare"
    panel.event("on_listing", value="rare")
    assert panel.state["shown_listing"] == "rare" and "nearest" in panel.state["clusters"][0]
    panel.state["listing"] = "clusters"  # the App holds the last choice
    panel.event("on_listing", sent_state=dict(before, listing="clusters"), value="clusters")
    assert panel.state["shown_listing"] == "clusters"
    assert "nearest" not in panel.state["clusters"][0]
    # a search typed and taken back likewise
    before = dict(panel.state)
    panel.search("helmit")
    assert len(panel.state["clusters"]) == 1
    panel.state["query"] = ""
    panel.event("on_search", sent_state=dict(before, query=""), value="")
    assert len(panel.state["clusters"]) == n_clusters


def test_the_rows_of_an_event_overtaken_by_a_later_one_are_not_sent(ran, monkeypatch):
    """The App runs events side by side: the rows for "helmit" came 14 s after those for "he",
    typed later, and replaced them. An event that a later one overtook sends nothing."""
    from vlsr_core.fo import browse

    panel = Panel(ran).event("on_load")
    real, later = browse.cluster_rows, []

    def slow(state, query="", joined=None):  # "he" is typed while "helmit" is being found
        if query == "helmit" and not later:
            later.append(1)
            panel.state["query"] = "he"
            panel.event("on_search", value="he")
        return real(state, query, joined)

    monkeypatch.setattr(browse, "cluster_rows", slow)
    panel.state["query"] = "helmit"
    panel.event("on_search", value="helmit")  # finishes last
    assert panel.state["searched"] == "he"
    assert sorted(c["canonical"] for c in panel.state["clusters"]) == ["Lathe Information",
                                                                       "helmet"]
    # the table's title is the state's too, shown by name, not the overtaken event's layout
    # (which titled the rows for "he" with the count for "helmit")
    assert panel.state["clusters_title"] == ("Clusters, the most doubtful first (2; page 1 of 1)"
                                             " — search: `he`")  # (what the rows are for)
    assert "'clusters_title'" in str(panel.layout)


def test_a_member_stays_editable_when_the_canonical_label_of_its_cluster_moved_elsewhere(ran):
    """Audit (App walk): after the cluster's canonical label was moved away elsewhere, a
    take-out of another member was refused as "moved to" its own cluster, and the panel
    opened the cluster the canonical label went to."""
    panel = Panel(ran).event("on_load")
    panel.event("open_cluster", row=0)
    assert [m["label"] for m in panel.state["members"]] == ["helmit", "Helmets", "helmet"]
    add_edit(ran, "vlsr", "move", "helmet", to="drill")  # elsewhere, meanwhile
    panel.event("take_out", row=1)  # Helmets: still with helmit, now its canonical label
    notify = panel.sent("notify")[0]
    assert notify["variant"] == "success", notify
    edit = review_state(ran, "vlsr").in_force[-1]
    assert (edit.action, edit.label, edit.to) == ("reject", "Helmets", "helmit")
    assert [m["label"] for m in panel.state["members"]] == ["helmit"]  # not drill's cluster


def test_the_panel_says_what_was_changed_by_hand_as_the_summary_does(ran):
    """App walk: a box moved by hand was said by the summary and the export alone; the panel,
    where a curator reviews, said nothing."""
    sample = ran.match(fo.ViewField("filepath").ends_with("h4.png")).first()
    sample.gt.classifications = sample.gt.classifications[1:]  # Lathe Information removed
    sample.save()
    panel = Panel(ran).event("on_load")
    assert panel.state["by_hand"].startswith("**Changed by hand:** 1 sample holds as lowest "
                                             "score (`vlsr_min_similarity`) that of a label")
    assert ("\n\n**Changed by hand:** 1 sample has labels of 'gt' removed, given or cleared by "
            "hand") in panel.state["by_hand"]
    assert "'by_hand'" in str(panel.layout)
    panel.event("next_page")  # (read again on load and Refresh only)
    assert panel.state["by_hand"].startswith("**Changed by hand:**")
