"""Operator: cluster the vocabulary, merge small clusters, choose canonical and final labels (4-7)."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.defaults import DEFAULT_EPS, DEFAULT_KEY, DEFAULT_MIN_CLUSTER_SIZE, DEFAULT_MIN_SAMPLES

from .common import execution_flags, finish, run_key_choice, run_with_progress, target_view


class ClusterAndMerge(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="cluster_and_merge",
            label="VLSR: cluster and merge labels",
            description="Fold label variants into canonical labels and pick one final label per image",
            icon="merge",
            **execution_flags(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        view = target_view(ctx, inputs)
        if view is not None and run_key_choice(ctx, inputs, "clustering") is not None:
            inputs.float("eps", default=DEFAULT_EPS, min=0.0, max=2.0, label="eps",
                         description="DBSCAN radius in cosine distance; the paper's 0.07. Larger "
                                     "values chain unrelated labels together")
            inputs.int("min_samples", default=DEFAULT_MIN_SAMPLES, min=1, label="min_samples",
                       description="DBSCAN neighbourhood size of a core label; 1 = every label")
            inputs.int("min_cluster_size", default=DEFAULT_MIN_CLUSTER_SIZE, min=0,
                       label="Minimum cluster size",
                       description="Clusters carried by fewer samples merge into the nearest one")
            size_by = types.RadioGroup(orientation="horizontal")
            size_by.add_choice("samples", label="samples")
            size_by.add_choice("labels", label="distinct labels")
            inputs.enum("size_by", size_by.values(), default="samples", view=size_by,
                        label="Cluster size counts")
            linkage = types.RadioGroup(orientation="horizontal")
            linkage.add_choice("centroid", label="centroids")
            linkage.add_choice("representative", label="representative labels")
            inputs.enum("linkage", linkage.values(), default="centroid", view=linkage,
                        label="Nearest cluster by")
            inputs.float("max_merge_distance", min=0.0, max=2.0, label="Max merge distance (optional)",
                         description="Leave a small cluster alone when its nearest neighbour is "
                                     "farther than this cosine distance")
        return types.Property(inputs, view=types.View(label="VLSR: cluster and merge labels"))

    def execute(self, ctx):
        from vlsr_core.stages import cluster_and_merge
        from vlsr_core.summary import summarize_run

        key, p = ctx.params.get("key", DEFAULT_KEY), ctx.params
        yield from run_with_progress(ctx, "Clustering", lambda progress: cluster_and_merge(
            ctx.target_view(), key, eps=p.get("eps", DEFAULT_EPS),
            min_samples=p.get("min_samples", DEFAULT_MIN_SAMPLES),
            min_cluster_size=p.get("min_cluster_size", DEFAULT_MIN_CLUSTER_SIZE),
            size_by=p.get("size_by", "samples"), linkage=p.get("linkage", "centroid"),
            max_merge_distance=p.get("max_merge_distance"), progress=progress,
        ))
        yield from finish(ctx, f"Clustered the labels of run {key!r}", summarize_run(ctx.dataset, key))
