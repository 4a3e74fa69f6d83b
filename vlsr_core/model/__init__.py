"""The model side: the CLIP encoder (:mod:`.encoder`), image decoding (:mod:`.images`), where
weights come from (:mod:`.model_source`), devices (:mod:`.devices`) and a random CLIP for tests
and benchmarks (:mod:`.random_clip`)."""
