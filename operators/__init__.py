"""FiftyOne operators of the vlsr plugin: forms, progress and App refreshes around vlsr_core."""
