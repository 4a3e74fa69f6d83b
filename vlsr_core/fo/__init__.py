"""The FiftyOne side: the three stages on a collection (:mod:`.stages`, gathering :mod:`.embed`,
:mod:`.score` and :mod:`.cluster`, which share :mod:`.stage_run` and the file stamps of
:mod:`.stamps`), the run record (:mod:`.runs`) and its lease (:mod:`.lease`), shards
(:mod:`.batches`) and delegated jobs (:mod:`.jobs`), chunked reading (:mod:`.chunks`), label
fields (:mod:`.labels`), box crops (:mod:`.crops`), the review (:mod:`.review`) and what the
panel shows of it (:mod:`.browse`), Brain runs on the embeddings (:mod:`.brain`), importers
(:mod:`.importers`), the export (:mod:`.export`) and the run summary (:mod:`.summary`)."""
