"""The FiftyOne side: the three stages on a collection (:mod:`.stages`), the run record
(:mod:`.runs`), chunked reading (:mod:`.chunks`), label fields (:mod:`.labels`), importers
(:mod:`.importers`), the export (:mod:`.export`) and the run summary (:mod:`.summary`)."""
