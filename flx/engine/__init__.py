"""Training and evaluation: one run (:mod:`.run`), classification (:mod:`.classification`), detection
(:mod:`.detection`, :mod:`.coco`), devices (:mod:`.device`) and when a run has diverged (:mod:`.status`)."""
