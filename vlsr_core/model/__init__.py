"""The model side: the CLIP encoder (:mod:`.encoder`), a sentence encoder for the labels
(:mod:`.sentence_encoder`), what a tokenizer knows of a label (:mod:`.tokens`), image decoding
(:mod:`.images`) and box crops (:mod:`.crops`), where weights come from (:mod:`.model_source`),
devices (:mod:`.devices`), reduced precision (:mod:`.precision`) and a random CLIP for tests and
benchmarks (:mod:`.random_clip`)."""
